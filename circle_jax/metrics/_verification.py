"""Face verification: k-fold accuracy with a learnt threshold (LFW / CFP-FP / AgeDB-30)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from circle_jax.metrics._checks import as_bool_vector
from circle_jax.metrics._checks import as_embeddings
from circle_jax.metrics._checks import as_scores
from circle_jax.metrics._checks import normalise


def pair_scores(embeddings: ArrayLike) -> np.ndarray:
  """Cosine similarity of consecutive rows: pair i is rows (2i, 2i+1).

  The layout of the verification ``.bin`` files (two images per pair, in order).

  Args:
    embeddings: [2N, D] float, finite.

  Returns:
    [N] float64 cosine similarities (a zero row has cosine 0 to everything).

  Raises:
    ValueError: an odd number of rows, or NaN/inf in ``embeddings`` (with the
      number of such rows and the first one) — never scored as zero vectors.

  Example:
    >>> pair_scores(np.array([[1., 0.], [2., 0.], [1., 0.], [0., 3.]])).tolist()
    [1.0, 0.0]
  """
  x = as_embeddings(embeddings, "embeddings", "pair_scores")
  if x.shape[0] % 2:
    raise ValueError(f"pair_scores: embeddings must have an even number of rows (pairs), "
                     f"got {x.shape[0]}")
  x = normalise(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
  return np.asarray(jnp.sum(x[0::2] * x[1::2], axis=1), np.float64)


def best_threshold(scores: ArrayLike, issame: ArrayLike) -> tuple[float, float]:
  r"""The threshold t maximising the accuracy of "same iff score > t", and that accuracy.

  Exact, not on a grid: the candidates are −∞ (accept all), the midpoints
  between consecutive distinct scores, and the largest score (reject all); the
  smallest maximiser is returned. O(N log N).

  Args:
    scores: [N] finite similarities (higher = more alike); NaN or inf raise a
      ValueError giving their number and first index.
    issame: [N] bools.

  Returns:
    ``(threshold, accuracy)``.

  Example:
    >>> best_threshold([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    (0.55, 1.0)
  """
  s = as_scores(scores, "scores", "best_threshold")
  same = as_bool_vector(issame, "issame", s.shape[0], "best_threshold")
  order = np.argsort(s, kind="stable")
  s, same = s[order], same[order]
  distinct = np.flatnonzero(np.diff(s) > 0)        # last index of each run of equal scores
  # Rejecting the first i items (all scores ≤ t): correct = rejected negatives + accepted positives.
  cut = np.concatenate([[0], distinct + 1, [len(s)]])
  neg_below = np.concatenate([[0], np.cumsum(~same)])[cut]
  pos_above = same.sum() - np.concatenate([[0], np.cumsum(same)])[cut]
  correct = neg_below + pos_above
  i = int(np.argmax(correct))
  if i == 0:
    t = -np.inf
  elif i == len(cut) - 1:
    t = float(s[-1])
  else:
    t = float((s[cut[i] - 1] + s[cut[i]]) / 2)
  return t, float(correct[i] / len(s))


def verification_accuracy(scores: ArrayLike, issame: ArrayLike, *, num_folds: int = 10) -> dict:
  r"""k-fold verification accuracy: each fold's threshold is learnt on the other folds.

  The LFW protocol (and CFP-FP / AgeDB-30 as distributed by insightface): the
  pairs are split, in order, into ``num_folds`` contiguous folds; for fold f
  the threshold maximising the accuracy of "same iff score > t" on the other
  folds (:func:`best_threshold`) is applied to fold f:

  .. math::  \mathrm{acc}_f = \frac{1}{|F_f|}\sum_{i\in F_f}
             \mathbb 1\big[(s_i > t_{-f}) = \mathrm{same}_i\big],
             \qquad \text{report } \operatorname{mean}_f \mathrm{acc}_f \pm \operatorname{std}_f

  Fold sizes differ by at most one when N is not a multiple of k (the first
  N mod k folds get the extra pair, as scikit-learn's ``KFold``). The
  threshold is exact (between two observed scores), not from a grid, so it can
  only match or beat a grid search on the training folds.

  Args:
    scores: [N] finite pair similarities, e.g. :func:`pair_scores` of flip-fused
      embeddings; NaN or inf raise a ValueError giving their number and first index.
    issame: [N] bools (or 0/1).
    num_folds: k ≥ 2, ≤ N.

  Returns:
    ``{"accuracy": mean, "std": population std over folds, "fold_accuracies":
    [k], "thresholds": [k]}``.

  Example:
    >>> s = np.array([.9, .8, .7, .2, .1, .6, .95, .3, .4, .05])
    >>> y = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0], bool)
    >>> verification_accuracy(s, y, num_folds=5)["accuracy"]
    1.0

  References:
    Huang et al., "Labeled Faces in the Wild", 2007 (the protocol);
    Sun et al., CVPR 2020, Table 2.
  """
  s = as_scores(scores, "scores", "verification_accuracy")
  same = as_bool_vector(issame, "issame", s.shape[0], "verification_accuracy")
  if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or not (
      2 <= num_folds <= s.size):
    raise ValueError(f"verification_accuracy: num_folds must be an int in [2, N = {s.size}], "
                     f"got {num_folds!r}")
  folds = np.array_split(np.arange(s.size), num_folds)
  accs, thresholds = [], []
  for test in folds:
    train = np.setdiff1d(np.arange(s.size), test, assume_unique=True)
    t, _ = best_threshold(s[train], same[train])
    accs.append(float(np.mean((s[test] > t) == same[test])))
    thresholds.append(t)
  return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)),
          "fold_accuracies": accs, "thresholds": thresholds}
