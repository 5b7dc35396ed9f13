"""Evaluation metrics: retrieval, one-shot classification, re-ID, face verification (blockwise where N × N would not fit).

Pure jax/numpy on arrays of embeddings and labels; no file I/O.
"""

from circle_jax.metrics._hausdorff import modified_hausdorff_distances
from circle_jax.metrics._one_shot import one_shot_error
from circle_jax.metrics._recall import recall_at_k
from circle_jax.metrics._recall import recall_at_k_of_scores
from circle_jax.metrics._reid import cmc_map
from circle_jax.metrics._roc import tar_at_far
from circle_jax.metrics._roc import template_embeddings
from circle_jax.metrics._roc import template_pair_scores
from circle_jax.metrics._verification import best_threshold
from circle_jax.metrics._verification import pair_scores
from circle_jax.metrics._verification import verification_accuracy

__all__ = (
    "best_threshold",
    "cmc_map",
    "modified_hausdorff_distances",
    "one_shot_error",
    "pair_scores",
    "recall_at_k",
    "recall_at_k_of_scores",
    "tar_at_far",
    "template_embeddings",
    "template_pair_scores",
    "verification_accuracy",
)
