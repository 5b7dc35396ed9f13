"""The batch against itself: the symmetric one-GEMM backward equals plain autodiff.

The reference is the composition the pair-wise loss used to be: the cosine
matrix, explicit pair masks and `circle_loss` over those sets, differentiated by
JAX (two GEMMs in the backward pass). Every option, mask pattern and chunk size
must give the same values and gradients in float64, to 1e-10.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circle_jax import circle_loss, pair_masks, pairwise_circle_loss
from circle_jax.losses import cosine_similarity_matrix
from tests.conftest import labels_with_pattern
from tests.conftest import slow

PATTERNS = ["pk", "singletons", "single_class", "mixed"]
SETTINGS = [(0.4, 80.0), (0.25, 256.0), (0.25, 128.0), (-0.2, 1024.0), (1.5, 32.0)]


def reference(x, labels, *, margin, gamma, grad_through_alpha=False):
  """Per-anchor loss from the cosine matrix and masks, by autodiff-able composition."""
  s = cosine_similarity_matrix(x, x)
  pos, neg = pair_masks(labels)
  return circle_loss(s, s, margin=margin, gamma=gamma, sp_mask=pos, sn_mask=neg,
                     grad_through_alpha=grad_through_alpha)


def value_and_grads(fn, x, margin, gamma, weights):
  """Loss values and the gradients w.r.t. (x, margin, gamma) of Σ weights · loss."""
  total = lambda e, m, g: jnp.sum(weights * fn(e, m, g))
  return fn(x, margin, gamma), jax.grad(total, argnums=(0, 1, 2))(x, margin, gamma)


def batch(rng, size, dim, pattern):
  x = rng.normal(size=(size, dim))
  x[0] = 0.0  # a zero vector: cosine 0 to everything, zero gradient
  if size > 3:
    x[3] = x[2]  # an exact duplicate: similarity 1
  return jnp.asarray(x), jnp.asarray(labels_with_pattern(rng, size, pattern))


# Fast tier: the dense path with α detached and chunk 7 (a padded last tile) with
# α differentiated; every other option × chunk size runs in the slow tier.
@pytest.mark.parametrize("chunk_size,through_alpha", [  # 7: a padded last tile
    (None, False), slow(None, True), slow(1, False), slow(1, True),
    slow(3, False), slow(3, True), slow(7, False), (7, True),
])
def test_equals_autodiff_of_the_similarity_sets(x64, through_alpha, chunk_size):
  # Every mask pattern and (m, γ) setting runs through one compiled program per
  # option: m, γ and the labels are arguments, so only the static options
  # (chunk size, α gradient) need a program of their own.
  def both(x, y, margin, gamma, weights):
    got = value_and_grads(
        lambda e, m, g: pairwise_circle_loss(e, y, margin=m, gamma=g, chunk_size=chunk_size,
                                             grad_through_alpha=through_alpha),
        x, margin, gamma, weights)
    want = value_and_grads(
        lambda e, m, g: reference(e, y, margin=m, gamma=g, grad_through_alpha=through_alpha),
        x, margin, gamma, weights)
    return got, want

  both = jax.jit(both)
  for pattern in PATTERNS:
    for margin, gamma in SETTINGS:
      case = f"pattern={pattern}, margin={margin}, gamma={gamma}"
      rng = np.random.default_rng(0)  # the same draws for every case
      x, y = batch(rng, 12, 5, pattern)
      weights = jnp.asarray(rng.uniform(0.5, 2.0, size=12))  # an arbitrary cotangent
      got, want = both(x, y, jnp.float64(margin), jnp.float64(gamma), weights)
      np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-10, err_msg=case)
      for g, w, name in zip(got[1], want[1], ("embeddings", "margin", "gamma")):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10, err_msg=f"{case}: {name}")
      np.testing.assert_array_equal(got[1][0][0], 0.0, err_msg=case)  # the zero vector


# Fast tier: α detached (the default); α differentiated runs in the slow tier.
@pytest.mark.parametrize("through_alpha", [False, slow(True)])
def test_forward_mode_and_second_derivatives(x64, rng, through_alpha):
  """The dense path is a custom_jvp: jvp and Hessians equal autodiff's (α constant
  or not in the second derivative too)."""
  x, y = batch(rng, 6, 3, "pk")
  kw = dict(margin=0.25, gamma=32.0, grad_through_alpha=through_alpha)
  ours = lambda e: pairwise_circle_loss(e, y, **kw)
  ref = lambda e: reference(e, y, **kw)
  tangent = jnp.asarray(rng.normal(size=x.shape))

  # One compiled program (run op by op, the Hessians take seconds to dispatch).
  @jax.jit
  def derivatives(e, t):
    return [(jax.jvp(f, (e,), (t,))[1], jax.hessian(lambda e: f(e).sum())(e))
            for f in (ours, ref)]

  (jvp, hess), (ref_jvp, ref_hess) = derivatives(x, tangent)
  np.testing.assert_allclose(jvp, ref_jvp, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(hess, ref_hess, rtol=1e-8, atol=1e-8)


@pytest.mark.slow  # a dtype cross; the tests above hold every option to float64
def test_float32_agrees_with_float64(rng):
  x, y = batch(rng, 64, 16, "pk")
  x32 = jnp.asarray(x, jnp.float32)
  for chunk_size in (None, 16):
    f = lambda e: pairwise_circle_loss(e, y, margin=0.25, gamma=256.0, chunk_size=chunk_size)
    loss32, grad32 = jax.value_and_grad(lambda e: f(e).sum())(x32)
    with jax.enable_x64(True):
      loss64, grad64 = jax.value_and_grad(lambda e: f(e).sum())(jnp.asarray(x, jnp.float64))
    # γ = 256 scales the float32 rounding of the cosines (~1e-7) into the exponents.
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-3 * np.abs(grad64).max())


def _dots(fn, *args) -> int:
  """Matrix products in the compiled program of fn (loops counted once per body)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return len(re.findall(r"\sdot\(", text))


def test_backward_pass_spends_one_gemm_dense():
  x = jax.ShapeDtypeStruct((256, 32), jnp.float32)
  y = jnp.arange(256) % 64
  ours = jax.value_and_grad(lambda e: pairwise_circle_loss(e, y).sum())
  ref = jax.value_and_grad(lambda e: reference(e, y, margin=0.4, gamma=80.0).sum())
  assert _dots(ref, x) == 3  # S = X̂X̂ᵀ, GX̂ and GᵀX̂
  assert _dots(ours, x) == 2  # S = X̂X̂ᵀ and (G + Gᵀ)X̂


def test_chunked_path_visits_each_block_pair_once():
  """S is tiled into [c, c] blocks and only those on or above the diagonal are
  computed: forward one product per diagonal block and one per upper block;
  backward recompute + one on the diagonal, recompute + two above it (each
  upper block serves both of its block rows): 7 products in the program."""
  x = jax.ShapeDtypeStruct((256, 32), jnp.float32)
  y = jnp.arange(256) % 64
  ours = jax.value_and_grad(lambda e: pairwise_circle_loss(e, y, chunk_size=64).sum())
  text = jax.jit(ours).lower(x).compile().as_text()
  assert len(re.findall(r"\sdot\(", text)) == 7
  # 4 blocks per side: 4 diagonal and 6 upper blocks, in two loops per pass.
  assert re.search(r"s32\[6\]", text) and "while" in text
