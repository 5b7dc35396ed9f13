r"""NormFace (softmax cross-entropy on scaled cosine logits, γ = 32), on the bundled digits.

The class-disjoint digits setup (experiments/configs/class_disjoint.py) with only
the loss changed: the softmax baseline of the paper's Table 2–4, on normalised
features and class proxies as every other class-level loss here.

Command, from the repository root:

  python -m experiments.main --config experiments/configs/normface.py --workdir /tmp/normface

``experiments.compare_losses --protocol=omniglot`` trains this loss on Omniglot
(the loss section alone; the setup is experiments/configs/omniglot.py's).
"""

import ml_collections

from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = class_disjoint.get_config()
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "normface"
  config.loss.gamma = 32.0
  return config
