r"""Pair-wise Circle loss of a batch against itself, with a one-GEMM backward pass.

When the batch is its own reference set, the cosine matrix S = X̂X̂ᵀ (X̂ the
L2-normalised rows) and the pair masks are symmetric. Autodiff of S = X̂X̂ᵀ
spends two GEMMs on the embedding gradient, GX̂ + GᵀX̂ with G = ∂L/∂S. One GEMM
suffices, (G + Gᵀ)X̂, but transposing a [B, B] matrix costs XLA's CPU backend
more than the GEMM it saves (1024²: 13.6 ms against 8.2 ms for the GEMM). The
symmetry gives Gᵀ without a transpose: G_ba depends on S_ba = S_ab, on the masks
at (b, a) = (a, b) and on row b's log-sum-exp statistics, so Gᵀ is G's formula
evaluated on S with the per-row statistics broadcast along columns instead of rows.

Per anchor (Eq. 6), with W_ab = ∂L_a/∂S_ab (the softmax weight of pair (a, b) in
its log-sum-exp, times σ(lse_p + lse_n), times the slope of its exponent), a
tangent dX̂ moves S by A + Aᵀ with A = dX̂X̂ᵀ, and

.. math::

  dL_a = \sum_b W_{ab}(A_{ab} + A_{ba}) = \sum_b W_{ab}A_{ab} + \sum_b V_{ba}A_{ba},
  \qquad V_{ij} = W_{ji},

so the reverse pass is :math:`\bar X̂ = (\bar L ∘ W + (\bar L ∘ V)) X̂` with
:math:`(\bar L ∘ W)_{ij} = \bar L_i W_{ij}`, :math:`(\bar L ∘ V)_{ij} = \bar L_j V_{ij}`:
elementwise work and one GEMM. The normalisation's gradient is O(B·D) and left
to autodiff.

* Dense (`dense_self_loss`): a `custom_jvp` whose tangent is written as above,
  so forward mode, reverse mode and higher derivatives all work, each with one GEMM.
* Chunked (`chunked_self_loss`): a `custom_vjp` that streams reference columns
  in blocks (O(B·chunk_size) memory in both passes) and recomputes each block's
  similarities in the backward pass: three GEMMs of B²D in all (forward,
  recompute, backward) instead of four. Reverse mode only, like every chunked loss.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from circle_jax.losses import _circle
from circle_jax.losses import _numerics
from circle_jax.losses import _streaming

Array = jax.Array


class RowStats(NamedTuple):
  """Running log-sum-exp statistics of each anchor's positive and negative sets.

  `max_*` is the largest valid exponent seen (−inf while none), `sum_*` is
  Σ exp(z − max) over the valid ones; see `_numerics.LSEState`.
  """

  max_p: Array
  sum_p: Array
  max_n: Array
  sum_n: Array


def normalised(x: Array) -> Array:
  """Rows of x scaled to unit length (zero rows stay zero), in the compute dtype.

  Half-precision embeddings are normalised in float32 and stay float32: rounding
  the unit vectors back to bf16 would move every cosine by up to 2⁻⁸, which γ =
  256 turns into a loss error of ~0.2 %. The [B, D] copy is small next to S.
  """
  inv = _numerics.inverse_l2_norm(x)
  return x.astype(inv.dtype) * inv[:, None]


def _pair_masks(labels, col_labels, row_start, col_start):
  """(positive, negative) masks of a block; self-pairs (equal global index) are neither."""
  same = labels[:, None] == col_labels[None, :]
  rows = row_start + jnp.arange(labels.shape[0])
  cols = col_start + jnp.arange(col_labels.shape[0])
  return same & (rows[:, None] != cols[None, :]), ~same


def _exponents(s, pos, margin, gamma, grad_through_alpha):
  """Circle's exponent of every pair: the positive one where pos, else the negative one."""
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  return jnp.where(
      pos, _circle.circle_logits(s, positive=True, **kw),
      _circle.circle_logits(s, positive=False, **kw),
  )


def _slopes(s, pos, margin, gamma, grad_through_alpha):
  """d(exponent)/ds of every pair (Eq. 9–10's last factor).

  With α a constant (the paper) it stays one in higher derivatives too, as
  `stop_gradient` makes it in the exponents.
  """
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  slope = lambda positive: _circle.circle_logit_slopes(
      s if grad_through_alpha else lax.stop_gradient(s), positive=positive, **kw)
  return jnp.where(pos, slope(True), slope(False))


def _shift(top: Array) -> Array:
  """The log-sum-exp shift: the running max, or 0 on rows with nothing valid yet."""
  return jnp.where(jnp.isfinite(top), top, 0.0)


def init_stats(num_rows: int, dtype) -> RowStats:
  neg_inf = jnp.full((num_rows,), -jnp.inf, dtype)
  zero = jnp.zeros((num_rows,), dtype)
  return RowStats(neg_inf, zero, neg_inf, zero)


def fold(stats: RowStats, z: Array, pos: Array, neg: Array, axis: int = 1) -> RowStats:
  """Folds a block of exponents z into the running statistics.

  axis 1: z [rows, cols] holds the pairs of `stats`' anchors (one per row);
  axis 0: z [cols, rows] holds them transposed (one anchor per column), which
  by symmetry is how a block above the diagonal serves the anchors of the block
  below it. One exp per pair: each pair is a positive, a negative or neither,
  so it is shifted by its own set's max.
  """
  along = (lambda v: v[:, None]) if axis == 1 else (lambda v: v[None, :])
  top = lambda mask: jnp.max(jnp.where(mask, z, -jnp.inf), axis=axis, initial=-jnp.inf)
  max_p = jnp.maximum(stats.max_p, top(pos))
  max_n = jnp.maximum(stats.max_n, top(neg))
  shift_p, shift_n = _shift(max_p), _shift(max_n)
  valid = pos | neg
  # Double where: masked pairs are replaced before exp (they may hold anything).
  shifted = jnp.where(valid, z - jnp.where(pos, along(shift_p), along(shift_n)), 0.0)
  e = jnp.where(valid, jnp.exp(shifted), 0.0)
  total = lambda mask: jnp.sum(jnp.where(mask, e, 0.0), axis=axis)
  return RowStats(
      max_p=max_p,
      sum_p=stats.sum_p * jnp.exp(stats.max_p - shift_p) + total(pos),
      max_n=max_n,
      sum_n=stats.sum_n * jnp.exp(stats.max_n - shift_n) + total(neg),
  )


def finish(stats: RowStats) -> tuple[Array, Array]:
  """(per-anchor loss, σ(lse_p + lse_n)); both 0 for anchors without a positive or a negative.

  `sum != 0` (not `> 0`) lets a NaN through, as `_numerics.lse_finalize` does.
  """
  ok_p, ok_n = stats.sum_p != 0, stats.sum_n != 0
  valid = ok_p & ok_n
  lse = lambda top, total, ok: _shift(top) + jnp.log(jnp.where(ok, total, 1.0))
  t = jnp.where(valid, lse(stats.max_p, stats.sum_p, ok_p) + lse(stats.max_n, stats.sum_n, ok_n), 0.0)
  return jnp.where(valid, jax.nn.softplus(t), 0.0), jnp.where(valid, jax.nn.sigmoid(t), 0.0)


class Scales(NamedTuple):
  """Per-anchor factors of the weights: shift and cotangent · σ / sum for each set."""

  shift_p: Array
  scale_p: Array
  shift_n: Array
  scale_n: Array


def scales(stats: RowStats, factor: Array) -> Scales:
  """`factor` (σ, or the cotangent times σ) divided by each set's sum, with the shifts."""
  per = lambda total: jnp.where(total != 0, factor / jnp.where(total != 0, total, 1.0), 0.0)
  return Scales(_shift(stats.max_p), per(stats.sum_p), _shift(stats.max_n), per(stats.sum_n))


def softmax_weights(z, pos, neg, sc: Scales, axis: int) -> Array:
  """factor · exp(z − shift) / sum of every pair, with the per-anchor factors taken
  along rows (axis 1: pair (a, b) in anchor a's sets) or along columns (axis 0:
  the same numbers for pair (b, a), by symmetry)."""
  along = (lambda v: v[:, None]) if axis == 1 else (lambda v: v[None, :])
  valid = pos | neg
  shift = jnp.where(pos, along(sc.shift_p), along(sc.shift_n))
  scale = jnp.where(pos, along(sc.scale_p), along(sc.scale_n))
  return jnp.where(valid, scale * jnp.exp(jnp.where(valid, z - shift, 0.0)), 0.0)


def _similarities(a: Array, b: Array) -> Array:
  return _numerics.scaled_inner_products(a, b)


# ----------------------------------------------------------------------------- dense


def _dense_forward(xh, labels, margin, gamma, grad_through_alpha):
  s = _similarities(xh, xh)
  pos, neg = _pair_masks(labels, labels, 0, 0)
  z = _exponents(s, pos, margin, gamma, grad_through_alpha)
  stats = fold(init_stats(xh.shape[0], s.dtype), z, pos, neg)
  loss, sigma = finish(stats)
  return loss, (s, pos, neg, z, stats, sigma)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _dense(xh, labels, margin, gamma, grad_through_alpha):
  return _dense_forward(xh, labels, margin, gamma, grad_through_alpha)[0]


@functools.partial(_dense.defjvp, symbolic_zeros=True)
def _dense_jvp(grad_through_alpha, primals, tangents):
  xh, labels, margin, gamma = primals
  dxh, _, dmargin, dgamma = tangents
  loss, (s, pos, neg, z, stats, sigma) = _dense_forward(
      xh, labels, margin, gamma, grad_through_alpha)
  dloss = jnp.zeros_like(loss)
  if not isinstance(dxh, SymbolicZero):
    # W and V are recomputed from (s, z, statistics) where the reverse pass
    # needs them, fused into H = L̄∘W + L̄∘V, rather than written out by the
    # forward pass and read back: two [B, B] passes fewer.
    @jax.checkpoint
    def weights(s, z, sc, margin, gamma):
      slope = _slopes(s, pos, margin, gamma, grad_through_alpha)
      rows = softmax_weights(z, pos, neg, sc, axis=1) * slope  # W
      cols = softmax_weights(z, pos, neg, sc, axis=0) * slope  # V = Wᵀ, by symmetry
      return rows, cols

    rows, cols = weights(s, z, scales(stats, sigma), margin, gamma)
    a = _similarities(dxh, xh)  # A = dX̂ X̂ᵀ: the only GEMM, in either mode
    dloss = dloss + jnp.sum(rows * a, axis=1) + jnp.sum(cols * a, axis=0)
  if not (isinstance(dmargin, SymbolicZero) and isinstance(dgamma, SymbolicZero)):
    zero = lambda t, p: jnp.zeros_like(p) if isinstance(t, SymbolicZero) else t
    by_hyper = lambda m, g: _dense_reference(s, pos, neg, m, g, grad_through_alpha)
    dloss = dloss + jax.jvp(
        by_hyper, (margin, gamma), (zero(dmargin, margin), zero(dgamma, gamma))
    )[1]
  return loss, dloss


def _dense_reference(s, pos, neg, margin, gamma, grad_through_alpha):
  """Eq. 6 on a similarity matrix by plain autodiff-able code (the γ, m tangents)."""
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  lse_p, ok_p = _numerics.masked_logsumexp(_circle.circle_logits(s, positive=True, **kw), pos)
  lse_n, ok_n = _numerics.masked_logsumexp(_circle.circle_logits(s, positive=False, **kw), neg)
  return _circle.softplus_of_sum(lse_p, ok_p, lse_n, ok_n)


def dense_self_loss(x, labels, margin, gamma, grad_through_alpha: bool) -> Array:
  """Per-anchor pair-wise Circle loss of x against itself, [B] (validated inputs)."""
  return _dense(normalised(x), labels, margin, gamma, grad_through_alpha)


# ----------------------------------------------------------------------------- chunked
#
# The chunked path tiles S into [c, c] blocks (c = chunk_size) and visits each
# block on or above the diagonal once. Block (I, J) serves the anchors of I
# (its rows) and, when I ≠ J, the anchors of J (its columns): S_JI = S_IJᵀ, so
# their statistics come from reductions along axis 0 and no block is transposed.
# Forward: half of S (one half GEMM). Backward: recompute the half (another half
# GEMM), then H_IJ = (G + Gᵀ)_IJ gives dX̂_I += H_IJ X̂_J and dX̂_J += H_IJᵀ X̂_I
# (one GEMM's worth): two B²D GEMMs in all, as many as the dense path.


def _slice(v, block: Array, chunk: int):
  return lax.dynamic_slice_in_dim(v, block * chunk, chunk)


def _put(v, part, block: Array, chunk: int):
  return lax.dynamic_update_slice_in_dim(v, part, block * chunk, 0)


def _tile(xh, labels, num_rows, i, j, chunk, margin, gamma, grad_through_alpha):
  """Rows, columns, similarities, masks and exponents of block (i, j)."""
  a, b = _slice(xh, i, chunk), _slice(xh, j, chunk)
  same = _slice(labels, i, chunk)[:, None] == _slice(labels, j, chunk)[None, :]
  rows = i * chunk + jnp.arange(chunk)
  cols = j * chunk + jnp.arange(chunk)
  # Padding rows (B not a multiple of chunk_size) are in no set.
  real = (rows < num_rows)[:, None] & (cols < num_rows)[None, :]
  pos = same & (rows[:, None] != cols[None, :]) & real
  neg = ~same & real
  s = _similarities(a, b)
  return a, b, s, pos, neg, _exponents(s, pos, margin, gamma, grad_through_alpha)


def _layout(num_rows: int, chunk: int):
  """(number of blocks per side, blocks above the diagonal as (i, j) index arrays)."""
  blocks = -(-num_rows // chunk)
  above = np.triu_indices(blocks, k=1)
  return blocks, (jnp.asarray(above[0], jnp.int32), jnp.asarray(above[1], jnp.int32))


def _padded(xh, labels, chunk):
  pad = -xh.shape[0] % chunk
  if not pad:
    return xh, labels
  return jnp.pad(xh, ((0, pad), (0, 0))), jnp.pad(labels, (0, pad))


def _chunked_stats(xh, labels, num_rows, margin, gamma, grad_through_alpha, chunk) -> RowStats:
  blocks, (upper_i, upper_j) = _layout(num_rows, chunk)
  tile = functools.partial(_tile, xh, labels, num_rows, chunk=chunk, margin=margin,
                           gamma=gamma, grad_through_alpha=grad_through_alpha)
  part = lambda stats, k: RowStats(*(_slice(v, k, chunk) for v in stats))
  put = lambda stats, new, k: RowStats(*(_put(v, p, k, chunk) for v, p in zip(stats, new)))

  def diagonal(stats, i):
    _, _, _, pos, neg, z = tile(i, i)
    return put(stats, fold(part(stats, i), z, pos, neg), i), None

  def upper(stats, ij):
    i, j = ij
    _, _, _, pos, neg, z = tile(i, j)
    stats = put(stats, fold(part(stats, i), z, pos, neg, axis=1), i)
    return put(stats, fold(part(stats, j), z, pos, neg, axis=0), j), None

  # Under shard_map the carries must vary over the same mesh axes as the blocks.
  axes = _streaming.varying_union(xh, labels, margin, gamma)
  stats = _streaming.vary_all(init_stats(xh.shape[0], xh.dtype), axes)
  stats, _ = lax.scan(diagonal, stats, jnp.arange(blocks))
  if blocks > 1:
    stats, _ = lax.scan(upper, stats, (upper_i, upper_j))
  return stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _chunked(xh, labels, margin, gamma, grad_through_alpha, chunk, num_rows):
  return finish(_chunked_stats(xh, labels, num_rows, margin, gamma, grad_through_alpha, chunk))[0]


def _chunked_fwd(xh, labels, margin, gamma, grad_through_alpha, chunk, num_rows):
  stats = _chunked_stats(xh, labels, num_rows, margin, gamma, grad_through_alpha, chunk)
  loss, sigma = finish(stats)
  return loss, (xh, labels, margin, gamma, stats, sigma)


def _chunked_bwd(grad_through_alpha, chunk, num_rows, residuals, cotangent):
  xh, labels, margin, gamma, stats, sigma = residuals
  blocks, (upper_i, upper_j) = _layout(num_rows, chunk)
  sc = scales(stats, cotangent * sigma)
  part = lambda k: Scales(*(_slice(v, k, chunk) for v in sc))
  tile = functools.partial(_tile, xh, labels, num_rows, chunk=chunk, margin=margin,
                           gamma=gamma, grad_through_alpha=grad_through_alpha)

  def weights(i, j):
    """∂L/∂z of block (i, j)'s pairs in their row anchor's role, and in their column anchor's."""
    a, b, s, pos, neg, z = tile(i, j)
    rows = softmax_weights(z, pos, neg, part(i), axis=1)
    cols = softmax_weights(z, pos, neg, part(j), axis=0)
    slope = _slopes(s, pos, margin, gamma, grad_through_alpha)
    return a, b, s, pos, (rows + cols) * slope, rows, cols

  def hyper(s, pos, dz):
    """Cotangents of m and γ: they enter every exponent."""
    _, pull = jax.vjp(lambda m, g: _exponents(s, pos, m, g, grad_through_alpha), margin, gamma)
    return pull(dz)

  def add(d, part_, k):
    return _put(d, _slice(d, k, chunk) + part_, k, chunk)

  def diagonal(carry, i):
    dxh, dm, dg = carry
    _, b, s, pos, h, rows, _ = weights(i, i)
    # Within a diagonal block both roles of a pair are already in H = W + Wᵀ.
    dxh = add(dxh, _numerics.weighted_rows(h, b), i)
    # Each ordered pair (a, b) of the block is one exponent of anchor a.
    m_, g_ = hyper(s, pos, rows)
    return (dxh, dm + m_, dg + g_), None

  def upper(carry, ij):
    dxh, dm, dg = carry
    i, j = ij
    a, b, s, pos, h, rows, cols = weights(i, j)
    dxh = add(dxh, _numerics.weighted_rows(h, b), i)
    dxh = add(dxh, _numerics.weighted_columns(h, a), j)  # H_IJᵀ X̂_I, no transpose
    # Pair (a, b) is an exponent of anchor a and, as (b, a), of anchor b.
    m_, g_ = hyper(s, pos, rows + cols)
    return (dxh, dm + m_, dg + g_), None

  carry = (jnp.zeros_like(xh), jnp.zeros_like(margin), jnp.zeros_like(gamma))
  carry = _streaming.vary_all(carry, _streaming.varying_union(residuals, cotangent))
  carry, _ = lax.scan(diagonal, carry, jnp.arange(blocks))
  if blocks > 1:
    carry, _ = lax.scan(upper, carry, (upper_i, upper_j))
  dxh, dm, dg = carry
  return dxh, None, dm, dg


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_self_loss(x, labels, margin, gamma, grad_through_alpha: bool, chunk_size: int) -> Array:
  """Per-anchor pair-wise Circle loss of x against itself, in [c, c] blocks of S."""
  num_rows = x.shape[0]
  xh, labels = _padded(normalised(x), labels, chunk_size)
  # One varying type (under shard_map) for every input of the custom_vjp, so
  # that its cotangents (γ and m included) have the inputs' types.
  args = (xh, labels, margin, gamma)
  xh, labels, margin, gamma = _streaming.vary_all(args, _streaming.varying_union(args))
  return _chunked(xh, labels, margin, gamma, grad_through_alpha, chunk_size, num_rows)[:num_rows]
