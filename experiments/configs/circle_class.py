r"""Circle, class-level labels (proxies), γ = 256, m = 0.25 (paper's face setting), on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/circle_class.py --workdir /tmp/circle_class

Runtime and Recall@K on 2 CPU cores: the table of "Losses compared on the bundled digits"
(docs/guides/training.md).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "circle_class"
  config.loss.gamma = 256.0
  config.loss.margin = 0.25
  return config
