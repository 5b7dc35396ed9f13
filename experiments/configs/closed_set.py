r"""Circle loss, pair-wise labels, on the bundled MNIST digits: closed-set retrieval.

The class-disjoint setup (experiments/configs/class_disjoint.py) with the
split by image instead of by class: half the images of every digit 0–9 train
the model, and the other half (2,500 images) are retrieved, each query left
out of its own gallery. Here the test classes are the training classes, so what
the model learns transfers directly; with the class-disjoint split, five
training classes are too few for the embedding to beat raw pixels on five new
ones (docs/guides/training.md).

Command, from the repository root:

  python -m experiments.main --config experiments/configs/closed_set.py --workdir /tmp/circle_closed_set

P = 10 is every class; the learning rate is three times the class-disjoint
config's, which fits more in the same short run. The digits demo
(digits.py) is this config at 150 steps instead of 300; ``apply`` is what
``experiments.compare_losses --protocol=closed_set`` gives every loss.

Runtime and Recall@K on 2 CPU cores: the "Closed-set retrieval" section
of docs/guides/training.md.
"""

import ml_collections

from experiments.configs import class_disjoint


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with this protocol's split, batches and schedule; its loss and model unchanged."""
  config.num_steps = 300
  config.checkpoint_every = 100
  config.data.split = "by_image"
  config.data.train_classes = tuple(range(10))
  config.data.test_classes = tuple(range(10))
  config.batch.classes_per_batch = 10
  config.batch.images_per_class = 8
  config.optimizer.learning_rate = 3e-3
  return config


def get_config() -> ml_collections.ConfigDict:
  return apply(class_disjoint.get_config())
