"""The losses inside jax.shard_map / jax.pmap on emulated CPU devices.

Each device holds a local batch (and, for class-level losses, all class
weights); per-device results must equal calling the loss on that shard. The
cross-device versions (global negatives, class-sharded weights) are
`circle_jax.parallel`'s job; this checks the single-device losses compose.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import circle_jax as cj

from tests.conftest import slow

NUM_DEVICES = 4


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < NUM_DEVICES:
    pytest.skip(f"needs {NUM_DEVICES} devices, have {jax.device_count()}")
  return jax.make_mesh((NUM_DEVICES,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))


def per_shard(fn, *arrays):
  return jnp.concatenate([fn(*(a[i] for a in arrays)) for i in range(NUM_DEVICES)])


# Fast tier: the dense paths under shard_map; the chunked ones run in the slow tier.
@pytest.mark.parametrize("chunk_size", [None, slow(3)])
def test_pairwise_under_shard_map(mesh, rng, chunk_size):
  x = rng.normal(size=(NUM_DEVICES * 6, 5)).astype(np.float32)
  y = (np.arange(NUM_DEVICES * 6) % 3).astype(np.int32)
  loss = lambda a, b: cj.pairwise_circle_loss(a, b, chunk_size=chunk_size)
  sharded = jax.jit(jax.shard_map(loss, mesh=mesh, in_specs=(P("batch"), P("batch")),
                                  out_specs=P("batch")))
  want = per_shard(loss, x.reshape(NUM_DEVICES, 6, 5), y.reshape(NUM_DEVICES, 6))
  chex.assert_trees_all_close(sharded(x, y), want, rtol=1e-5, atol=1e-5)
  grad = jax.jit(jax.grad(lambda a: sharded(a, y).sum()))(x)
  want_grad = jnp.concatenate([
      jax.grad(lambda a: loss(a, y[i * 6:(i + 1) * 6]).sum())(x[i * 6:(i + 1) * 6])
      for i in range(NUM_DEVICES)])
  chex.assert_trees_all_close(grad, want_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, slow(2)])
def test_class_level_under_shard_map(mesh, rng, chunk_size):
  x = rng.normal(size=(NUM_DEVICES * 3, 5)).astype(np.float32)
  w = rng.normal(size=(7, 5)).astype(np.float32)
  y = rng.integers(0, 7, size=NUM_DEVICES * 3).astype(np.int32)
  loss = lambda a, p, b: cj.class_circle_loss(a, p, b, chunk_size=chunk_size)
  sharded = jax.jit(jax.shard_map(loss, mesh=mesh, in_specs=(P("batch"), P(), P("batch")),
                                  out_specs=P("batch")))
  want = per_shard(lambda a, b: loss(a, w, b), x.reshape(NUM_DEVICES, 3, 5),
                   y.reshape(NUM_DEVICES, 3))
  chex.assert_trees_all_close(sharded(x, w, y), want, rtol=1e-5, atol=1e-4)
  # The replicated weights' gradient is the sum over devices of the local ones.
  gw = jax.jit(jax.grad(lambda p: sharded(x, p, y).sum()))(w)
  chex.assert_trees_all_close(
      gw, jax.grad(lambda p: loss(x, p, y).sum())(w), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # the shard_map tests above stay in the fast tier
def test_pmap(rng):
  if jax.device_count() < NUM_DEVICES:
    pytest.skip(f"needs {NUM_DEVICES} devices")
  x = rng.normal(size=(NUM_DEVICES, 6, 5)).astype(np.float32)
  y = np.tile(np.array([0, 0, 1, 1, 2, 2], np.int32), (NUM_DEVICES, 1))
  got = jax.pmap(lambda a, b: cj.pairwise_circle_loss(a, b, chunk_size=4))(x, y)
  want = per_shard(cj.pairwise_circle_loss, x, y).reshape(NUM_DEVICES, 6)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_x64_hyperparameters_keep_the_float32_loss(x64):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
  y = jnp.array([0, 0, 1, 1, 2, 2])
  for chunk_size in (None, 2):
    got = jax.vmap(lambda g: cj.pairwise_circle_loss(x, y, gamma=g, chunk_size=chunk_size))(
        jnp.array([16.0, 80.0]))
    assert got.dtype == jnp.float32
