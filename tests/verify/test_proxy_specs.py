"""circle_jax.verify on the class-level baselines: softmax, NormFace, CosFace, ArcFace, SphereFace.

The references must be the library (default variants equal the circle_jax
functions to float64 rounding); the verifier must name pytorch-metric-learning's
conventions, and report torch implementations with one deliberate defect each
as not matching, naming the defect's axis.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj
from circle_jax import verify as cv
from circle_jax.verify import _verify

LIBRARY = {
    "softmax": lambda x, y, w, hp: cj.softmax_loss(x, w, y),
    "normface": lambda x, y, w, hp: cj.normface_loss(x, w, y, **hp),
    "cosface": lambda x, y, w, hp: cj.am_softmax_loss(x, w, y, **hp),
    "arcface": lambda x, y, w, hp: cj.arcface_loss(x, w, y, **hp),
    "sphereface": lambda x, y, w, hp: cj.sphereface_loss(x, w, y, **hp),
}


# Tiny problems: an unoptimised build compiles several times faster and runs as fast.
@functools.partial(jax.jit, static_argnames=("loss", "static"),
                   compiler_options={"xla_backend_optimization_level": 0})
def _library_values_and_grads(x, y, w, params, cotangent, *, loss, static):
  values, vjp = jax.vjp(lambda x, w: LIBRARY[loss](x, y, w, dict(params, **dict(static))), x, w)
  return (values,) + vjp(cotangent)


@pytest.mark.parametrize("loss, axis_values, options", [
    *(pytest.param(loss, {}, (), id=loss) for loss in sorted(LIBRARY)),
    pytest.param("arcface", {"psi": "easy_margin"}, (("easy_margin", True),), id="arcface-easy"),
])
def test_reference_is_the_library(loss, axis_values, options):
  spec = cv.spec(loss)
  index = cv.Switches.of(spec.axes, spec.default.replace(**axis_values)).index
  worst = 0.0
  with jax.enable_x64(True):
    for p in spec.problems():
      x, w = jnp.asarray(p.embeddings, jnp.float64), jnp.asarray(p.class_weights, jnp.float64)
      y, v = jnp.asarray(spec.labels(p)), jnp.asarray(p.cotangent)
      params = {k: jnp.float64(h) for k, h in p.hyperparameters.items()}
      ours = _verify._values_and_grads(x, y, w, params, v, index, spec=spec)
      # SphereFace's margin is a Python int (a loop bound): static, one compile per value.
      static = options + tuple((k, h) for k, h in p.hyperparameters.items() if isinstance(h, int))
      traced = {k: jnp.float64(h) for k, h in p.hyperparameters.items() if not isinstance(h, int)}
      library = _library_values_and_grads(x, y, w, traced, v, loss=loss, static=static)
      for a, b in zip(ours, library):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, np.abs(a - b).max() / np.abs(b).max())
  assert worst < 1e-12


# ------------------------------------------------------------------ pytorch-metric-learning


def _pml_classifier(name, per_element=False, **fixed):
  """A PML classifier loss on the verifier's weights: ``W`` is its [D, C] leaf
  (``class_weights_layout="DC"``), so the gradient lands on it."""
  def fn(x, y, w, **hyperparameters):
    from pytorch_metric_learning import losses, reducers

    kwargs = dict(reducer=reducers.DoNothingReducer()) if per_element else {}
    module = getattr(losses, name)(num_classes=w.shape[1], embedding_size=w.shape[0], **kwargs,
                                   **fixed, **hyperparameters)
    del module.W  # a registered Parameter: only a plain attribute can hold a given tensor
    module.W = w
    out = module(x, y)
    return out["loss"]["losses"] if per_element else out

  return fn


def _normalized_softmax(x, y, w, *, gamma):
  return _pml_classifier("NormalizedSoftmaxLoss", temperature=1 / gamma)(x, y, w)


PML = {
    "cosface": ("CosFaceLoss", dict(fn=_pml_classifier("CosFaceLoss"),
                                    hyperparameter_names={"gamma": "scale"})),
    "arcface": ("ArcFaceLoss (margin in degrees) (DoNothingReducer)", dict(
        fn=_pml_classifier("ArcFaceLoss", per_element=True), margin_unit="degrees",
        hyperparameter_names={"gamma": "scale"})),
    "normface": ("NormalizedSoftmaxLoss(temperature=1/γ)", dict(fn=_normalized_softmax)),
    # PML has no annealing: λ = 0 settings, and annealing_lambda not passed.
    "sphereface": ("SphereFaceLoss(scale=1) (DoNothingReducer)", dict(
        fn=_pml_classifier("SphereFaceLoss", per_element=True, scale=1),
        hyperparameter_names={"annealing_lambda": None},
        settings={"m4": {"margin": 4, "annealing_lambda": 0.0},
                  "m2": {"margin": 2, "annealing_lambda": 0.0}})),
}


@pytest.mark.parametrize("loss", sorted(PML))
def test_names_pytorch_metric_learning(loss):
  pytest.importorskip("pytorch_metric_learning")
  convention, kwargs = PML[loss]
  kwargs = dict(kwargs)
  r = cv.verify(kwargs.pop("fn"), loss, "torch", class_weights_layout="DC", **kwargs)
  assert r.ok, str(r)
  assert f"pytorch-metric-learning {convention}" in r.conventions, str(r)
  assert r.output == ("per-example" if "DoNothingReducer" in convention else "scalar")
  # One sound variant on every axis but the reduction (over a class-level
  # batch with no zero loss, the three means are the same thing).
  for axis in (a.name for a in cv.spec(loss).axes):
    assert len({v[axis] for v in r.matches}) == 1, (axis, str(r))


@pytest.mark.parametrize("loss, name, kwargs, defect", [
    # PML's ArcFaceLoss takes degrees: verified without margin_unit="degrees".
    ("arcface", "ArcFaceLoss", dict(hyperparameter_names={"gamma": "scale"}),
     ("margin_unit", "radians_as_degrees")),
    # L-Softmax is SphereFace without normalising W.
    ("sphereface", "LargeMarginSoftmaxLoss", PML["sphereface"][1],
     ("normalise", "neither")),
])
def test_pytorch_metric_learning_mix_ups(loss, name, kwargs, defect):
  pytest.importorskip("pytorch_metric_learning")
  kwargs = {k: v for k, v in kwargs.items() if k != "fn"}
  fn = _pml_classifier(name, per_element=True, **({"scale": 1} if loss == "sphereface" else {}))
  r = cv.verify(fn, loss, "torch", class_weights_layout="DC", **kwargs)
  assert not r.ok
  assert defect in [(d.axis, d.value) for d in r.diagnosis], str(r)


# --------------------------------------------------------------------------- defects, in torch


def _cosines(x, w):
  import torch.nn.functional as F

  return F.normalize(x, dim=1) @ F.normalize(w, dim=1).t()


def _softmax_over_batch(x, y, w):
  import torch

  return -torch.log_softmax(x @ w.t(), dim=0)[torch.arange(len(y)), y]  # dim=0: the batch


def _normface_temperature(x, y, w, *, gamma):
  import torch.nn.functional as F

  return F.cross_entropy(_cosines(x, w) / gamma, y)  # γ used as a temperature


def _cosface_raw_weights(x, y, w, *, margin, gamma):
  import torch.nn.functional as F

  cos = F.normalize(x, dim=1) @ w.t()  # W is not normalised
  logits = gamma * (cos - margin * F.one_hot(y, w.shape[0]).to(cos.dtype))
  return F.cross_entropy(logits, y, reduction="none")


def _arcface_degrees_as_radians(x, y, w, *, margin, gamma):
  import torch
  import torch.nn.functional as F

  cos = _cosines(x, w)
  theta = torch.acos(cos.clamp(-1, 1))
  # The margin arrives in degrees: torch.deg2rad is missing. With the usual
  # fallback past θ + m > π, every loss underflows (about e^−400).
  fallback = cos - margin * torch.sin(torch.tensor(margin, dtype=cos.dtype))
  target = torch.where(theta + margin <= torch.pi, torch.cos(theta + margin), fallback)
  logits = gamma * torch.where(F.one_hot(y, w.shape[0]).bool(), target, cos)
  return F.cross_entropy(logits, y, reduction="none")


def _sphereface_cos_m_theta(x, y, w, *, margin, annealing_lambda):
  import torch
  import torch.nn.functional as F

  cos = _cosines(x, w)
  psi = torch.cos(margin * torch.acos(cos.clamp(-1, 1)))  # not the piecewise (−1)^k ψ − 2k
  target = (annealing_lambda * cos + psi) / (1 + annealing_lambda)
  logits = x.norm(dim=1, keepdim=True) * torch.where(F.one_hot(y, w.shape[0]).bool(), target, cos)
  return F.cross_entropy(logits, y, reduction="none")


@pytest.mark.parametrize("loss, fn, defect, kwargs", [
    # The defect named in each implementation's comment is its only difference.
    ("softmax", _softmax_over_batch, ("softmax_axis", "batch"), {}),
    ("normface", _normface_temperature, ("gamma_applied", "inverse"), {}),
    ("cosface", _cosface_raw_weights, ("normalise", "embeddings"), {}),
    ("arcface", _arcface_degrees_as_radians, ("margin_unit", "degrees_as_radians"),
     dict(margin_unit="degrees")),
    ("sphereface", _sphereface_cos_m_theta, ("psi", "cos_mtheta"), {}),
])
def test_defects_are_named(loss, fn, defect, kwargs, tmp_path):
  pytest.importorskip("torch")
  r = cv.verify(fn, loss, "torch", save_dir=tmp_path, **kwargs)
  assert not r.ok
  assert defect in [(d.axis, d.value) for d in r.diagnosis], str(r)
