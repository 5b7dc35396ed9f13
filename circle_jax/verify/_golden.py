"""Generating the golden vectors: every registered loss, every sound variant, a few problems.

For each loss in the verifier's registry this writes one npz (the problems'
inputs once, then per-example values and gradients for every sound variant on
every problem) and one ``manifest.json`` describing every case. Nothing here
is specific to a loss: the variants come from the spec's axes, the problems
from its settings and patterns, so a newly registered spec gets golden vectors
by rerunning ``python -m circle_jax.verify.golden``.

Values and gradients are circle_jax's reference under the variant, evaluated
in float64 on exactly the stored inputs (float32 problems store float32
inputs). The gradient is that of Σ_b v_b·L_b with the stored cotangent v, so
every example's gradient counts separately.

The output is deterministic: the npz files are written with fixed zip
timestamps and no compression, so regenerating on the same platform gives the
same bytes; the manifest lists the losses in registry order and each loss's
cases variant by variant, problem by problem.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Sequence

import numpy as np

from circle_jax.verify import _problems
from circle_jax.verify import _spec
from circle_jax.verify import golden as _golden_io
from circle_jax.verify._report import TOLERANCE
from circle_jax.verify._variants import Variant

FORMAT_VERSION = _golden_io.FORMAT_VERSION

# Patterns stored under every setting, and those stored once (under the first
# setting): the ordinary batches carry the hyper-parameters, the edge cases
# (no positive, an all-zero embedding, no negative) do not depend on them much.
EVERY_SETTING = ("pk", "mixed")
ONCE = ("no_positive", "no_negative", "zero_vector")
# float32 inputs (values still computed in float64) for the first setting a
# spec runs in float32, on this pattern only.
FLOAT32_PATTERN = "pk"

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no wall clock in the bytes


def golden_problems(spec: _spec.LossSpec, seed: int = 0) -> list[_problems.Problem]:
  """The subset of the spec's standard problems that the golden set stores."""
  settings = list(spec.settings)
  every = [p for p in EVERY_SETTING if p in spec.patterns] or list(spec.patterns[:1])
  out = [_problems.make_problem(pattern, spec.settings[s], setting=s, seed=seed)
         for s in settings for pattern in every]
  out += [_problems.make_problem(pattern, spec.settings[settings[0]], setting=settings[0], seed=seed)
          for pattern in ONCE if pattern in spec.patterns and pattern not in every]
  if spec.float32_settings and FLOAT32_PATTERN in spec.patterns:
    s = spec.float32_settings[0]
    out.append(_problems.make_problem(FLOAT32_PATTERN, spec.settings[s], dtype="float32",
                                      setting=s, seed=seed))
  return out


def _conventions(spec: _spec.LossSpec, variant: Variant) -> list[str]:
  """Known implementations whose documented use computes this variant (any reduction)."""
  return [name for name, axes in spec.conventions.items()
          if all(variant.get(a) == v for a, v in axes.items() if a != "reduction")]


def _loss_entry(spec: _spec.LossSpec, file: str) -> dict:
  return {
      "kind": spec.kind,
      "function": spec.function,
      "file": file,
      "hyperparameters": list(spec.hyperparameters),
      "angles": list(spec.angles),
      "settings": {k: dict(v) for k, v in spec.settings.items()},
      "default_variant": _variant_id(spec, spec.default),
      "axes": {a.name: {v: a.meaning[v] for v in a.values} for a in spec.axes},
      "fixed": {a.name: a.values[0] for a in spec.axes if len(a.values) == 1},
      "conventions": {k: dict(v) for k, v in spec.conventions.items()},
  }


class _Stacks:
  """Arrays of one npz, stacked by name so that a case points at (key, row).

  A row equal to one already stored is not stored again (problems of one
  pattern share their inputs across settings; many variants agree exactly on
  some problems), which keeps the set small without compression.
  """

  def __init__(self):
    self._rows: dict[str, list[np.ndarray]] = {}
    self._index: dict[tuple[str, bytes], int] = {}

  def add(self, name: str, array: np.ndarray) -> list:
    array = np.ascontiguousarray(array)
    key = name if array.dtype == np.float64 or name == "labels" else f"{name}_{array.dtype}"
    rows = self._rows.setdefault(key, [])
    if rows and (rows[0].shape, rows[0].dtype) != (array.shape, array.dtype):
      raise ValueError(f"golden arrays {key!r} differ in shape or dtype: {rows[0].shape} "
                       f"{rows[0].dtype} vs {array.shape} {array.dtype}")
    found = self._index.setdefault((key, array.tobytes()), len(rows))
    if found == len(rows):
      rows.append(array)
    return [key, found]

  def arrays(self) -> dict[str, np.ndarray]:
    return {key: np.stack(rows) for key, rows in self._rows.items()}


def _variant_id(spec: _spec.LossSpec, variant: Variant) -> dict[str, str]:
  """The axes on which sound implementations differ (the others have one sound value)."""
  return {a.name: variant[a.name] for a in spec.axes if len(a.values) > 1}


def generate_loss(spec: _spec.LossSpec, seed: int = 0) -> tuple[dict, list[dict], dict]:
  """(loss entry, cases, arrays) of one loss: its manifest parts and its npz contents."""
  from circle_jax.verify import _verify  # jax: only when generating

  file = f"{spec.name}.npz"
  problems = golden_problems(spec, seed)
  ours = _verify._Ours(spec, problems)
  stacks = _Stacks()
  inputs = []
  for p in problems:
    keys = {"embeddings": stacks.add("embeddings", p.embeddings),
            "labels": stacks.add("labels", np.asarray(spec.labels(p), np.int64))}
    if spec.kind == "class":
      keys["class_weights"] = stacks.add("class_weights", p.class_weights)
    keys["cotangent"] = stacks.add("cotangent", np.asarray(p.cotangent, np.float64))
    inputs.append(keys)

  cases = []
  first = next(iter(spec.settings))
  for variant in spec.sound_variants():
    shown = _variant_id(spec, variant)
    # Every setting for the variants someone computes (circle_jax's default and
    # the known implementations' conventions); the first setting for the rest,
    # which keeps the set small as the axes multiply.
    full = variant == spec.default or bool(_conventions(spec, variant))
    for k, p in enumerate(problems):
      if not full and p.setting != first:
        continue
      values, grads = ours(k, variant, "none")
      keys = dict(inputs[k])
      keys["values"] = stacks.add("values", values)
      for name, g in grads.items():
        keys[f"grad_{name}"] = stacks.add(f"grad_{name}", g)
      cases.append({
          "id": "/".join([spec.name, p.name] + [",".join(f"{a}={v}" for a, v in shown.items())]
                         [:bool(shown)]),
          "loss": spec.name,
          "function": spec.function,
          "kind": spec.kind,
          "variant": shown,
          "default": variant == spec.default,
          "conventions": _conventions(spec, variant),
          "problem": p.name,
          "pattern": p.pattern,
          "setting": p.setting,
          "hyperparameters": {n: float(v) for n, v in p.hyperparameters.items()},
          "dtype": p.dtype,
          "tolerance": TOLERANCE[p.dtype],
          "file": file,
          "arrays": keys,
      })
  return _loss_entry(spec, file), cases, stacks.arrays()


def manifest_header() -> dict:
  import circle_jax

  return {
      "format_version": FORMAT_VERSION,
      "circle_jax_version": circle_jax.__version__,
      "description": (
          "Golden per-example values and gradients of circle_jax's losses under every sound "
          "variant (reduction none), computed in float64 on the stored inputs. A case's "
          "'variant' names the axes on which sound implementations differ; every case has the "
          "sound value of each axis under its loss's 'fixed'. 'axes' says what each value means."),
      "arrays": (
          "case['arrays'][name] = [key, row]: the array is np.load(case['file'])[key][row]; "
          "rows are shared between cases with equal arrays"),
      "gradients": (
          "grad_<input> is the gradient of sum_b cotangent[b] * values[b] with respect to that "
          "input, in float64. At an all-zero embedding the gradient is a convention (circle_jax "
          "gives 0): leave those rows out of the comparison."),
      "labels": (
          "the labels the loss receives: pair-wise labels for kind 'pair' (called as "
          "fn(embeddings, labels, **hyperparameters)), class ids in [0, C) for kind 'class' "
          "(fn(embeddings, labels, class_weights, **hyperparameters), class_weights [C, D])"),
      "tolerance": (
          "per case: max|yours - golden| <= tolerance * max|golden|, for the values and for all "
          "gradients together; float32 cases store float32 inputs and float64 results"),
      "angles": "hyper-parameters listed under a loss's 'angles' are in radians",
  }


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez, but with a fixed timestamp so that the same arrays give the same bytes."""
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
    for key, a in arrays.items():
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
      info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
      info.external_attr = 0o644 << 16
      z.writestr(info, buf.getvalue())


def _dump_manifest(manifest: dict) -> str:
  """JSON with one line per case, so that a changed case is a one-line diff."""
  cases = manifest["cases"]
  head = json.dumps({k: v for k, v in manifest.items() if k != "cases"}, indent=1,
                    ensure_ascii=False)
  body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
  return head[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n"


def generate(out: str | os.PathLike, losses: Sequence[str] | None = None, seed: int = 0) -> dict:
  """Writes ``manifest.json`` and one ``<loss>.npz`` per loss into ``out``; returns the manifest.

  Args:
    out: the directory (created if needed). Files of losses not generated are
      left alone; the manifest lists only the generated ones.
    losses: registered names; None for every registered loss.
    seed: seeds the problems (the shipped set uses 0).
  """
  import jax

  out = os.fspath(out)
  os.makedirs(out, exist_ok=True)
  manifest = manifest_header()
  manifest["losses"] = {}
  manifest["cases"] = []
  # Gradients in float64 whatever the caller's setting.
  with jax.enable_x64(True):
    for name in (losses if losses is not None else _spec.names()):
      entry, cases, arrays = generate_loss(_spec.get(name), seed)
      manifest["losses"][name] = entry
      manifest["cases"] += cases
      _write_npz(os.path.join(out, entry["file"]), arrays)
  with open(os.path.join(out, _golden_io.MANIFEST), "w", encoding="utf-8") as f:
    f.write(_dump_manifest(manifest))
  return manifest
