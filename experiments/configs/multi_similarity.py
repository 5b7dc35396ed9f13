r"""Multi-similarity loss (α = 2, β = 50, λ = 0.5, ε = 0.1), on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/multi_similarity.py --workdir /tmp/multi_similarity

Runtime and Recall@K on 2 CPU cores: the table of "Losses compared on the bundled digits"
(docs/guides/training.md).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "multi_similarity"
  config.loss.alpha = 2.0
  config.loss.beta = 50.0
  config.loss.base = 0.5
  config.loss.epsilon = 0.1
  return config
