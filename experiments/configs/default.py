r"""The default job: Circle loss on Omniglot, the paper's class-disjoint protocol on real data.

experiments/configs/omniglot.py as it is: a small CNN trains with Circle loss
(pair-wise labels, γ = 80, m = 0.4) on the 136 characters of Omniglot's
``background_small1`` (5 alphabets, bundled with the package) for 300 steps,
then retrieves the 2,120 drawings of three alphabets it never saw (Recall@K)
and classifies Lake et al.'s 20 one-shot runs, each beside raw pixels and the
Modified Hausdorff Distance, two baselines that need no training.

Command, from the repository root:

  python -m experiments.main --config experiments/configs/default.py --workdir /tmp/circle_default

The quick digits demo (closed-set MNIST retrieval, 13 s) is
``--config experiments/configs/digits.py``. Results and runtime: the README's
Training section and docs/guides/omniglot.md.
"""

import ml_collections

from experiments.configs import omniglot


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """omniglot.py's config; ``arg`` as there (``small2``, ``local``)."""
  return omniglot.get_config(arg)
