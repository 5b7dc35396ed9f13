"""bfloat16 mixed precision (``config.model.dtype``): float32 state and loss, bf16 convolutions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from circle_jax import training
from experiments import builder
from experiments import train
from experiments.configs import digits
from experiments.configs import paper

CLASSES = 4
CLASS = ("circle_class", (("gamma", 256.0), ("margin", 0.25)), CLASSES)  # the paper's faces
PAIR = ("circle_pair", (("gamma", 80.0), ("margin", 0.4)), 0)            # its fine-grained
BACKBONES = {
    "small_cnn": {"features": (4,), "convs_per_stage": 1, "global_pool": False},
    "resnet18": {"width": 4, "small_input": True},
}
BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


@functools.cache
def _model(name, dtype, num_classes):
  """One module per configuration, so that states share apply_fn and jitted steps their compilations."""
  backbone = training.make_backbone(name, {**BACKBONES[name], "embedding_dim": 8, "dtype": dtype})
  return training.MetricModel(backbone, num_classes=num_classes)


def _init(dtype, num_classes, tx=optax.sgd(0.1), name="small_cnn"):
  """``init()`` makes the TrainState (call it, or trace it with eval_shape)."""
  # rbg keys: threefry's initialisers take longer to compile than the whole test.
  return functools.partial(training.create_train_state, _model(name, dtype, num_classes), tx,
                           jax.random.key(0, impl="rbg"), jnp.ones((1, 12, 12, 1)))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(CLASSES), 4).astype(np.int32)
  centres = rng.normal(size=(CLASSES, 12, 12, 1)).astype(np.float32)
  images = centres[labels] + rng.normal(size=(len(labels), 12, 12, 1)).astype(np.float32)
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


@functools.cache
def _step(loss, hparams):
  """The jitted train step, one per loss (so tests share its compilations)."""
  _, loss_fn = training.make_loss(loss, dict(hparams))
  return jax.jit(lambda s, b: training.train_step(s, b, jax.random.key(1), loss_fn=loss_fn))


def _float_dtypes(tree):
  return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _operand_dtypes(jaxpr, primitive):
  """Dtypes of every operand of ``primitive`` in ``jaxpr`` and the jaxprs nested in it."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      found |= {v.aval.dtype for v in eqn.invars}
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr → Jaxpr
        if hasattr(sub, "eqns"):
          found |= _operand_dtypes(sub, primitive)
  return found


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_bf16_keeps_state_and_loss_float32_and_convolves_in_bf16(name):
  # Traced, not compiled: the dtypes of a whole AdamW step on the real backbones.
  init = _init("bfloat16", CLASSES, optax.adamw(1e-3), name)
  state = jax.eval_shape(init)
  step = _step(*CLASS[:2])
  batch = jax.eval_shape(_batch)
  new_state, metrics = jax.eval_shape(step, state, batch)
  for s in (state, new_state):
    for part in ("params", "opt_state", "batch_stats"):
      assert _float_dtypes(getattr(s, part)) == {F32}, part
  assert metrics["loss"].dtype == F32 and metrics["grad_norm"].dtype == F32
  assert jax.eval_shape(training.embed_step, state, batch["image"]).dtype == F32
  jaxpr = jax.make_jaxpr(step)(state, batch).jaxpr
  # Forward and backward convolutions alike.
  assert _operand_dtypes(jaxpr, "conv_general_dilated") == {BF16}
  # The head's dense layer in bf16, the loss's similarities in float32.
  assert _operand_dtypes(jaxpr, "dot_general") == {BF16, F32}


@pytest.mark.slow
def test_bf16_step_matches_float32():
  step = _step(*CLASS[:2])
  s32, s16 = _init("float32", CLASSES)(), _init("bfloat16", CLASSES)()
  n32, m32 = step(s32, _batch())
  n16, m16 = step(s16, _batch())
  # |bf16 − fp32| / fp32 of this first-step loss (γ = 256), measured: 2.0e-3;
  # at most 2.0e-3 (class) and 3.6e-3 (pair) over eight batches.
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=1e-2)
  # SGD: the update is −lr·gradient. bf16 rounding of every activation
  # (ε = 2⁻⁸), forward and back, moves it by 2.8 % in norm here (cosine
  # 0.9996; over eight batches up to 3.1 %, and 10 % for one circle_pair batch;
  # more in deeper networks, 10–23 % with two more convolutions).
  u32, u16 = (jnp.concatenate([(a - b).ravel() for a, b in zip(jax.tree.leaves(n.params),
                                                               jax.tree.leaves(s32.params))])
              for n in (n32, n16))
  rel = float(jnp.linalg.norm(u16 - u32) / jnp.linalg.norm(u32))
  assert 1e-3 < rel < 0.1, rel  # the lower bound: bf16 is really used
  assert float(u16 @ u32 / jnp.linalg.norm(u16) / jnp.linalg.norm(u32)) > 0.995
  # Element-wise, the new parameters: measured 0.14 × the largest update.
  for a, b in zip(jax.tree.leaves(n16.params), jax.tree.leaves(n32.params)):
    np.testing.assert_allclose(a, b, atol=0.3 * float(jnp.abs(u32).max()))


@pytest.mark.parametrize("loss, hparams, num_classes", [CLASS, PAIR])
def test_bf16_paper_hyperparameters_stay_finite(loss, hparams, num_classes):
  state = _init("bfloat16", num_classes)()
  # Learnable batches, then identical images: zero variance in every BatchNorm
  # and one embedding for all anchors, the degenerate case for normalisation
  # and log-sum-exp. (There bf16 rounding breaks BatchNorm's exact cancellation
  # that fp32 keeps, so its gradient norm is ~1e3 times fp32's; finite all the same.)
  batches = [_batch(seed) for seed in range(3)]
  batches.append({"image": jnp.ones((16, 12, 12, 1)), "label": batches[0]["label"]})
  for i, batch in enumerate(batches):
    state, metrics = _step(loss, hparams)(state, batch)
    # A NaN or inf in any gradient makes their norm NaN or inf.
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]), (i, metrics)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves((state.params, state.batch_stats)))


def test_configs_choose_the_dtype():
  assert digits.get_config().model.dtype == "float32"  # the digits
  for c in (paper.face("circle_class", None), paper.reid("circle_class", None),
            paper.fine_grained("circle_pair", None), paper.face("circle_class", "local")):
    assert c.model.dtype == "bfloat16"


def test_make_backbone_takes_dtype_by_name_or_dtype_and_rejects_others():
  assert training.make_backbone("small_cnn", {"dtype": "bfloat16"}).dtype == jnp.bfloat16
  assert training.make_backbone("resnet18", {"dtype": jnp.float32}).dtype == jnp.float32
  assert training.make_backbone("resnet18", {"dtype": np.dtype("bfloat16")}).dtype == jnp.bfloat16
  for bad in ("float16", jnp.float16, "bf16", None):
    with pytest.raises(ValueError, match=r"dtype: expected one of 'float32', 'bfloat16'.*got"):
      training.make_backbone("small_cnn", {"dtype": bad})


def test_bad_dtype_is_a_config_error():
  c = digits.get_config()
  c.model.dtype = "float16"
  with pytest.raises(builder.ConfigError,
                     match=r"^config.model: dtype: expected one of 'float32', 'bfloat16' .*"
                           r"got 'float16'$"):
    builder.build(c, data=False)
  c.model.dtype = "bfloat16"
  builder.build(c, data=False)
