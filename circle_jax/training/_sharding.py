"""Device mesh and shardings: the batch split over every device, class proxies along ``'model'``.

The mesh is 2-D, ``('data', 'model')`` (:func:`make_mesh`). The same jitted step
runs on 1 CPU, on N emulated CPU devices, on a GPU or on a TPU slice: under
``jax.jit`` with these ``NamedSharding``s the global batch is one logical
array, so the loss, the gradients and the BatchNorm statistics are those of
the whole batch whatever the mesh (XLA inserts the all-reduces).

Batch: split along both axes, ``P(('data', 'model'))``, so the backbone's
work is divided over all ``mesh.size`` devices and none repeats it; the batch
size must be a multiple of ``mesh.size``. This is also the layout
:func:`circle_jax.parallel.class_circle_loss` expects: inside its
``shard_map`` every device of a ``'model'`` group holds a distinct batch shard
and all-gathers the group's embeddings.

State: replicated, except, when the ``'model'`` axis has more than one device,
the ``[C_pad, D]`` class proxies ``params['class_weights']`` and every
optimiser-state leaf that mirrors them (momentum, Adam's mu / nu), which are
split by class, ``P('model', None)`` (:func:`state_shardings`). Such a state
needs a class-sharded loss from :mod:`circle_jax.training._sharded_loss`
(today ``circle_class``), which runs the loss in ``jax.shard_map`` with the
proxies never leaving their device; C is padded to a multiple of the
``'model'`` size (:func:`padded_num_classes`).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from circle_jax.training._steps import embed_step
from circle_jax.training._steps import train_step

DATA_AXIS = "data"
MODEL_AXIS = "model"
# The batch dimension is split over every device of the mesh.
BATCH_AXES = (DATA_AXIS, MODEL_AXIS)
CLASS_WEIGHTS = "class_weights"


def make_mesh(num_devices: int | None = None, *, model_axis_size: int = 1) -> Mesh:
  """A ``(num_devices // model_axis_size, model_axis_size)`` mesh with axes ``('data', 'model')``.

  Args:
    num_devices: how many of ``jax.devices()`` to use (all by default): the
      first ones on one process; with several processes an equal number of
      each process's own devices, so it must be a multiple of the process count.
    model_axis_size: devices along ``'model'``, which splits the class proxies
      (1: everything replicated, pure data parallelism). Must divide
      ``num_devices``.

  Raises:
    ValueError: more devices asked for than visible, a count that does not
      split evenly over the processes, or a ``model_axis_size`` that is < 1 or
      does not divide the device count.

  Example:
    >>> mesh = make_mesh(1)
    >>> mesh.axis_names, dict(mesh.shape)
    (('data', 'model'), {'data': 1, 'model': 1})
  """
  devices = _mesh_devices(num_devices)
  n = len(devices)
  if isinstance(model_axis_size, bool) or not isinstance(model_axis_size, int) or (
      model_axis_size < 1 or n % model_axis_size):
    raise ValueError(f"make_mesh: model_axis_size={model_axis_size!r} must be a positive int "
                     f"that divides the {n} devices")
  # Auto axes: XLA propagates the batch sharding through the step (the losses
  # build [B, B] similarity matrices that an explicit-axes mesh would reject).
  return jax.make_mesh((n // model_axis_size, model_axis_size), (DATA_AXIS, MODEL_AXIS),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def _mesh_devices(num_devices: int | None) -> list:
  """The first ``num_devices / process_count`` local devices of every process, process by process.

  Every process runs the same jitted program, so every process must hold part of
  the mesh: taking the first N of ``jax.devices()`` would leave a process out
  (its devices come last) and it would wait forever for the others.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(devices):
    raise ValueError(f"make_mesh: num_devices={num_devices} but {len(devices)} devices are visible")
  processes = sorted({d.process_index for d in devices})
  if len(processes) == 1:
    return devices[:n]
  if n % len(processes):
    raise ValueError(f"make_mesh: num_devices={n} must be a multiple of the {len(processes)} "
                     "processes (each process takes an equal share of the mesh), or 0 for all")
  per_process = n // len(processes)
  by_process = {p: [d for d in devices if d.process_index == p] for p in processes}
  return [d for p in processes for d in by_process[p][:per_process]]


def model_axis_size(mesh: Mesh) -> int:
  """Devices along ``'model'`` (1 for a mesh without that axis)."""
  return dict(mesh.shape).get(MODEL_AXIS, 1)


def padded_num_classes(num_classes: int, model_axis_size: int) -> int:
  """C rounded up to a multiple of the ``'model'`` size: the rows of the sharded proxy matrix.

  Example:
    >>> padded_num_classes(5, 2), padded_num_classes(6, 3), padded_num_classes(5, 1)
    (6, 6, 5)
  """
  return -(-num_classes // model_axis_size) * model_axis_size


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device (``'data'`` × ``'model'``)."""
  return NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  """The whole array on every device."""
  return NamedSharding(mesh, P())


def class_sharding(mesh: Mesh) -> NamedSharding:
  """``[C_pad, D]`` class rows split along ``'model'``, replicated along ``'data'``."""
  return NamedSharding(mesh, P(MODEL_AXIS, None))


def _mirrors_class_weights(path, leaf) -> bool:
  # params['class_weights'] and the optimiser-state leaves of the same dict key
  # (optax keeps mu / nu / trace as trees shaped like the params); masked
  # leaves (optax.MaskedNode) and scalars are not arrays of rank 2.
  return (bool(path) and isinstance(path[-1], jax.tree_util.DictKey)
          and path[-1].key == CLASS_WEIGHTS and getattr(leaf, "ndim", 0) == 2)


def state_shardings(state, mesh: Mesh):
  """Shardings for every leaf of the train state.

  Replicated, except with a ``'model'`` axis of size > 1: ``params['class_weights']``
  and its optimiser-state mirrors (any rank-2 leaf under a ``'class_weights'``
  dict key) get :func:`class_sharding`.

  Raises:
    ValueError: a class-weights leaf whose row count is not a multiple of the
      ``'model'`` size (build the model with ``MetricModel(class_shards=...)``).

  Example:
    >>> import jax.numpy as jnp
    >>> mesh = make_mesh(1)
    >>> s = state_shardings({"params": {"class_weights": jnp.ones((4, 2))}}, mesh)
    >>> s["params"]["class_weights"].spec
    P()
  """
  m = model_axis_size(mesh)

  def sharding(path, leaf):
    if m > 1 and _mirrors_class_weights(path, leaf):
      if leaf.shape[0] % m:
        raise ValueError(f"state leaf {jax.tree_util.keystr(path)} has {leaf.shape[0]} class "
                         f"rows, not a multiple of the model_axis_size {m}; pad C with "
                         "MetricModel(class_shards=model_axis_size)")
      return class_sharding(mesh)
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(sharding, state)


def process_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
  """The rows of a ``[batch_size, …]`` global batch that this process's devices hold, in order.

  An input pipeline reads and decodes only these rows; :func:`make_global_batch`
  assembles the global array from them. With one process they are all rows.

  Raises:
    ValueError: ``batch_size`` not divisible by the number of devices.

  Example:
    >>> process_rows(make_mesh(1), 4).tolist()
    [0, 1, 2, 3]
  """
  _check_divisible("batch", batch_size, mesh)
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(batch_size)))
  return np.asarray(sorted(rows), np.int64)


def _check_divisible(name: str, rows: int, mesh: Mesh) -> None:
  if rows % mesh.size:
    raise ValueError(f"{name} has {rows} rows, not divisible by the {mesh.size} devices of the "
                     f"mesh {dict(mesh.shape)} (the batch is split over all of them)")


def make_global_batch(local: dict, mesh: Mesh, batch_size: int,
                      rows: np.ndarray | None = None) -> dict:
  """Global ``[batch_size, …]`` arrays on the mesh from this process's rows of the batch.

  Args:
    local: ``{name: [len(rows), …]}`` host arrays, the rows
      :func:`process_rows` names, in that order.
    mesh: from :func:`make_mesh`.
    batch_size: the global batch size.
    rows: ``process_rows(mesh, batch_size)`` if already computed.

  Returns:
    ``{name: jax.Array}`` of global shape ``[batch_size, …]``, split over every
    device (:func:`batch_sharding`); no process touches another's rows.

  Example:
    >>> mesh = make_mesh(1)
    >>> make_global_batch({"label": np.arange(4)}, mesh, 4)["label"].shape
    (4,)
  """
  rows = process_rows(mesh, batch_size) if rows is None else rows
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in local.items():
    value = np.asarray(value)
    if value.shape[0] != len(rows):
      raise ValueError(f"make_global_batch: {name!r} has {value.shape[0]} rows but this process "
                       f"holds {len(rows)} of the {batch_size}")

    def shard(index, value=value):
      # Global row slice of one device → the same rows of the process-local array.
      start, stop, _ = index[0].indices(batch_size)
      lo = int(np.searchsorted(rows, start))
      return value[(slice(lo, lo + stop - start),) + tuple(index[1:])]

    out[name] = jax.make_array_from_callback((batch_size,) + value.shape[1:], sharding, shard)
  return out


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host batch (the same global batch on every process) on the mesh, over all devices.

  Each process hands over only the rows of its own devices; a pipeline that
  decodes only those rows in the first place uses :func:`process_rows` and
  :func:`make_global_batch` instead.

  Raises:
    ValueError: the batch size is not divisible by the number of devices of the mesh.
  """
  sizes = set()
  for name, value in batch.items():
    _check_divisible(f"batch[{name!r}]", value.shape[0], mesh)
    sizes.add(value.shape[0])
  out = {}
  for size in sizes:
    rows = process_rows(mesh, size)
    out.update(make_global_batch({k: np.asarray(v)[rows] for k, v in batch.items()
                                  if v.shape[0] == size}, mesh, size, rows))
  return out


def jit_train_step(loss_fn: Callable, mesh: Mesh, state) -> Callable:
  """``step(state, batch, rng) -> (state, metrics)``, jitted over ``mesh``.

  Args:
    loss_fn: scalar loss for this mesh (see :func:`make_mesh_loss`; with a
      ``'model'`` axis of size 1, :func:`make_loss` is the same).
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


def jit_embed_step(mesh: Mesh, state, *, flip: bool = False) -> Callable:
  """``embed(state, images) -> [B, D]``, jitted with the images split over every device.

  Args:
    mesh: from :func:`make_mesh`.
    state: a train state (only its structure is used, for the shardings).
    flip: the flip-fused embedding of face verification, f(x) + f(mirror(x)).
  """

  def embed(state, images):
    out = embed_step(state, images)
    return out + embed_step(state, images[:, :, ::-1]) if flip else out

  # Replicated output: every process can read all embeddings for evaluation.
  return jax.jit(embed, in_shardings=(state_shardings(state, mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))
