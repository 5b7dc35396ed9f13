"""Device mesh and shardings: the batch split along ``'data'``, the state replicated.

The same jitted step runs on 1 CPU, on N emulated CPU devices, on a GPU or on a
TPU slice: under ``jax.jit`` with these ``NamedSharding``s the global batch is
one logical array, so the loss, the gradients and the BatchNorm statistics are
those of the whole batch whatever the device count (XLA inserts the
all-reduces).

Class proxies are replicated with the rest of the state. Sharding a large
``[C, D]`` proxy matrix by class along a ``'model'`` axis needs losses whose
log-sum-exp over classes is collective across that axis; those are the
class-sharded losses of ``circle_jax.parallel``, which this package does not
provide yet: :func:`state_shardings` is the one place to change (return
``NamedSharding(mesh, P('model', None))`` for ``class_weights``) when they land.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from circle_jax.training._steps import embed_step
from circle_jax.training._steps import train_step


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over the first ``num_devices`` devices (all by default).

  Example:
    >>> make_mesh(1).axis_names
    ('data',)
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"make_mesh: num_devices={num_devices} but {len(devices)} devices are visible")
  # Auto axes: XLA propagates the batch sharding through the step (the losses
  # build [B, B] similarity matrices that an explicit-axes mesh would reject).
  return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split along ``'data'``."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  """The whole array on every device."""
  return NamedSharding(mesh, P())


def state_shardings(state, mesh: Mesh):
  """Shardings for every leaf of the train state: replicated (see the module docstring)."""
  return jax.tree.map(lambda _: replicated(mesh), state)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host batch (the same global batch on every process) on the mesh, split along ``'data'``.

  Each process hands over only the rows of its own devices, so this works on a
  multi-host slice as long as every host builds the same global batch (the
  samplers of :mod:`circle_jax.data` are functions of (seed, step)).

  Raises:
    ValueError: the batch size is not divisible by the number of devices on ``'data'``.
  """
  n = mesh.shape["data"]
  for name, value in batch.items():
    if value.shape[0] % n:
      raise ValueError(f"batch[{name!r}] has {value.shape[0]} rows, not divisible by the "
                       f"{n} devices of the 'data' axis")
  sharding = batch_sharding(mesh)
  return {
      name: jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
      for name, value in batch.items()
  }


def jit_train_step(loss_fn: Callable, mesh: Mesh, state) -> Callable:
  """``step(state, batch, rng) -> (state, metrics)``, jitted over ``mesh``.

  Args:
    loss_fn: scalar loss (see :func:`make_loss`).
    mesh: from :func:`make_mesh`.
    state: a train state (only its structure is used, for the shardings).

  Returns:
    The jitted step; the input state is donated.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from circle_jax.models import SmallCNN
    >>> from circle_jax.training import create_train_state, make_loss
    >>> mesh = make_mesh(1)
    >>> state = create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                            jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> step = jit_train_step(make_loss("circle_pair")[1], mesh, state)
    >>> batch = shard_batch({"image": jnp.ones((4, 8, 8, 1)), "label": jnp.array([0, 0, 1, 1])}, mesh)
    >>> state, metrics = step(jax.device_put(state, replicated(mesh)), batch, jax.random.key(1))
    >>> int(state.step)
    1
  """
  s_state = state_shardings(state, mesh)
  s_batch = batch_sharding(mesh)

  def step(state, batch, rng):
    return train_step(state, batch, rng, loss_fn=loss_fn)

  return jax.jit(step, in_shardings=(s_state, s_batch, replicated(mesh)),
                 out_shardings=(s_state, replicated(mesh)), donate_argnums=(0,))


def jit_embed_step(mesh: Mesh, state) -> Callable:
  """``embed(state, images) -> [B, D]``, jitted with the images split along ``'data'``."""
  # Replicated output: every process can read all embeddings for evaluation.
  return jax.jit(embed_step, in_shardings=(state_shardings(state, mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))
