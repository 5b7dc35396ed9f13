"""Train and embedding steps (pure functions; jit and shard them with :mod:`._sharding`)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from circle_jax.training._state import TrainState


def train_step(state: TrainState, batch: dict, rng: jax.Array, *,
               loss_fn: Callable) -> tuple[TrainState, dict]:
  """One optimiser step on ``batch``; BatchNorm statistics are updated from it.

  Args:
    state: the :class:`TrainState`.
    batch: ``{"image": [B, H, W, C] float, "label": [B] int}``.
    rng: a key; the dropout key is ``fold_in(rng, state.step)``, so a step's
      randomness depends only on (rng, step) and a resumed run repeats it.
    loss_fn: ``loss_fn(embeddings, labels, class_weights_or_None) -> scalar``
      (from :func:`make_loss`).

  Returns:
    ``(new_state, metrics)`` with scalar metrics ``loss`` and ``grad_norm``.

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> from circle_jax.training import create_train_state, make_loss
    >>> state = create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                            jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> batch = {"image": jnp.ones((4, 8, 8, 1)), "label": jnp.array([0, 0, 1, 1])}
    >>> step = jax.jit(train_step, static_argnames="loss_fn")   # as jit_train_step does
    >>> state, m = step(state, batch, jax.random.key(1), loss_fn=make_loss("circle_pair")[1])
    >>> int(state.step), sorted(m)
    (1, ['grad_norm', 'loss'])
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    embeddings, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    loss = loss_fn(embeddings, batch["label"], params.get("class_weights"))
    return loss, updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def embed_step(state: TrainState, images: jax.Array) -> jax.Array:
  """Embeddings ``[B, D]`` of ``images`` in inference mode (running BN statistics, no dropout).

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> from circle_jax.training import create_train_state
    >>> state = create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                            jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> embed_step(state, jnp.ones((3, 8, 8, 1))).shape
    (3, 6)
  """
  return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images,
                        train=False)
