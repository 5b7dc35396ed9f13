r"""The Modified Hausdorff Distance between drawings: Omniglot's own one-shot baseline.

For two point sets A and B (the ink pixels of two drawings, each centred on
its mean, as in Lake et al.'s demo):

.. math::  d(A, B) = \max\Big(\frac1{|A|}\sum_{a\in A}\min_{b\in B}\lVert a-b\rVert,\;
                             \frac1{|B|}\sum_{b\in B}\min_{a\in A}\lVert a-b\rVert\Big)

(Dubuisson and Jain, 1994). Computed exactly, blockwise in JAX, from boolean
ink masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def ink_points(ink: np.ndarray, *, centre: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """bool [N, H, W] masks → (points [N, P, 2] float32, valid [N, P] bool), P = the most ink.

  Points are (row, column) of every True pixel, centred on their mean when
  ``centre``; rows past an image's count are padding (``valid`` False).

  Example:
    >>> m = np.zeros((1, 3, 3), bool); m[0, 0, 0] = m[0, 2, 2] = True
    >>> p, v = ink_points(m)
    >>> p[0].tolist(), v.tolist()
    ([[-1.0, -1.0], [1.0, 1.0]], [[True, True]])
  """
  ink = np.asarray(ink, bool)
  if ink.ndim != 3:
    raise ValueError(f"ink_points: ink must be [N, H, W] bool, got shape {ink.shape}")
  counts = ink.reshape(len(ink), -1).sum(1)
  if len(ink) and counts.min() == 0:
    raise ValueError(f"ink_points: drawing {int(np.argmin(counts))} has no ink pixel")
  p = int(counts.max()) if len(ink) else 0
  points = np.zeros((len(ink), p, 2), np.float32)
  valid = np.zeros((len(ink), p), bool)
  for i, m in enumerate(ink):
    rc = np.argwhere(m).astype(np.float64)
    if centre:
      rc -= rc.mean(0)
    points[i, :len(rc)], valid[i, :len(rc)] = rc, True
  return points, valid


_FAR = 1e4  # where padding points sit: never the nearest point of a real drawing


@jax.jit
def _directed(pa, va, pb):
  """[A, B] mean over a's points of the distance to the nearest point of b.

  ``pa`` [A, P, 2] with ``va`` [A, P] marking real points; ``pb`` [B, Q, 2]
  with padding points at ``_FAR``. One reduction over Q, so XLA fuses it
  without materialising the [A, B, P, Q] distances.
  """
  dr = pa[:, None, :, None, 0] - pb[None, :, None, :, 0]
  dc = pa[:, None, :, None, 1] - pb[None, :, None, :, 1]
  nearest = jnp.sqrt(jnp.min(dr * dr + dc * dc, axis=3))           # [A, B, P]
  return jnp.where(va[:, None, :], nearest, 0.0).sum(2) / va.sum(1)[:, None]


def _bucket(n: int) -> int:
  """The padded point count for ``n`` points: 64, 128, …, 256, then steps of about ×1.5.

  Few sizes, so few block shapes are compiled, at most a third of a block padding.
  """
  size = 64
  while size < n:
    size = size + 64 if size < 256 else size // 128 * 64 + size
  return size


def modified_hausdorff_distances(ink_a: np.ndarray, ink_b: np.ndarray | None = None, *,
                                 centre: bool = True, max_elements: int = 2 ** 26) -> np.ndarray:
  """[Na, Nb] Modified Hausdorff Distances between the drawings of ``ink_a`` and ``ink_b``.

  Args:
    ink_a: bool [Na, H, W]: True where a drawing has ink (each needs one pixel).
    ink_b: bool [Nb, H', W'] (``None``: ``ink_a`` against itself).
    centre: centre each drawing's points on their mean first (Lake et al.'s
      baseline does; translation then costs nothing).
    max_elements: the most point-pair distances one block computes.

  Returns:
    float64 [Na, Nb], in pixels; symmetric with a zero diagonal when ``ink_b``
    is ``None``.

  Example:
    >>> a = np.zeros((2, 5, 5), bool); a[0, 1, 1:4] = True; a[1, 1:4, 2] = True
    >>> d = modified_hausdorff_distances(a)
    >>> float(d[0, 0]), round(float(d[0, 1]), 4)
    (0.0, 0.6667)
  """
  a = ink_points(ink_a, centre=centre)
  if ink_b is None:
    d = _directed_all(a, a, max_elements)
    return np.maximum(d, d.T)
  b = ink_points(ink_b, centre=centre)
  return np.maximum(_directed_all(a, b, max_elements), _directed_all(b, a, max_elements).T)


def _directed_all(a, b, max_elements: int) -> np.ndarray:
  """[Na, Nb] directed mean nearest-point distances, blockwise.

  Drawings are visited in order of ink count and each block is padded to its
  own largest count (:func:`_bucket`), in blocks of a power-of-two number of
  drawings, so few shapes are compiled and padding costs little.
  """
  (points_a, valid_a), (points_b, valid_b) = a, b
  na, nb = len(points_a), len(points_b)
  out = np.zeros((na, nb), np.float64)
  if not na or not nb:
    return out
  far_b = np.where(valid_b[..., None], points_b, np.float32(_FAR))
  count_a, count_b = valid_a.sum(1), valid_b.sum(1)
  order_a, order_b = np.argsort(count_a, kind="stable"), np.argsort(count_b, kind="stable")
  mean_pq = _bucket(int(count_a.mean())) * _bucket(int(count_b.mean()))
  side = 2 ** int(np.log2(np.clip(np.sqrt(max_elements / mean_pq), 1, 4096)))
  side_a, side_b = min(side, na), min(side, nb)
  for i in range(0, na, side_a):
    ia = order_a[i:i + side_a]
    p = _bucket(int(count_a[ia].max()))
    pa, va = _rows(points_a[ia, :p], side_a, p, 0.0), _rows(valid_a[ia, :p], side_a, p, False)
    for j in range(0, nb, side_b):
      jb = order_b[j:j + side_b]
      q = _bucket(int(count_b[jb].max()))
      block = _directed(pa, va, _rows(far_b[jb, :q], side_b, q, _FAR))
      out[np.ix_(ia, jb)] = np.asarray(block, np.float64)[:len(ia), :len(jb)]
  return out


def _rows(x: np.ndarray, n: int, p: int, fill) -> np.ndarray:
  """``x`` [m, ≤p, …] padded with ``fill`` to [n, p, …] (padding rows get one real point)."""
  out = np.full((n, p) + x.shape[2:], fill, x.dtype)
  out[:x.shape[0], :x.shape[1]] = x
  if x.dtype == bool:
    out[x.shape[0]:] = False
    out[x.shape[0]:, 0] = True  # a padding drawing: one point, so no division by zero
  return out
