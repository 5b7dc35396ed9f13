"""Train state with BatchNorm statistics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """``flax.training.train_state.TrainState`` plus the ``batch_stats`` collection."""

  batch_stats: Any = None


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                       sample_input: jax.Array) -> TrainState:
  """Initialises ``model`` on ``sample_input`` and wraps it with ``tx``.

  Args:
    model: a linen module called as ``model(x, train=...)``.
    tx: the optimiser.
    rng: ``jax.random.key``.
    sample_input: ``[b, H, W, C]`` array of the input shape.

  Returns:
    A :class:`TrainState` at step 0.

  Example:
    >>> from circle_jax.models import SmallCNN
    >>> s = create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                        jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> int(s.step), sorted(s.params), sorted(s.batch_stats)
    (0, ['bn0_0', 'bn0_1', 'conv0_0', 'conv0_1', 'head'], ['bn0_0', 'bn0_1', 'head'])
  """
  def init(rng, sample_input):
    variables = model.init({"params": rng, "dropout": rng}, sample_input, train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx)

  # One compiled program: run op by op, the initialisers and optimiser zeros are dozens of
  # small programs, each compiled on its own (seconds in every new process).
  return jax.jit(init)(rng, sample_input)
