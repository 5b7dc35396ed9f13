"""circle_jax: Circle loss (Sun et al., CVPR 2020) and its relatives in JAX.

The losses live in :mod:`circle_jax.losses` and are re-exported here.
"""

from circle_jax import losses
from circle_jax.losses import *  # noqa: F401,F403  (the explicit list is losses.__all__)

__version__ = "0.1.0"

__all__ = ("losses", "__version__") + losses.__all__
