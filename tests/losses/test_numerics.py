"""Masked / streamed log-sum-exp, safe normalisation, cosine similarities."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circle_jax.losses import cosine_similarity_matrix, masked_logsumexp
from circle_jax.losses import _numerics


def np_masked_lse(x, mask):
  out, ok = [], []
  for row, m in zip(x, mask):
    v = row[m]
    if v.size == 0:
      out.append(0.0), ok.append(False)
    else:
      out.append(v.max() + np.log(np.exp(v - v.max()).sum())), ok.append(True)
  return np.array(out), np.array(ok)


def test_masked_logsumexp_matches_reference(x64, rng):
  x = rng.normal(scale=300.0, size=(6, 9))  # exponents far beyond exp's range
  mask = rng.random((6, 9)) < 0.5
  mask[2] = False
  lse, ok = masked_logsumexp(jnp.asarray(x), jnp.asarray(mask))
  want, want_ok = np_masked_lse(x, mask)
  np.testing.assert_allclose(lse, want, rtol=1e-13)
  np.testing.assert_array_equal(ok, want_ok)


def test_max_is_over_valid_entries_only():
  """A huge masked entry must not make the valid ones underflow (PML #173)."""
  x = jnp.array([[1000.0, 1.0, 2.0]])
  lse, ok = masked_logsumexp(x, jnp.array([[False, True, True]]))
  np.testing.assert_allclose(lse, [np.logaddexp(1.0, 2.0)], rtol=1e-6)
  assert bool(ok[0])


def test_masked_and_empty_rows_have_zero_finite_gradients():
  x = jnp.array([[jnp.nan, 1.0, -jnp.inf], [jnp.inf, 2.0, 3.0]])
  mask = jnp.array([[False, True, False], [False, False, False]])
  grad = jax.grad(lambda v: masked_logsumexp(v, mask)[0].sum())(x)
  chex.assert_trees_all_equal(grad, jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_zero_vectors_have_no_direction_and_zero_gradient(dtype):
  x = jnp.array([[0.0, 0.0], [3.0, 4.0]], dtype)
  unit = lambda v: v * _numerics.inverse_l2_norm(v, keepdims=True)
  chex.assert_trees_all_close(unit(x), jnp.array([[0.0, 0.0], [0.6, 0.8]]), atol=1e-3)
  grad = jax.grad(lambda v: (unit(v) * jnp.array([1.0, 2.0])).sum())(x)
  chex.assert_trees_all_equal(grad[0], jnp.zeros(2, dtype))
  # d/dx of x̂·c at x = (3, 4): (c − (x̂·c)x̂)/‖x‖
  chex.assert_trees_all_close(grad[1].astype(jnp.float32), jnp.array([-0.064, 0.048]), atol=2e-3)
  norm, norm_grad = jax.value_and_grad(lambda v: _numerics.l2_norm(v).sum())(x)
  assert float(norm) == pytest.approx(5.0, rel=1e-3)
  chex.assert_trees_all_equal(norm_grad[0], jnp.zeros(2, dtype))


def test_norms_propagate_nan_instead_of_treating_it_as_a_zero_vector():
  x = jnp.array([[jnp.nan, 1.0], [0.0, 0.0]])
  assert np.isnan(_numerics.inverse_l2_norm(x)[0]) and float(_numerics.inverse_l2_norm(x)[1]) == 0
  assert np.isnan(_numerics.l2_norm(x)[0]) and float(_numerics.l2_norm(x)[1]) == 0
  assert np.isnan(_numerics.safe_sqrt(jnp.array(jnp.nan)))


def test_cosine_similarity_matrix_bad_input():
  with pytest.raises(ValueError, match="x must have rank 2"):
    cosine_similarity_matrix(jnp.ones(3), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="y must have a floating dtype"):
    cosine_similarity_matrix(jnp.ones((1, 3)), jnp.ones((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="same feature dimension"):
    cosine_similarity_matrix(jnp.ones((1, 3)), jnp.ones((2, 4)))


def test_cosine_similarity_matrix(x64, rng):
  x, y = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
  want = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
  np.testing.assert_allclose(cosine_similarity_matrix(x, y), want, rtol=1e-13)


@pytest.mark.parametrize("dtypes,want", [
    ((jnp.bfloat16,), jnp.float32), ((jnp.float16,), jnp.float32),
    ((jnp.float32,), jnp.float32), ((jnp.bfloat16, jnp.float32), jnp.float32),
])
def test_compute_dtype(dtypes, want):
  assert _numerics.compute_dtype(*dtypes) == want


def test_compute_dtype_float64(x64):
  assert _numerics.compute_dtype(jnp.float64) == jnp.float64


def test_nan_inputs_are_named_when_concrete():
  from circle_jax import circle_loss, class_circle_loss, pairwise_circle_loss
  x, y = jnp.ones((3, 4)).at[1, 2].set(jnp.nan), jnp.array([0, 0, 1])
  with pytest.raises(ValueError, match=r"embeddings contains 1 NaN or infinite value\(s\)"):
    pairwise_circle_loss(x, y)
  with pytest.raises(ValueError, match="class_weights contains"):
    class_circle_loss(jnp.ones((3, 4)), jnp.eye(2, 4).at[0, 0].set(jnp.inf), y)
  with pytest.raises(ValueError, match="sn contains"):
    circle_loss(jnp.ones((1, 2)), jnp.array([[0.1, jnp.nan]]))
  # Masked padding may hold anything; under jit a NaN input gives NaN, as arithmetic does.
  circle_loss(jnp.ones((1, 2)), jnp.array([[0.1, jnp.nan]]), sn_mask=jnp.array([[True, False]]))
  assert np.isnan(jax.jit(pairwise_circle_loss)(x, y)[0])


def test_nan_inputs_propagate_under_jit():
  """Traced NaN inputs cannot raise; they must not turn into plausible finite losses."""
  import circle_jax as cj
  x, y, w = jnp.ones((3, 4)).at[1, 2].set(jnp.nan), jnp.array([0, 0, 1]), jnp.eye(2, 4)
  pair_losses = [cj.pairwise_circle_loss, cj.batch_hard_triplet_loss, cj.batch_all_triplet_loss,
                 cj.contrastive_loss, cj.npair_loss, cj.lifted_structure_loss,
                 cj.multi_similarity_loss]
  for fn in pair_losses:
    got = np.asarray(jax.jit(fn)(x, y))
    assert np.isnan(got[0]) and np.isnan(got[1]), fn.__name__
  class_losses = [cj.class_circle_loss, cj.softmax_loss, cj.normface_loss, cj.cosface_loss,
                  cj.arcface_loss, cj.sphereface_loss]
  for fn in class_losses:
    got = np.asarray(jax.jit(fn)(x, w, y))
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]])), fn.__name__


def test_masked_logsumexp_bad_input_and_half_precision():
  with pytest.raises(TypeError, match="x must have a floating dtype"):
    masked_logsumexp(jnp.ones(3, jnp.int32), jnp.ones(3, bool))
  with pytest.raises(TypeError, match="mask must be a boolean"):
    masked_logsumexp(jnp.ones(3), jnp.ones(3))
  with pytest.raises(ValueError, match="mask has shape"):
    masked_logsumexp(jnp.ones(3), jnp.ones(4, bool))
  lse, ok = masked_logsumexp(jnp.full((2, 300), 60.0, jnp.bfloat16), jnp.ones((2, 300), bool))
  assert lse.dtype == jnp.float32 and bool(ok.all())
  np.testing.assert_allclose(lse, 60.0 + np.log(300.0), rtol=1e-6)
