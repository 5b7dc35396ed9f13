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
from jax import lax
from jax.custom_derivatives import SymbolicZero

from circle_jax.losses import _circle
from circle_jax.losses import _numerics

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


def fold(stats: RowStats, z: Array, pos: Array, neg: Array) -> RowStats:
  """Folds a block of exponents z [rows, cols] into the running statistics.

  One exp per pair: each pair is a positive, a negative or neither, so it is
  shifted by its own set's max.
  """
  top = lambda mask: jnp.max(jnp.where(mask, z, -jnp.inf), axis=1, initial=-jnp.inf)
  max_p = jnp.maximum(stats.max_p, top(pos))
  max_n = jnp.maximum(stats.max_n, top(neg))
  shift_p, shift_n = _shift(max_p), _shift(max_n)
  valid = pos | neg
  # Double where: masked pairs are replaced before exp (they may hold anything).
  shifted = jnp.where(valid, z - jnp.where(pos, shift_p[:, None], shift_n[:, None]), 0.0)
  e = jnp.where(valid, jnp.exp(shifted), 0.0)
  return RowStats(
      max_p=max_p,
      sum_p=stats.sum_p * jnp.exp(stats.max_p - shift_p) + jnp.sum(jnp.where(pos, e, 0.0), axis=1),
      max_n=max_n,
      sum_n=stats.sum_n * jnp.exp(stats.max_n - shift_n) + jnp.sum(jnp.where(neg, e, 0.0), axis=1),
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
    sc = scales(stats, sigma)
    slope = _slopes(s, pos, margin, gamma, grad_through_alpha)
    rows = softmax_weights(z, pos, neg, sc, axis=1) * slope  # W
    cols = softmax_weights(z, pos, neg, sc, axis=0) * slope  # V = Wᵀ, by symmetry
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


def _blocks(num_rows: int, chunk_size: int) -> tuple[int, int]:
  """(number of full column blocks, size of the last partial one)."""
  return num_rows // chunk_size, num_rows % chunk_size


def _scan_blocks(body, carry, num_rows: int, chunk_size: int):
  """Runs body(carry, start, size) over the column blocks: a scan, then the remainder."""
  full, rest = _blocks(num_rows, chunk_size)
  if full:
    carry, _ = lax.scan(lambda c, i: (body(c, i * chunk_size, chunk_size), None),
                        carry, jnp.arange(full))
  if rest:
    carry = body(carry, full * chunk_size, rest)
  return carry


def _block(xh, labels, start, size, margin, gamma, grad_through_alpha):
  """Similarities, masks and exponents of all anchors against columns [start, start + size)."""
  cols = lax.dynamic_slice_in_dim(xh, start, size)
  col_labels = lax.dynamic_slice_in_dim(labels, start, size)
  s = _similarities(xh, cols)
  pos, neg = _pair_masks(labels, col_labels, 0, start)
  return cols, s, pos, neg, _exponents(s, pos, margin, gamma, grad_through_alpha)


def _chunked_stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size) -> RowStats:
  def body(stats, start, size):
    _, _, pos, neg, z = _block(xh, labels, start, size, margin, gamma, grad_through_alpha)
    return fold(stats, z, pos, neg)

  return _scan_blocks(body, init_stats(xh.shape[0], xh.dtype), xh.shape[0], chunk_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _chunked(xh, labels, margin, gamma, grad_through_alpha, chunk_size):
  stats = _chunked_stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size)
  return finish(stats)[0]


def _chunked_fwd(xh, labels, margin, gamma, grad_through_alpha, chunk_size):
  stats = _chunked_stats(xh, labels, margin, gamma, grad_through_alpha, chunk_size)
  loss, sigma = finish(stats)
  return loss, (xh, labels, margin, gamma, stats, sigma)


def _chunked_bwd(grad_through_alpha, chunk_size, residuals, cotangent):
  xh, labels, margin, gamma, stats, sigma = residuals
  sc = scales(stats, cotangent * sigma)

  def body(carry, start, size):
    dxh, dmargin, dgamma = carry
    cols, s, pos, neg, z = _block(xh, labels, start, size, margin, gamma, grad_through_alpha)
    col_sc = Scales(*(lax.dynamic_slice_in_dim(v, start, size) for v in sc))
    rows = softmax_weights(z, pos, neg, sc, axis=1)  # ∂L/∂z of pair (a, b), a's role
    cols_w = softmax_weights(z, pos, neg, col_sc, axis=0)  # the same for pair (b, a)
    slope = _slopes(s, pos, margin, gamma, grad_through_alpha)
    dxh = dxh + _numerics.weighted_rows((rows + cols_w) * slope, cols)
    # γ and m enter every exponent; their cotangents come from anchor a's role only.
    _, pull = jax.vjp(
        lambda m, g: _exponents(s, pos, m, g, grad_through_alpha), margin, gamma
    )
    dm, dg = pull(rows)
    return dxh, dmargin + dm, dgamma + dg

  carry = (jnp.zeros_like(xh), jnp.zeros_like(margin), jnp.zeros_like(gamma))
  dxh, dmargin, dgamma = _scan_blocks(body, carry, xh.shape[0], chunk_size)
  return dxh, None, dmargin, dgamma


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_self_loss(x, labels, margin, gamma, grad_through_alpha: bool, chunk_size: int) -> Array:
  """Per-anchor pair-wise Circle loss of x against itself, streamed in column blocks."""
  return _chunked(normalised(x), labels, margin, gamma, grad_through_alpha, chunk_size)
