"""Circle loss, the unified loss, their special cases and the paper's baselines.

Every loss returns one value per example (per row, anchor or sample); reduce it
yourself. Pair-wise losses give exactly 0 to anchors without a positive or a
negative: average with :func:`valid_anchor_mask`.
"""

from circle_jax.losses._circle import circle_exponents
from circle_jax.losses._circle import circle_loss
from circle_jax.losses._circle import circle_loss_grads
from circle_jax.losses._circle import unified_loss
from circle_jax.losses._class_level import class_circle_loss
from circle_jax.losses._numerics import cosine_similarity_matrix
from circle_jax.losses._numerics import masked_logsumexp
from circle_jax.losses._pair_baselines import batch_all_triplet_loss
from circle_jax.losses._pair_baselines import batch_hard_triplet_loss
from circle_jax.losses._pair_baselines import contrastive_loss
from circle_jax.losses._pair_baselines import lifted_structure_loss
from circle_jax.losses._pair_baselines import multi_similarity_loss
from circle_jax.losses._pair_baselines import npair_loss
from circle_jax.losses._pairwise import pair_masks
from circle_jax.losses._pairwise import pairwise_circle_loss
from circle_jax.losses._pairwise import valid_anchor_mask
from circle_jax.losses._proxy_baselines import am_softmax_loss
from circle_jax.losses._proxy_baselines import arcface_loss
from circle_jax.losses._proxy_baselines import cosface_loss
from circle_jax.losses._proxy_baselines import normface_loss
from circle_jax.losses._proxy_baselines import softmax_loss
from circle_jax.losses._proxy_baselines import sphereface_loss

__all__ = (
    "am_softmax_loss",
    "arcface_loss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "circle_exponents",
    "circle_loss",
    "circle_loss_grads",
    "class_circle_loss",
    "contrastive_loss",
    "cosface_loss",
    "cosine_similarity_matrix",
    "lifted_structure_loss",
    "masked_logsumexp",
    "multi_similarity_loss",
    "normface_loss",
    "npair_loss",
    "pair_masks",
    "pairwise_circle_loss",
    "softmax_loss",
    "sphereface_loss",
    "unified_loss",
    "valid_anchor_mask",
)
