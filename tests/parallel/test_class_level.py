"""circle_jax.parallel.class_circle_loss == the single-device loss on all classes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import circle_jax as cj
from circle_jax import parallel

from tests.conftest import slow
from tests.parallel.conftest import NUM_DEVICES, assert_close, weighted_sum

LOCAL_BATCH = 3
LOCAL_CLASSES = 5


def sharded(mesh, **kw):
  loss = functools.partial(parallel.class_circle_loss, axis_name="d", **kw)
  return jax.jit(jax.shard_map(
      loss, mesh=mesh, in_specs=(P("d"), P("d"), P("d")), out_specs=P("d")))


def value_and_grad(fn, x, w, y):
  return fn(x, w, y), jax.grad(lambda e, p: weighted_sum(fn(e, p, y)), argnums=(0, 1))(x, w)


def problem(rng, num_classes, dtype=np.float32, dim=6):
  batch = NUM_DEVICES * LOCAL_BATCH
  x = rng.normal(size=(batch, dim)).astype(dtype)
  w = rng.normal(size=(NUM_DEVICES * LOCAL_CLASSES, dim)).astype(dtype)
  # Uneven: most examples in the first device's classes, one in the last real class.
  y = rng.integers(0, min(num_classes, 2 * LOCAL_CLASSES), size=batch)
  y[-1] = num_classes - 1
  return jnp.asarray(x), jnp.asarray(w), jnp.asarray(y.astype(np.int32))


# Fast tier: padded classes (C = 37) streamed in chunks of 2; the other paddings ×
# chunk sizes run in the slow tier.
@pytest.mark.parametrize("chunk_size", [slow(None), 2, slow(LOCAL_CLASSES)])
@pytest.mark.parametrize("padding", [slow(0), 3])
def test_equals_dense_on_all_classes(mesh, rng, chunk_size, padding):
  """C = 40 (even) or 37, padded with 3 rows on the last device and num_classes=37."""
  num_classes = NUM_DEVICES * LOCAL_CLASSES - padding
  x, w, y = problem(rng, num_classes)
  kw = dict(chunk_size=chunk_size, num_classes=None if padding == 0 else num_classes)
  loss, (dx, dw) = value_and_grad(sharded(mesh, **kw), x, w, y)
  want_loss, (want_dx, want_dw) = value_and_grad(cj.class_circle_loss, x, w[:num_classes], y)
  assert_close((loss, dx, dw[:num_classes]), (want_loss, want_dx, want_dw), rtol=1e-5)
  # Padded rows take no part: exactly zero gradient.
  assert np.all(np.asarray(dw[num_classes:]) == 0)


@pytest.mark.slow  # a dtype cross of test_equals_dense_on_all_classes
def test_float64_exact(mesh, rng, x64):
  x, w, y = problem(rng, 38, np.float64)
  got = value_and_grad(sharded(mesh, chunk_size=3, num_classes=38), x, w, y)
  want = value_and_grad(cj.class_circle_loss, x, w[:38], y)
  assert got[0].dtype == jnp.float64
  assert_close((got[0], got[1][0], got[1][1][:38]), (want[0], *want[1]), rtol=1e-10)


@pytest.mark.slow  # an option cross of test_equals_dense_on_all_classes
def test_through_alpha_and_hyperparameters(mesh, rng):
  x, w, y = problem(rng, NUM_DEVICES * LOCAL_CLASSES)
  kw = dict(margin=0.35, gamma=64.0, grad_through_alpha=True)
  got = value_and_grad(sharded(mesh, chunk_size=4, **kw), x, w, y)
  want = value_and_grad(functools.partial(cj.class_circle_loss, **kw), x, w, y)
  assert_close(got, want, rtol=1e-5)


@pytest.mark.slow  # the shard_map tests stay in the fast tier
def test_pmap(rng):
  if jax.device_count() < NUM_DEVICES:
    pytest.skip(f"needs {NUM_DEVICES} devices")
  x, w, y = problem(rng, NUM_DEVICES * LOCAL_CLASSES)
  fn = jax.pmap(functools.partial(parallel.class_circle_loss, axis_name="i", chunk_size=2),
                axis_name="i")

  def flat(e, p, l):
    split = lambda a: a.reshape(NUM_DEVICES, -1, *a.shape[1:])
    return fn(split(e), split(p), split(l)).ravel()

  assert_close(value_and_grad(flat, x, w, y), value_and_grad(cj.class_circle_loss, x, w, y),
               rtol=1e-5)


def test_jit_with_named_sharding_keeps_the_weight_gradient_sharded(mesh, rng):
  x, w, y = problem(rng, NUM_DEVICES * LOCAL_CLASSES)
  spec = NamedSharding(mesh, P("d"))
  args = [jax.device_put(a, spec) for a in (x, w, y)]
  loss, (dx, dw) = jax.jit(lambda *a: value_and_grad(sharded(mesh, chunk_size=2), *a))(*args)
  assert dw.sharding.is_equivalent_to(spec, 2) and loss.sharding.is_equivalent_to(spec, 1)
  assert_close((loss, dx, dw), value_and_grad(cj.class_circle_loss, x, w, y), rtol=1e-5)


def test_out_of_range_label_under_jit_is_nan(mesh, rng):
  x, w, y = problem(rng, 37)
  loss = sharded(mesh, num_classes=37)(x, w, y.at[4].set(38))
  assert np.isnan(loss[4]) and np.all(np.isfinite(np.delete(np.asarray(loss), 4)))


def test_errors(mesh, rng):
  x, w, y = problem(rng, 40)
  with pytest.raises(TypeError, match="axis_name"):
    parallel.class_circle_loss(x, w, y)
  with pytest.raises(ValueError, match="axis_name 'd' is not a mapped axis"):
    parallel.class_circle_loss(x, w, y, axis_name="d")
  with pytest.raises(ValueError, match=r"num_classes must be in \[1, 40\]"):
    sharded(mesh, num_classes=41)(x, w, y)
  with pytest.raises(TypeError, match="num_classes must be None or a Python int"):
    sharded(mesh, num_classes=39.0)(x, w, y)
  with pytest.raises(ValueError, match="class_weights has feature dimension 5"):
    sharded(mesh)(x, w[:, :5], y)
  with pytest.raises(ValueError, match="chunk_size must be positive"):
    sharded(mesh, chunk_size=-1)(x, w, y)
  with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
    sharded(mesh)(x, w, y[:16])
