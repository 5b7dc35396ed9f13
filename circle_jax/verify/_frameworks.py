"""Running the implementation under test in its own framework.

Each runner calls ``fn(embeddings, labels[, class_weights], **hyperparameters)``
with the problem's arrays as that framework's tensors (in the problem's dtype),
and returns the output and the gradient of Σ_b v_b·L_b (per-example output) or
of L (a scalar) with respect to the embeddings and the class weights, as
float64 numpy in circle_jax's [C, D] layout. Frameworks are imported inside the
runners, so verifying a torch loss never imports TensorFlow and the other way
round.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from circle_jax.verify._problems import Problem

FRAMEWORKS = ("jax", "torch", "tensorflow", "numpy")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the implementation takes its inputs.

  Attributes:
    class_weights: ``"CD"`` (circle_jax, rows are proxies) or ``"DC"``
      (pytorch-metric-learning's ``W``).
    angle_unit: ``"radians"`` or ``"degrees"``: the unit the implementation
      expects for angular margins (ArcFace: pytorch-metric-learning takes degrees).
    names: circle_jax's hyper-parameter name -> the implementation's keyword
      (e.g. ``{"margin": "m"}``); ``None`` drops the hyper-parameter (the
      implementation has it fixed).
  """

  class_weights: str = "CD"
  angle_unit: str = "radians"
  names: Mapping[str, str | None] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.class_weights not in ("CD", "DC"):
      raise ValueError(f"class_weights_layout must be 'CD' or 'DC', got {self.class_weights!r}")
    if self.angle_unit not in ("radians", "degrees"):
      raise ValueError(f"margin_unit must be 'radians' or 'degrees', got {self.angle_unit!r}")

  def keywords(self, hyperparameters: Mapping[str, float], angles=()) -> dict:
    out = {}
    for name, value in hyperparameters.items():
      if name in angles and self.angle_unit == "degrees":
        value = float(np.degrees(value))
      key = self.names.get(name, name)
      if key is not None:
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What the implementation returned on one problem (float64 numpy)."""

  values: np.ndarray  # [B] or [] (a reduced scalar)
  grads: dict | None  # "embeddings" [B, D], "class_weights" [C, D]; None: not computed


def _check_output(values: np.ndarray, batch: int) -> np.ndarray:
  if values.shape not in ((batch,), ()):
    raise ValueError(
        f"the implementation returned shape {values.shape}; expected [{batch}] (one value per "
        "example) or a scalar (a reduced loss)")
  return values


def _run_jax(fn, problem, labels, kwargs, layout, class_level):
  import jax
  import jax.numpy as jnp

  with jax.enable_x64(problem.dtype == "float64"):
    x = jnp.asarray(problem.embeddings)
    w = jnp.asarray(problem.class_weights if layout.class_weights == "CD" else problem.class_weights.T)
    y = jnp.asarray(labels)
    call = (lambda x, w: fn(x, y, w, **kwargs)) if class_level else (lambda x, w: fn(x, y, **kwargs))
    out, vjp = jax.vjp(call, x, w)
    values = _check_output(np.asarray(out, np.float64), len(labels))
    cot = jnp.ones((), out.dtype) if values.ndim == 0 else jnp.asarray(problem.cotangent, out.dtype)
    gx, gw = vjp(cot)
  return values, np.asarray(gx, np.float64), np.asarray(gw, np.float64)


def _run_torch(fn, problem, labels, kwargs, layout, class_level):
  import torch

  dtype = getattr(torch, problem.dtype)
  x = torch.tensor(problem.embeddings, dtype=dtype, requires_grad=True)
  w_np = problem.class_weights if layout.class_weights == "CD" else problem.class_weights.T
  w = torch.tensor(np.ascontiguousarray(w_np), dtype=dtype, requires_grad=True)
  y = torch.tensor(labels)
  out = fn(x, y, w, **kwargs) if class_level else fn(x, y, **kwargs)
  if not torch.is_tensor(out):
    raise TypeError(f"framework='torch': the implementation returned {type(out).__name__}, "
                    "not a torch.Tensor")
  values = _check_output(out.detach().double().numpy(), len(labels))
  if out.requires_grad:
    target = out if out.ndim == 0 else (out * torch.tensor(problem.cotangent, dtype=out.dtype)).sum()
    target.backward()
  grad = lambda t: np.zeros(t.shape) if t.grad is None else t.grad.double().numpy()  # noqa: E731
  return values, grad(x), grad(w)


def _run_tensorflow(fn, problem, labels, kwargs, layout, class_level):
  import tensorflow as tf

  x = tf.constant(problem.embeddings, dtype=problem.dtype)
  w_np = problem.class_weights if layout.class_weights == "CD" else problem.class_weights.T
  w = tf.constant(w_np, dtype=problem.dtype)
  y = tf.constant(labels)
  with tf.GradientTape() as tape:
    tape.watch([x, w])
    out = fn(x, y, w, **kwargs) if class_level else fn(x, y, **kwargs)
    out = tf.convert_to_tensor(out)
    values = _check_output(out.numpy().astype(np.float64), len(labels))
    target = out if values.ndim == 0 else tf.reduce_sum(out * tf.constant(problem.cotangent, out.dtype))
  gx, gw = tape.gradient(target, [x, w])
  grad = lambda g, like: np.zeros(like.shape) if g is None else np.asarray(g, np.float64)  # noqa: E731
  return values, grad(gx, x), grad(gw, w)


def _run_numpy(fn, problem, labels, kwargs, layout, class_level):
  w = problem.class_weights if layout.class_weights == "CD" else problem.class_weights.T
  out = fn(problem.embeddings, labels, w, **kwargs) if class_level else fn(problem.embeddings, labels, **kwargs)
  return _check_output(np.asarray(out, np.float64), len(labels)), None, None


_RUNNERS: dict[str, Callable] = {
    "jax": _run_jax, "torch": _run_torch, "tensorflow": _run_tensorflow, "numpy": _run_numpy,
}


def run(fn, problem: Problem, labels: np.ndarray, *, framework: str, layout: Layout,
        class_level: bool, angles=()) -> Outcome:
  """Calls the implementation on one problem in its framework (see the module docstring).

  numpy implementations are checked on values only (numpy has no gradients).
  """
  if framework not in _RUNNERS:
    raise ValueError(f"framework={framework!r}; expected one of {FRAMEWORKS}")
  kwargs = layout.keywords(problem.hyperparameters, angles)
  values, gx, gw = _RUNNERS[framework](fn, problem, labels, kwargs, layout, class_level)
  if gx is None:
    return Outcome(values, None)
  grads = {"embeddings": gx}
  if class_level:
    grads["class_weights"] = gw if layout.class_weights == "CD" else gw.T
  return Outcome(values, grads)
