"""Recall@K for class-disjoint retrieval (CUB / Cars196 / SOP protocol)."""

from __future__ import annotations

import functools
import operator
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from circle_jax.metrics._checks import check_finite
from circle_jax.metrics._checks import dense_ids
from circle_jax.metrics._checks import normalise as _normalise


@functools.partial(jax.jit, static_argnames=("ks",))
def _block_hits(query, query_labels, query_index, gallery, gallery_labels, ks):
  """Hits [b, len(ks)] of one row block of queries against the whole gallery."""
  s = query @ gallery.T                                            # [b, N]
  n = gallery.shape[0]
  not_self = query_index[:, None] != jnp.arange(n)[None, :]
  same = query_labels[:, None] == gallery_labels[None, :]
  positive = same & not_self
  negative = ~same
  best_positive = jnp.max(jnp.where(positive, s, -jnp.inf), axis=1)  # [b]
  # Pessimistic ties: a negative scoring exactly as high as the best positive
  # is ranked ahead of it, so the result never depends on the gallery order.
  ahead = jnp.sum(negative & (s >= best_positive[:, None]), axis=1)  # [b]
  has_positive = jnp.any(positive, axis=1)
  ks_arr = jnp.asarray(ks)
  return has_positive[:, None] & (ahead[:, None] < ks_arr[None, :])


def recall_at_k(
    embeddings: ArrayLike,
    labels: ArrayLike,
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    block_size: int = 1024,
) -> dict[int, float]:
  r"""Recall@K with each query left out of its own gallery, by cosine similarity.

  Every item is a query against all other items (the fine-grained retrieval
  protocol of CUB-200-2011, Cars196 and Stanford Online Products):

  .. math::  R@K = \frac1N \sum_{q=1}^{N}
             \mathbb{1}\big[\exists\, g \ne q:\ y_g = y_q,\ \operatorname{rank}_q(g) \le K\big]

  with items ranked by cosine similarity (embeddings are L2-normalised here;
  a zero vector stays zero, with cosine 0 to everything). Embeddings holding
  NaN or inf are rejected, not scored: normalised, they would pass for zero or
  plausible unit vectors and give an inflated recall.

  Choices:

  * **Ties** are pessimistic: the rank of the best positive counts every
    negative whose similarity is greater than *or equal to* it. The result does
    not depend on the order of the gallery and never overstates recall.
  * **A query with no other item of its class** counts as a miss and stays in
    the denominator N, as in the standard protocol (every test image is a
    query).
  * Memory: queries are processed ``block_size`` rows at a time, so at most a
    ``[block_size, N]`` similarity block exists; no sort is needed (the rank of
    the best positive is a count).

  Args:
    embeddings: [N, D] float features (N ≥ 2).
    labels: [N] integer class ids, any width (int64 ids ≥ 2³¹ are compared
      exactly: they are remapped to dense ids on the host, never truncated).
    ks: positive integers, each ≤ N − 1 (the gallery size of a query).
    block_size: query rows per block, > 0.

  Returns:
    ``{k: recall}`` with recall a Python float in [0, 1], for each k in ``ks``.

  Raises:
    ValueError: on wrong ranks, mismatched lengths, ``ks`` / ``block_size`` out
      of range, or NaN/inf in ``embeddings`` (the message gives the number of
      such rows and the first one).
    TypeError: on non-integer labels or a k that is not an int.

  This is a host-side function (numpy around jitted blocks): call it on
  concrete arrays, not under ``jax.jit``.

  Example:
    >>> import numpy as np
    >>> x = np.array([[1., 0.], [0.9, 0.1], [0., 1.], [0.1, 0.9]])
    >>> recall_at_k(x, np.array([0, 0, 1, 1]), ks=(1, 2))
    {1: 1.0, 2: 1.0}
    >>> recall_at_k(x, np.array([0, 1, 0, 1]), ks=(1, 2, 3))
    {1: 0.0, 2: 0.5, 3: 1.0}

  References:
    Oh Song et al., "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016 (the protocol); Sun et al., CVPR 2020, Table 4.
  """
  x = jnp.asarray(embeddings)
  y = np.asarray(labels)  # numpy: jnp.asarray would truncate int64 ids to int32
  if x.ndim != 2:
    raise ValueError(f"recall_at_k: embeddings must be [N, D], got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise ValueError(
        f"recall_at_k: labels must be [N] with N = {x.shape[0]} (embeddings "
        f"{x.shape}), got shape {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise TypeError(f"recall_at_k: labels must be integers, got dtype {y.dtype}")
  n = x.shape[0]
  if n < 2:
    raise ValueError(f"recall_at_k: need N ≥ 2 items (each query needs a gallery), got N = {n}")
  if isinstance(ks, (int, np.integer)):
    ks = (ks,)
  ks = tuple(ks)
  if not ks:
    raise ValueError("recall_at_k: ks is empty")
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
      raise TypeError(f"recall_at_k: every k must be an int, got {k!r} in ks={ks}")
    if not 1 <= k <= n - 1:
      raise ValueError(
          f"recall_at_k: every k must be in [1, N − 1] = [1, {n - 1}] (a query's "
          f"gallery has N − 1 items), got k = {k}")
  if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
    raise ValueError(f"recall_at_k: block_size must be a positive int, got {block_size!r}")
  ks = tuple(int(operator.index(k)) for k in ks)
  check_finite(embeddings, x, "embeddings", "recall_at_k")
  (y,) = dense_ids(y)  # only equality matters; any int64 ids fit in int32 afterwards
  y = jnp.asarray(y)

  x = _normalise(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
  hits = np.zeros(len(ks), np.int64)
  for start in range(0, n, block_size):
    stop = min(start + block_size, n)
    block = _block_hits(x[start:stop], y[start:stop], jnp.arange(start, stop), x, y, ks)
    hits += np.asarray(block).sum(axis=0)
  return {k: float(h) / n for k, h in zip(ks, hits)}


def recall_at_k_of_scores(scores: ArrayLike, labels: ArrayLike,
                          ks: Sequence[int] = (1, 2, 4, 8)) -> dict[int, float]:
  """:func:`recall_at_k` from a precomputed [N, N] score matrix (larger = closer).

  For retrieval by a measure that is not a cosine of embeddings, e.g. minus
  the Modified Hausdorff Distance between drawings. The protocol is
  :func:`recall_at_k`'s: each query left out of its gallery (the diagonal is
  ignored), ties pessimistic, a query without another item of its class a miss.

  Args:
    scores: [N, N] finite floats; ``scores[q, g]`` scores gallery item g for query q.
    labels: [N] integer class ids.
    ks: positive ints ≤ N − 1.

  Example:
    >>> d = np.array([[0., 3., 1.], [3., 0., 2.], [1., 2., 0.]])
    >>> recall_at_k_of_scores(-d, np.array([0, 0, 1]), ks=(1, 2))  # item 2 has no positive
    {1: 0.0, 2: 0.6666666666666666}
  """
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels)
  n = len(y)
  if s.shape != (n, n) or y.ndim != 1:
    raise ValueError(f"recall_at_k_of_scores: scores must be [N, N] and labels [N], got "
                     f"{s.shape} and {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise TypeError(f"recall_at_k_of_scores: labels must be integers, got dtype {y.dtype}")
  if not np.isfinite(s).all():
    raise ValueError(f"recall_at_k_of_scores: {int((~np.isfinite(s)).sum())} scores are NaN or inf")
  ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
  if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n
                   for k in ks):
    raise ValueError(f"recall_at_k_of_scores: every k must be an int in [1, {n - 1}], got {ks}")
  off = ~np.eye(n, dtype=bool)
  same = (y[:, None] == y[None, :]) & off
  best = np.where(same, s, -np.inf).max(1)                    # [N] the best positive
  rank = ((s >= best[:, None]) & off & ~same).sum(1) + 1      # ties count against it
  hit = np.isfinite(best)
  return {int(k): float(np.mean(hit & (rank <= k))) for k in ks}
