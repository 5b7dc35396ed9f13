"""Training losses for a mesh: class-level losses with the proxies sharded along ``'model'``."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from circle_jax import parallel
from circle_jax.training._loss_registry import LossSpec
from circle_jax.training._loss_registry import make_loss
from circle_jax.training._sharding import BATCH_AXES
from circle_jax.training._sharding import MODEL_AXIS
from circle_jax.training._sharding import model_axis_size

# Registered losses that have a class-sharded implementation in
# circle_jax.parallel (same hyper-parameters, plus axis_name and num_classes).
SHARDED_CLASS_LOSSES: dict[str, Callable[..., jax.Array]] = {
    "circle_class": parallel.class_circle_loss,
}


def check_model_axis(name: str, model_axis_size: int) -> None:
  """Raises ``ValueError`` unless loss ``name`` can run on a ``'model'`` axis of that size.

  Example:
    >>> check_model_axis("circle_class", 2)
    >>> check_model_axis("arcface", 1)
  """
  if isinstance(model_axis_size, bool) or not isinstance(model_axis_size, int) or (
      model_axis_size < 1):
    raise ValueError(f"model_axis_size must be a positive int, got {model_axis_size!r}")
  if model_axis_size > 1 and name not in SHARDED_CLASS_LOSSES:
    raise ValueError(
        f"model_axis_size={model_axis_size} needs a class-sharded loss, and loss {name!r} has "
        f"none; use model_axis_size=1 or one of {sorted(SHARDED_CLASS_LOSSES)}")


def make_mesh_loss(name: str, hparams: Mapping[str, Any] | None, mesh: Mesh, *,
                   num_classes: int | None = None) -> tuple[LossSpec, Callable]:
  r"""The scalar training loss of :func:`make_loss`, for a train step over ``mesh``.

  With a ``'model'`` axis of size 1 this is :func:`make_loss`. With n > 1
  devices on ``'model'`` the proxies are ``[C_pad, D]``, C_pad = n·⌈C/n⌉, split
  by class along ``'model'``, and the per-example loss runs in
  ``jax.shard_map`` over the whole mesh as
  ``circle_jax.parallel.class_circle_loss(..., axis_name='model',
  num_classes=C)``: each device holds B / mesh.size examples and C_pad / n
  class rows; within a ``'model'`` group the embeddings are all-gathered and
  the class log-sum-exps merged by a ``pmax`` and a ``psum`` of [B] values, so
  the ``[C_pad, D]`` matrix and its gradient never leave their devices. The
  value is the mean over the global batch, equal (up to float summation
  order) to ``make_loss(name)`` on the unpadded ``[C, D]`` proxies.

  Padding rows (index ≥ C) are masked out of the loss and get exactly zero
  gradient. :class:`~circle_jax.training.MetricModel` initialises them to zero,
  so the optimiser never moves them (weight decay of a zero row is zero; SGD
  momentum and Adam's mu / nu of a zero gradient stay zero): they stay exactly
  zero, and would not affect the loss even if they did not.

  Args:
    name: a key of :data:`LOSSES`; with a ``'model'`` axis > 1, a key of
      :data:`SHARDED_CLASS_LOSSES`.
    hparams: keyword hyper-parameters of the loss (as for :func:`make_loss`).
    mesh: from :func:`make_mesh`.
    num_classes: C, the real number of classes (required for a sharded loss).

  Returns:
    ``(spec, loss_fn)`` with ``loss_fn(embeddings [B, D], labels [B],
    class_weights [C_pad, D]) -> scalar``, to be called inside ``jax.jit``
    with the batch sharded as :func:`batch_sharding` and the proxies as
    :func:`class_sharding` (what :func:`jit_train_step` does).

  Raises:
    ValueError: a loss without a class-sharded implementation on a mesh with
      a ``'model'`` axis > 1 (naming the loss and ``model_axis_size``), a
      missing ``num_classes``, or what :func:`make_loss` raises.

  Example:
    >>> from circle_jax.training import make_mesh
    >>> mesh = make_mesh(1)
    >>> spec, loss_fn = make_mesh_loss("circle_class", {"gamma": 64.0}, mesh, num_classes=3)
    >>> x, w = jnp.eye(4, 3), jnp.eye(3)
    >>> float(loss_fn(x, jnp.array([0, 1, 2, 0]), w)) >= 0
    True
  """
  spec, loss_fn = make_loss(name, hparams)
  m = model_axis_size(mesh)
  check_model_axis(name, m)
  if m == 1:
    return spec, loss_fn
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"make_mesh_loss: loss {name!r} on a 'model' axis of {m} devices needs "
                     f"num_classes (the real C), got {num_classes!r}")
  kwargs = {**spec.hparams, **dict(hparams or {})}
  per_example = functools.partial(SHARDED_CLASS_LOSSES[name], axis_name=MODEL_AXIS,
                                  num_classes=num_classes, **kwargs)
  batch = P(BATCH_AXES)
  sharded = jax.shard_map(per_example, mesh=mesh,
                          in_specs=(batch, P(MODEL_AXIS, None), batch), out_specs=batch)

  def sharded_loss_fn(embeddings, labels, class_weights=None):
    if class_weights is None:
      raise ValueError(f"class-level loss {name!r} needs class_weights (params['class_weights'])")
    if class_weights.shape[0] % m or not num_classes <= class_weights.shape[0] < num_classes + m:
      raise ValueError(f"class_weights of shape {class_weights.shape} for num_classes="
                       f"{num_classes} on a 'model' axis of {m}: expected "
                       f"{-(-num_classes // m) * m} rows (C padded to a multiple of {m})")
    return jnp.mean(sharded(embeddings, class_weights, labels))

  return spec, sharded_loss_fn
