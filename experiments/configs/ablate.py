r"""An ablation as one program: Circle loss (class-level) over γ and m, on the bundled digits.

The setup of ``experiments/configs/circle_class.py`` (itself the class-disjoint digits
setup with class-level Circle loss); eight members: γ ∈ {32, 64, 128, 256, 512,
1024} at m = 0.25, and m ∈ {0, 0.1} at γ = 256. All eight train as one
program, then one after another for the timing comparison.

Command, from the repository root:

  python -m experiments.ablate --config experiments/configs/ablate.py --workdir /tmp/ablate

Override the grid, e.g. ``--config.ablation.mode=product
--config.ablation.losses=circle_class,am_softmax
--config.ablation.grad_through_alpha=False,True``; how the program runs the
members: ``--config.ablation.members=vmap`` (or ``unroll``, ``map``; default
``auto``). Runtime and result: the
"Ablations and the paper's figures" guide (docs/guides/ablations.md).
"""

import ml_collections

from experiments.configs import circle_class
from experiments.configs import class_disjoint


def get_config() -> ml_collections.ConfigDict:
  config = circle_class.get_config()
  config.ablation = ablation_section()
  return config


def ablation_section() -> ml_collections.ConfigDict:
  """The ``config.ablation`` fields with this file's grid (other configs reuse it)."""
  ablation = class_disjoint.ablation_section()
  ablation.gammas = (32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
  ablation.margins = (0.0, 0.1, 0.25)
  return ablation
