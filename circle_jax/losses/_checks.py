"""Argument checks that run at trace time and name the offending argument.

Shapes and dtypes are static, so they are always checked. Values (labels in
range, γ > 0) are checked only when they are concrete — outside `jit`, or as
Python constants closed over by it; a traced value cannot raise, and the loss
documents what it does with it instead.

Labels are checked before conversion, since with x64 disabled `jnp.asarray`
silently truncates int64 ids to int32. Note that `jax.jit` does the same to
an int64 numpy argument at its boundary, before any check here can see it:
remap ids to 0..K-1 in the input pipeline.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def concrete_value(x) -> np.ndarray | None:
  """x as a numpy array when it is known at trace time, else None."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _array(name: str, x, kind, kind_name: str, hint: str = "") -> Array:
  """x as a jax array whose dtype is a sub-dtype of `kind`."""
  try:
    x = jnp.asarray(x)
  except TypeError as e:
    raise TypeError(f"{name} must be an array, got {type(x).__name__}") from e
  if not jnp.issubdtype(x.dtype, kind):
    raise TypeError(
        f"{name} must have {kind_name} dtype, got {x.dtype} (shape {x.shape}){hint}"
    )
  return x


def float_array(name: str, x, ndim: int | None = None) -> Array:
  """Converts x to a floating jax array of rank `ndim` (if given)."""
  x = _array(name, x, jnp.floating, "a floating")
  if ndim is not None and x.ndim != ndim:
    raise ValueError(
        f"{name} must have rank {ndim}, got shape {x.shape} (rank {x.ndim})"
    )
  return x


def embedding_matrix(name: str, x, dim: int | None = None) -> Array:
  """A non-empty [N, D] float matrix, with D == dim when given."""
  x = float_array(name, x, ndim=2)
  if x.shape[0] == 0:
    raise ValueError(f"{name} is empty: shape {x.shape} has no rows")
  if x.shape[1] == 0:
    raise ValueError(f"{name} has zero feature dimension: shape {x.shape}")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(
        f"{name} has feature dimension {x.shape[1]} (shape {x.shape}) but the "
        f"embeddings have {dim}"
    )
  return all_finite(name, x)


def all_finite(name: str, x: Array, mask: Array | None = None) -> Array:
  """Raises if x (where mask is True) holds NaN or inf, when x is concrete.

  The reduction runs on x's device and only one boolean comes back, so eager
  calls on large class-weight matrices stay cheap. Under `jit` values are
  unknown: a NaN input then gives NaN losses, as arithmetic does.
  """
  if isinstance(x, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    return x
  try:
    bad = int(_count_nonfinite(x, mask))
  except jax.errors.ConcretizationTypeError:
    return x  # a constant inside a trace: its check would be staged, not run
  if bad:
    raise ValueError(f"{name} contains {bad} NaN or infinite value(s) (shape {x.shape})")
  return x


@jax.jit
def _count_nonfinite(x, mask):
  bad = ~jnp.isfinite(x)
  return jnp.sum(bad if mask is None else bad & mask)


def integer_labels(
    name: str, labels, size: int | None = None, num_classes: int | None = None
) -> Array:
  """A rank-1 ([size]) integer label vector; with num_classes, in [0, C) if concrete.

  Concrete labels are checked before they become a jax array: with x64 disabled
  ``jnp.asarray`` truncates int64 to int32 without a warning (ids 0 and 2**32
  would merge), so int64 ids outside int32's range raise instead — out of
  [0, C) for class-level losses, and with a hint to remap them densely for
  pair-wise ones. A jax array (or a tracer) is already in its final dtype.
  """
  try:
    value = None if isinstance(labels, jax.Array) and num_classes is None else (
        concrete_value(labels))
  except (TypeError, ValueError):  # not array-like: _array below says so
    value = None
  if value is not None and value.size and np.issubdtype(value.dtype, np.integer):
    low, high = int(value.min()), int(value.max())
    if num_classes is not None and (low < 0 or high >= num_classes):
      raise ValueError(
          f"{name} must lie in [0, {num_classes}) for {num_classes} classes, "
          f"got values in [{low}, {high}]"
      )
    target = jax.dtypes.canonicalize_dtype(value.dtype)
    info = np.iinfo(target)
    if low < info.min or high > info.max:
      raise ValueError(
          f"{name} holds ids in [{low}, {high}], outside the range of {target}, "
          f"to which JAX converts {value.dtype} with x64 disabled (distinct ids "
          f"would be truncated into equal ones); remap them to 0..K-1 first, e.g. "
          f"np.unique({name}, return_inverse=True)[1]"
      )
  labels = _array(
      name, labels, jnp.integer, "an integer",
      "; cast class ids with .astype(jnp.int32)",
  )
  if size is None and labels.ndim != 1:
    raise ValueError(f"{name} must have rank 1, got shape {labels.shape}")
  if size is not None and labels.shape != (size,):
    raise ValueError(
        f"{name} must have shape ({size},) to match the embeddings, got "
        f"{labels.shape}"
    )
  return labels


def hyperparameter(
    name: str, value, *, positive: bool = False, nonnegative: bool = False
) -> Array | float:
  """A scalar hyper-parameter: finite (and > 0 / ≥ 0) when concrete.

  Traced scalars (e.g. γ under `vmap` over hyper-parameters) pass through unchecked.
  """
  if isinstance(value, bool) or not (
      isinstance(value, numbers.Real) or hasattr(value, "dtype")
  ):
    raise TypeError(f"{name} must be a real scalar, got {value!r}")
  shape = np.shape(value)
  if shape != ():
    raise ValueError(f"{name} must be a scalar, got shape {shape}")
  concrete = concrete_value(value)
  if concrete is not None:
    v = float(concrete)
    if not np.isfinite(v):
      raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
      raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
      raise ValueError(f"{name} must be >= 0, got {v}")
  return value


def score_mask(name: str, mask, scores: Array, scores_name: str) -> tuple[Array, Array]:
  """(scores, mask) broadcast together; the mask is all True when None.

  The mask may add leading (batch) axes — one shared set of scores masked
  differently per row — but not change the set axis.
  """
  if mask is None:
    return scores, jnp.ones(scores.shape, bool)
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(
        f"{name} must be a boolean array marking valid {scores_name} entries, "
        f"got dtype {mask.dtype}"
    )
  try:
    shape = jnp.broadcast_shapes(scores.shape, mask.shape)
  except ValueError:
    shape = None
  if shape is None or shape[-1] != scores.shape[-1]:
    raise ValueError(
        f"{name} has shape {mask.shape}, which does not broadcast to "
        f"{scores_name}'s shape {scores.shape}"
    )
  return jnp.broadcast_to(scores, shape), jnp.broadcast_to(mask, shape)


def flag(name: str, value) -> bool:
  """A Python bool option (it selects the computation, so it cannot be traced)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a Python bool, got {value!r}")
  return bool(value)


def chunk_size_arg(chunk_size) -> int | None:
  if chunk_size is None:
    return None
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
    raise TypeError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  return int(chunk_size)


def one_of(name: str, value, choices) -> str:
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
  return value
