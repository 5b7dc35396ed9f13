"""Numerical building blocks shared by every loss.

Masked log-sum-exp (dense, and the running state the streamed losses fold), safe L2 normalisation, cosine similarity
matrices and the compute-dtype rule. Everything here is written so that masked
entries and empty rows give finite values *and* finite (zero) gradients.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _checks

Array = jax.Array

# Vectors shorter than this are treated as zero vectors (no direction).
_NORM_EPS = 1e-12


def compute_dtype(*dtypes) -> jnp.dtype:
  """The dtype losses compute and accumulate in: at least float32.

  bf16/fp16 inputs are promoted to float32 (sums of exponentials in half precision
  lose the loss entirely at large γ); float64 stays float64.
  """
  return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def as_dtype(dtype, *scalars) -> tuple[Array, ...]:
  """Hyper-parameters in the compute dtype, so a float64 γ (e.g. vmapped under x64)
  does not silently promote a float32 loss."""
  return tuple(jnp.asarray(v, dtype) for v in scalars)


class LSEState(NamedTuple):
  """Running masked log-sum-exp over a row: lse = max + log(sum).

  `max` is the largest *valid* entry seen so far (−inf while none has been seen),
  `sum` is Σ exp(x − max) over valid entries. Merging chunks rescales `sum`, so a
  row can be reduced in any number of column chunks with the same result.
  """

  max: Array
  sum: Array


def lse_init(shape: Sequence[int], dtype) -> LSEState:
  return LSEState(
      max=jnp.full(shape, -jnp.inf, dtype), sum=jnp.zeros(shape, dtype)
  )


def lse_update(state: LSEState, x: Array, mask: Array) -> LSEState:
  """Folds the entries x[..., j] with mask[..., j] True into `state` (last axis)."""
  chunk_max = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, initial=-jnp.inf)
  new_max = lax.stop_gradient(jnp.maximum(state.max, chunk_max))
  # A row with nothing valid yet keeps max = −inf; shift by 0 there so no
  # (−inf) − (−inf) appears. The shift is a constant for the gradient: the
  # log-sum-exp does not depend on it.
  shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
  # Double where: masked entries are replaced *before* exp, so neither their value
  # nor their gradient can overflow or carry a NaN from the masked input.
  z = jnp.where(mask, x - shift[..., None], 0.0)
  chunk_sum = jnp.sum(jnp.where(mask, jnp.exp(z), 0.0), axis=-1)
  rescale = jnp.exp(lax.stop_gradient(state.max) - shift)
  return LSEState(max=new_max, sum=state.sum * rescale + chunk_sum)


def lse_finalize(state: LSEState) -> tuple[Array, Array]:
  """Returns (lse, nonempty); lse is 0 (with zero gradient) on empty rows."""
  # A valid entry contributes at least exp(0) = 1; `!= 0` (not `> 0`) lets a NaN
  # sum through, so NaN inputs give NaN rather than a silently empty row.
  nonempty = state.sum != 0
  shift = jnp.where(nonempty, state.max, 0.0)
  lse = shift + jnp.log(jnp.where(nonempty, state.sum, 1.0))
  return jnp.where(nonempty, lse, 0.0), nonempty


def masked_logsumexp(x: Array, mask: Array) -> tuple[Array, Array]:
  r"""log Σ_j exp(x[..., j]) over entries with mask True, along the last axis.

  .. math::  \mathrm{LSE}(x) = \max_v x + \log \sum_{j\,\mathrm{valid}} e^{x_j - \max_v x}

  Args:
    x: [..., N] float values (half precision is computed in float32).
    mask: boolean, broadcast with x; True marks valid entries.

  Returns:
    (lse, nonempty), each of shape ``x.shape[:-1]`` (broadcast with the mask's).
    Rows without a valid entry give lse = 0 and nonempty = False, and their
    gradient is exactly zero. The max is taken over valid entries only, so
    valid terms never underflow because of masked ones, and masked entries may
    hold NaN or inf.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import masked_logsumexp
    >>> x = jnp.array([[1000.0, 1.0, 2.0], [jnp.nan, 0.0, 0.0]])
    >>> mask = jnp.array([[False, True, True], [False, False, False]])
    >>> lse, nonempty = masked_logsumexp(x, mask)
    >>> print(np.asarray(lse).round(4), nonempty)
    [2.3133 0.    ] [ True False]

  References:
    The max-over-valid-entries rule fixes pytorch-metric-learning issue #173
    (Circle loss stuck at 0 for γ = 256, m = 0.25).
  """
  x = _checks.float_array("x", x)
  if x.ndim == 0:
    raise ValueError("x must have at least one axis to reduce, got a scalar")
  x, mask = _checks.score_mask("mask", mask, x.astype(compute_dtype(x.dtype)), "x")
  state = lse_init(x.shape[:-1], x.dtype)
  return lse_finalize(lse_update(state, x, mask))


def _guarded(fn, x: Array, floor: float) -> Array:
  """fn(x) where x > floor, else 0 with a zero gradient (double `where`).

  The test is `x <= floor` so that NaN fails it and propagates instead of
  being mistaken for a small value.
  """
  tiny = x <= floor
  return jnp.where(tiny, 0.0, fn(jnp.where(tiny, 1.0, x)))


def safe_sqrt(x: Array, floor: float = 0.0) -> Array:
  """sqrt(x) for x > floor, else 0 — gradient 0 there, not inf or NaN."""
  return _guarded(jnp.sqrt, x, floor)


def _squared_norm(x: Array, axis: int, keepdims: bool) -> Array:
  """‖x‖² in at least float32."""
  dtype = compute_dtype(x.dtype)
  return jnp.sum(jnp.square(x.astype(dtype)), axis=axis, keepdims=keepdims)


def inverse_l2_norm(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
  """1/‖x‖ in at least float32; 0 (with a zero gradient) for ‖x‖ ≤ 1e-12.

  A zero vector has no direction: it gets cosine 0 to everything and no
  gradient, rather than torch's x/1e-12, whose ~1e12-scale gradient overflows
  half precision and wrecks the first optimiser step. NaN propagates.
  """
  return _guarded(lax.rsqrt, _squared_norm(x, axis, keepdims), _NORM_EPS**2)


def l2_norm(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
  """‖x‖ in at least float32; 0 with a zero gradient (not NaN) at x = 0."""
  return safe_sqrt(_squared_norm(x, axis, keepdims), _NORM_EPS**2)


def scaled_inner_products(
    x: Array,
    y: Array,
    x_scale: Array | None = None,
    y_scale: Array | None = None,
) -> Array:
  """x @ yᵀ (float32 accumulation), optionally times per-row / per-column scales.

  With the inverse norms as scales this is the cosine-similarity matrix computed
  without a normalised copy of `y` (which, for class weights, may be C × D large).
  """
  out = _dot("bd,cd->bc", x, y)
  if x_scale is not None:
    out = out * x_scale[:, None]
  if y_scale is not None:
    out = out * y_scale[None, :]
  return out


def weighted_rows(h: Array, y: Array) -> Array:
  """h @ y: [B, N] weights × [N, D] rows → [B, D] (float32 accumulation)."""
  return _dot("bn,nd->bd", h, y)


def weighted_columns(h: Array, y: Array) -> Array:
  """hᵀ @ y: [N, B] weights × [N, D] rows → [B, D], without transposing h."""
  return _dot("nb,nd->bd", h, y)


def rowwise_inner_products(x: Array, y: Array) -> Array:
  """x_b · y_b for each row b: [B, D] × [B, D] → [B] (float32 accumulation)."""
  return _dot("bd,bd->b", x, y)


def _dot(spec: str, x: Array, y: Array) -> Array:
  """einsum in the operands' common dtype, accumulated in the compute dtype.

  bf16 × bf16 stays a bf16 matmul (no float32 copy of a large W) with float32
  accumulation.
  """
  dtype = compute_dtype(x.dtype, y.dtype)
  operand = jnp.promote_types(x.dtype, y.dtype)
  return jnp.einsum(
      spec, x.astype(operand), y.astype(operand), preferred_element_type=dtype
  ).astype(dtype)


def cosine_similarity_matrix(x: Array, y: Array) -> Array:
  """cos(x_b, y_c) for all pairs: [B, D] × [C, D] → [B, C] (zero rows give 0).

  Accumulates in float32 (or float64) and never forms a normalised copy of y.

  Args:
    x: [B, D] float rows; y: [C, D] float rows.

  Returns:
    [B, C] cosine similarities in the compute dtype (at least float32).

  Example:
    >>> import jax.numpy as jnp
    >>> from circle_jax.losses import cosine_similarity_matrix
    >>> cosine_similarity_matrix(jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0], [0.0, 0.0]]))
    Array([[0.6, 0. ]], dtype=float32)
  """
  x = _checks.float_array("x", x, ndim=2)
  y = _checks.float_array("y", y, ndim=2)
  if x.shape[1] != y.shape[1]:
    raise ValueError(
        f"x and y must have the same feature dimension, got shapes {x.shape} and {y.shape}"
    )
  return scaled_inner_products(x, y, inverse_l2_norm(x), inverse_l2_norm(y))
