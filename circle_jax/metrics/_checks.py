"""Argument checks and safe normalisation shared by the metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def normalise(x: jax.Array) -> jax.Array:
  """Rows scaled to unit length; a zero row stays zero (cosine 0 to everything)."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.where(sq > 0, x * jax.lax.rsqrt(safe), 0.0)


def as_embeddings(x, arg: str, name: str) -> jax.Array:
  """[N, D] float array with N ≥ 1, or a ValueError naming ``arg``."""
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"{name}: {arg} must be [N, D] with N ≥ 1, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def as_int_vector(y, arg: str, n: int, name: str) -> jax.Array:
  """[n] integer array, or a ValueError/TypeError naming ``arg``."""
  y = jnp.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"{name}: {arg} must have shape [{n}], got {y.shape}")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"{name}: {arg} must be integers, got dtype {y.dtype}")
  return y


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
