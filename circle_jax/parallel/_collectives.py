"""Collectives shared by the cross-device losses: axis checks, the distributed
log-sum-exp, and the ring pass of column blocks (`ppermute`) with its own
backward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics
from circle_jax.losses import _streaming

Array = jax.Array


def axis_size(axis_name) -> int:
  """The number of devices along `axis_name`; a clear error outside shard_map/pmap."""
  if axis_name is None:
    raise ValueError(
        "axis_name must name the mapped mesh axis (as given to jax.shard_map or "
        "jax.pmap), got None; for one device use circle_jax.losses instead"
    )
  try:
    return lax.axis_size(axis_name)
  except NameError as e:
    raise ValueError(
        f"axis_name {axis_name!r} is not a mapped axis here: call this loss inside "
        f"jax.shard_map (or jax.pmap) over that axis ({e})"
    ) from e


def distributed_lse(state: _numerics.LSEState, axis_name) -> tuple[Array, Array]:
  """Merges per-device running log-sum-exps (max_d, sum_d) of the same rows.

  .. math::  \\mathrm{LSE} = M + \\log \\sum_{d} \\mathrm{sum}_d\\, e^{\\max_d - M},\\quad
             M = \\max_d\\, \\max_d \\ (\\text{over devices})

  Only [rows] values cross devices (one pmax, one psum). The maxima are
  constants for the gradient (the result does not depend on them), which is
  also why a `pmax` can be used: it has no differentiation rule. Merging the
  (max, sum) pairs rather than per-device LSE values keeps the gradient's
  softmax weights as accurate as the single-device ones.

  Returns:
    (lse, nonempty), as `lse_finalize`.
  """
  local_max = lax.stop_gradient(state.max)
  top = lax.pmax(local_max, axis_name)
  shift = jnp.where(jnp.isfinite(top), top, 0.0)
  # exp(−inf − shift) = 0 for devices with nothing valid in a row.
  total = lax.psum(state.sum * jnp.exp(local_max - shift), axis_name)
  return _numerics.lse_finalize(_numerics.LSEState(max=top, sum=total))


def _ring_perm(n: int) -> list[tuple[int, int]]:
  return [(i, (i + 1) % n) for i in range(n)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _ring_lse(block_fn, num_streams, chunk_size, axis_name, rows, cols, consts):
  return _ring_lse_fwd(block_fn, num_streams, chunk_size, axis_name, rows, cols, consts)[0]


def _ring_lse_fwd(block_fn, num_streams, chunk_size, axis_name, rows, cols, consts):
  n = lax.axis_size(axis_name)
  index = lax.axis_index(axis_name)
  block = _streaming.column_count(cols)
  dtype = _numerics.compute_dtype(
      *[l.dtype for l in jax.tree.leaves((rows, cols)) if _streaming.is_float(l)]
  )
  states = _streaming.vary_all(
      _streaming.initial_states(rows, num_streams, dtype),
      _streaming.varying_union(rows, cols, consts),
  )

  def fold(states, blk, step):
    owner = (index - step) % n  # whose block this device holds at this step
    return _streaming.fold_columns(
        block_fn, states, rows, blk, consts, owner * block, chunk_size
    )

  def step(carry, t):
    states, blk = carry
    states = fold(states, blk, t)
    return (states, lax.ppermute(blk, axis_name, _ring_perm(n))), None

  (states, last), _ = lax.scan(step, (states, cols), jnp.arange(n - 1))
  states = fold(states, last, n - 1)
  return states, (rows, cols, consts, [s.max for s in states])


def _ring_lse_bwd(block_fn, num_streams, chunk_size, axis_name, residuals, cotangents):
  rows, cols, consts, maxes = residuals
  gs = [c.sum for c in cotangents]  # max is a constant shift (see _streaming)
  n = lax.axis_size(axis_name)
  index = lax.axis_index(axis_name)
  block = _streaming.column_count(cols)
  axes = _streaming.varying_union(rows, cols, consts, maxes, gs)
  zeros = lambda tree: _streaming.vary_all(
      _streaming.zeros_like_floats(_streaming.float_leaves(tree)), axes
  )

  def step(carry, t):
    d_rows, d_consts, blk, d_blk = carry
    owner = (index - t) % n
    dr, dc, dk = _streaming.columns_vjp(
        block_fn, rows, blk, consts, owner * block, chunk_size, maxes, gs
    )
    d_rows, d_consts = _streaming.add_floats(d_rows, dr), _streaming.add_floats(d_consts, dk)
    # The block's cotangent travels with the block; after n hops both are home
    # and the cotangent holds every device's contribution.
    blk, d_blk = lax.ppermute(
        (blk, _streaming.add_floats(d_blk, dc)), axis_name, _ring_perm(n)
    )
    return (d_rows, d_consts, blk, d_blk), None

  (d_rows, d_consts, _, d_cols), _ = lax.scan(
      step, (zeros(rows), zeros(consts), cols, zeros(cols)), jnp.arange(n)
  )
  fill = _streaming.none_for_non_float
  return fill(rows, d_rows), fill(cols, d_cols), fill(consts, d_consts)


_ring_lse.defvjp(_ring_lse_fwd, _ring_lse_bwd)


def ring_lse(
    block_fn, rows, cols, consts, *, axis_name, num_streams: int, chunk_size: int | None
):
  """Like `_streaming.streamed_lse` over the columns of *every* device.

  Each device keeps its rows and passes its column block around the ring
  (`ppermute`), folding each visiting block into running log-sum-exps; the
  backward pass runs the ring again, the block's cotangent travelling with the
  block back to its owner. Per-device memory is one block pair
  (rows × block columns, or rows × chunk_size), never rows × all columns.
  block_fn sees global column indices (owner · block + offset).
  """
  axes = _streaming.varying_union(rows, cols, consts)
  rows, cols, consts = _streaming.vary_all((rows, cols, consts), axes)
  states = _ring_lse(block_fn, num_streams, chunk_size, axis_name, rows, cols, consts)
  return [_numerics.lse_finalize(s) for s in states]
