"""Circle loss with class-level labels (class proxies)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from circle_jax import circle_loss, class_circle_loss

from tests.conftest import slow


def np_class_circle(x, w, labels, margin, gamma):
  """Per-example Eq. 6 with K = 1 (own proxy) and L = C − 1 (other proxies), float64."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  unit = lambda v: v / max(np.linalg.norm(v), 1e-12)
  out = []
  for b in range(len(x)):
    s = np.array([unit(x[b]) @ unit(w[c]) for c in range(len(w))])
    y = labels[b]
    lp = -gamma * max(1 + margin - s[y], 0.0) * (s[y] - (1 - margin))
    ln = [gamma * max(s[j] + margin, 0.0) * (s[j] - margin) for j in range(len(w)) if j != y]
    if not ln:
      out.append(0.0)
      continue
    top = max(ln)
    lse = top + math.log(sum(math.exp(t - top) for t in ln))
    out.append(float(np.logaddexp(0.0, lse + lp)))
  return np.array(out)


def np_circle_softmax_ce(x, w, labels, margin, gamma):
  """fast-reid's CircleSoftmax: cross-entropy on α-weighted logits (a second form)."""
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  wn = w / np.linalg.norm(w, axis=1, keepdims=True)
  s = xn @ wn.T
  onehot = np.eye(w.shape[0], dtype=bool)[labels]
  alpha_p = np.maximum(1 + margin - s, 0.0)
  alpha_n = np.maximum(s + margin, 0.0)
  logits = gamma * np.where(onehot, alpha_p * (s - (1 - margin)), alpha_n * (s - margin))
  top = logits.max(1, keepdims=True)
  log_softmax = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
  return -log_softmax[onehot]


def make_problem(rng, batch, classes, dim):
  x = rng.normal(size=(batch, dim))
  w = rng.normal(size=(classes, dim))
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  return x, w, y


@pytest.mark.parametrize("batch,classes", [(1, 2), (5, 3), (8, 17), (16, 40)])
@pytest.mark.parametrize("margin,gamma", [(0.25, 256.0), (0.25, 128.0), (-0.2, 1024.0), (0.5, 32.0)])
def test_matches_reference(x64, rng, batch, classes, margin, gamma):
  x, w, y = make_problem(rng, batch, classes, 6)
  got = class_circle_loss(x, w, y, margin=margin, gamma=gamma)
  chex.assert_shape(got, (batch,))
  np.testing.assert_allclose(got, np_class_circle(x, w, y, margin, gamma), rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(got, np_circle_softmax_ce(x, w, y, margin, gamma), rtol=1e-8, atol=1e-8)


def test_defaults_are_face_setting_and_equal_similarity_set_form(rng):
  x, w, y = make_problem(rng, 6, 9, 8)
  x, w = x.astype(np.float32), w.astype(np.float32)
  got = class_circle_loss(x, w, y)
  np.testing.assert_allclose(got, np_class_circle(x, w, y, 0.25, 256.0), rtol=2e-5, atol=1e-3)
  # The same thing through the similarity-set API: K = 1, L = C − 1.
  s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
  onehot = np.eye(9, dtype=bool)[y]
  sets = circle_loss(s[onehot][:, None], s, sn_mask=~onehot)
  chex.assert_trees_all_close(got, sets, rtol=1e-5, atol=1e-4)


# Fast tier: chunk 7 (does not divide C = 13: a padded last chunk), both α modes;
# chunks of 1, 4, 13 (= C) and 64 (> C) run in the slow tier.
@pytest.mark.parametrize("chunk_size", [slow(1), slow(4), 7, slow(13), slow(64)])
@pytest.mark.parametrize("through_alpha", [False, True])
def test_chunked_equals_dense(x64, rng, chunk_size, through_alpha):
  """13 classes: chunk sizes that divide, do not divide, and exceed C."""
  x, w, y = make_problem(rng, 6, 13, 5)
  f = lambda e, p, c: class_circle_loss(
      e, p, y, chunk_size=c, grad_through_alpha=through_alpha, margin=0.25, gamma=64.0).sum()
  value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), static_argnums=2)
  chex.assert_trees_all_close(
      value_and_grad(x, w, chunk_size), value_and_grad(x, w, None), rtol=1e-10, atol=1e-12)
  per_example = jax.jit(lambda e, p: class_circle_loss(e, p, y, chunk_size=chunk_size))
  chex.assert_trees_all_close(per_example(x, w), class_circle_loss(x, w, y), rtol=1e-12)


def test_check_grads_through_alpha(x64, rng):
  x, w, y = make_problem(rng, 4, 6, 5)
  for c in (None, 4):
    check_grads(
        lambda e, p: class_circle_loss(e, p, y, margin=0.25, gamma=4.0, chunk_size=c,
                                       grad_through_alpha=True),
        (x, w), order=1,
        # The chunked path is a custom_vjp: reverse mode only.
        modes=("fwd", "rev") if c is None else ("rev",))


def test_gradient_is_the_closed_form_through_the_similarities(x64, rng):
  """α stop-gradient: d/dW and d/dx equal Eq. 9–10 (as autodiff of circle_loss) chained
  through the cosine map — so the stop-gradient sits on α and nowhere else."""
  x, w, y = make_problem(rng, 5, 7, 4)
  onehot = jnp.asarray(np.eye(7, dtype=bool)[y])

  def via_sets(e, p):
    u = e / jnp.linalg.norm(e, axis=1, keepdims=True)
    v = p / jnp.linalg.norm(p, axis=1, keepdims=True)
    s = u @ v.T
    return circle_loss(s, s, margin=0.25, gamma=32.0, sp_mask=onehot, sn_mask=~onehot).sum()

  want = jax.grad(via_sets, argnums=(0, 1))(x, w)
  got = jax.grad(lambda e, p: class_circle_loss(e, p, y, margin=0.25, gamma=32.0).sum(),
                 argnums=(0, 1))(x, w)
  chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-12)


def test_single_class_gives_zero():
  x, w = jnp.ones((3, 4)), jnp.ones((1, 4))
  y = jnp.zeros(3, jnp.int32)
  chex.assert_trees_all_equal(class_circle_loss(x, w, y), jnp.zeros(3))
  grads = jax.grad(lambda e, p: class_circle_loss(e, p, y).sum(), argnums=(0, 1))(x, w)
  chex.assert_trees_all_equal(grads, (jnp.zeros((3, 4)), jnp.zeros((1, 4))))


def test_zero_vectors_have_finite_gradients():
  x = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  w = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  y = jnp.array([0, 1])
  for alpha in (False, True):
    for c in (None, 2):
      f = lambda e, p: class_circle_loss(e, p, y, grad_through_alpha=alpha, chunk_size=c).sum()
      assert np.isfinite(f(x, w))
      grads = jax.grad(f, argnums=(0, 1))(x, w)
      assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("gamma", [256.0, 1024.0])
def test_large_gamma_float32(rng, gamma):
  x, w, y = make_problem(rng, 8, 30, 16)
  x, w = x.astype(np.float32), w.astype(np.float32)
  got = class_circle_loss(x, w, y, gamma=gamma)
  np.testing.assert_allclose(got, np_class_circle(x, w, y, 0.25, gamma), rtol=1e-4, atol=1e-2)
  assert np.all(np.asarray(got) > 1.0)
  grads = jax.grad(lambda e, p: class_circle_loss(e, p, y, gamma=gamma).sum(), argnums=(0, 1))(x, w)
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_small_losses_keep_relative_accuracy(x64):
  """softplus(LSE_{j≠y} − z_y) does not cancel the way LSE_all − z_y would."""
  x = jnp.array([[1.0, 0.0]])
  w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  got = class_circle_loss(x.astype(jnp.float32), w.astype(jnp.float32), jnp.array([0]), gamma=256.0)
  want = np_class_circle(np.asarray(x), np.asarray(w), [0], 0.25, 256.0)
  assert 0 < want[0] < 1e-10
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bf16_inputs(rng):
  x, w, y = make_problem(rng, 16, 50, 32)
  x16, w16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  got = class_circle_loss(x16, w16, y)
  assert got.dtype == jnp.float32
  want = class_circle_loss(x16.astype(jnp.float32), w16.astype(jnp.float32), y)
  chex.assert_trees_all_close(got, want, rtol=1e-3, atol=5e-2)
  gx, gw = jax.grad(lambda e, p: class_circle_loss(e, p, y).sum(), argnums=(0, 1))(x16, w16)
  assert gx.dtype == gw.dtype == jnp.bfloat16


def test_jit_vmap_compose(rng):
  x = rng.normal(size=(3, 4, 5)).astype(np.float32)
  w = rng.normal(size=(6, 5)).astype(np.float32)
  y = rng.integers(0, 6, size=(3, 4)).astype(np.int32)
  mapped = jax.jit(jax.vmap(lambda e, l: class_circle_loss(e, w, l, chunk_size=4)))(x, y)
  for i in range(3):
    chex.assert_trees_all_close(mapped[i], class_circle_loss(x[i], w, y[i]), rtol=1e-5)
  gammas = jnp.array([64.0, 128.0, 256.0])
  by_gamma = jax.vmap(lambda g: class_circle_loss(x[0], w, y[0], gamma=g))(gammas)
  for i, g in enumerate(gammas):
    chex.assert_trees_all_close(by_gamma[i], class_circle_loss(x[0], w, y[0], gamma=float(g)),
                                rtol=1e-5)


def test_out_of_range_labels():
  x, w = jnp.ones((3, 4)), jnp.eye(5, 4)
  for bad in ([0, 5, 1], [-1, 0, 1]):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
      class_circle_loss(x, w, jnp.array(bad))
  # Under jit the value cannot be checked: that example's loss is NaN, the others are not.
  got = jax.jit(class_circle_loss)(x, w, jnp.array([0, 5, 1]))
  got = np.asarray(got)
  assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, w, y: class_circle_loss(x, w[:, :3], y), ValueError,
         "class_weights has feature dimension 3"),
        (lambda x, w, y: class_circle_loss(x, w[0], y), ValueError, "class_weights must have rank 2"),
        (lambda x, w, y: class_circle_loss(x, w[:0], y), ValueError, "class_weights is empty"),
        (lambda x, w, y: class_circle_loss(x, w, y.astype(jnp.float32)), TypeError,
         "labels must have an integer dtype"),
        (lambda x, w, y: class_circle_loss(x, w, y[:, None]), ValueError, "labels must have shape"),
        (lambda x, w, y: class_circle_loss(x, w, y, gamma=-2.0), ValueError, "gamma must be > 0"),
        (lambda x, w, y: class_circle_loss(x, w, y, chunk_size=-1), ValueError, "chunk_size"),
        (lambda x, w, y: class_circle_loss(x, w.astype(jnp.int32), y), TypeError,
         "class_weights must have a floating dtype"),
    ],
)
def test_bad_input(call, error, match):
  x, w, y = jnp.ones((3, 4)), jnp.eye(5, 4), jnp.array([0, 1, 4])
  with pytest.raises(error, match=match):
    call(x, w, y)


def test_int64_ids_beyond_int32_are_out_of_range_not_truncated():
  # 2**32 truncated to int32 is 0, a valid class: it must be reported instead.
  x = jax.random.normal(jax.random.key(0), (2, 4))
  w = jax.random.normal(jax.random.key(1), (3, 4))
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*4294967296"):
    class_circle_loss(x, w, np.array([0, 2**32], np.int64))
