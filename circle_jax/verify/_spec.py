"""What the verifier knows about one loss: its hyper-parameters, axes and reference.

A :class:`LossSpec` is the whole description the verifier needs. Its
``reference`` computes the per-example loss in JAX under any variant (sound or
defective), from circle_jax's numerics; the tests check that its default
variant is exactly the circle_jax function it stands for, so the verifier
compares against the library, not against a second implementation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from circle_jax.verify import _problems
from circle_jax.verify._variants import Axis
from circle_jax.verify._variants import Variant
from circle_jax.verify._variants import product

# (x [B, D], labels [B], class_weights [C, D], hyperparameters, variant) -> [B]
Reference = Callable[..., object]


# eq=False: hashed by identity, as a static argument of the compiled reference.
@dataclasses.dataclass(frozen=True, eq=False)
class LossSpec:
  """A loss the verifier can check.

  Attributes:
    name: the key users pass as ``loss=``, e.g. ``"pairwise_circle"``.
    kind: ``"pair"`` (called as fn(embeddings, labels)) or ``"class"``
      (fn(embeddings, labels, class_weights)).
    function: the circle_jax function the default variant equals.
    hyperparameters: the keyword names passed to the implementation.
    settings: named hyper-parameter settings the problems run under.
    axes: the variant axes (the reduction axis is added by the verifier).
    reference: per-example values in JAX under a variant; see ``Reference``.
    default: the variant the circle_jax function computes.
    conventions: known implementations -> the axis values (reduction included)
      their documented use computes.
    angles: hyper-parameters that are angles (radians in circle_jax).
    moot: predicates marking variants that duplicate others; they also see the
      reduction (``v.get("reduction")``, None while the axes alone are enumerated).
    patterns: label patterns of the problems.
    float32_settings: settings also run in float32.
  """

  name: str
  kind: str
  function: str
  hyperparameters: tuple[str, ...]
  settings: Mapping[str, Mapping[str, float]]
  axes: tuple[Axis, ...]
  reference: Reference
  default: Variant
  conventions: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
  angles: tuple[str, ...] = ()
  moot: tuple[Callable[[Variant], bool], ...] = ()
  patterns: tuple[str, ...] = _problems.PATTERNS
  float32_settings: tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in ("pair", "class"):
      raise ValueError(f"kind must be 'pair' or 'class', got {self.kind!r}")
    names = [a.name for a in self.axes]
    if [n for n, _ in self.default.items] != names:
      raise ValueError(f"{self.name}: default variant axes {self.default} != {names}")

  def axis(self, name: str) -> Axis:
    return next(a for a in self.axes if a.name == name)

  def sound_variants(self) -> list[Variant]:
    return list(product(self.axes, moot=self.moot))

  def problems(self, seed: int = 0) -> list[_problems.Problem]:
    return _problems.standard_problems(
        self.settings, patterns=self.patterns, float32_settings=self.float32_settings, seed=seed)

  def labels(self, problem: _problems.Problem) -> np.ndarray:
    """The labels the implementation receives: class ids in [0, C) for class-level losses."""
    return problem.class_labels if self.kind == "class" else problem.labels

  def valid(self, problem: _problems.Problem) -> np.ndarray:
    """[B] bool: examples the loss is defined on (an anchor with a positive and a
    negative for pair losses; every example for class-level ones)."""
    if self.kind == "class":
      return np.ones(len(problem.labels), bool)
    same = problem.labels[:, None] == problem.labels[None, :]
    np.fill_diagonal(same, False)
    other = problem.labels[:, None] != problem.labels[None, :]
    return same.any(1) & other.any(1)


_REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
  if spec.name in _REGISTRY:
    raise ValueError(f"loss {spec.name!r} is registered twice")
  _REGISTRY[spec.name] = spec
  return spec


def get(name: str) -> LossSpec:
  """The spec registered under ``name``; a ValueError lists the known names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"loss={name!r} is not known to circle_jax.verify; expected one of "
                     f"{sorted(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
  """The names of the registered losses, sorted (``circle_jax.verify.losses()``)."""
  return tuple(sorted(_REGISTRY))
