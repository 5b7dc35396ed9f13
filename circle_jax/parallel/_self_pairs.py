r"""The global batch against itself across devices, with a one-GEMM backward pass.

Each device holds b anchors; their references are the whole global batch
(B = n·b rows), reached by an all-gather or by passing blocks around a ring.
The similarity matrix of the global batch is symmetric, so — as on one device
(`circle_jax.losses._self_pairs`) — the gradient of every loss with respect to
a device's own embeddings, in both of their roles, is

.. math::  \bar X̂_{local} = \big(\bar L ∘ W + (\bar L ∘ V)\big)\, X̂_{global},

with W the weights of the local anchors' pairs (their own statistics, along
rows) and V the weights of the same pairs in the other anchor's sets (that
anchor's statistics, along columns). Only b-sized vectors of statistics travel
in the backward pass, beside the embeddings: no reference gradient is sent back
to its owner (no reduce-scatter of a [B, D] gradient, no return hop of the
ring), and each device spends one GEMM on its gradient instead of two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics
from circle_jax.losses import _self_pairs as S
from circle_jax.losses import _streaming
from circle_jax.parallel import _collectives

Array = jax.Array


def _over_chunks(body, carry, cols, col_base, chunk_size):
  """body(carry, cols_chunk, start) over the column chunks of the pytree `cols`."""
  num_cols = jax.tree.leaves(cols)[0].shape[0]
  size = num_cols if chunk_size is None or chunk_size >= num_cols else chunk_size
  full, rest = num_cols // size, num_cols % size
  take = lambda start, n: jax.tree.map(lambda c: lax.dynamic_slice_in_dim(c, start, n), cols)
  if full == 1 and not rest:
    return body(carry, cols, col_base)
  carry, _ = lax.scan(
      lambda c, i: (body(c, take(i * size, size), col_base + i * size), None),
      carry, jnp.arange(full))
  if rest:
    carry = body(carry, take(full * size, rest), col_base + full * size)
  return carry


def _over_global(body, carry, cols, *, axis_name, ring, chunk_size):
  """body(carry, cols_chunk, global_start) over every device's columns.

  `cols` is this device's pytree of [b, ...] column arrays. ring=False gathers
  them ([B, ...]); ring=True passes them around the ring, n − 1 hops.
  """
  n = lax.axis_size(axis_name)
  index = lax.axis_index(axis_name)
  block = jax.tree.leaves(cols)[0].shape[0]
  if not ring:
    everything = jax.tree.map(lambda c: lax.all_gather(c, axis_name, tiled=True), cols)
    return _over_chunks(body, carry, everything, 0, chunk_size)

  def visit(carry, blk, t):
    owner = (index - t) % n  # whose block this device holds at step t
    return _over_chunks(body, carry, blk, owner * block, chunk_size)

  def step(state, t):
    carry, blk = state
    return (visit(carry, blk, t), lax.ppermute(blk, axis_name, _collectives.ring_perm(n))), None

  (carry, last), _ = lax.scan(step, (carry, cols), jnp.arange(n - 1))
  return visit(carry, last, n - 1)


def _stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring):
  row_base = lax.axis_index(axis_name) * xh.shape[0]

  def body(stats, cols, start):
    col_xh, col_labels = cols
    s = _numerics.scaled_inner_products(xh, col_xh)
    pos, neg = S._pair_masks(labels, col_labels, row_base, start)
    return S.fold(stats, S._exponents(s, pos, margin, gamma, grad_through_alpha), pos, neg)

  axes = _streaming.varying_union(xh, labels, margin, gamma)
  stats = _streaming.vary_all(S.init_stats(xh.shape[0], xh.dtype), axes)
  return _over_global(body, stats, (xh, labels), axis_name=axis_name, ring=ring,
                      chunk_size=chunk_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _global(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring):
  stats = _stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring)
  return S.finish(stats)[0]


def _global_fwd(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring):
  stats = _stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring)
  loss, sigma = S.finish(stats)
  return loss, (xh, labels, margin, gamma, stats, sigma)


def _global_bwd(grad_through_alpha, chunk_size, axis_name, ring, residuals, cotangent):
  xh, labels, margin, gamma, stats, sigma = residuals
  row_base = lax.axis_index(axis_name) * xh.shape[0]
  mine = S.scales(stats, cotangent * sigma)

  def body(carry, cols, start):
    dxh, dm, dg = carry
    col_xh, col_labels, theirs = cols
    s = _numerics.scaled_inner_products(xh, col_xh)
    pos, neg = S._pair_masks(labels, col_labels, row_base, start)
    z = S._exponents(s, pos, margin, gamma, grad_through_alpha)
    rows = S.softmax_weights(z, pos, neg, mine, axis=1)  # pair (a, b) in a's sets
    others = S.softmax_weights(z, pos, neg, S.Scales(*theirs), axis=0)  # (b, a) in b's
    slope = S._slopes(s, pos, margin, gamma, grad_through_alpha)
    dxh = dxh + _numerics.weighted_rows((rows + others) * slope, col_xh)
    # Every device counts the exponents of its own anchors; the sum over
    # devices is the transpose of making γ and m device-varying.
    _, pull = jax.vjp(lambda m, g: S._exponents(s, pos, m, g, grad_through_alpha), margin, gamma)
    m_, g_ = pull(rows)
    return dxh, dm + m_, dg + g_

  carry = (jnp.zeros_like(xh), jnp.zeros_like(margin), jnp.zeros_like(gamma))
  carry = _streaming.vary_all(carry, _streaming.varying_union(residuals, cotangent))
  dxh, dm, dg = _over_global(body, carry, (xh, labels, tuple(mine)), axis_name=axis_name,
                             ring=ring, chunk_size=chunk_size)
  return dxh, None, dm, dg


_global.defvjp(_global_fwd, _global_bwd)


def global_self_loss(x, labels, margin, gamma, *, grad_through_alpha: bool,
                     chunk_size: int | None, axis_name, ring: bool) -> Array:
  """Per-anchor pair-wise Circle loss of this device's anchors against the global batch."""
  args = (S.normalised(x), labels, margin, gamma)
  xh, labels, margin, gamma = _streaming.vary_all(args, _streaming.varying_union(args))
  return _global(xh, labels, margin, gamma, grad_through_alpha, chunk_size, axis_name, ring)
