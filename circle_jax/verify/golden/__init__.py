"""Golden vectors: circle_jax's per-example values and gradients, readable with numpy alone.

This directory ships ``manifest.json`` and one ``<loss>.npz`` per loss the
verifier knows. Each case is one loss under one sound variant (an axis ->
value mapping such as ``alpha=detached normalise=inside softplus=cutoff20``)
on one small problem (B = 12 embeddings in D = 16; C = 10 class proxies for
class-level losses), with its inputs (embeddings, labels, class weights,
cotangent v), hyper-parameters, dtype, the per-example values and the
gradients of Σ_b v_b·L_b, all computed in float64. ``python -m
circle_jax.verify.golden [--out DIR]`` regenerates them.

Another framework's test suite needs neither JAX nor circle_jax to use them:
copy the directory, or find the installed one without importing the package,
and compare::

  import importlib.util, json, os
  import numpy as np

  root = os.path.join(importlib.util.find_spec("circle_jax").submodule_search_locations[0],
                      "verify", "golden")  # or a copy of manifest.json and the npz files

  def golden(root, loss, **variant):
    # (case, arrays) for each case of `loss` whose variant has these axis values.
    with open(os.path.join(root, "manifest.json")) as f:
      manifest = json.load(f)
    for case in manifest["cases"]:
      if case["loss"] == loss and all(case["variant"][a] == v for a, v in variant.items()):
        with np.load(os.path.join(root, case["file"])) as npz:
          yield case, {name: npz[key][row] for name, (key, row) in case["arrays"].items()}

  for case, a in golden(root, "pairwise_circle", alpha="detached", normalise="inside",
                        softplus="cutoff20"):
    values, grad = my_loss_and_grad(a["embeddings"], a["labels"], a["cotangent"],
                                    **case["hyperparameters"])
    tol, rows = case["tolerance"], np.any(a["embeddings"] != 0, axis=1)
    assert np.max(np.abs(values - a["values"])) <= tol * np.max(np.abs(a["values"])), case["id"]
    g = a["grad_embeddings"][rows]  # an all-zero row's gradient is a convention
    assert np.max(np.abs(grad[rows] - g)) <= tol * np.max(np.abs(g)), case["id"]

A case's arrays are ``embeddings``, ``labels``, ``cotangent``, ``values``,
``grad_embeddings`` and, for class-level losses (``case["kind"] ==
"class"``), ``class_weights`` and ``grad_class_weights``; ``case["arrays"]
[name]`` is ``[key, row]``, the array being row ``row`` of ``key`` in the
case's npz (cases with equal arrays share a row, which keeps the set small).
``case["variant"]`` names the axes on which sound implementations differ; the
axes with one sound value are under ``manifest["losses"][loss]["fixed"]``
(axis -> that value). The manifest's top level says what each field means;
``manifest["losses"][name]`` lists a loss's axes with the meaning of each
value and the known implementations (``conventions``) that compute each
variant, which each case repeats under ``case["conventions"]``.

Within circle_jax, :func:`~circle_jax.verify.golden_cases` does the same and
returns :class:`~circle_jax.verify.GoldenCase` objects. This module imports json and numpy only (never
JAX), so loading its file on its own works where JAX is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class GoldenCase:
  """One loss under one variant on one problem, with circle_jax's results.

  Attributes:
    id: unique, ``"<loss>/<problem>/<variant>"``.
    loss: the verifier's name for the loss (``"pairwise_circle"``, ...).
    function: the circle_jax function the loss's default variant equals.
    kind: ``"pair"`` (fn(embeddings, labels)) or ``"class"`` (fn(embeddings,
      labels, class_weights)).
    variant: axis -> value, every axis of the loss (those with one sound value included).
    default: whether ``variant`` is what ``function`` computes.
    conventions: known implementations that compute this variant (at some reduction).
    problem: the problem's name, ``"<pattern>/<setting>/<dtype>"``.
    pattern: the label pattern (``"pk"``, ``"mixed"``, ``"no_positive"``, ...).
    setting: the name of the hyper-parameter setting.
    hyperparameters: name -> value (angles in radians).
    dtype: the inputs' dtype; results are float64 either way.
    tolerance: max|yours − golden| ≤ tolerance · max|golden| is a match.
    embeddings: [B, D].
    labels: [B] int64 (class ids in [0, C) for class-level losses).
    class_weights: [C, D], or None for pair losses.
    cotangent: [B] float64 v: the gradients are those of Σ_b v_b·L_b.
    values: [B] float64 per-example loss.
    grads: input name (``"embeddings"``, ``"class_weights"``) -> float64 gradient.
  """

  id: str
  loss: str
  function: str
  kind: str
  variant: Mapping[str, str]
  default: bool
  conventions: tuple[str, ...]
  problem: str
  pattern: str
  setting: str
  hyperparameters: Mapping[str, float]
  dtype: str
  tolerance: float
  embeddings: np.ndarray
  labels: np.ndarray
  class_weights: np.ndarray | None
  cotangent: np.ndarray
  values: np.ndarray
  grads: Mapping[str, np.ndarray]

  @property
  def grad_rows(self) -> np.ndarray:
    """``[B]`` bool, true for the rows whose embedding gradient is compared (not the all-zero ones)."""
    return np.any(self.embeddings != 0, axis=1)


def manifest(directory: str | os.PathLike | None = None) -> dict:
  """The parsed ``manifest.json`` of the shipped set (or of ``directory``)."""
  path = os.path.join(os.fspath(directory) if directory is not None else DIRECTORY, MANIFEST)
  with open(path, encoding="utf-8") as f:
    out = json.load(f)
  if out.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {out.get('format_version')!r}; this reader reads "
                     f"{FORMAT_VERSION}")
  return out


def _full_variant(info: dict, case: dict) -> dict[str, str]:
  """Every axis of the case's loss -> its value (the stored variant leaves out fixed axes)."""
  loss = info["losses"][case["loss"]]
  return {a: case["variant"].get(a, loss["fixed"].get(a)) for a in loss["axes"]}


def golden_cases(
    loss: str | None = None,
    *,
    variant: Mapping[str, str] | None = None,
    directory: str | os.PathLike | None = None,
) -> list[GoldenCase]:
  """The golden cases, optionally of one loss and of variants with given axis values.

  Args:
    loss: a loss name, or None for every loss in the set.
    variant: axis -> value that every returned case's variant has (e.g.
      ``{"alpha": "differentiated"}``); None for every variant.
    directory: a directory holding a golden set; None for the shipped one.

  Example:
    >>> from circle_jax.verify import golden_cases
    >>> cases = golden_cases("pairwise_circle", variant={"softplus": "cutoff20"})
    >>> c = next(c for c in cases if c.problem == "pk/face/float64" and c.variant["alpha"] == "detached")
    >>> c.embeddings.shape, c.values.shape, sorted(c.grads), c.hyperparameters
    ((12, 16), (12,), ['embeddings'], {'margin': 0.25, 'gamma': 256.0})
    >>> "pytorch-metric-learning CircleLoss (DoNothingReducer)" in c.conventions
    True
  """
  root = os.fspath(directory) if directory is not None else DIRECTORY
  info = manifest(root)
  if loss is not None and loss not in info["losses"]:
    raise ValueError(f"loss={loss!r} has no golden vectors; expected one of {sorted(info['losses'])}")
  wanted = dict(variant or {})
  selected = [c for c in info["cases"] if (loss is None or c["loss"] == loss)
              and all(_full_variant(info, c).get(a) == v for a, v in wanted.items())]
  out, files = [], {}
  for c in selected:
    if c["file"] not in files:
      with np.load(os.path.join(root, c["file"]), allow_pickle=False) as npz:
        files[c["file"]] = {key: npz[key] for key in npz.files}
    stacks = files[c["file"]]
    a = {name: stacks[key][row] for name, (key, row) in c["arrays"].items()}
    out.append(GoldenCase(
        id=c["id"], loss=c["loss"], function=c["function"], kind=c["kind"],
        variant=_full_variant(info, c), default=bool(c["default"]),
        conventions=tuple(c["conventions"]), problem=c["problem"], pattern=c["pattern"],
        setting=c["setting"], hyperparameters=dict(c["hyperparameters"]), dtype=c["dtype"],
        tolerance=float(c["tolerance"]), embeddings=a["embeddings"], labels=a["labels"],
        class_weights=a.get("class_weights"), cotangent=a["cotangent"], values=a["values"],
        grads={k[len("grad_"):]: v for k, v in a.items() if k.startswith("grad_")}))
  return out
