"""verify(): run an implementation on the standard problems and find the variant it computes."""

from __future__ import annotations

import functools
import os
import re
import tempfile
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from circle_jax.verify import _frameworks
from circle_jax.verify import _problems
from circle_jax.verify import _spec
from circle_jax.verify._report import TOLERANCE
from circle_jax.verify._report import Diagnosis
from circle_jax.verify._report import ProblemResult
from circle_jax.verify._report import Report
from circle_jax.verify._variants import REDUCTION
from circle_jax.verify._variants import Switches
from circle_jax.verify._variants import Variant


# The problems are tiny (B = 12): compiling without XLA's backend optimisations
# costs a third less time and gives the same float64 results to rounding.
@functools.partial(jax.jit, static_argnames=("spec",),
                   compiler_options={"xla_backend_optimization_level": 0})
def _values_and_grads(x, labels, w, params, cotangent, index, *, spec):
  variant = Switches(spec.axes, index)
  values, vjp = jax.vjp(lambda x, w: spec.reference(x, labels, w, params, variant), x, w)
  gx, gw = vjp(cotangent)
  return values, gx, gw


def reduction_weights(reduction: str, values: np.ndarray, valid: np.ndarray,
                      cotangent: np.ndarray) -> np.ndarray:
  """[B] weights c with reduced = Σ c_b·L_b (the cotangent, for per-example output)."""
  batch = len(values)
  if reduction == "none":
    return cotangent
  if reduction == "mean":
    return np.full(batch, 1.0 / batch)
  if reduction == "sum":
    return np.ones(batch)
  if reduction == "mean_valid":
    return valid / max(int(valid.sum()), 1)
  if reduction == "mean_nonzero":
    nonzero = values != 0
    return nonzero / max(int(nonzero.sum()), 1)
  raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTION.values}")


class _Ours:
  """circle_jax's values and gradients per (variant, problem), computed once each."""

  def __init__(self, spec: _spec.LossSpec, problems: Sequence[_problems.Problem]):
    self.spec = spec
    self.problems = problems
    self._cache: dict = {}

  def _call(self, k: int, variant: Variant, cotangent: np.ndarray):
    p = self.problems[k]
    with jax.enable_x64(True):
      # float64 on exactly the inputs the implementation received.
      out = _values_and_grads(
          jnp.asarray(p.embeddings, jnp.float64), jnp.asarray(self.spec.labels(p)),
          jnp.asarray(p.class_weights, jnp.float64),
          {n: jnp.float64(v) for n, v in p.hyperparameters.items()},
          jnp.asarray(cotangent, jnp.float64), Switches.of(self.spec.axes, variant).index,
          spec=self.spec)
      return tuple(np.asarray(a, np.float64) for a in out)

  def per_example(self, k: int, variant: Variant) -> np.ndarray:
    key = (k, variant, "none")
    if key not in self._cache:
      self._cache[key] = self._call(k, variant, self.problems[k].cotangent)
    return self._cache[key][0]

  def __call__(self, k: int, variant: Variant, reduction: str):
    """(values [B] or [], grads dict) under the variant and reduction."""
    key = (k, variant, reduction)
    if key not in self._cache:
      p = self.problems[k]
      weights = reduction_weights(reduction, self.per_example(k, variant), self.spec.valid(p),
                                  p.cotangent)
      values, gx, gw = self._call(k, variant, weights)
      if reduction != "none":  # the reduced scalar Σ c_b·L_b, with the cotangent's weights
        values = np.asarray(np.dot(weights, values))
      self._cache[key] = values, gx, gw
    values, gx, gw = self._cache[key]
    grads = {"embeddings": gx}
    if self.spec.kind == "class":
      grads["class_weights"] = gw
    return values, grads


# Below this, results are compared absolutely: a loss of e^−400 is 0 for any
# purpose, and a framework may well round it to exactly 0.
TINY = 1e-30


def _normwise(theirs: np.ndarray, ours: np.ndarray) -> float:
  """max|theirs − ours| / max|ours|; absolute where circle_jax's results are all tiny."""
  if not np.all(np.isfinite(theirs)):
    return float("inf")
  err = float(np.max(np.abs(theirs - ours), initial=0.0))
  scale = float(np.max(np.abs(ours), initial=0.0))
  return err / scale if scale >= TINY else err


def _grad_rows(problem: _problems.Problem, name: str) -> np.ndarray:
  """Rows compared: not the all-zero inputs, whose gradient is a convention."""
  zero = problem.zero_rows if name == "embeddings" else problem.zero_class_rows
  return ~zero


def _compare(problem, theirs: _frameworks.Outcome, ours) -> ProblemResult:
  values, grads = ours
  value_error = _normwise(theirs.values, values)
  grad_error = 0.0
  if theirs.grads is not None:
    a = np.concatenate([theirs.grads[n][_grad_rows(problem, n)].ravel() for n in grads])
    b = np.concatenate([grads[n][_grad_rows(problem, n)].ravel() for n in grads])
    grad_error = _normwise(a, b)
  return ProblemResult(problem.name, value_error, grad_error, TOLERANCE[problem.dtype])


def _results(ours: _Ours, outcomes, variant: Variant, reduction: str, skip=()):
  return tuple(
      _compare(p, outcomes[k], ours(k, variant, reduction))
      for k, p in enumerate(ours.problems) if k not in skip)


def _score(results) -> tuple:
  failed = sum(not r.passed for r in results)
  finite = [max(r.value_error, r.grad_error) for r in results
            if np.isfinite(r.value_error) and np.isfinite(r.grad_error)]
  return failed, max(finite, default=np.inf)


def _with_reduction(variant: Variant, reduction: str) -> Variant:
  return Variant(variant.items + (("reduction", reduction),))


def _without_reduction(variant: Variant) -> tuple[Variant, str]:
  return Variant(variant.items[:-1]), variant.items[-1][1]


def _passes(ours, outcomes, variant, reduction, skip) -> bool:
  """Every problem agrees (stops at the first that does not)."""
  for k, p in enumerate(ours.problems):
    if k not in skip and not _compare(p, outcomes[k], ours(k, variant, reduction)).passed:
      return False
  return len(skip) < len(ours.problems)


def _explain_by_defect(spec, ours, outcomes, ranked, skip):
  """(sound variant, axis, defect) such that the variant with that one known
  defect matches every problem with finite output; the sound variants are
  tried closest first. None if no single defect explains the output."""
  for candidate in ranked:
    base, reduction = _without_reduction(candidate)
    for axis in spec.axes:
      for defect in axis.defects:
        if _passes(ours, outcomes, base.replace(**{axis.name: defect}), reduction, skip):
          return candidate, axis, defect
  return None


def _finite(outcome) -> bool:
  return bool(np.all(np.isfinite(outcome.values))) and (
      outcome.grads is None or all(np.all(np.isfinite(g)) for g in outcome.grads.values()))


def _non_finite_diagnosis(spec, problems, outcomes) -> list[Diagnosis]:
  """Non-finite values or gradients, traced to empty rows when that is what they share."""
  bad = [k for k, o in enumerate(outcomes) if not _finite(o)]
  if not bad:
    return []
  names = ", ".join(problems[k].name for k in bad)
  has_empty = [not spec.valid(p).all() for p in problems]
  if spec.kind == "pair" and all(has_empty[k] for k in bad):
    return [Diagnosis("empty_rows", "non-finite",
                      "anchors without a positive or without a negative get NaN/inf (value or "
                      f"gradient) instead of exactly 0; on {names}")]
  return [Diagnosis("finite", "non-finite", f"non-finite values or gradients on {names}")]


def _pattern_diagnosis(problems, results) -> list[Diagnosis]:
  """Which kind of problem fails, when the failures share one feature."""
  failing = {r.problem for r in results if not r.passed}
  if not failing:
    return []
  by = {
      "pattern": lambda p: p.pattern, "setting": lambda p: p.setting, "dtype": lambda p: p.dtype}
  out = []
  for axis, key in by.items():
    keys = {key(p) for p in problems if p.name in failing}
    others = {key(p) for p in problems if p.name not in failing}
    if len(keys) == 1 and not keys & others:
      (value,) = keys
      out.append(Diagnosis(axis, value, f"the failures are exactly the {axis}={value} problems"))
  return out


def verify(
    fn: Callable,
    loss: str = "pairwise_circle",
    framework: str = "jax",
    *,
    class_weights_layout: str = "CD",
    margin_unit: str = "radians",
    hyperparameter_names: Mapping[str, str | None] | None = None,
    settings: Mapping[str, Mapping[str, float]] | None = None,
    save_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> Report:
  r"""Checks another implementation of a loss against circle_jax, variant by variant.

  The implementation is called as ``fn(embeddings, labels, **hyperparameters)``
  (pair losses) or ``fn(embeddings, labels, class_weights, **hyperparameters)``
  (class-level losses) on the standard problems (see ``_problems``: P×K,
  groups and singletons, no positive, no negative, a zero vector; each loss's
  settings, e.g. the paper's three (γ, m) and γ = 1024; float64 and float32),
  in its own framework. Its values and gradients (of Σ_b v_b·L_b for per-example
  output, of L for a scalar) are compared with circle_jax's under every sound
  variant of the loss's axes and, for a scalar output, every reduction. A
  variant matches when every problem agrees to the tolerance (normwise relative
  error; 1e-10 in float64, 1e-4 in float32). Gradients at an all-zero input row
  are not compared (a convention: circle_jax gives 0) but are noted.

  When nothing matches, the closest sound variant is reported with a
  diagnosis: each known defect (an axis value such as ``self_pairs=kept``) is
  tried on top of it, non-finite output is localised to anchors without a
  positive or negative, and failures shared by one pattern, setting or dtype are
  named. The first failing problem is saved as an npz in ``save_dir`` (a new
  temporary directory when None).

  Args:
    fn: the implementation (a torch, TensorFlow, JAX or numpy function).
    loss: which loss it implements (``circle_jax.verify.losses()`` lists them).
    framework: ``"jax"``, ``"torch"``, ``"tensorflow"`` or ``"numpy"``
      (values only). Only that framework is imported.
    class_weights_layout: ``"CD"`` (rows are class proxies) or ``"DC"``.
    margin_unit: ``"radians"`` or ``"degrees"``, for losses whose margin is an
      angle (ArcFace); the implementation receives the margin in that unit.
    hyperparameter_names: circle_jax's name -> the implementation's keyword
      (``{"margin": "m"}``), or None to not pass one.
    settings: named hyper-parameter settings replacing the loss's own (e.g.
      ``{"mine": {"margin": 0.4, "gamma": 80.0}}`` for an implementation with
      fixed hyper-parameters, together with ``hyperparameter_names`` mapping
      them to None).
    save_dir: where to write the first failing problem.
    seed: seeds the problems.

  Returns:
    A :class:`Report`; ``report.ok`` says whether a documented variant matches,
    ``str(report)`` is the printed report.

  Example:
    >>> import circle_jax as cj
    >>> from circle_jax.verify import verify
    >>> report = verify(lambda x, y, **hp: cj.pairwise_circle_loss(x, y, **hp), "pairwise_circle")
    >>> report.ok, report.closest["alpha"], report.closest["reduction"]
    (True, 'detached', 'none')
  """
  spec = _spec.get(loss)
  layout = _frameworks.Layout(class_weights_layout, margin_unit, dict(hyperparameter_names or {}))
  if margin_unit != "radians" and not spec.angles:
    raise ValueError(f"margin_unit={margin_unit!r}: loss {loss!r} has no angular hyper-parameter")
  problems = (spec.problems(seed) if settings is None else _problems.standard_problems(
      settings, patterns=spec.patterns, seed=seed))
  outcomes = [
      _frameworks.run(fn, p, spec.labels(p), framework=framework, layout=layout,
                      class_level=spec.kind == "class", angles=spec.angles)
      for p in problems]
  shapes = {o.values.ndim for o in outcomes}
  if len(shapes) != 1:
    raise ValueError("the implementation returned a scalar on some problems and one value per "
                     "example on others")
  output = "scalar" if shapes == {0} else "per-example"
  reductions = REDUCTION.values[1:] if output == "scalar" else ("none",)
  ours = _Ours(spec, problems)

  scored = []
  for variant in spec.sound_variants():
    for reduction in reductions:
      if any(f(_with_reduction(variant, reduction)) for f in spec.moot):
        continue
      results = _results(ours, outcomes, variant, reduction)
      scored.append((_score(results), _with_reduction(variant, reduction), results))
  scored.sort(key=lambda t: t[0])
  # A match that is a known implementation's convention is named first.
  known = lambda v: any(all(v.get(a) == x for a, x in axes.items())  # noqa: E731
                        for axes in spec.conventions.values())
  scored.sort(key=lambda t: (t[0][0], not (t[0][0] == 0 and known(t[1]))))
  matches = tuple(v for (failed, _), v, _ in scored if failed == 0)
  _, closest, results = scored[0]

  undetermined = {}
  for name, _ in closest.items:
    values = tuple(dict.fromkeys(v[name] for v in matches))
    if len(values) > 1:
      undetermined[name] = values
  conventions = tuple(
      name for name, axes in spec.conventions.items()
      if any(all(v.get(a) == value for a, value in axes.items()) for v in matches))

  diagnosis: list[Diagnosis] = []
  saved = None
  if not matches:
    diagnosis += _non_finite_diagnosis(spec, problems, outcomes)
    skip = {k for k, o in enumerate(outcomes) if not _finite(o)}
    found = _explain_by_defect(spec, ours, outcomes, [v for _, v, _ in scored], skip)
    if found is not None:
      closest, axis, defect = found
      results = _results(ours, outcomes, _without_reduction(closest)[0], closest.items[-1][1])
      diagnosis.append(Diagnosis(axis.name, defect, axis.meaning[defect]))
    if not diagnosis:
      diagnosis += _pattern_diagnosis(problems, results)
    if not diagnosis:
      diagnosis.append(Diagnosis(
          "none", "unexplained", "no documented variant or known defect reproduces it"))
    saved = _save_first_failing(spec, problems, outcomes, ours, closest, results, save_dir)

  notes = _zero_row_notes(ours, outcomes, closest)
  shown = tuple(a.name for a in spec.axes if len(a.values) > 1) + ("reduction",)
  shown += tuple(d.axis for d in diagnosis if d.axis in {a.name for a in spec.axes}
                 and d.axis not in shown)
  return Report(
      loss=spec.name, function=spec.function, framework=framework, output=output,
      problems=tuple(p.name for p in problems), gradients_checked=outcomes[0].grads is not None,
      matches=matches, closest=closest, results=results, undetermined=undetermined,
      conventions=conventions, diagnosis=tuple(diagnosis), notes=notes, saved=saved,
      shown_axes=shown)


def _zero_row_notes(ours, outcomes, closest) -> tuple[str, ...]:
  """Where the implementation's gradient at an all-zero input differs from circle_jax's."""
  base, reduction = _without_reduction(closest)
  theirs_max = ours_max = 0.0
  for k, (p, o) in enumerate(zip(ours.problems, outcomes)):
    if o.grads is None or not p.zero_rows.any() or not _finite(o):
      continue
    g = o.grads["embeddings"][p.zero_rows]
    mine = ours(k, base, reduction)[1]["embeddings"][p.zero_rows]
    if _normwise(g, mine) > TOLERANCE[p.dtype]:
      theirs_max = max(theirs_max, float(np.max(np.abs(g))))
      ours_max = max(ours_max, float(np.max(np.abs(mine))))
  if theirs_max == ours_max == 0.0:
    return ()
  return (f"at an all-zero embedding the implementation's gradient reaches {theirs_max:.3g}, "
          f"circle_jax's {ours_max:.3g} (a zero vector has no direction to normalise); not compared",)


def _save_first_failing(spec, problems, outcomes, ours, closest, results, save_dir) -> str:
  k = next(i for i, r in enumerate(results) if not r.passed)
  base, reduction = _without_reduction(closest)
  values, grads = ours(k, base, reduction)
  theirs = outcomes[k]
  save_dir = tempfile.mkdtemp(prefix="circle_jax_verify_") if save_dir is None else os.fspath(save_dir)
  os.makedirs(save_dir, exist_ok=True)
  path = os.path.join(save_dir, f"{spec.name}-{re.sub(r'[^A-Za-z0-9.-]+', '_', problems[k].name)}.npz")
  extra = {"theirs_values": theirs.values, "ours_values": values, "variant": str(closest)}
  for name, g in grads.items():
    extra[f"ours_grad_{name}"] = g
    if theirs.grads is not None:
      extra[f"theirs_grad_{name}"] = theirs.grads[name]
  _problems.save_problem(path, problems[k], **extra)
  return path
