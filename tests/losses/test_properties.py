"""Property-based tests over shapes, masks, hyper-parameters and label patterns."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from circle_jax import circle_loss, circle_loss_grads, class_circle_loss
from circle_jax import pairwise_circle_loss, valid_anchor_mask
from tests.losses.test_circle import np_circle

# Hypothesis sweeps: the fixed-case tests of each loss keep the fast tier's
# value, gradient and masking checks; these wide sweeps run in the slow tier.
pytestmark = pytest.mark.slow

margins = st.sampled_from([-0.2, -0.05, 0.0, 0.1, 0.25, 0.4, 0.5])
gammas = st.sampled_from([1.0, 32.0, 80.0, 256.0, 1024.0])


@st.composite
def similarity_sets(draw):
  batch = draw(st.integers(1, 3))
  k, l = draw(st.integers(0, 5)), draw(st.integers(0, 5))
  seed = draw(st.integers(0, 2**16))
  rng = np.random.default_rng(seed)
  sp = rng.uniform(-1, 1, (batch, k))
  sn = rng.uniform(-1, 1, (batch, l))
  return sp, sn, rng.random((batch, k)) < 0.7, rng.random((batch, l)) < 0.7


# Every example compiles its own shapes: 12 examples (not the profile's 25) cover the
# sampled margins, scales and set sizes at half the compile time.
@settings(max_examples=12)
@given(similarity_sets(), margins, gammas)
def test_circle_loss_properties(sets, margin, gamma):
  sp, sn, spm, snm = sets
  with jax.enable_x64(True):
    kw = dict(margin=margin, gamma=gamma, sp_mask=spm, sn_mask=snm)
    loss = np.asarray(circle_loss(sp, sn, **kw))
    want = [np_circle(sp[b], sn[b], margin, gamma, spm[b], snm[b]) for b in range(len(sp))]
    np.testing.assert_allclose(loss, want, rtol=1e-10, atol=1e-10)
    assert np.all(loss >= 0)
    # Empty sets (after masking) give exactly zero.
    empty = ~spm.any(-1) | ~snm.any(-1)
    assert np.all(loss[empty] == 0)
    # Order within a set does not matter.
    perm_p, perm_n = np.arange(sp.shape[1])[::-1], np.arange(sn.shape[1])[::-1]
    permuted = circle_loss(sp[:, perm_p], sn[:, perm_n], margin=margin, gamma=gamma,
                           sp_mask=spm[:, perm_p], sn_mask=snm[:, perm_n])
    np.testing.assert_allclose(permuted, loss, rtol=1e-12, atol=1e-12)
    # Closed form equals autodiff everywhere, including empty and masked entries.
    auto = jax.grad(lambda a, b: circle_loss(a, b, **kw).sum(), argnums=(0, 1))(sp, sn)
    closed = circle_loss_grads(sp, sn, **kw)
    chex.assert_trees_all_close(closed, auto, rtol=1e-9, atol=1e-9)
    assert all(np.all(np.isfinite(g)) for g in closed)


@st.composite
def labelled_batches(draw):
  labels = draw(st.lists(st.integers(0, 4), min_size=1, max_size=9))
  seed = draw(st.integers(0, 2**16))
  x = np.random.default_rng(seed).normal(size=(len(labels), 4)).astype(np.float32)
  return x, np.array(labels, np.int32)


@given(labelled_batches(), st.integers(1, 10), st.integers(0, 2**16))
def test_pairwise_properties(batch, chunk_size, seed):
  x, y = batch
  loss = np.asarray(pairwise_circle_loss(x, y))
  valid = np.asarray(valid_anchor_mask(y))
  assert np.all(np.isfinite(loss)) and np.all(loss >= 0)
  assert np.all(loss[~valid] == 0)
  # Each anchor's loss depends on the batch as a set: permuting the batch permutes it.
  perm = np.random.default_rng(seed).permutation(len(y))
  np.testing.assert_allclose(pairwise_circle_loss(x[perm], y[perm]), loss[perm],
                             rtol=1e-5, atol=1e-4)
  # Streaming over any chunk size gives the dense values.
  np.testing.assert_allclose(pairwise_circle_loss(x, y, chunk_size=chunk_size), loss,
                             rtol=1e-5, atol=1e-4)
  grad = jax.grad(lambda e: pairwise_circle_loss(e, y).sum())(x)
  assert np.all(np.isfinite(grad))


@given(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16))
def test_class_level_properties(batch, classes, chunk_size, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, 4)).astype(np.float32)
  w = rng.normal(size=(classes, 4)).astype(np.float32)
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  loss = np.asarray(class_circle_loss(x, w, y))
  assert np.all(np.isfinite(loss)) and np.all(loss >= 0)
  if classes == 1:
    assert np.all(loss == 0)
  np.testing.assert_allclose(class_circle_loss(x, w, y, chunk_size=chunk_size), loss,
                             rtol=1e-5, atol=1e-3)
  # Relabelling the classes (permuting proxies and labels together) changes nothing.
  perm = rng.permutation(classes)
  inverse = np.argsort(perm)
  np.testing.assert_allclose(class_circle_loss(x, w[perm], inverse[y].astype(np.int32)), loss,
                             rtol=1e-5, atol=1e-3)
