"""circle_jax.parallel.pairwise_circle_loss == the single-device loss on the global batch."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import circle_jax as cj
from circle_jax import parallel
from tests.conftest import labels_with_pattern
from tests.conftest import slow
from tests.parallel.conftest import NUM_DEVICES, assert_close, weighted_sum

LOCAL = 5  # anchors per device: 40 in all, so blocks and chunks do not divide evenly


def sharded(mesh, **kw):
  loss = functools.partial(parallel.pairwise_circle_loss, axis_name="d", **kw)
  return jax.jit(jax.shard_map(loss, mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d")))


def value_and_grad(fn, x, y):
  return fn(x, y), jax.grad(lambda e: weighted_sum(fn(e, y)))(x)


def problem(rng, pattern="mixed", dtype=np.float32, dim=6):
  x = rng.normal(size=(NUM_DEVICES * LOCAL, dim)).astype(dtype)
  return jnp.asarray(x), jnp.asarray(labels_with_pattern(rng, NUM_DEVICES * LOCAL, pattern))


# Fast tier: mixed labels, all-gather dense and ring chunked (ring dense runs fast
# in test_jit_with_named_sharding_inputs, all-gather chunked in
# test_float64_gradients_include_margin_and_gamma); P×K labels and the other
# strategy × chunk crosses run in the slow tier.
@pytest.mark.parametrize("chunk_size,ring", [(None, False), slow(None, True), slow(3, False), (3, True)])
@pytest.mark.parametrize("pattern", ["mixed", slow("pk")])
def test_equals_dense_on_global_batch(mesh, rng, ring, chunk_size, pattern):
  x, y = problem(rng, pattern)
  got = value_and_grad(sharded(mesh, ring=ring, chunk_size=chunk_size), x, y)
  want = value_and_grad(cj.pairwise_circle_loss, x, y)
  assert_close(got, want, rtol=1e-5)
  # Anchors carry a loss exactly when the *global* batch has a positive and a negative.
  np.testing.assert_array_equal(np.asarray(got[0]) > 0, cj.valid_anchor_mask(y))


@pytest.mark.slow  # cross-device positives stay fast in test_equals_dense_on_global_batch
def test_uneven_labels_across_devices(mesh, rng):
  """Positives only on other devices, a class on one device only, singletons."""
  y = np.repeat(np.arange(NUM_DEVICES), LOCAL)  # device i holds class i only ...
  y[0] = NUM_DEVICES  # ... except a singleton (no positive anywhere: loss 0)
  y[LOCAL] = 0  # class 0 now has a member on device 1: cross-device positive
  x = jnp.asarray(rng.normal(size=(NUM_DEVICES * LOCAL, 4)).astype(np.float32))
  y = jnp.asarray(y.astype(np.int32))
  for ring in (False, True):
    got = value_and_grad(sharded(mesh, ring=ring, chunk_size=2), x, y)
    assert_close(got, value_and_grad(cj.pairwise_circle_loss, x, y), rtol=1e-5)
    assert got[0][0] == 0 and got[0][LOCAL] > 0


@pytest.mark.parametrize("pattern", ["singletons", "single_class"])
def test_no_valid_anchor_gives_zero_and_zero_gradient(mesh, rng, pattern):
  x, y = problem(rng, pattern)
  for ring in (False, True):
    loss, grad = value_and_grad(sharded(mesh, ring=ring), x, y)
    assert np.all(np.asarray(loss) == 0) and np.all(np.asarray(grad) == 0)


@pytest.mark.slow  # float64 stays fast in test_float64_gradients_include_margin_and_gamma
def test_float64_exact(mesh, rng, x64):
  x, y = problem(rng, "mixed", np.float64)
  want = value_and_grad(
      lambda e, l: cj.pairwise_circle_loss(e, l, margin=0.25, gamma=256.0), x, y)
  for ring in (False, True):
    got = value_and_grad(sharded(mesh, ring=ring, chunk_size=4, margin=0.25, gamma=256.0), x, y)
    assert got[0].dtype == jnp.float64
    assert_close(got, want, rtol=1e-10)


@pytest.mark.slow  # a strategy × option cross
def test_ring_equals_all_gather_through_alpha(mesh, rng):
  x, y = problem(rng)
  kw = dict(grad_through_alpha=True, gamma=32.0)
  ring = value_and_grad(sharded(mesh, ring=True, **kw), x, y)
  gather = value_and_grad(sharded(mesh, ring=False, **kw), x, y)
  assert_close(ring, gather, rtol=1e-5)
  assert_close(ring, value_and_grad(
      lambda e, l: cj.pairwise_circle_loss(e, l, **kw), x, y), rtol=1e-5)


@pytest.mark.slow  # the shard_map tests stay in the fast tier
def test_pmap(rng):
  if jax.device_count() < NUM_DEVICES:
    pytest.skip(f"needs {NUM_DEVICES} devices")
  x, y = problem(rng)
  want = value_and_grad(cj.pairwise_circle_loss, x, y)
  for ring in (False, True):
    fn = jax.pmap(functools.partial(parallel.pairwise_circle_loss, axis_name="i", ring=ring,
                                    chunk_size=3), axis_name="i")
    flat = lambda e, l: fn(e.reshape(NUM_DEVICES, LOCAL, -1), l.reshape(NUM_DEVICES, LOCAL)).ravel()
    assert_close(value_and_grad(flat, x, y), want, rtol=1e-5)


def test_jit_with_named_sharding_inputs(mesh, rng):
  x, y = problem(rng)
  spec = NamedSharding(mesh, P("d"))
  xs, ys = jax.device_put(x, spec), jax.device_put(y, spec)
  loss, grad = jax.jit(lambda e, l: value_and_grad(sharded(mesh, ring=True), e, l))(xs, ys)
  assert loss.sharding.is_equivalent_to(spec, 1) and grad.sharding.is_equivalent_to(spec, 2)
  assert_close((loss, grad), value_and_grad(cj.pairwise_circle_loss, x, y), rtol=1e-5)


def _temp_bytes(mesh, ring, local):
  x = jax.ShapeDtypeStruct((NUM_DEVICES * local, 32), jnp.float32)
  y = jax.ShapeDtypeStruct((NUM_DEVICES * local,), jnp.int32)
  fn = sharded(mesh, ring=ring)
  compiled = jax.jit(jax.grad(lambda e, l: fn(e, l).sum())).lower(x, y).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_ring_memory_is_local_squared(mesh):
  """Per device, the all-gather version holds a B_local × B_global block, the ring a
  B_local × B_local one (compile only)."""
  local = 256
  ring, gather = _temp_bytes(mesh, True, local), _temp_bytes(mesh, False, local)
  block = local * local * 4
  assert gather >= NUM_DEVICES * block, (gather, block)
  assert ring < gather / 3, (ring, gather)


def test_errors(mesh, rng):
  x, y = problem(rng)
  with pytest.raises(TypeError, match="axis_name"):
    parallel.pairwise_circle_loss(x, y)
  with pytest.raises(ValueError, match="axis_name 'd' is not a mapped axis"):
    parallel.pairwise_circle_loss(x, y, axis_name="d")
  with pytest.raises(ValueError, match="axis_name must name"):
    parallel.pairwise_circle_loss(x, y, axis_name=None)
  with pytest.raises(ValueError, match="chunk_size must be positive"):
    sharded(mesh, chunk_size=0)(x, y)
  with pytest.raises(TypeError, match="ring must be a Python bool"):
    sharded(mesh, ring="yes")(x, y)
  with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
    sharded(mesh)(x, y[:8])


@pytest.mark.parametrize("ring", [False, True])
def test_backward_sends_no_reference_gradient(mesh, ring):
  """The symmetric backward: each device forms its own gradient with one GEMM
  (besides the forward and the recomputed block) and no [B, D]-sized gradient
  crosses devices: no reduce-scatter, no ring hop carrying a gradient."""
  x = jax.ShapeDtypeStruct((NUM_DEVICES * 16, 32), jnp.float32)
  y = jax.ShapeDtypeStruct((NUM_DEVICES * 16,), jnp.int32)
  grad = jax.grad(lambda e, l: sharded(mesh, ring=ring)(e, l).sum())
  text = jax.jit(grad).lower(x, y).compile().as_text()
  assert "reduce-scatter" not in text
  dots = len(re.findall(r"\sdot\(", text))
  # Gather: the forward product and its recomputation are one (XLA merges the
  # two identical gathers), plus the gradient's product. Ring: the same per hop,
  # written twice (the scanned hops and the last one), in each pass.
  assert dots == (6 if ring else 2), dots
  # What travels: the [16, 32] embedding blocks, labels and [16]-sized statistics.
  sent = re.findall(r"(\w+)\[([\d,]*)\][^\n]*(?:all-gather|collective-permute)(?:-start)?\(", text)
  sizes = {tuple(int(d) for d in dims.split(",") if d) for _, dims in sent}
  big = {s for s in sizes if len(s) == 2}
  assert big <= {(16, 32), (NUM_DEVICES * 16, 32)}, sizes


# Fast tier: all-gather, chunked, with α differentiated (the α terms); the other
# strategy × option crosses run in the slow tier.
@pytest.mark.parametrize("ring", [False, slow(True)])
@pytest.mark.parametrize("through_alpha", [slow(False), True])
def test_float64_gradients_include_margin_and_gamma(mesh, rng, ring, through_alpha, x64):
  x, y = problem(rng, "pk", np.float64)
  kw = dict(grad_through_alpha=through_alpha)

  def total(fn, e, m, g):
    return weighted_sum(fn(e, y, m, g))

  ours = lambda e, l, m, g: jax.shard_map(
      functools.partial(parallel.pairwise_circle_loss, axis_name="d", ring=ring,
                        chunk_size=3, margin=m, gamma=g, **kw),
      mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d"))(e, l)
  ref = lambda e, l, m, g: cj.pairwise_circle_loss(e, l, margin=m, gamma=g, **kw)
  args = (x, jnp.float64(0.3), jnp.float64(64.0))
  got = jax.jit(jax.value_and_grad(lambda *a: total(ours, *a), argnums=(0, 1, 2)))(*args)
  want = jax.value_and_grad(lambda *a: total(ref, *a), argnums=(0, 1, 2))(*args)
  assert_close(got, want, rtol=1e-10)
