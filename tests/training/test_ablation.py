"""Ablations: member i equals a separate run under every member strategy; sharding; errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from circle_jax import models
from circle_jax import training
from circle_jax.training import Member

STEPS = 2
STRATEGIES = ("vmap", "unroll", "map")


def _model(num_classes):
  return training.MetricModel(models.SmallCNN(features=(4,), embedding_dim=8, global_pool=False),
                              num_classes=num_classes)


def _tx():
  return training.make_optimizer("sgd", 0.01, momentum=0.9, weight_decay=1e-4)


def _batches(n_members, seed=0, classes=4, n=16):
  """One learnable batch per member and step: [steps, N, B, …]."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, 8, 8, 1)).astype(np.float32)
  labels = np.tile(np.repeat(np.arange(classes), n // classes), (STEPS, n_members, 1))
  images = centres[labels] + rng.normal(size=labels.shape + (8, 8, 1)).astype(np.float32)
  return images, labels.astype(np.int32)


def _reference_step(member, num_classes):
  """The reference: the ordinary train_step with make_loss and Python-float hyper-parameters."""
  _, loss_fn = training.make_loss(member.loss, {**member.hparams, **member.options})
  return jax.jit(lambda s, b, r: training.train_step(s, b, r, loss_fn=loss_fn))


def _assert_trees_close(got, want, rtol):
  # Relative to each leaf's scale (tiny entries are held to the precision of the
  # large ones), with a floor of 0.1: biases in front of a BatchNorm (the head's
  # bn_in and fc biases) have a gradient that is exactly 0 in exact arithmetic,
  # so they hold only rounding noise (up to ~3e-7) that no relative test can compare.
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    w = np.asarray(w)
    scale = max(float(np.abs(w).max()), 0.1)
    np.testing.assert_allclose(np.asarray(g), w, rtol=rtol, atol=rtol * scale)


def _assert_states_close(got, want, rtol):
  _assert_trees_close(got.params, want.params, rtol)
  # Momentum traces are accumulated gradients; a BatchNorm scale's gradient is a
  # sum of cancelling terms, so its rounding is relative to the whole gradient,
  # not to the (sometimes 100× smaller) leaf.
  for g_tree, w_tree in ((got.opt_state, want.opt_state), (got.batch_stats, want.batch_stats)):
    scale = max(float(np.abs(np.asarray(w)).max()) for w in jax.tree.leaves(w_tree))
    for g, w in zip(jax.tree.leaves(g_tree), jax.tree.leaves(w_tree)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=rtol * scale)


def _stacked(n, num_classes):
  init_keys = jax.random.split(jax.random.key(0), n)
  step_keys = jax.random.split(jax.random.key(1), n)
  state = training.create_stacked_states(_model(num_classes), _tx(), init_keys,
                                         jnp.ones((1, 8, 8, 1)))
  return state, init_keys, step_keys


CLASS_MEMBERS = [
    Member("circle_class", {"gamma": 256.0, "margin": -0.1}),
    Member("circle_class", {"gamma": 64.0, "margin": 0.25}, {"grad_through_alpha": True}),
    Member("am_softmax", {"gamma": 32.0, "margin": 0.35}),
    Member("arcface", {"gamma": 16.0, "margin": 0.3}),
]
PAIR_MEMBERS = [
    Member("circle_pair", {"gamma": 32.0, "margin": 0.1}),
    Member("triplet", {"margin": 0.3}),
]


def _check_against_separate_runs(members, num_classes, batch_axis, strategy, refs):
  """STEPS ablation steps under ``strategy``, each member checked against the
  separate reference steps ``refs``; the final stacked state and metrics."""
  images, labels = _batches(len(members))
  if batch_axis is None:
    images, labels = images[:, 0], labels[:, 0]
  own = lambda t, i: ({"image": images[t], "label": labels[t]} if batch_axis is None
                      else {"image": images[t, i], "label": labels[t, i]})
  ab = training.make_ablation(members)
  state, init_keys, step_keys = _stacked(len(members), num_classes)
  for i in range(len(members)):   # initialisation: bitwise the separate one
    separate = training.create_train_state(_model(num_classes), _tx(), init_keys[i],
                                           jnp.ones((1, 8, 8, 1)))
    for a, b in zip(jax.tree.leaves(training.unstack_state(state, i)), jax.tree.leaves(separate)):
      np.testing.assert_array_equal(a, b)
  step = training.jit_ablation_step(ab, batch_axis=batch_axis, member_strategy=strategy)
  separate = [training.unstack_state(state, i) for i in range(len(members))]
  for t in range(STEPS):
    before = [training.unstack_state(state, i) for i in range(len(members))]
    state, metrics = step(state, {"image": images[t], "label": labels[t]}, step_keys)
    for i in range(len(members)):
      # One step from the same state: equal to float32 rounding. Not bitwise: the
      # vmapped program batches the convolutions, so XLA sums in another order,
      # and the unrolled and mapped ones fuse differently inside the larger
      # program (measured: ≤ 2e-6 relative after two steps, all strategies).
      want, want_m = refs[i](before[i], own(t, i), step_keys[i])
      np.testing.assert_allclose(metrics["loss"][i], want_m["loss"], rtol=1e-6)
      np.testing.assert_allclose(metrics["grad_norm"][i], want_m["grad_norm"], rtol=1e-5)
      _assert_states_close(training.unstack_state(state, i), want, rtol=1e-5)
      separate[i], _ = refs[i](separate[i], own(t, i), step_keys[i])
  for i in range(len(members)):
    # Whole runs: the per-step rounding differences grow with training (γ = 256
    # makes large steps), by about 3× per step here.
    _assert_trees_close(training.unstack_state(state, i).params, separate[i].params, rtol=1e-4)
    assert int(state.step[i]) == STEPS
  # The members really differ (a broadcast of member 0 would pass the loop for it alone).
  w = state.params["backbone"]["head"]["fc"]["kernel"]
  for i in range(1, len(members)):
    assert float(jnp.abs(w[i] - w[0]).max()) > 1e-4, i
  return state, metrics


# "map" is checked against "vmap" in test_class_members_under_every_strategy;
# running it here as well costs minutes of CPU (XLA:CPU loops its convolutions).
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["vmap", "unroll"])
def test_member_i_equals_a_separate_run(strategy):
  # Pair-wise losses on one shared batch (the class-level members, each on its
  # own batch, are checked in test_class_members_under_every_strategy).
  refs = [_reference_step(m, 0) for m in PAIR_MEMBERS]
  _check_against_separate_runs(PAIR_MEMBERS, 0, None, strategy, refs)


@pytest.mark.slow
def test_alpha_gradient_switch_changes_training_but_not_the_first_loss():
  # The same γ, m with α differentiated or not: identical loss values at step 1
  # (same parameters), different updates afterwards.
  images, labels = _batches(2)
  members = [Member("circle_class", {"gamma": 64.0, "margin": 0.25}),
             Member("circle_class", {"gamma": 64.0, "margin": 0.25}, {"grad_through_alpha": True})]
  images[:, 1], labels[:, 1] = images[:, 0], labels[:, 0]
  ab = training.make_ablation(members)
  keys = jnp.stack([jax.random.key(0)] * 2)
  state = training.create_stacked_states(_model(4), _tx(), keys, jnp.ones((1, 8, 8, 1)))
  step = training.jit_ablation_step(ab)
  state, m = step(state, {"image": images[0], "label": labels[0]}, keys)
  np.testing.assert_allclose(m["loss"][0], m["loss"][1], rtol=1e-6)
  assert float(jnp.abs(m["grad_norm"][0] - m["grad_norm"][1])) > 1e-4


def _run_ablation(members, num_classes, images, labels, mesh=None, steps=STEPS, strategy="auto"):
  """The final state, the losses [N, steps] and the compiled step's HLO."""
  ab = training.make_ablation(members)
  state, _, step_keys = _stacked(ab.size, num_classes)
  step = training.jit_ablation_step(ab, mesh, member_strategy=strategy)
  # Compiled once: the first step below finds this executable in JAX's cache
  # (a second compilation just to read the HLO costs as much as the run).
  hlo = step.lower(state, {"image": images[0], "label": labels[0]}, step_keys).compile().as_text()
  losses = []
  for t in range(steps):
    state, m = step(state, {"image": images[t], "label": labels[t]}, step_keys)
    losses.append(np.asarray(m["loss"]))
  return state, np.stack(losses, 1), hlo


def _convolution_shapes(hlo):
  return sorted(re.findall(r"= (\w+\[[\d,]*\])\S* convolution\(", hlo))


def _convolutions(members, num_classes, images, labels, mesh, strategy):
  """Result shapes of the convolutions in the compiled (per-device) step, and its HLO."""
  ab = training.make_ablation(members)
  state, _, step_keys = _stacked(ab.size, num_classes)
  step = training.jit_ablation_step(ab, mesh, member_strategy=strategy)
  hlo = step.lower(state, {"image": images[0], "label": labels[0]}, step_keys).compile().as_text()
  return _convolution_shapes(hlo), hlo


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["vmap", "unroll"])
def test_sharded_over_eight_devices_equals_one_device(strategy):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (emulated) devices")
  members = [Member("circle_class", {"gamma": g, "margin": m})
             for g in (32.0, 256.0) for m in (-0.1, 0.0, 0.25, 0.3)]
  images, labels = _batches(len(members))
  mesh = training.ablation_mesh(8)
  sharded, sharded_losses, hlo = _run_ablation(members, 4, images, labels, mesh=mesh, steps=1,
                                               strategy=strategy)
  single, single_losses, _ = _run_ablation(members, 4, images, labels, steps=1, strategy=strategy)
  leaf = sharded.params["backbone"]["head"]["fc"]["kernel"]
  assert leaf.sharding.spec == jax.sharding.PartitionSpec("ablation")
  assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}
  assert len(leaf.sharding.device_set) == 8
  # One step from identical states: per device one member against all eight in
  # one program, so float32 rounding differences and nothing else.
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-6)
  _assert_states_close(sharded, single, rtol=1e-5)
  # Each device computes its own member only: the per-device program has the
  # convolutions of a one-member ablation (vmapped, it would otherwise gather
  # and run all eight members' convolutions everywhere) and gathers nothing.
  own = _convolution_shapes(hlo)
  one, _ = _convolutions(members[:1], 4, images[:, :1], labels[:, :1], None, strategy)
  assert own == one, (own, one)
  assert "all-gather" not in hlo


def test_traced_hyperparameters_compile_once():
  # The compiled step is reused for new γ, m: they are arguments, not constants.
  images, labels = _batches(2)
  traces = []
  _, loss_fn = training.make_hparam_loss("circle_class")

  @jax.jit
  def f(x, w, y, hp):
    traces.append(1)
    return loss_fn(x, y, w, hp)

  x = jnp.asarray(images[0, 0].reshape(16, -1)[:, :8])
  w = jnp.eye(4, 8)
  y = jnp.asarray(labels[0, 0])
  got = [f(x, w, y, {"gamma": jnp.float32(g), "margin": jnp.float32(m)})
         for g, m in ((32.0, 0.1), (256.0, 0.25))]
  assert len(traces) == 1
  for v, (g, m) in zip(got, ((32.0, 0.1), (256.0, 0.25))):
    want = training.make_loss("circle_class", {"gamma": g, "margin": m})[1](x, y, w)
    np.testing.assert_allclose(v, want, rtol=1e-6)


@pytest.mark.slow
def test_unchosen_branch_runs_at_its_own_defaults():
  # A Circle member with γ = 1024, m = −0.2 next to ArcFace: the ArcFace branch,
  # evaluated for that member too, must not see γ = 1024, m = −0.2 (and vice versa).
  members = [Member("circle_class", {"gamma": 1024.0, "margin": -0.2}), Member("arcface")]
  ab = training.make_ablation(members)
  loss = training.ablation_loss(ab.variants)
  x = jax.random.normal(jax.random.key(0), (8, 5))
  w = jax.random.normal(jax.random.key(1), (3, 5))
  y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  for i, m in enumerate(members):
    hp = {k: v[i] for k, v in ab.hparams.items()}
    value, grad = jax.value_and_grad(lambda x: jax.vmap(loss, in_axes=(None, None, None, 0, 0))(
        x, y, w, ab.loss_index[i:i + 1], jax.tree.map(lambda v: v[None], hp)).sum())(x)
    _, ref = training.make_loss(m.loss, m.hparams)
    ref_value, ref_grad = jax.value_and_grad(lambda x: ref(x, y, w))(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6 * float(jnp.abs(ref_grad).max()))


@pytest.mark.slow
def test_class_members_under_every_strategy():
  # Class-level members, each on its own batch (loss choice by lax.switch, α
  # gradient on/off): under "vmap" and "unroll" member i equals a separate run
  # step by step; every strategy's steps are compiled once and also compared
  # with each other below.
  #
  # The strategies agree from the same state: metrics and states to float32
  # rounding (measured ≤ 2e-6 relative), and the embeddings of every member
  # equal embed_step on that member (measured: bitwise for "unroll" and "map",
  # 1e-7 relative for "vmap").
  images, labels = _batches(len(CLASS_MEMBERS))
  ab = training.make_ablation(CLASS_MEMBERS)
  refs = [_reference_step(m, 4) for m in CLASS_MEMBERS]
  results = {}
  for strategy in STRATEGIES:
    if strategy == "map":
      # Not step by step against the separate runs: against "vmap" (below) only.
      state, _, keys = _stacked(ab.size, 4)
      step = training.jit_ablation_step(ab, member_strategy=strategy)
      for t in range(STEPS):
        state, metrics = step(state, {"image": images[t], "label": labels[t]}, keys)
    else:
      state, metrics = _check_against_separate_runs(CLASS_MEMBERS, 4, 0, strategy, refs)
    embed = jax.jit(lambda s, x, strategy=strategy: training.ablation_embed_step(
        s, x, member_strategy=strategy))
    results[strategy] = state, metrics, embed(state, jnp.asarray(images[0, 0]))
  state, metrics, emb = results["vmap"]
  for strategy in ("unroll", "map"):
    got_state, got_metrics, got_emb = results[strategy]
    np.testing.assert_allclose(got_metrics["loss"], metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(got_metrics["grad_norm"], metrics["grad_norm"], rtol=1e-5)
    _assert_states_close(got_state, state, rtol=1e-5)
    for i in range(ab.size):
      want = training.embed_step(training.unstack_state(got_state, i), jnp.asarray(images[0, 0]))
      np.testing.assert_allclose(got_emb[i], want, rtol=1e-6, atol=1e-6 * float(jnp.abs(want).max()))
  assert emb.shape == (ab.size, 16, 8)
  # The members' embeddings differ (each member used its own parameters).
  assert float(jnp.abs(emb[1] - emb[0]).max()) > 1e-3


@pytest.mark.slow
def test_auto_strategy_unrolls_on_cpu():
  assert training.resolve_member_strategy("auto", "cpu") == "unroll"
  assert training.resolve_member_strategy("auto", "gpu") == "vmap"
  assert training.resolve_member_strategy("auto", "tpu") == "vmap"
  assert training.resolve_member_strategy("map", "cpu") == "map"
  if jax.default_backend() != "cpu":
    pytest.skip("the default backend is not a CPU")
  assert training.resolve_member_strategy() == "unroll"
  # The default program really is the unrolled one: no grouped (vmapped)
  # convolution, one set of convolutions per member, as with "unroll".
  members = CLASS_MEMBERS[:2]
  images, labels = _batches(len(members))
  auto, auto_hlo = _convolutions(members, 4, images, labels, None, "auto")
  unrolled, _ = _convolutions(members, 4, images, labels, None, "unroll")
  _, vmap_hlo = _convolutions(members, 4, images, labels, None, "vmap")
  assert auto == unrolled
  assert "feature_group_count" not in auto_hlo and "feature_group_count" in vmap_hlo


def test_make_ablation_layout_and_errors():
  ab = training.make_ablation([Member("circle_pair"), Member("triplet", {"margin": 0.5})])
  assert ab.variants == (("circle_pair", ()), ("triplet", ()))
  assert ab.kinds == frozenset({"pair"})
  np.testing.assert_array_equal(ab.hparams["margin"], np.float32([0.4, 0.5]))
  assert np.isnan(ab.hparams["gamma"][1])  # triplet has no γ: marked, never read
  with pytest.raises(ValueError, match="at least one member"):
    training.make_ablation([])
  with pytest.raises(ValueError, match="unknown loss name 'circel'"):
    training.make_ablation([Member("circel")])
  with pytest.raises(ValueError, match="'gama' is not a numeric hyper-parameter"):
    training.make_ablation([Member("circle_pair", {"gama": 3.0})])
  with pytest.raises(ValueError, match="'gamma' is not a static option"):
    training.make_ablation([Member("circle_pair", options={"gamma": 3.0})])
  with pytest.raises(TypeError, match="not a Member"):
    training.make_ablation([("circle_pair", {})])


@pytest.mark.slow
def test_step_and_stacking_errors():
  ab = training.make_ablation([Member("circle_pair")] * 3)
  keys = jax.random.split(jax.random.key(0), 3)
  state = training.create_stacked_states(_model(0), _tx(), keys, jnp.ones((1, 8, 8, 1)))
  batch = {"image": jnp.ones((4, 8, 8, 1)), "label": jnp.array([0, 0, 1, 1])}
  with pytest.raises(ValueError, match=r"rngs: expected \[3\] keys"):
    training.ablation_train_step(state, batch, keys[:2], ab, batch_axis=None)
  with pytest.raises(ValueError, match="leading axis of the 3 members"):
    training.ablation_train_step(training.unstack_state(state, 0), batch, keys, ab, batch_axis=None)
  with pytest.raises(ValueError, match="batch_axis must be 0 or None"):
    training.ablation_train_step(state, batch, keys, ab, batch_axis=1)
  for f in (lambda: training.ablation_train_step(state, batch, keys, ab, member_strategy="pmap"),
            lambda: training.ablation_embed_step(state, batch["image"], member_strategy="pmap"),
            lambda: training.jit_ablation_step(ab, member_strategy="pmap")):
    with pytest.raises(ValueError, match="member_strategy: 'pmap'; known: 'auto', 'vmap'"):
      f()
  if jax.device_count() >= 2:
    with pytest.raises(ValueError, match="3 members cannot be split evenly over the 2 devices"):
      training.jit_ablation_step(ab, training.ablation_mesh(2))
  with pytest.raises(ValueError, match="different structure"):
    training.stack_states([{"w": jnp.ones(2)}, {"v": jnp.ones(2)}])
  with pytest.raises(IndexError, match="member 3 of 3"):
    training.unstack_state(state, 3)
  # Stacking separately created states equals the vmapped creation.
  model, tx = _model(0), _tx()
  separate = [training.create_train_state(model, tx, k, jnp.ones((1, 8, 8, 1))) for k in keys]
  stacked = training.stack_states(separate)
  vmapped = training.create_stacked_states(model, tx, keys, jnp.ones((1, 8, 8, 1)))
  for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(vmapped)):
    np.testing.assert_array_equal(a, b)
