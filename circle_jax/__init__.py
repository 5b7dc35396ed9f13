"""circle_jax: Circle loss (Sun et al., CVPR 2020) and its relatives in JAX.

The losses live in :mod:`circle_jax.losses` and are re-exported here;
:mod:`circle_jax.metrics` and :mod:`circle_jax.parallel` are attributes too
(``cj.metrics.recall_at_k``, ``cj.parallel.class_circle_loss``).
"""

import importlib

from circle_jax import losses
from circle_jax.losses import *  # noqa: F401,F403  (the explicit list is losses.__all__)

__version__ = "0.1.0"

# Loaded on first attribute access (PEP 562) rather than here, so that
# `import circle_jax` costs only the losses; both need nothing beyond jax and
# numpy, so accessing them never pulls in flax, TensorFlow or torch.
_LAZY_SUBMODULES = ("metrics", "parallel")

__all__ = ("losses", "__version__") + _LAZY_SUBMODULES + losses.__all__


def __getattr__(name):
  if name in _LAZY_SUBMODULES:
    # import_module binds the submodule as an attribute of this package, so
    # later accesses no longer reach __getattr__.
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_LAZY_SUBMODULES))
