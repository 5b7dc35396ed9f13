"""Loss registry, optimisers, train step, sharded step (8 emulated devices), checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from circle_jax import models
from circle_jax import training


def _state(num_classes=0, tx=None, dim=8):
  model = training.MetricModel(models.SmallCNN(features=(4, 8), embedding_dim=dim,
                                               global_pool=False), num_classes=num_classes)
  return training.create_train_state(model, tx or optax.sgd(0.05, momentum=0.9),
                                     jax.random.key(0), jnp.ones((1, 12, 12, 1)))


def _batch(n=16, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(classes), n // classes).astype(np.int32)
  # Class-dependent blobs plus noise: learnable, and not trivially separated.
  centres = rng.normal(size=(classes, 12, 12, 1)).astype(np.float32)
  images = centres[labels] + rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


@pytest.mark.parametrize("name", sorted(training.LOSSES))
def test_every_registered_loss_is_finite_with_gradients(name):
  spec, loss_fn = training.make_loss(name)
  x = jax.random.normal(jax.random.key(0), (8, 5))
  y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  w = jax.random.normal(jax.random.key(1), (4, 5))
  value, grad = jax.value_and_grad(lambda x: loss_fn(x, y, w if spec.kind == "class" else None))(x)
  assert value.shape == () and np.isfinite(value) and np.all(np.isfinite(grad))
  assert np.abs(grad).sum() > 0


def test_pair_loss_averages_over_valid_anchors_only():
  _, loss_fn = training.make_loss("circle_pair")
  from circle_jax.losses import pairwise_circle_loss
  x = jax.random.normal(jax.random.key(0), (5, 3))
  y = jnp.array([0, 0, 1, 1, 2])  # the last anchor has no positive
  per_anchor = pairwise_circle_loss(x, y)
  np.testing.assert_allclose(loss_fn(x, y), per_anchor[:4].mean(), rtol=1e-6)


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown loss name 'circel'.*circle_pair"):
    training.make_loss("circel")
  with pytest.raises(ValueError, match=r"no hyper-parameter\(s\) \['gama'\]"):
    training.make_loss("circle_pair", {"gama": 3.0})
  _, loss_fn = training.make_loss("arcface")
  with pytest.raises(ValueError, match="needs class_weights"):
    loss_fn(jnp.ones((2, 3)), jnp.array([0, 1]), None)
  assert training.get_loss_spec("am_softmax").hparams == {"margin": 0.35, "gamma": 64.0, "chunk_size": None}


@pytest.mark.slow
def test_step_schedule_and_decay_mask():
  s = training.make_schedule("step", base_lr=1.0, num_steps=10, warmup_steps=2)
  np.testing.assert_allclose([s(t) for t in (0, 1, 2, 4, 5, 7, 9)],
                             [0, 0.5, 1, 1, 0.1, 0.01, 0.001], rtol=1e-6)
  state = _state(num_classes=3)
  mask = training.decay_mask(state.params)
  assert mask["class_weights"] and mask["backbone"]["conv0_0"]["kernel"]
  assert not mask["backbone"]["bn0_0"]["scale"] and not mask["backbone"]["head"]["fc"]["bias"]
  with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
    training.make_optimizer("adam", 0.1)
  with pytest.raises(ValueError, match="unknown schedule"):
    training.make_schedule("linear", base_lr=0.1, num_steps=5)


def test_weight_decay_skips_batchnorm_and_biases():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  tx = training.make_optimizer("sgd", 1.0, momentum=0.0, weight_decay=0.1)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1)
  np.testing.assert_allclose(updates["bias"], 0.0)


# The class-level step runs in the fast tier (test_sharded_step_…), the pair-wise one here.
@pytest.mark.parametrize("loss, num_classes", [
    ("circle_pair", 0), pytest.param("circle_class", 4, marks=pytest.mark.slow)])
def test_train_steps_change_params_and_lower_the_loss(loss, num_classes):
  _, loss_fn = training.make_loss(loss)
  state = _state(num_classes)
  batch = _batch()
  step = jax.jit(lambda s, b: training.train_step(s, b, jax.random.key(0), loss_fn=loss_fn))
  params0 = state.params
  stats0 = state.batch_stats
  state, m0 = step(state, batch)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), params0, state.params)
  assert all(jax.tree.leaves(changed["backbone"]["head"]))
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), stats0,
                                          state.batch_stats)))
  if num_classes:
    assert changed["class_weights"]
  for _ in range(9):
    state, m = step(state, batch)
  assert int(state.step) == 10
  assert float(m["loss"]) < 0.8 * float(m0["loss"]), (float(m0["loss"]), float(m["loss"]))


# Both run in the slow tier (17 s for the class-level case on 2 cores): the fast tier checks
# the sharded losses themselves (tests/parallel), not this whole step.
@pytest.mark.slow
@pytest.mark.parametrize("loss, num_classes", [("circle_pair", 0), ("circle_class", 4)])
def test_sharded_step_on_8_devices_equals_1_device(loss, num_classes):
  assert jax.device_count() >= 8, "conftest.py sets 8 emulated CPU devices"
  _, loss_fn = training.make_loss(loss)
  batch = _batch(n=16)
  results = []
  for n in (1, 8):
    mesh = training.make_mesh(n)
    state = _state(num_classes)
    state = jax.device_put(state, training.state_shardings(state, mesh))
    step = training.jit_train_step(loss_fn, mesh, state)
    sharded = training.shard_batch(jax.device_get(batch), mesh)
    assert len(sharded["image"].sharding.device_set) == n
    for _ in range(2):
      state, metrics = step(state, sharded, jax.random.key(1))
    results.append((jax.device_get(state.params), jax.device_get(state.batch_stats),
                    float(metrics["loss"])))
  (p1, s1, l1), (p8, s8, l8) = results
  # Equal up to float summation order (the all-reduce adds in a different order);
  # per-shard BatchNorm statistics or a per-shard loss would differ by far more.
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4), p1, p8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4), s1, s8)


def test_shard_batch_rejects_indivisible_batches():
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    training.shard_batch({"image": np.ones((12, 2))}, training.make_mesh(8))
  with pytest.raises(ValueError, match="num_devices=99"):
    training.make_mesh(99)


@pytest.mark.slow
def test_checkpoint_round_trip_and_retention(tmp_path):
  state = _state(num_classes=3, tx=optax.adamw(1e-3))
  _, loss_fn = training.make_loss("circle_class")
  state, _ = training.train_step(state, _batch(classes=3, n=12), jax.random.key(0),
                                 loss_fn=loss_fn)
  ckpt = training.Checkpointer(tmp_path, every_steps=2, max_to_keep=2)
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore(state)
  assert not ckpt.save(1, state)          # not a multiple of every_steps
  for s in (2, 4, 6):
    assert ckpt.save(s, state)
  assert ckpt.latest_step() == 6
  assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [4, 6]
  fresh = _state(num_classes=3, tx=optax.adamw(1e-3))
  restored = training.Checkpointer(tmp_path, every_steps=2).restore(fresh)
  assert int(restored.step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
               jax.device_get(state.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.opt_state),
               jax.device_get(state.opt_state))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.batch_stats),
               jax.device_get(state.batch_stats))


@pytest.mark.parametrize("num_devices", [1, 8])
def test_flip_fused_embedding_is_f_of_x_plus_f_of_its_mirror(num_devices):
  """Face verification's embedding: f(x) + f(x mirrored left-right), on any mesh.
  Images are not symmetric, and an up-down flip gives a different sum."""
  state = _state()
  images = _batch(n=16)["image"]
  mesh = training.make_mesh(num_devices)
  got = training.jit_embed_step(mesh, state, flip=True)(state, images)
  f = lambda x: training.embed_step(state, x)
  want = f(images) + f(jnp.flip(images, axis=2))  # NHWC: axis 2 is the width
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  upside_down = f(images) + f(jnp.flip(images, axis=1))
  assert np.abs(np.asarray(got) - np.asarray(upside_down)).max() > 1e-2
  plain = training.jit_embed_step(mesh, state)(state, images)
  np.testing.assert_allclose(plain, f(images), rtol=1e-5, atol=1e-5)
