"""TAR at fixed FAR from a verification ROC, and template features (IJB-B/C 1:1 style)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from circle_jax.metrics._checks import as_bool_vector
from circle_jax.metrics._checks import as_embeddings
from circle_jax.metrics._checks import as_int_vector
from circle_jax.metrics._checks import as_scores
from circle_jax.metrics._checks import normalise


def tar_at_far(scores: ArrayLike, issame: ArrayLike,
               fars: Sequence[float] = (1e-3, 1e-4, 1e-5)) -> dict[float, dict]:
  r"""True accept rate at each false accept rate, read off the exact ROC.

  A pair is accepted when its score is **strictly above** a threshold t:

  .. math::  \mathrm{FAR}(t) = \frac{|\{n: s_n > t\}|}{N_-},\quad
             \mathrm{TAR}(t) = \frac{|\{p: s_p > t\}|}{N_+},\qquad
             \mathrm{TAR@FAR}(f) = \max_t\{\mathrm{TAR}(t) : \mathrm{FAR}(t) \le f\}

  The maximiser is the lowest threshold that lets at most ⌊f·N₋⌋ negatives
  through: the (⌊f·N₋⌋ + 1)-th highest negative score (−∞ when f·N₋ ≥ N₋).
  No interpolation between ROC points; ties among negatives can only lower the
  achieved FAR, never raise it above f. A FAR below 1/N₋ is still defined
  (no false accept allowed) but says little: report it only when N₋ ≫ 1/f.

  Args:
    scores: [N] finite similarities of the template or image pairs; NaN or inf
      raise a ValueError giving their number and first index.
    issame: [N] bools; needs at least one positive and one negative.
    fars: target false accept rates in (0, 1].

  Returns:
    ``{far: {"tar": float, "threshold": float, "far": achieved FAR}}``.

  Example:
    >>> s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    >>> r = tar_at_far(s, [1, 1, 0, 1, 0, 0], fars=(0.34, 0.0))
    >>> r[0.34]["tar"], r[0.34]["far"], r[0.0]["tar"]
    (1.0, 0.3333333333333333, 0.6666666666666666)

  References:
    Maze et al., "IARPA Janus Benchmark-C", ICB 2018; Sun et al., CVPR 2020, Table 2.
  """
  s = as_scores(scores, "scores", "tar_at_far")
  same = as_bool_vector(issame, "issame", s.size, "tar_at_far")
  pos, neg = s[same], np.sort(s[~same])[::-1]
  if pos.size == 0 or neg.size == 0:
    raise ValueError(f"tar_at_far: need positive and negative pairs, got {pos.size} positive "
                     f"and {neg.size} negative")
  fars = (fars,) if isinstance(fars, (int, float)) else tuple(fars)
  out = {}
  for f in fars:
    if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not 0 <= f <= 1:
      raise ValueError(f"tar_at_far: every far must be a number in [0, 1], got {f!r}")
    allowed = int(np.floor(f * neg.size + 1e-9))   # the epsilon absorbs f·N₋ rounding (1e-3·1000)
    t = -np.inf if allowed >= neg.size else float(neg[allowed])
    out[f] = {"tar": float(np.mean(pos > t)), "threshold": t, "far": float(np.mean(neg > t))}
  return out


def template_embeddings(embeddings: ArrayLike, template_ids: ArrayLike,
                        media_ids: ArrayLike) -> tuple[np.ndarray, jax.Array]:
  r"""One unit vector per template: media-averaged, then summed, then normalised.

  The IJB-B/C 1:1 convention: images of the same media (video frames, or one
  still) are averaged, so a long video does not outweigh a photo; the media
  means of a template are summed and the sum L2-normalised:

  .. math::  t_T = \mathrm{normalise}\Big(\sum_{m \in T}\ \operatorname{mean}_{i\in m} x_i\Big)

  Args:
    embeddings: [N, D] finite image features (e.g. flip-fused); NaN or inf
      raise a ValueError giving the number of such rows and the first one.
    template_ids: [N] int template of each image (any width; int64 ids ≥ 2³¹
      are kept exactly, as numpy ids, never truncated to int32).
    media_ids: [N] int media of each image (unique within a template or globally).

  Returns:
    ``(templates, features)``: the sorted distinct template ids [T] (numpy,
    the dtype of ``template_ids``) and [T, D] unit-norm features, row t for
    ``templates[t]``.

  Called under ``jax.jit`` with traced embeddings (the ids must be concrete),
  the values cannot be checked: a template holding a NaN or inf then gets a
  zero feature (cosine 0 to everything) instead of an error.

  Example:
    >>> x = np.array([[1., 0.], [3., 0.], [0., 1.]])
    >>> t, f = template_embeddings(x, [7, 7, 7], [0, 0, 1])   # mean(x0, x1) + x2
    >>> t.tolist(), np.asarray(f, np.float64).round(4).tolist()
    ([7], [[0.8944, 0.4472]])
  """
  name = "template_embeddings"
  x = as_embeddings(embeddings, "embeddings", name)
  n = x.shape[0]
  tid = as_int_vector(template_ids, "template_ids", n, name)   # numpy, full width
  mid = as_int_vector(media_ids, "media_ids", n, name)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  templates, t_index = np.unique(tid, return_inverse=True)
  _, tm_index = np.unique(np.stack([t_index, mid], axis=1), axis=0, return_inverse=True)
  tm_index = tm_index.reshape(-1)
  num_tm = int(tm_index.max()) + 1
  sums = jax.ops.segment_sum(x, tm_index, num_segments=num_tm)
  counts = jax.ops.segment_sum(jnp.ones((n,), x.dtype), tm_index, num_segments=num_tm)
  media_means = sums / counts[:, None]
  tm_template = np.zeros(num_tm, np.int64)
  tm_template[tm_index] = t_index
  feats = jax.ops.segment_sum(media_means, tm_template, num_segments=len(templates))
  return templates, normalise(feats)


def template_pair_scores(templates: ArrayLike, features: ArrayLike, pairs_a: ArrayLike,
                         pairs_b: ArrayLike) -> np.ndarray:
  """Cosine scores of template pairs given by template id.

  Args:
    templates: [T] template ids, as returned by :func:`template_embeddings`.
    features: [T, D] their features (NaN or inf raise a ValueError).
    pairs_a: [P] template ids of the first member of each pair.
    pairs_b: [P] template ids of the second member.

  Returns:
    [P] float64 cosine similarities.

  Raises:
    ValueError: a pair names a template that has no images.

  Example:
    >>> t, f = np.array([3, 5]), np.array([[1., 0.], [0.6, 0.8]])
    >>> template_pair_scores(t, f, [3, 3], [5, 3]).round(3).tolist()
    [0.6, 1.0]
  """
  name = "template_pair_scores"
  templates = np.asarray(templates)
  f = normalise(as_embeddings(features, "features", name).astype(jnp.float32))
  if templates.shape != (f.shape[0],):
    raise ValueError(f"{name}: templates must be [T] = [{f.shape[0]}], got {templates.shape}")
  order = np.argsort(templates)
  sorted_t = templates[order]

  def rows(ids, arg):
    ids = np.asarray(ids)
    pos = np.clip(np.searchsorted(sorted_t, ids), 0, len(sorted_t) - 1)
    missing = ids[sorted_t[pos] != ids]
    if missing.size:
      raise ValueError(f"{name}: {arg} names templates with no images: {missing[:5].tolist()}")
    return order[pos]

  a, b = rows(pairs_a, "pairs_a"), rows(pairs_b, "pairs_b")
  return np.asarray(jnp.sum(f[a] * f[b], axis=1), np.float64)
