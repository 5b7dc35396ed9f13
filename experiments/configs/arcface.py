r"""ArcFace, γ = 64, m = 0.5 (the paper's baseline), on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/arcface.py --workdir /tmp/arcface

Runtime and Recall@K on 2 CPU cores: the table of "Losses compared on the bundled digits"
(docs/guides/training.md).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "arcface"
  config.loss.gamma = 64.0
  config.loss.margin = 0.5
  return config
