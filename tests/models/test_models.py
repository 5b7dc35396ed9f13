"""Backbones: shapes, batch statistics, train/eval modes, named ResNets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circle_jax import models


@pytest.mark.slow
def test_small_cnn_updates_batch_stats_only_in_train_mode():
  model = models.SmallCNN(features=(4, 8), embedding_dim=5, global_pool=False)
  x = jax.random.normal(jax.random.key(0), (6, 28, 28, 1)) + 3.0
  v = model.init(jax.random.key(1), x, train=False)
  out, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
  assert out.shape == (6, 5) and out.dtype == jnp.float32
  before = jax.tree.leaves(v["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  # Inference uses running statistics: each example independent of the batch.
  one = model.apply(v, x[:1], train=False)
  np.testing.assert_allclose(one, model.apply(v, x, train=False)[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_dropout_needs_rng_only_in_training():
  model = models.SmallCNN(features=(4,), embedding_dim=5, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
  v = model.init(jax.random.key(0), x, train=False)
  a, _ = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
  b, _ = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(v, x, train=False), model.apply(v, x, train=False))


@pytest.mark.parametrize("name", sorted(models.RESNET_STAGES))
def test_named_resnets_have_their_stage_depths(name):
  block, stages = models.RESNET_STAGES[name]
  model = models.resnet(name, width=2, embedding_dim=4)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)),
                                             train=False))
  blocks = [k for k in shapes["params"] if k.startswith("stage")]
  assert len(blocks) == sum(stages)
  for i, n in enumerate(stages):
    assert sum(k.startswith(f"stage{i}_") for k in blocks) == n
  cls = models.BottleneckBlock if block == "bottleneck" else models.BasicBlock
  assert ("conv3" in shapes["params"]["stage0_block0"]) == (cls is models.BottleneckBlock)


@pytest.mark.slow
def test_resnet_forward_and_bad_names():
  model = models.ResNet(stage_sizes=(1, 1), width=4, embedding_dim=8)
  x = jnp.ones((2, 32, 32, 3))
  v = model.init(jax.random.key(0), x, train=False)
  assert model.apply(v, x, train=False).shape == (2, 8)
  with pytest.raises(ValueError, match="unknown name 'resnet7'"):
    models.resnet("resnet7")
  with pytest.raises(ValueError, match="block must be"):
    models.ResNet(stage_sizes=(1,), block="dense").init(jax.random.key(0), x, train=False)
