"""The streamed (`chunk_size`) losses: dense values and gradients, bounded memory.

The pair-wise and class-level Circle losses' chunked paths are compared with the
dense ones in test_pairwise.py / test_class_level.py; here: the CosFace / ArcFace /
NormFace family, half-precision class weights, and compiled-memory properties
(compile only, nothing large is executed).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj
from circle_jax.losses import _numerics
from circle_jax.losses import _streaming

from tests.conftest import slow

FAMILY = {
    "normface": (cj.normface_loss, dict(gamma=16.0)),
    "cosface": (cj.cosface_loss, dict(margin=0.35, gamma=16.0)),
    "arcface": (cj.arcface_loss, dict(margin=0.5, gamma=16.0)),
    "arcface_easy": (cj.arcface_loss, dict(margin=0.5, gamma=16.0, easy_margin=True)),
    "circle": (cj.class_circle_loss, dict(margin=0.25, gamma=256.0)),
}


def _scaled_block(rows, cols, consts, start):
  (scale,), (xt, mt), (shift,) = rows, cols, consts
  z = scale[:, None] * xt.T + shift
  return [(z, mt.T), (-z, mt.T)]


# Fast tier: chunk 5 (does not divide the 7 columns); the other sizes run in the
# slow tier.
@pytest.mark.parametrize("chunk_size", [slow(None), slow(1), slow(2), 5, slow(7), slow(50)])
def test_streamed_lse_equals_dense_with_gradients(x64, rng, chunk_size):
  """Rows, column chunks and constants all get the dense gradient; masked entries
  (NaN here) and an all-masked row give exactly zero."""
  x = rng.normal(scale=50.0, size=(4, 7))
  mask = rng.random((4, 7)) < 0.6
  mask[1] = False
  x = jnp.asarray(np.where(mask, x, np.nan))
  mask = jnp.asarray(mask)
  scale, shift = jnp.asarray(rng.normal(size=4)), jnp.asarray(0.3)

  def streamed(scale, x, shift):
    (lse, ok), (neg, _) = _streaming.streamed_lse(
        _scaled_block, (scale,), (x.T, mask.T), (shift,), num_streams=2,
        chunk_size=chunk_size)
    return lse + 2.0 * neg, ok

  def dense(scale, x, shift):
    z = scale[:, None] * x + shift
    (lse, ok), (neg, _) = (_numerics.masked_logsumexp(z, mask),
                           _numerics.masked_logsumexp(-z, mask))
    return lse + 2.0 * neg, ok

  weights = jnp.arange(1.0, 5.0)
  grads = lambda f: jax.grad(lambda *a: jnp.sum(f(*a)[0] * weights), argnums=(0, 1, 2))(
      scale, x, shift)
  got, want = streamed(scale, x, shift), dense(scale, x, shift)
  chex.assert_trees_all_close(got, want, rtol=1e-13)
  got_grads = grads(streamed)
  chex.assert_trees_all_close(got_grads, grads(dense), rtol=1e-12, atol=1e-12)
  assert np.all(np.asarray(got_grads[1])[~np.asarray(mask)] == 0)


def value_and_grads(loss, x, w, y, **kw):
  f = lambda e, p: loss(e, p, y, **kw)
  weights = 1.0 + jnp.arange(x.shape[0]) / x.shape[0]
  grad = jax.grad(lambda e, p: jnp.sum(f(e, p) * weights), argnums=(0, 1))
  return jax.jit(lambda e, p: (f(e, p), grad(e, p)))(x, w)


@pytest.mark.parametrize("name", sorted(set(FAMILY) - {"circle"}))  # circle: test_class_level
# Fast tier: every loss with chunk 4 (does not divide C = 13); the other sizes run
# in the slow tier.
@pytest.mark.parametrize("chunk_size", [slow(1), 4, slow(13), slow(50)])
def test_family_chunked_equals_dense(x64, rng, name, chunk_size):
  """13 classes: chunks that divide C (1, 13), do not (4) and exceed it (50)."""
  loss, kw = FAMILY[name]
  x = jnp.asarray(rng.normal(size=(9, 5)))
  w = jnp.asarray(rng.normal(size=(13, 5))).at[3].set(0.0)  # a zero proxy too
  y = jnp.asarray(rng.integers(0, 13, size=9).astype(np.int32))
  got = value_and_grads(loss, x, w, y, chunk_size=chunk_size, **kw)
  want = value_and_grads(loss, x, w, y, **kw)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.slow  # a dtype cross; the chunked paths are held to float64 above
def test_family_float32_and_bfloat16_weights(rng):
  x = jnp.asarray(rng.normal(size=(8, 16)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(37, 16)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 37, size=8).astype(np.int32))
  for name in ("arcface", "circle"):
    loss, kw = FAMILY[name]
    for weights in (w, w.astype(jnp.bfloat16)):
      got = value_and_grads(loss, x, weights, y, chunk_size=8, **kw)
      want = value_and_grads(loss, x, weights, y, **kw)
      assert got[0].dtype == jnp.float32 and got[1][1].dtype == weights.dtype, name
      scale = lambda t: jax.tree.map(lambda a: float(jnp.max(jnp.abs(a.astype(jnp.float32)))), t)
      for g, wnt, s in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(scale(want))):
        tol = 1e-5 if g.dtype == jnp.float32 else 1e-2
        chex.assert_trees_all_close(g.astype(jnp.float32), wnt.astype(jnp.float32),
                                    rtol=tol, atol=tol * s)


def test_out_of_range_traced_label_is_nan(rng):
  x = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(6, 4)).astype(np.float32))
  f = jax.jit(lambda l: cj.cosface_loss(x, w, l, chunk_size=4))
  loss = f(jnp.array([0, 6, 5]))
  loss = np.asarray(loss)
  assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2]]))


def _temp_mib(fn, *shapes):
  args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
  argnums = tuple(i for i, (_, d) in enumerate(shapes) if d != jnp.int32)
  compiled = jax.jit(jax.value_and_grad(lambda *a: fn(*a).sum(), argnums=argnums)).lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


# Fast tier: the Circle loss; ArcFace (the same streaming) runs in the slow tier.
@pytest.mark.parametrize("name", ["circle", slow("arcface")])
def test_class_level_memory_does_not_grow_with_classes(name):
  """fwd+bwd temporary memory at B = 64, D = 64, chunk 1024: flat from C = 8k to 128k,
  and far below one copy of W (32 MiB at C = 128k): W is never copied, cast or
  padded, and its gradient is written in place."""
  loss, kw = FAMILY[name]
  fn = functools.partial(loss, chunk_size=1024, **kw)
  small, large = (
      _temp_mib(fn, ((64, 64), jnp.float32), ((c, 64), jnp.float32), ((64,), jnp.int32))
      for c in (8192, 131072))
  assert large <= 1.1 * small + 0.5, (small, large)  # 0.5 MiB: [C]-sized bookkeeping at most
  assert large < 32 / 8, large


def test_pairwise_memory_is_linear_in_batch():
  """fwd+bwd temporary memory of the chunked pair-wise loss (chunk 128) grows like B,
  not B²: ×4 the batch costs ≤ ×5 the memory; the dense [B, B] path grows ×16."""
  def temp(batch, chunk_size):
    fn = functools.partial(cj.pairwise_circle_loss, chunk_size=chunk_size)
    return _temp_mib(fn, ((batch, 64), jnp.float32), ((batch,), jnp.int32))

  assert temp(8192, 128) < 5 * temp(2048, 128)
  assert temp(8192, 128) < temp(8192, None) / 10
