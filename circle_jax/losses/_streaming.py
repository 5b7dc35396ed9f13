"""Column-streamed masked log-sum-exps whose backward pass recomputes each chunk.

Every loss that needs `chunk_size` reduces rows of a [rows × columns] logit
matrix (pairs, classes) with log-sum-exps. Here the columns are produced chunk by
chunk by a `block_fn` and folded into running log-sum-exps, and a `custom_vjp`
gives the gradient without keeping anything of the forward pass but the inputs
and the per-row log-sum-exps: the backward pass recomputes each chunk's logits,
turns the incoming cotangent into the chunk's softmax weights
∂LSE/∂z = g · exp(z − LSE), and pulls them back through the chunk
(`jax.vjp`), accumulating the row cotangents in a carry and writing each chunk's
column cotangents in place. Only O(rows · chunk_size) is live at any time, and
nothing of the column operands (class weights) is copied, padded or cast.

The pieces are exposed separately (`fold_columns`, `columns_vjp`) so the
cross-device ring in `circle_jax.parallel` can run them per ring step.

`block_fn(rows, cols, consts, start)` receives the row operands, the column
operands sliced to the chunk, the constants and the chunk's first column index
(`col_base` plus the local offset; may be traced) and returns a list of
(logits, mask) pairs, each [num_rows, chunk], one per log-sum-exp stream. It
must close over no traced values (pass them in `consts`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics

Array = jax.Array
BlockFn = Callable[[Any, Any, Any, Array], Sequence[tuple[Array, Array]]]


def is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def float_leaves(tree) -> list:
  """The floating leaves of `tree`, with None in place of the others."""
  return [l if is_float(l) else None for l in jax.tree.leaves(tree)]


def _with_floats(tree, floats: list):
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(
      treedef, [l if f is None else f for l, f in zip(leaves, floats)]
  )


def _vma(x) -> frozenset:
  """The mesh axes over which x varies inside shard_map (empty elsewhere)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "mat", None)  # jax ≥ 0.10: ManualAxisType; earlier: .vma
  return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _vary(x, axes: frozenset):
  """x marked as varying over `axes` (under shard_map), so that scan carries,
  their initial values and the chunk results all have one type."""
  missing = tuple(sorted(axes - _vma(x)))
  return lax.pcast(x, missing, to="varying") if missing else x


def varying_union(*trees) -> frozenset:
  return frozenset().union(*(_vma(l) for l in jax.tree.leaves(trees)))


def vary_all(tree, axes: frozenset):
  return jax.tree.map(lambda l: _vary(l, axes), tree)


def column_count(cols) -> int:
  return jax.tree.leaves(cols)[0].shape[0]


def _chunks(num_cols: int, chunk_size: int | None) -> tuple[int, int, int]:
  """(size, number of full chunks, remainder); chunk_size None is one chunk."""
  if chunk_size is None or chunk_size >= num_cols:
    return num_cols, 1, 0
  return chunk_size, num_cols // chunk_size, num_cols % chunk_size


def _slice(cols, start, size):
  return jax.tree.map(lambda c: lax.dynamic_slice_in_dim(c, start, size), cols)


def fold_columns(
    block_fn: BlockFn,
    states: list[_numerics.LSEState],
    rows,
    cols,
    consts,
    col_base,
    chunk_size: int | None,
) -> list[_numerics.LSEState]:
  """Folds every column chunk of `cols` into the running log-sum-exps `states`.

  Forward only (not differentiated: the custom_vjp below owns the gradient), so
  the scan keeps no per-chunk residuals.
  """
  num_cols = column_count(cols)

  def fold(states, start, size):
    pairs = block_fn(rows, _slice(cols, start, size), consts, col_base + start)
    return [_numerics.lse_update(s, z, m) for s, (z, m) in zip(states, pairs)]

  size, num_full, remainder = _chunks(num_cols, chunk_size)
  if num_full == 1 and not remainder:
    return fold(states, 0, size)
  states = vary_all(states, varying_union(rows, cols, consts))
  states, _ = lax.scan(
      lambda carry, i: (fold(carry, i * size, size), None), states, jnp.arange(num_full)
  )
  if remainder:
    states = fold(states, num_full * size, remainder)
  return states


def _chunk_vjp(block_fn, rows, cols_chunk, consts, start, maxes, cotangents):
  """Float cotangents (rows, cols_chunk, consts) of Σ_streams g·sum on one chunk.

  `sum` is the running-LSE sum Σ_j exp(z_j − max) with the final `max` held
  constant, so ∂sum/∂z_j = exp(z_j − max): exactly the dense softmax weights
  once the caller's log divides by sum, without the rounding of a ~γ-sized
  LSE value (exp(z − LSE) loses |z|·eps relative accuracy at γ = 256).
  """

  def logits(rows_f, cols_f, consts_f):
    pairs = block_fn(
        _with_floats(rows, rows_f),
        _with_floats(cols_chunk, cols_f),
        _with_floats(consts, consts_f),
        start,
    )
    return [z for z, _ in pairs], [m for _, m in pairs]

  zs, pullback, masks = jax.vjp(
      logits,
      float_leaves(rows),
      float_leaves(cols_chunk),
      float_leaves(consts),
      has_aux=True,
  )
  # Double where: masked entries (which may hold inf or NaN) give exactly 0.
  # The shift matches lse_update's (0 on rows with nothing valid).
  dzs = []
  for z, m, top, g in zip(zs, masks, maxes, cotangents):
    shift = jnp.where(jnp.isfinite(top), top, 0.0)[:, None]
    dzs.append(jnp.where(m, g[:, None] * jnp.exp(jnp.where(m, z - shift, 0.0)), 0.0))
  return pullback(dzs)


def zeros_like_floats(floats: list) -> list:
  return [None if f is None else jnp.zeros_like(f) for f in floats]


def add_floats(a: list, b: list) -> list:
  return [None if x is None else x + y for x, y in zip(a, b)]


def columns_vjp(
    block_fn: BlockFn,
    rows,
    cols,
    consts,
    col_base,
    chunk_size: int | None,
    maxes: Sequence[Array],
    cotangents: Sequence[Array],
) -> tuple[list, list, list]:
  """Cotangents of Σ_streams Σ_rows g·sum (running-LSE sums, `maxes` held
  constant) w.r.t. the float leaves of rows, cols and consts.

  Recomputes one chunk at a time. Row and constant cotangents accumulate in the
  scan carry; column cotangents are written into a [num_cols, ...] buffer with
  in-place updates (no stacked copy, no concatenation of a remainder chunk).
  Returns lists of leaves aligned with `jax.tree.leaves(...)`, None for
  non-float leaves.
  """
  num_cols = column_count(cols)
  size, num_full, remainder = _chunks(num_cols, chunk_size)
  grad = functools.partial(_chunk_vjp, block_fn, rows)

  if num_full == 1 and not remainder:
    return grad(cols, consts, col_base, maxes, cotangents)

  axes = varying_union(rows, cols, consts, maxes, cotangents)
  d_rows = vary_all(zeros_like_floats(float_leaves(rows)), axes)
  d_cols = vary_all(zeros_like_floats(float_leaves(cols)), axes)
  d_consts = vary_all(zeros_like_floats(float_leaves(consts)), axes)

  def step(carry, start, size):
    d_rows, d_cols, d_consts = carry
    dr, dc, dk = grad(_slice(cols, start, size), consts, col_base + start, maxes, cotangents)
    d_cols = [
        None if full is None else lax.dynamic_update_slice_in_dim(full, part, start, 0)
        for full, part in zip(d_cols, dc)
    ]
    return add_floats(d_rows, dr), d_cols, add_floats(d_consts, dk)

  carry, _ = lax.scan(
      lambda carry, i: (step(carry, i * size, size), None),
      (d_rows, d_cols, d_consts),
      jnp.arange(num_full),
  )
  if remainder:
    carry = step(carry, num_full * size, remainder)
  return carry


def none_for_non_float(tree, floats: list):
  """A cotangent tree for `tree`: the float cotangents, None for integer leaves."""
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(
      treedef, [f if is_float(l) else None for l, f in zip(leaves, floats)]
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _streamed_lse(block_fn, num_streams, chunk_size, rows, cols, consts, col_base):
  return _streamed_lse_fwd(block_fn, num_streams, chunk_size, rows, cols, consts, col_base)[0]


def initial_states(rows, num_streams, dtype):
  num_rows = jax.tree.leaves(rows)[0].shape[0]
  return [_numerics.lse_init((num_rows,), dtype) for _ in range(num_streams)]


def _streamed_lse_fwd(block_fn, num_streams, chunk_size, rows, cols, consts, col_base):
  dtype = _numerics.compute_dtype(*[l.dtype for l in jax.tree.leaves((rows, cols)) if is_float(l)])
  states = fold_columns(
      block_fn, initial_states(rows, num_streams, dtype), rows, cols, consts,
      col_base, chunk_size,
  )
  return states, (rows, cols, consts, col_base, [s.max for s in states])


def _streamed_lse_bwd(block_fn, num_streams, chunk_size, residuals, cotangents):
  rows, cols, consts, col_base, maxes = residuals
  # `max` is a shift the log-sum-exp does not depend on: its cotangent is dropped.
  gs = [c.sum for c in cotangents]
  d_rows, d_cols, d_consts = columns_vjp(
      block_fn, rows, cols, consts, col_base, chunk_size, maxes, gs
  )
  return (
      none_for_non_float(rows, d_rows),
      none_for_non_float(cols, d_cols),
      none_for_non_float(consts, d_consts),
      None,
  )


_streamed_lse.defvjp(_streamed_lse_fwd, _streamed_lse_bwd)


def streamed_lse(
    block_fn: BlockFn,
    rows,
    cols,
    consts,
    *,
    num_streams: int,
    chunk_size: int | None,
    col_base=0,
    finalize: bool = True,
) -> list:
  """Masked log-sum-exps over all columns, streamed, with a recomputing backward.

  Args:
    block_fn: see the module docstring.
    rows: pytree of arrays with leading axis num_rows (e.g. anchors, labels).
    cols: pytree of arrays with leading axis num_cols, sliced per chunk.
    consts: pytree of arrays passed whole to every chunk (γ, m, offsets).
    num_streams: how many (logits, mask) pairs block_fn returns.
    chunk_size: columns per chunk; None for one chunk. A last partial chunk
      covers num_cols % chunk_size.
    col_base: index of the first column, added to the chunk offsets.
    finalize: return (lse, nonempty) pairs; False returns the running
      `LSEState`s (max, sum) instead, for merging across devices (`max` is a
      constant for the gradient, which flows through `sum`).

  Returns:
    [(lse, nonempty)] per stream, each [num_rows]; empty rows give lse = 0
    (and zero gradient). Gradients flow to every floating leaf of rows, cols and
    consts; integer leaves get none.
  """
  axes = varying_union(rows, cols, consts)
  # One varying type for everything inside the custom_vjp: the transposes of
  # these casts (psums of the cotangents) then happen once, outside it, not per chunk.
  rows, cols, consts = vary_all((rows, cols, consts), axes)
  states = _streamed_lse(block_fn, num_streams, chunk_size, rows, cols, consts, col_base)
  return [_numerics.lse_finalize(s) for s in states] if finalize else states
