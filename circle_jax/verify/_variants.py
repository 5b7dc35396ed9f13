"""Variant axes: the choices on which correct implementations of a loss differ.

An :class:`Axis` lists the values one choice can take. Sound values are
conventions that published implementations use (α detached or differentiated,
normalisation inside or left to the caller, ...); values listed as ``defects``
are known mistakes (α not clamped, the self-pair kept as a positive, ...). A
:class:`Variant` fixes one value per axis. The verifier searches the sound
variants for one that matches and, when none does, tries each defect on top of
the closest sound variant to say which choice is wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Iterator, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Axis:
  """One choice: its sound values (the first is circle_jax's default) and known defects.

  Attributes:
    name: e.g. ``"alpha"``.
    values: sound values, circle_jax's default first.
    meaning: value -> one line saying what it computes (sound values and defects).
    defects: values that are known mistakes, tried only to diagnose a mismatch.
  """

  name: str
  values: tuple[str, ...]
  meaning: Mapping[str, str]
  defects: tuple[str, ...] = ()

  def __post_init__(self):
    missing = [v for v in self.values + self.defects if v not in self.meaning]
    if missing:
      raise ValueError(f"axis {self.name!r}: no meaning given for {missing}")


@dataclasses.dataclass(frozen=True, order=True)
class Variant:
  """One value per axis, hashable (it is a static argument of the references).

  Example:
    >>> from circle_jax.verify import Variant
    >>> v = Variant.of(alpha="detached", normalise="inside")
    >>> v["alpha"], str(v), str(v.replace(alpha="differentiated"))
    ('detached', 'alpha=detached normalise=inside', 'alpha=differentiated normalise=inside')
  """

  items: tuple[tuple[str, str], ...]

  @classmethod
  def of(cls, **choices: str) -> "Variant":
    return cls(tuple(choices.items()))

  def __getitem__(self, axis: str) -> str:
    for name, value in self.items:
      if name == axis:
        return value
    raise KeyError(f"variant has no axis {axis!r}; it has {[n for n, _ in self.items]}")

  def get(self, axis: str, default: str | None = None) -> str | None:
    return next((value for name, value in self.items if name == axis), default)

  def replace(self, **choices: str) -> "Variant":
    unknown = set(choices) - {n for n, _ in self.items}
    if unknown:
      raise KeyError(f"variant has no axis {sorted(unknown)}")
    return Variant(tuple((n, choices.get(n, v)) for n, v in self.items))

  def as_dict(self) -> dict[str, str]:
    return dict(self.items)

  def __str__(self) -> str:
    return " ".join(f"{n}={v}" for n, v in self.items)


def product(axes: Sequence[Axis], *, moot: Iterable = ()) -> Iterator[Variant]:
  """Every combination of the axes' sound values, skipping those ``moot`` rejects.

  ``moot`` holds predicates ``f(variant) -> bool``; a variant for which one is
  true duplicates another (e.g. clipping s ≤ 1 after normalising) and is left out.
  """
  moot = tuple(moot)
  for values in itertools.product(*(a.values for a in axes)):
    variant = Variant(tuple(zip((a.name for a in axes), values)))
    if not any(f(variant) for f in moot):
      yield variant


REDUCTION = Axis(
    "reduction",
    ("none", "mean", "mean_valid", "mean_nonzero", "sum"),
    {
        "none": "one value per example",
        "mean": "the mean over all B examples, zeros included (fast-reid, TF-Similarity)",
        "mean_valid": "the mean over anchors with a positive and a negative (0 if none)",
        "mean_nonzero": "the mean over examples whose loss is not 0 (pytorch-metric-learning's "
                        "AvgNonZeroReducer, Keras 3's masked mean)",
        "sum": "the sum over the batch",
    },
)


class Switches:
  """A variant as traced switches, so that one compiled reference serves every variant.

  References select between the branches of an axis with :meth:`pick`; all
  branches are computed and one is chosen with ``where`` (so every branch must
  be finite, gradient included, for every input). Inside ``jit`` the choice
  is an int32 array, so changing the variant does not recompile.

  Example:
    >>> import jax.numpy as jnp
    >>> from circle_jax.verify import Axis, Switches, Variant
    >>> axes = (Axis("clip", ("none", "s<=1"), {"none": "as is", "s<=1": "min(s, 1)"}),)
    >>> sw = Switches.of(axes, Variant.of(clip="s<=1"))
    >>> s = jnp.array([0.5, 1.5])
    >>> sw.pick("clip", none=s, **{"s<=1": jnp.minimum(s, 1.0)}).tolist()
    [0.5, 1.0]
  """

  def __init__(self, axes: Sequence[Axis], index):
    self._axes = {a.name: a.values + a.defects for a in axes}
    self._position = {a.name: i for i, a in enumerate(axes)}
    self.index = index  # [num_axes] int32: the value's position on each axis

  @classmethod
  def of(cls, axes: Sequence[Axis], variant: Variant) -> "Switches":
    import numpy as np

    index = []
    for axis in axes:
      options = axis.values + axis.defects
      value = variant[axis.name]
      if value not in options:
        raise ValueError(f"axis {axis.name!r} has no value {value!r}; expected one of {options}")
      index.append(options.index(value))
    return cls(axes, np.asarray(index, np.int32))

  def is_(self, axis: str, value: str):
    """A (traced) bool: the variant's value on ``axis`` is ``value``."""
    options = self._axes[axis]
    if value not in options:
      raise ValueError(f"axis {axis!r} has no value {value!r}; expected one of {options}")
    return self.index[self._position[axis]] == options.index(value)

  def pick(self, axis: str, **branches):
    """The branch named by the variant's value on ``axis`` (every value must be given)."""
    import jax
    import jax.numpy as jnp

    options = self._axes[axis]
    if set(branches) != set(options):
      raise ValueError(f"axis {axis!r}: branches {sorted(branches)} != values {sorted(options)}")
    out = branches[options[0]]
    for value in options[1:]:
      flag = self.is_(axis, value)
      out = jax.tree.map(lambda b, o, flag=flag: jnp.where(flag, b, o), branches[value], out)
    return out
