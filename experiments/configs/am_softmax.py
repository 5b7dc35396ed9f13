r"""AM-Softmax / CosFace, γ = 64, m = 0.35 (the paper's baseline), on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/am_softmax.py --workdir /tmp/am_softmax

Runtime and Recall@K on 2 CPU cores: the table of "Losses compared on the bundled digits"
(docs/guides/training.md).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "am_softmax"
  config.loss.gamma = 64.0
  config.loss.margin = 0.35
  return config
