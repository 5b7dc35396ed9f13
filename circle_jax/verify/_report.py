"""The verifier's answer: which variant matches, how closely, and what is wrong if none does."""

from __future__ import annotations

import dataclasses
import json

from circle_jax.verify._variants import Variant

# Normwise relative error max|a − b| / max|b| allowed per problem. Both sides
# evaluate the same formula in a different order: a similarity carries a few ε,
# the exponents multiply it by up to γ(1 + m), so float64 stays near 1e-13 even
# at γ = 1024 and float32 (γ = 80) near 1e-5. The smallest variant difference
# (torch's Softplus cut-off, e^−t at t just above 20) is 2e-9.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


@dataclasses.dataclass(frozen=True)
class ProblemResult:
  """One problem under one variant."""

  problem: str
  value_error: float  # normwise relative; inf when the implementation's output is not finite
  grad_error: float  # 0.0 when gradients are not checked
  tolerance: float

  @property
  def passed(self) -> bool:
    return self.value_error <= self.tolerance and self.grad_error <= self.tolerance


@dataclasses.dataclass(frozen=True)
class Diagnosis:
  """One finding about a mismatch: the variant axis it concerns, the value, and why."""

  axis: str
  value: str
  detail: str

  def __str__(self) -> str:
    return f"{self.axis}={self.value}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Report:
  """The result of :func:`circle_jax.verify.verify`.

  Attributes:
    loss: the verified loss (``LossSpec.name``) and ``function`` its circle_jax function.
    framework: the implementation's framework.
    output: ``"per-example"`` or ``"scalar"``.
    problems: the problems run, by name.
    gradients_checked: False for numpy implementations.
    matches: every sound variant (reduction included) that agrees on every problem.
    closest: ``matches[0]``, or the sound variant with the fewest failing problems.
    results: the closest variant's per-problem errors.
    undetermined: axes on which the matches differ: the problems cannot tell
      those values apart for this implementation.
    conventions: known implementations whose convention is among the matches.
    diagnosis: when nothing matches, what explains the difference (a known
      defect on one axis, non-finite output on empty rows, the problems that fail).
    notes: remarks that are not mismatches (e.g. the gradient at a zero vector).
    saved: an npz of the first failing problem (``load_problem`` reads it), or None.
  """

  loss: str
  function: str
  framework: str
  output: str
  problems: tuple[str, ...]
  gradients_checked: bool
  matches: tuple[Variant, ...]
  closest: Variant
  results: tuple[ProblemResult, ...]
  undetermined: dict
  conventions: tuple[str, ...]
  diagnosis: tuple[Diagnosis, ...]
  notes: tuple[str, ...]
  saved: str | None
  shown_axes: tuple[str, ...]

  @property
  def ok(self) -> bool:
    """True when a documented (sound) variant matches on every problem."""
    return bool(self.matches)

  @property
  def value_error(self) -> float:
    return max((r.value_error for r in self.results), default=0.0)

  @property
  def grad_error(self) -> float:
    return max((r.grad_error for r in self.results), default=0.0)

  @property
  def failing(self) -> tuple[str, ...]:
    return tuple(r.problem for r in self.results if not r.passed)

  def _variant_text(self, variant: Variant) -> str:
    return " ".join(f"{n}={v}" for n, v in variant.items if n in self.shown_axes)

  def __str__(self) -> str:
    kind = "one value per example" if self.output == "per-example" else "a reduced scalar"
    lines = [
        f"circle_jax.verify: {self.loss} ({self.function}), framework={self.framework}",
        f"  {len(self.problems)} problems; the implementation returns {kind}"
        + ("" if self.gradients_checked else "; values only (numpy has no gradients)"),
    ]
    if self.ok:
      lines.append(f"MATCH: {self._variant_text(self.closest)}")
      if self.conventions:
        lines.append(f"  the convention of: {'; '.join(self.conventions)}")
      for axis, values in self.undetermined.items():
        lines.append(f"  not told apart by these problems: {axis} ∈ {{{', '.join(values)}}}")
    else:
      lines.append("NO MATCH with any documented variant")
      lines.append(f"  closest: {self._variant_text(self.closest)}; fails on "
                   f"{len(self.failing)} of {len(self.results)} problems")
      for d in self.diagnosis:
        lines.append(f"  diagnosis: {d}")
    for dtype, tol in TOLERANCE.items():
      rows = [r for r in self.results if r.problem.endswith("/" + dtype)]
      if rows:
        text = f"values {max(r.value_error for r in rows):.2g}"
        if self.gradients_checked:
          text += f", gradients {max(r.grad_error for r in rows):.2g}"
        lines.append(f"  worst relative error in {dtype}: {text} (tolerance {tol:g})")
    if not self.ok:
      worst = max(self.results, key=lambda r: max(r.value_error, r.grad_error))
      lines.append(f"  worst problem: {worst.problem}")
    lines.extend(f"  note: {n}" for n in self.notes)
    if self.saved:
      lines.append(f"  first failing problem: {self.saved} (circle_jax.verify.load_problem reads it)")
    return "\n".join(lines)

  def to_json(self) -> dict:
    """A JSON-serialisable summary (what ``--json`` writes)."""
    return {
        "loss": self.loss, "function": self.function, "framework": self.framework,
        "output": self.output, "ok": self.ok,
        "matches": [v.as_dict() for v in self.matches], "closest": self.closest.as_dict(),
        "value_error": self.value_error, "grad_error": self.grad_error,
        "gradients_checked": self.gradients_checked,
        "failing": list(self.failing), "undetermined": {k: list(v) for k, v in self.undetermined.items()},
        "conventions": list(self.conventions),
        "diagnosis": [dataclasses.asdict(d) for d in self.diagnosis],
        "notes": list(self.notes), "saved": self.saved,
        "problems": [dataclasses.asdict(r) for r in self.results],
    }

  def dumps(self) -> str:
    return json.dumps(self.to_json(), indent=1, default=float)
