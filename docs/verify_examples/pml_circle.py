"""pytorch-metric-learning's CircleLoss, as a user calls it (default reducer: a scalar).

  python -m circle_jax.verify docs/verify_examples/pml_circle.py:circle_loss --framework torch
"""

from pytorch_metric_learning import losses


def circle_loss(embeddings, labels, *, margin, gamma):
  return losses.CircleLoss(m=margin, gamma=gamma)(embeddings, labels)
