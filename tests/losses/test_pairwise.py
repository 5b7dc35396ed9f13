"""Circle loss with pair-wise labels, pair masks and the valid-anchor helper."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from circle_jax import circle_loss_grads, pair_masks, pairwise_circle_loss, valid_anchor_mask
from tests.conftest import labels_with_pattern
from tests.conftest import slow

PATTERNS = ["pk", "singletons", "single_class", "mixed"]


def np_pairwise_circle(x, labels, margin, gamma, ref=None, ref_labels=None):
  """Per-anchor Eq. 6 with explicit loops over the reference set (float64)."""
  x = np.asarray(x, np.float64)
  is_self = ref is None
  ref = x if is_self else np.asarray(ref, np.float64)
  ref_labels = labels if is_self else ref_labels
  unit = lambda v: v / max(np.linalg.norm(v), 1e-12)
  out = []
  for a in range(len(x)):
    lp, ln = [], []
    for r in range(len(ref)):
      if is_self and r == a:
        continue
      s = float(unit(x[a]) @ unit(ref[r]))
      if labels[a] == ref_labels[r]:
        lp.append(-gamma * max(1 + margin - s, 0.0) * (s - (1 - margin)))
      else:
        ln.append(gamma * max(s + margin, 0.0) * (s - margin))
    if not lp or not ln:
      out.append(0.0)
      continue
    lse = lambda v: max(v) + math.log(sum(math.exp(t - max(v)) for t in v))
    out.append(float(np.logaddexp(0.0, lse(lp) + lse(ln))))
  return np.array(out)


def make_batch(rng, batch, dim, pattern):
  x = rng.normal(size=(batch, dim))
  return x, labels_with_pattern(rng, batch, pattern)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 7, 16])
@pytest.mark.parametrize("margin,gamma", [(0.4, 80.0), (0.25, 256.0), (-0.2, 1024.0)])
def test_matches_reference(x64, rng, pattern, batch, margin, gamma):
  x, y = make_batch(rng, batch, 5, pattern)
  got = pairwise_circle_loss(jnp.asarray(x), jnp.asarray(y), margin=margin, gamma=gamma)
  chex.assert_shape(got, (batch,))
  np.testing.assert_allclose(got, np_pairwise_circle(x, y, margin, gamma), rtol=1e-10, atol=1e-10)
  valid = valid_anchor_mask(jnp.asarray(y))
  assert np.all(np.asarray(got)[~np.asarray(valid)] == 0.0)


def test_default_hyperparameters_are_fine_grained_setting(rng):
  x, y = make_batch(rng, 10, 6, "pk")
  np.testing.assert_allclose(
      pairwise_circle_loss(x.astype(np.float32), y),
      np_pairwise_circle(x.astype(np.float32), y, 0.4, 80.0), rtol=2e-5, atol=1e-4)


def test_reference_set(x64, rng):
  """A separate reference set (e.g. a memory bank): no self-pair is removed."""
  x, y = make_batch(rng, 5, 4, "mixed")
  ref, ref_y = rng.normal(size=(9, 4)), rng.integers(0, 3, size=9).astype(np.int32)
  got = pairwise_circle_loss(x, y, ref_embeddings=ref, ref_labels=ref_y)
  np.testing.assert_allclose(got, np_pairwise_circle(x, y, 0.4, 80.0, ref, ref_y), rtol=1e-10)
  # The batch given as its own reference set keeps the self-pairs as positives:
  # the singleton anchor 2 now has one (itself) and gets a loss.
  y = np.array([0, 0, 1, 2, 2], np.int32)
  same = pairwise_circle_loss(x, y, ref_embeddings=x, ref_labels=y)
  np.testing.assert_allclose(same, np_pairwise_circle(x, y, 0.4, 80.0, x, y), rtol=1e-10)
  assert float(pairwise_circle_loss(x, y)[2]) == 0.0 < float(same[2])


# Fast tier: chunk 8 (does not divide B = 12: a padded last tile), both α modes;
# the other chunk sizes run in the slow tier.
@pytest.mark.parametrize("chunk_size", [slow(1), slow(3), 8, slow(11), slow(12), slow(100)])
@pytest.mark.parametrize("through_alpha", [False, True])
def test_chunked_equals_dense(x64, rng, chunk_size, through_alpha):
  x, y = make_batch(rng, 12, 6, "mixed")
  kw = dict(margin=0.25, gamma=256.0, grad_through_alpha=through_alpha)
  f = jax.jit(lambda e, c: pairwise_circle_loss(e, y, chunk_size=c, **kw), static_argnums=1)
  chex.assert_trees_all_close(f(x, chunk_size), f(x, None), rtol=1e-12, atol=1e-12)
  g = lambda c: jax.jit(jax.grad(lambda e: f(e, c).sum()))(jnp.asarray(x))
  chex.assert_trees_all_close(g(chunk_size), g(None), rtol=1e-10, atol=1e-12)


def test_chunked_with_reference_set(x64, rng):
  x, y = make_batch(rng, 6, 4, "pk")
  ref, ref_y = rng.normal(size=(10, 4)), rng.integers(0, 3, size=10).astype(np.int32)
  f = lambda e, r, c: pairwise_circle_loss(e, y, ref_embeddings=r, ref_labels=ref_y, chunk_size=c).sum()
  value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), static_argnums=2)
  dense = value_and_grad(x, ref, None)
  for c in (3, 4, 10):
    chex.assert_trees_all_close(value_and_grad(x, ref, c), dense, rtol=1e-10, atol=1e-12)


def test_gradient_is_the_closed_form_through_the_similarities(x64, rng):
  """α stop-gradient end to end: dL/dx = (Eq. 9–10 on each row)ᵀ · d(cos)/dx."""
  x, y = make_batch(rng, 8, 5, "mixed")
  x = jnp.asarray(x)
  pos, neg = pair_masks(jnp.asarray(y))

  def cosines(e):
    u = e / jnp.linalg.norm(e, axis=1, keepdims=True)
    return u @ u.T

  s, vjp = jax.vjp(cosines, x)
  dsp, dsn = circle_loss_grads(s, s, margin=0.4, gamma=80.0, sp_mask=pos, sn_mask=neg)
  (want,) = vjp(dsp + dsn)
  got = jax.grad(lambda e: pairwise_circle_loss(e, jnp.asarray(y)).sum())(x)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_check_grads_through_alpha(x64, rng):
  x, y = make_batch(rng, 6, 4, "pk")
  for c in (None, 4):
    check_grads(
        lambda e: pairwise_circle_loss(e, y, margin=0.3, gamma=6.0, chunk_size=c,
                                       grad_through_alpha=True),
        (jnp.asarray(x),), order=1,
        # The chunked path is a custom_vjp: reverse mode only.
        modes=("fwd", "rev") if c is None else ("rev",))


@pytest.mark.parametrize("pattern", ["singletons", "single_class"])
def test_no_valid_anchor_gives_zero_loss_and_gradient(pattern, rng):
  x, y = make_batch(rng, 6, 4, pattern)
  for c in (None, 4):
    f = lambda e: pairwise_circle_loss(e, y, margin=0.25, gamma=1024.0, chunk_size=c)
    chex.assert_trees_all_equal(f(x.astype(np.float32)), jnp.zeros(6))
    chex.assert_trees_all_equal(jax.grad(lambda e: f(e).sum())(x.astype(np.float32)),
                                jnp.zeros((6, 4)))


def test_batch_of_one():
  loss = pairwise_circle_loss(jnp.ones((1, 3)), jnp.array([7]))
  chex.assert_trees_all_equal(loss, jnp.zeros(1))
  grad = jax.grad(lambda e: pairwise_circle_loss(e, jnp.array([7])).sum())(jnp.ones((1, 3)))
  chex.assert_trees_all_equal(grad, jnp.zeros((1, 3)))


def test_zero_and_duplicate_embeddings_have_finite_gradients():
  x = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
  y = jnp.array([0, 0, 1, 1])
  for alpha in (False, True):
    f = lambda e: pairwise_circle_loss(e, y, gamma=256.0, margin=0.25,
                                       grad_through_alpha=alpha).sum()
    assert np.isfinite(f(x))
    assert np.all(np.isfinite(jax.grad(f)(x)))


@pytest.mark.parametrize("gamma", [256.0, 1024.0])
@pytest.mark.parametrize("margin", [-0.2, 0.5])
def test_large_gamma_float32(rng, gamma, margin):
  x, y = make_batch(rng, 16, 8, "pk")
  got = pairwise_circle_loss(x.astype(np.float32), y, gamma=gamma, margin=margin)
  want = np_pairwise_circle(x.astype(np.float32), y, margin, gamma)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
  assert np.all(np.asarray(got) > 0)
  assert np.all(np.isfinite(jax.grad(
      lambda e: pairwise_circle_loss(e, y, gamma=gamma, margin=margin).sum())(x.astype(np.float32))))


def test_bf16_embeddings(rng):
  x, y = make_batch(rng, 32, 64, "pk")
  x16 = jnp.asarray(x, jnp.bfloat16)
  got = pairwise_circle_loss(x16, y, gamma=256.0, margin=0.25)
  assert got.dtype == jnp.float32
  want = pairwise_circle_loss(x16.astype(jnp.float32), y, gamma=256.0, margin=0.25)
  # bf16 products are exact in float32; only the accumulation order differs.
  chex.assert_trees_all_close(got, want, rtol=1e-3, atol=1e-2)
  grad = jax.grad(lambda e: pairwise_circle_loss(e, y).sum())(x16)
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_jit_vmap_grad_compose(rng):
  xs = rng.normal(size=(3, 8, 5)).astype(np.float32)
  ys = np.stack([labels_with_pattern(rng, 8, p) for p in ("pk", "mixed", "single_class")])
  f = lambda e, l: pairwise_circle_loss(e, l, chunk_size=3)
  mapped = jax.jit(jax.vmap(f))(xs, ys)
  for i in range(3):
    chex.assert_trees_all_close(mapped[i], pairwise_circle_loss(xs[i], ys[i]), rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.vmap(jax.grad(lambda e, l: f(e, l).sum())))(xs, ys)
  for i in range(3):
    want = jax.grad(lambda e: pairwise_circle_loss(e, ys[i]).sum())(xs[i])
    chex.assert_trees_all_close(grads[i], want, rtol=1e-4, atol=1e-5)


def test_vmap_over_hyperparameters(rng):
  x, y = make_batch(rng, 8, 5, "pk")
  x = x.astype(np.float32)
  gammas, margins = jnp.array([32.0, 80.0, 256.0]), jnp.array([0.1, 0.25, 0.4])
  got = jax.jit(jax.vmap(lambda g, m: pairwise_circle_loss(x, y, gamma=g, margin=m)))(gammas, margins)
  for i in range(3):
    chex.assert_trees_all_close(
        got[i], pairwise_circle_loss(x, y, gamma=float(gammas[i]), margin=float(margins[i])),
        rtol=1e-5)


def test_pair_masks_and_valid_anchors():
  y = jnp.array([3, 3, 5, 3, 9])
  pos, neg = pair_masks(y)
  want_pos = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 1, 0], [0] * 5, [1, 1, 0, 0, 0], [0] * 5], bool)
  np.testing.assert_array_equal(pos, want_pos)
  np.testing.assert_array_equal(neg, np.asarray(y)[:, None] != np.asarray(y)[None, :])
  np.testing.assert_array_equal(valid_anchor_mask(y), [True, True, False, True, False])
  ref = jnp.array([5, 1])
  np.testing.assert_array_equal(valid_anchor_mask(y, ref), [False, False, True, False, False])
  np.testing.assert_array_equal(pair_masks(y, ref)[0][2], [True, False])


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, y: pairwise_circle_loss(x[0], y), ValueError, "embeddings must have rank 2"),
        (lambda x, y: pairwise_circle_loss(x, y.astype(jnp.float32)), TypeError,
         "labels must have an integer dtype"),
        (lambda x, y: pairwise_circle_loss(x.astype(jnp.int32), y), TypeError,
         "embeddings must have a floating dtype"),
        (lambda x, y: pairwise_circle_loss(x, y[:3]), ValueError, r"labels must have shape \(4,\)"),
        (lambda x, y: pairwise_circle_loss(x[:0], y[:0]), ValueError, "embeddings is empty"),
        (lambda x, y: pairwise_circle_loss(x, y, ref_embeddings=x), ValueError, "given together"),
        (lambda x, y: pairwise_circle_loss(x, y, ref_embeddings=x[:, :2], ref_labels=y),
         ValueError, "ref_embeddings has feature dimension 2"),
        (lambda x, y: pairwise_circle_loss(x, y, ref_embeddings=x, ref_labels=y[:2]),
         ValueError, "ref_labels must have shape"),
        (lambda x, y: pairwise_circle_loss(x, y, gamma=0.0), ValueError, "gamma must be > 0"),
        (lambda x, y: pairwise_circle_loss(x, y, margin=float("nan")), ValueError, "margin"),
        (lambda x, y: pairwise_circle_loss(x, y, chunk_size=0), ValueError, "chunk_size"),
        (lambda x, y: pairwise_circle_loss(x, y, chunk_size=2.5), TypeError, "chunk_size"),
        (lambda x, y: pair_masks(y[:, None]), ValueError, "labels must have rank 1"),
        (lambda x, y: pairwise_circle_loss(x, y, grad_through_alpha="yes"), TypeError,
         "grad_through_alpha must be a Python bool"),
    ],
)
def test_bad_input(call, error, match):
  x, y = jnp.ones((4, 3)), jnp.array([0, 0, 1, 1])
  with pytest.raises(error, match=match):
    call(x, y)


def test_int64_ids_beyond_int32_raise_instead_of_merging():
  # With x64 off, jnp.asarray truncates int64 to int32: ids 0 and 2**32 would
  # merge and an anchor with no positive would get a loss of ~69 instead of 0.
  x = jax.random.normal(jax.random.key(0), (2, 4))
  big = np.array([0, 2**32], np.int64)
  with pytest.raises(ValueError, match=r"labels .*\[0, 4294967296\].*np\.unique"):
    pairwise_circle_loss(x, big)
  with pytest.raises(ValueError, match=r"ref_labels .*np\.unique"):
    pairwise_circle_loss(x, np.array([0, 1]), ref_embeddings=x, ref_labels=big)
  with pytest.raises(ValueError, match="labels"):
    pair_masks(big)
  dense = np.unique(big, return_inverse=True)[1]
  np.testing.assert_array_equal(pairwise_circle_loss(x, dense), [0.0, 0.0])
  # int64 ids that fit in int32 are fine.
  np.testing.assert_array_equal(pairwise_circle_loss(x, np.array([-5, 2**31 - 1], np.int64)),
                                [0.0, 0.0])


def test_int64_ids_are_kept_with_x64(x64):
  x = jax.random.normal(jax.random.key(0), (2, 4), jnp.float64)
  np.testing.assert_array_equal(pairwise_circle_loss(x, np.array([0, 2**32], np.int64)),
                                [0.0, 0.0])
