"""Argument checks and safe normalisation shared by the metrics.

The metrics are host-side functions (numpy bookkeeping around jitted blocks),
called eagerly on concrete arrays, so every value check can run: non-finite
embeddings or scores raise before anything is computed, and ids stay in numpy
(int64) until they are remapped to dense int32 ids for the device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def normalise(x: jax.Array) -> jax.Array:
  """Rows scaled to unit length; a zero row stays zero (cosine 0 to everything)."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.where(sq > 0, x * jax.lax.rsqrt(safe), 0.0)


def check_finite(raw, x, arg: str, name: str) -> None:
  """Raises a ValueError naming ``arg`` if ``x`` (``raw`` as converted) holds NaN or inf.

  Normalisation would turn a NaN row into a zero vector and an inf entry into a
  plausible unit vector, so the check runs before it. One reduction: on the
  device for a jax array (one bool comes back), in numpy otherwise; the rows are
  located only when it fails. ``x`` is checked rather than only ``raw`` so that
  float64 values beyond float32's range, which turn into inf when converted, are
  caught too. A traced ``x`` (a metric called under ``jit``) cannot be checked
  and passes through: its NaNs reach the result.
  """
  if isinstance(x, jax.core.Tracer):
    return
  if isinstance(x, jax.Array):
    ok = bool(jnp.isfinite(x).all())
  else:
    x = np.asarray(x)
    ok = np.issubdtype(x.dtype, np.integer) or bool(np.isfinite(x).all())
  if ok:
    return
  bad = ~np.isfinite(np.asarray(x, np.float64))
  if bad.ndim > 1:
    bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    unit, where = "rows", "row"
  else:
    unit, where = "entries", "index"
  index = np.flatnonzero(bad)
  overflow = ""
  if not isinstance(raw, jax.Array) and np.isfinite(np.asarray(raw, np.float64)).all():
    overflow = f" after conversion to {x.dtype} (values beyond its range overflow to inf)"
  raise ValueError(
      f"{name}: {arg} has NaN or inf in {index.size} of {bad.size} {unit}{overflow} "
      f"(first: {where} {int(index[0])}); a diverged model or a broken input, not scored")


def as_embeddings(x, arg: str, name: str) -> jax.Array:
  """[N, D] finite float array with N ≥ 1, or a ValueError naming ``arg``."""
  raw, x = x, jnp.asarray(x)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"{name}: {arg} must be [N, D] with N ≥ 1, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  check_finite(raw, x, arg, name)
  return x


def as_scores(s, arg: str, name: str) -> np.ndarray:
  """[N] finite float64 scores with N ≥ 1, or a ValueError naming ``arg``."""
  s = np.asarray(s, np.float64)
  if s.ndim != 1 or s.size == 0:
    raise ValueError(f"{name}: {arg} must be [N] with N ≥ 1, got shape {s.shape}")
  check_finite(s, s, arg, name)
  return s


def as_int_vector(y, arg: str, n: int, name: str) -> np.ndarray:
  """[n] integer numpy array (ids kept at full width), or a ValueError/TypeError naming ``arg``.

  Kept in numpy: ``jnp.asarray`` of int64 ids with x64 disabled truncates them
  to int32 without a warning (ids 0 and 2**32 would merge).
  """
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"{name}: {arg} must have shape [{n}], got {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise TypeError(f"{name}: {arg} must be integers, got dtype {y.dtype}")
  return y


def dense_ids(*ids: np.ndarray) -> list[np.ndarray]:
  """The id arrays remapped jointly to int32 ranks, keeping equality, order and sign.

  Equal ids (across all the arrays) get equal new ids and order is preserved;
  negative ids map to negative ones (−K₋ … −1) and the rest to 0 … K₊−1, so a
  "negative means junk" rule still holds. Any int64 ids are then safe to send
  to the device as int32.
  """
  sizes = np.cumsum([len(y) for y in ids])[:-1]
  uniq, inverse = np.unique(np.concatenate(ids), return_inverse=True)
  dense = (inverse.reshape(-1) - np.searchsorted(uniq, 0)).astype(np.int32)
  return np.split(dense, sizes)


def as_bool_vector(y, arg: str, n: int | None, name: str) -> np.ndarray:
  """[n] boolean numpy array (0/1 integers accepted), or an error naming ``arg``."""
  y = np.asarray(y)
  if y.ndim != 1 or (n is not None and y.shape[0] != n):
    want = f"[{n}]" if n is not None else "[N]"
    raise ValueError(f"{name}: {arg} must have shape {want}, got {y.shape}")
  if y.dtype != bool:
    if not np.issubdtype(y.dtype, np.integer) or not np.isin(y, (0, 1)).all():
      raise TypeError(f"{name}: {arg} must be booleans (or 0/1), got dtype {y.dtype}")
    y = y.astype(bool)
  return y


def check_block_size(block_size, name: str) -> None:
  if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
    raise ValueError(f"{name}: block_size must be a positive int, got {block_size!r}")
