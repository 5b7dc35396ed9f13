"""Class proxies sharded along a 'model' mesh axis (8 emulated devices) == the 1-device step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from circle_jax import models
from circle_jax import training

# circle_class with γ = 64: its gradients are large enough that a wrong
# collective (a missing psum over 'data', a mean over the local shard only)
# moves the parameters by far more than the tolerance, small enough that 3 SGD
# steps stay in a regime where float rounding is not amplified.
HPARAMS = {"gamma": 64.0, "margin": 0.25}
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _needs_8_devices():
  if jax.device_count() < 8:
    pytest.skip("needs the 8 emulated CPU devices of tests/conftest.py")


def _state(num_classes, class_shards, tx):
  model = training.MetricModel(
      models.SmallCNN(features=(4, 8), embedding_dim=8, global_pool=False),
      num_classes=num_classes, class_shards=class_shards)
  return training.create_train_state(model, tx, jax.random.key(0), jnp.ones((1, 12, 12, 1)))


def _batch(n, classes, seed=0):
  rng = np.random.default_rng(seed)
  labels = (np.arange(n) % classes).astype(np.int32)
  centres = rng.normal(size=(classes, 12, 12, 1)).astype(np.float32)
  images = centres[labels] + rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
  return {"image": images, "label": labels}


def _train(num_devices, model_axis_size, num_classes, tx, steps):
  """``steps`` jitted train steps on a (num_devices / m, m) mesh; the final state and losses."""
  mesh = training.make_mesh(num_devices, model_axis_size=model_axis_size)
  _, loss_fn = training.make_mesh_loss("circle_class", HPARAMS, mesh, num_classes=num_classes)
  state = _state(num_classes, model_axis_size, tx)
  state = jax.device_put(state, training.state_shardings(state, mesh))
  step = training.jit_train_step(loss_fn, mesh, state)
  batch = training.shard_batch(_batch(16, num_classes), mesh)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return state, np.array(losses)


def _class_weight_leaves(tree):
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
          if "class_weights" in jax.tree_util.keystr(path)}


def test_make_mesh_is_data_by_model():
  mesh = training.make_mesh(8, model_axis_size=2)
  assert mesh.axis_names == ("data", "model") and dict(mesh.shape) == {"data": 4, "model": 2}
  assert dict(training.make_mesh(1).shape) == {"data": 1, "model": 1}
  assert training.batch_sharding(mesh).spec == P(("data", "model"))
  assert training.padded_num_classes(5, 4) == 8 and training.padded_num_classes(8, 4) == 8
  with pytest.raises(ValueError, match="model_axis_size=3 .* divides the 8 devices"):
    training.make_mesh(8, model_axis_size=3)
  with pytest.raises(ValueError, match="model_axis_size=0"):
    training.make_mesh(8, model_axis_size=0)


@pytest.mark.parametrize("shape, num_classes", [((4, 2), 4), ((2, 4), 5), ((4, 2), 7)])
def test_sharded_loss_value_and_grads_equal_the_dense_loss(shape, num_classes):
  """The loss alone: no backbone, so only the model-axis collectives differ from 1 device."""
  data, model = shape
  mesh = training.make_mesh(data * model, model_axis_size=model)
  _, sharded_fn = training.make_mesh_loss("circle_class", HPARAMS, mesh, num_classes=num_classes)
  _, dense_fn = training.make_loss("circle_class", HPARAMS)
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (16, 6))
  w = jax.random.normal(kw, (num_classes, 6))
  y = jnp.arange(16) % num_classes
  rows = training.padded_num_classes(num_classes, model)
  # Padding rows with large values: they must not reach the loss at all.
  w_pad = jnp.concatenate([w, 10 * jnp.ones((rows - num_classes, 6))])
  x_s, y_s = (jax.device_put(a, training.batch_sharding(mesh)) for a in (x, y))
  w_s = jax.device_put(w_pad, training.class_sharding(mesh))
  value_and_grad = jax.value_and_grad(lambda a, b, c: sharded_fn(a, c, b), argnums=(0, 1))
  loss, (dx, dw) = jax.jit(value_and_grad)(x_s, w_s, y_s)
  want_loss, (want_dx, want_dw) = jax.value_and_grad(
      lambda a, b: dense_fn(a, y, b), argnums=(0, 1))(x, w)
  assert dw.sharding.is_equivalent_to(training.class_sharding(mesh), 2)  # P('model') ≡ P('model', None)
  np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
  for got, want in ((dx, want_dx), (dw[:num_classes], want_dw)):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())
  assert np.all(np.asarray(dw[num_classes:]) == 0)


@pytest.mark.slow
@pytest.mark.parametrize("shape, num_classes", [((4, 2), 4), ((2, 4), 5)])
def test_train_steps_on_a_model_axis_equal_the_1_device_step(shape, num_classes):
  """3 SGD-momentum steps, proxies split along 'model' (C = 5 padded to 8), vs 1 device.

  Not bitwise equal: on 8 devices the batch sums (BatchNorm statistics,
  gradient all-reduces) and the class log-sum-exp (per-shard max and sum, then
  pmax / psum) add in another order, a few float32 ulps per step. The 8-device
  data-parallel step differs from 1 device by the same amount (measured), so
  the model axis adds nothing beyond summation order. Parameters are O(1),
  hence the absolute tolerance RTOL; ``head.bn_in.bias`` and ``head.fc.bias``
  feed a BatchNorm through linear maps only, so their exact gradient is 0 and
  their float updates (~1e-9) are rounding noise that only an absolute
  tolerance can compare.
  """
  data, model = shape
  tx = optax.sgd(1e-2, momentum=0.9)
  init = jax.device_get(_state(num_classes, 1, tx).params)
  want, want_losses = _train(1, 1, num_classes, tx, steps=3)
  got, got_losses = _train(data * model, model, num_classes, tx, steps=3)

  # Really sharded: the proxies and their momentum, one slice of classes per 'model' index.
  rows = training.padded_num_classes(num_classes, model)
  leaves = _class_weight_leaves({"params": got.params, "opt_state": got.opt_state})
  assert len(leaves) == 2, leaves.keys()          # params and the momentum trace
  for name, leaf in leaves.items():
    assert leaf.shape == (rows, 8) and leaf.sharding.spec == P("model", None), name
    assert {s.data.shape for s in leaf.addressable_shards} == {(rows // model, 8)}, name
  kernel = got.params["backbone"]["conv0_0"]["kernel"]
  assert kernel.sharding.spec == P() and kernel.sharding.mesh.shape["model"] == model

  np.testing.assert_allclose(got_losses, want_losses, rtol=RTOL)
  got_params = jax.device_get(got.params)
  want_params = jax.device_get(want.params)
  got_cw = got_params.pop("class_weights")
  want_cw = want_params.pop("class_weights")
  # Padding rows: zero at init, zero gradient, zero momentum, so still exactly zero.
  assert np.all(got_cw[num_classes:] == 0)
  np.testing.assert_allclose(got_cw[:num_classes], want_cw, rtol=RTOL, atol=RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL),
               got_params, want_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL),
               jax.device_get(got.batch_stats), jax.device_get(want.batch_stats))
  # The comparison can fail: the steps moved the proxies far beyond the tolerance.
  assert np.abs(want_cw - init["class_weights"]).max() > 1e3 * RTOL


@pytest.mark.slow
def test_adamw_moments_are_sharded_and_padding_rows_stay_zero():
  """AdamW with weight decay on the proxies: mu and nu mirror the class sharding; the
  padding row (C = 5 on 2 devices → 6 rows) is zero and stays zero (decay of 0 is 0)."""
  tx = training.make_optimizer("adamw", 1e-2, weight_decay=0.1)
  state, losses = _train(8, 2, 5, tx, steps=2)
  leaves = _class_weight_leaves({"params": state.params, "opt_state": state.opt_state})
  names = sorted(leaves)
  assert len(names) == 3 and any(".mu" in n for n in names) and any(".nu" in n for n in names)
  for name, leaf in leaves.items():
    assert leaf.sharding.spec == P("model", None), name
    assert np.all(np.asarray(leaf)[5:] == 0), name
    assert np.all(np.abs(np.asarray(leaf)[:5]).sum(axis=1) > 0), name
  others = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            if "class_weights" not in jax.tree_util.keystr(path)]
  assert others and all(leaf.sharding.spec == P() for leaf in others)
  assert np.all(np.isfinite(losses))


def test_bad_settings_name_the_problem():
  mesh = training.make_mesh(8, model_axis_size=2)
  for name in ("arcface", "circle_pair"):
    with pytest.raises(ValueError, match=f"model_axis_size=2 .*loss '{name}' has none"):
      training.make_mesh_loss(name, None, mesh, num_classes=4)
  with pytest.raises(ValueError, match="needs num_classes"):
    training.make_mesh_loss("circle_class", None, mesh)
  # A [C, D] proxy matrix that was not padded for the model axis.
  _, loss_fn = training.make_mesh_loss("circle_class", None, mesh, num_classes=5)
  with pytest.raises(ValueError, match=r"class_weights of shape \(5, 3\).*expected 6 rows"):
    loss_fn(jnp.ones((8, 3)), jnp.zeros(8, jnp.int32), jnp.ones((5, 3)))
  unpadded = _state(5, 1, optax.sgd(0.1))
  with pytest.raises(ValueError, match=r"\['class_weights'\] has 5 class rows, not a multiple"):
    training.state_shardings(unpadded, mesh)
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    training.shard_batch({"image": np.ones((12, 2))}, mesh)
  with pytest.raises(ValueError, match="class_shards must be a positive int"):
    _state(5, 0, optax.sgd(0.1))
