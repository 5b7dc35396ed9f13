"""Circle losses across devices: call inside ``jax.shard_map`` or ``jax.pmap``.

Each function takes the mapped axis as ``axis_name`` and returns the per-example
losses of the local batch shard, equal to the single-device losses of
:mod:`circle_jax.losses` on the full (concatenated) arrays.
"""

from circle_jax.parallel._class_level import class_circle_loss
from circle_jax.parallel._pairwise import pairwise_circle_loss

__all__ = (
    "class_circle_loss",
    "pairwise_circle_loss",
)
