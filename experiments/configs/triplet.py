r"""Batch-hard triplet loss, margin 0.2 on Euclidean distances, on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/triplet.py --workdir /tmp/triplet

Runtime and Recall@K on 2 CPU cores: the table of "Losses compared on the bundled digits"
(docs/guides/training.md).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "triplet"
  config.loss.margin = 0.2
  return config
