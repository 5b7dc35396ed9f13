r"""AM-Softmax / CosFace, γ = 64, m = 0.35 (the paper's baseline), on the bundled digits.

The default setup (experiments/configs/default.py) with only the loss changed.
Command, from the repository root:

  python -m experiments.main --config experiments/configs/am_softmax.py --workdir /tmp/am_softmax

Runtime and Recall@K on 2 CPU cores: the README's "Training" table.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "am_softmax"
  config.loss.gamma = 64.0
  config.loss.margin = 0.35
  return config
