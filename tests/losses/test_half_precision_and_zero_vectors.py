"""Half precision against a float64 reference, exact zero gradients of zero vectors,
and the chunked paths' reverse-mode-only contract.

Half-precision inputs are computed in float32 (`compute_dtype`): given the same
rounded inputs, the only difference from float64 is float32 arithmetic, whose
error in an exponent γ·α·(s − Δ) is about γ·|s|·2⁻²³ per cosine. The tolerances
below follow from that, not from the half-precision epsilon.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj

from tests.conftest import slow

GAMMA = 256.0
EPS32 = 2.0**-23


def _pairwise(x, y, chunk_size=None):
  return cj.pairwise_circle_loss(x, y, margin=0.25, gamma=GAMMA, chunk_size=chunk_size)


def _class(x, w, y, chunk_size=None):
  return cj.class_circle_loss(x, w, y, margin=0.25, gamma=GAMMA, chunk_size=chunk_size)


# Fast tier: bfloat16 (the training dtype) on the chunked path; float16 and the
# dense path run in the slow tier (same tolerances, same reference).
@pytest.mark.parametrize("dtype", [jnp.bfloat16, slow(jnp.float16)])
@pytest.mark.parametrize("chunk_size", [slow(None), 8])
def test_half_precision_equals_float64_on_the_same_rounded_inputs(rng, dtype, chunk_size):
  x = jnp.asarray(rng.normal(size=(32, 16)), dtype)
  w = jnp.asarray(rng.normal(size=(10, 16)), dtype)
  y = jnp.asarray(np.arange(32) % 10)
  pair = jax.value_and_grad(lambda e: _pairwise(e, y, chunk_size).sum())
  cls = jax.value_and_grad(lambda e, p: _class(e, p, y, chunk_size).sum(), argnums=(0, 1))
  got_pair, got_cls = pair(x), cls(x, w)
  assert got_pair[0].dtype == got_cls[0].dtype == jnp.float32
  assert got_pair[1].dtype == dtype and got_cls[1][1].dtype == dtype
  with jax.enable_x64(True):
    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    want_pair, want_cls = pair(x64), cls(x64, w64)
  # Losses: summed exponent errors of ~γ·2⁻²³ each, over B rows.
  value_tol = 32 * 8 * GAMMA * EPS32
  np.testing.assert_allclose(got_pair[0], want_pair[0], rtol=1e-5, atol=value_tol)
  np.testing.assert_allclose(got_cls[0], want_cls[0], rtol=1e-5, atol=value_tol)
  # Gradients come back in the input dtype: one rounding to its precision.
  half_eps = float(jnp.finfo(dtype).eps)
  for got, want in ((got_pair[1], want_pair[1]), (got_cls[1][0], want_cls[1][0]),
                    (got_cls[1][1], want_cls[1][1])):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2 * half_eps,
                               atol=2 * half_eps * np.abs(want).max() + 1e-3 * GAMMA * EPS32)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_a_zero_embedding_gets_exactly_zero_gradient(rng, chunk_size):
  """docs/guides/losses.md ("Bad input") promises a zero gradient for zero
  vectors (no direction), not a merely finite one: every entry must be exactly 0,
  in both roles of the batch."""
  x = rng.normal(size=(8, 5)).astype(np.float32)
  x[2] = 0.0
  y = jnp.asarray([0, 0, 0, 1, 1, 2, 2, 2])
  g = jax.grad(lambda e: _pairwise(e, y, chunk_size).sum())(jnp.asarray(x))
  np.testing.assert_array_equal(g[2], 0.0)
  assert np.abs(np.asarray(g)).sum() > 0  # the others do move
  w = rng.normal(size=(3, 5)).astype(np.float32)
  w[1] = 0.0  # a zero class proxy too
  gx, gw = jax.grad(lambda e, p: _class(e, p, y, chunk_size).sum(), argnums=(0, 1))(
      jnp.asarray(x), jnp.asarray(w))
  np.testing.assert_array_equal(gx[2], 0.0)
  np.testing.assert_array_equal(gw[1], 0.0)


@pytest.mark.parametrize("fn", [
    lambda x, y: _pairwise(x, y, chunk_size=3),
    lambda x, y: _class(x, jnp.ones((3, 5)) + jnp.eye(3, 5), y, chunk_size=2),
])
def test_chunked_paths_are_reverse_mode_only(fn):
  """Documented: the chunked paths (custom_vjp) support grad/vjp, not jvp/jacfwd."""
  x, y = jnp.ones((8, 5)) + jnp.eye(8, 5), jnp.asarray([0, 0, 0, 1, 1, 2, 2, 2])
  assert np.all(np.isfinite(jax.grad(lambda e: fn(e, y).sum())(x)))
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda e: fn(e, y), (x,), (x,))
