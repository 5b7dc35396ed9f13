"""CMC rank-k and mAP for person re-identification (Market-1501 / MSMT17 protocol)."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from circle_jax.metrics._checks import as_embeddings
from circle_jax.metrics._checks import as_int_vector
from circle_jax.metrics._checks import check_block_size
from circle_jax.metrics._checks import dense_ids
from circle_jax.metrics._checks import normalise


@functools.partial(jax.jit, static_argnames=("max_rank",))
def _block_cmc_ap(q, q_pid, q_cam, g, g_pid, g_cam, max_rank):
  """Per-query CMC [b, max_rank], AP [b] and has-positive [b] of one query block."""
  s = q @ g.T                                                          # [b, G]
  same_pid = q_pid[:, None] == g_pid[None, :]
  # Junk: the query's own identity seen by the same camera (the same tracklet,
  # trivially matched) and gallery items of negative pid (Market-1501's "-1").
  junk = (same_pid & (q_cam[:, None] == g_cam[None, :])) | (g_pid[None, :] < 0)
  positive = same_pid & ~junk
  # Sort by (junk last, similarity descending, negatives before positives on
  # ties): ties are resolved against the query, so the result never depends on
  # the gallery's order; junk items land after every valid one and hold no
  # positive, so ranks among the valid items are exact.
  key_junk = junk.astype(jnp.int32)
  key_score = jnp.where(junk, 0.0, -s)
  key_tie = positive.astype(jnp.int32)
  _, _, _, raw = jax.lax.sort((key_junk, key_score, key_tie, positive.astype(jnp.float32)),
                              dimension=1, num_keys=3)
  hits = jnp.cumsum(raw, axis=1)                                       # [b, G]
  num_pos = hits[:, -1]
  ranks = jnp.arange(1, raw.shape[1] + 1, dtype=jnp.float32)
  ap = jnp.sum(raw * hits / ranks, axis=1) / jnp.maximum(num_pos, 1.0)
  cmc = hits[:, :max_rank] > 0
  if max_rank > raw.shape[1]:  # a rank past the gallery: CMC stays at its last value
    cmc = jnp.concatenate([cmc, jnp.repeat(cmc[:, -1:], max_rank - raw.shape[1], axis=1)], axis=1)
  return cmc, ap, num_pos > 0


def cmc_map(
    query_embeddings: ArrayLike,
    query_pids: ArrayLike,
    query_cams: ArrayLike,
    gallery_embeddings: ArrayLike,
    gallery_pids: ArrayLike,
    gallery_cams: ArrayLike,
    ranks: Sequence[int] = (1, 5, 10),
    *,
    block_size: int = 256,
) -> dict:
  r"""CMC rank-k accuracy and mean average precision, Market-1501 style.

  For each query the gallery is ranked by cosine similarity (embeddings are
  L2-normalised here). Gallery items with the query's identity **and** camera
  are removed (junk), as are gallery items with a negative pid; distractors
  (pid 0 in Market-1501) stay as negatives. With ``raw_k`` = 1 when the item at
  rank k (among the remaining ones) has the query's identity:

  .. math::
     \mathrm{CMC}(k) = \operatorname{mean}_q \mathbb 1\Big[\sum_{i\le k}\mathrm{raw}_i > 0\Big],
     \qquad
     \mathrm{AP}_q = \frac{1}{\sum_i \mathrm{raw}_i}\sum_k \mathrm{raw}_k\,
                     \frac{\sum_{i\le k}\mathrm{raw}_i}{k},
     \qquad \mathrm{mAP} = \operatorname{mean}_q \mathrm{AP}_q

  Choices:

  * **Queries with no positive** left in the gallery are skipped (left out of
    both averages); ``num_queries`` counts the ones that were used.
  * **AP** is the non-interpolated mean of precision at each positive (as in
    torchreid / fast-reid), not the trapezoid of the original Market-1501
    MATLAB code, which differs by < 1e-3 on real data.
  * **Ties** are resolved against the query: a negative scoring exactly as high
    as a positive is ranked ahead of it (results never depend on gallery order).
  * Memory: ``block_size`` queries at a time, each block sorting a
    ``[block_size, G]`` row set; never a ``[Q, G]`` matrix.

  Args:
    query_embeddings: [Q, D] float.
    query_pids: [Q] int identities (any width: int64 ids ≥ 2³¹ are compared
      exactly, remapped to dense ids on the host, never truncated).
    query_cams: [Q] int camera ids (likewise).
    gallery_embeddings: [G, D] float.
    gallery_pids: [G] int identities (negative = junk, ignored).
    gallery_cams: [G] int camera ids.
    ranks: positive ints, the CMC ranks to report.
    block_size: queries per block, > 0.

  Returns:
    ``{"cmc": {k: float}, "map": float, "num_queries": int}``; CMC and mAP in
    [0, 1] (NaN with a warning-free ``num_queries == 0`` if no query has a positive).

  Raises:
    ValueError: wrong ranks/shapes, or NaN/inf in either embedding matrix
      (with the number of such rows and the first one), naming the argument.
      Non-finite rows are rejected rather than scored: normalised, they would
      pass for zero or plausible unit vectors.
    TypeError: wrong dtypes (non-integer ids, non-boolean masks), naming the
      argument.

  This is a host-side function (numpy around jitted blocks): call it on
  concrete arrays, not under ``jax.jit``.

  Example:
    >>> import numpy as np
    >>> q = np.array([[1., 0.]]); g = np.array([[1., 0.], [.9, .1], [0., 1.], [.5, .5]])
    >>> r = cmc_map(q, [1], [0], g, [1, 2, 1, 1], [0, 1, 1, 2], ranks=(1, 2))
    >>> r["cmc"], round(r["map"], 4), r["num_queries"]   # same-camera item 0 removed
    ({1: 0.0, 2: 1.0}, 0.5833, 1)

  References:
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015;
    Sun et al., CVPR 2020, Table 3.
  """
  name = "cmc_map"
  q = as_embeddings(query_embeddings, "query_embeddings", name)
  g = as_embeddings(gallery_embeddings, "gallery_embeddings", name)
  if q.shape[1] != g.shape[1]:
    raise ValueError(f"{name}: query_embeddings {q.shape} and gallery_embeddings {g.shape} "
                     "have different feature dimensions")
  q_pid = as_int_vector(query_pids, "query_pids", q.shape[0], name)
  q_cam = as_int_vector(query_cams, "query_cams", q.shape[0], name)
  g_pid = as_int_vector(gallery_pids, "gallery_pids", g.shape[0], name)
  g_cam = as_int_vector(gallery_cams, "gallery_cams", g.shape[0], name)
  ranks = _check_ranks(ranks, name)
  check_block_size(block_size, name)
  # Ids go to the device as dense int32 ranks (pids and cameras separately,
  # query and gallery jointly; negative pids stay negative, i.e. junk).
  q_pid, g_pid = map(jnp.asarray, dense_ids(q_pid, g_pid))
  q_cam, g_cam = map(jnp.asarray, dense_ids(q_cam, g_cam))
  max_rank = max(ranks)
  dtype = jnp.promote_types(q.dtype, jnp.float32)
  qn, gn = normalise(q.astype(dtype)), normalise(g.astype(dtype))
  cmc_sum = np.zeros(max_rank, np.float64)
  ap_sum, count = 0.0, 0
  for start in range(0, q.shape[0], block_size):
    stop = min(start + block_size, q.shape[0])
    cmc, ap, valid = _block_cmc_ap(qn[start:stop], q_pid[start:stop], q_cam[start:stop],
                                   gn, g_pid, g_cam, max_rank)
    valid = np.asarray(valid)
    cmc_sum += np.asarray(cmc)[valid].sum(axis=0)
    ap_sum += float(np.asarray(ap, np.float64)[valid].sum())
    count += int(valid.sum())
  denom = count if count else np.nan
  return {"cmc": {k: float(cmc_sum[k - 1] / denom) for k in ranks},
          "map": float(ap_sum / denom), "num_queries": count}


def _check_ranks(ranks, name: str) -> tuple[int, ...]:
  if isinstance(ranks, (int, np.integer)):
    ranks = (ranks,)
  ranks = tuple(ranks)
  if not ranks:
    raise ValueError(f"{name}: ranks is empty")
  for k in ranks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"{name}: every rank must be a positive int, got {k!r} in ranks={ranks}")
  return tuple(int(k) for k in ranks)
