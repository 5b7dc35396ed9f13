r"""Evaluators, chosen by ``config.evals`` as big_vision chooses its evals.

``config.evals`` maps a name to a section whose ``type`` is one of
:data:`EVALUATORS`; the other fields are that evaluator's settings:

| type | reads the dataset's | result keys | settings |
|---|---|---|---|
| ``recall`` | ``"test"`` set (labels) | ``recall`` {k: R@K}, ``raw_pixels`` | ``ks``, ``raw_pixels`` |
| ``cmc_map`` | ``"query"``, ``"gallery"`` (ids, cameras) | ``cmc`` {k}, ``map``, ``num_queries`` | ``ranks`` |
| ``verification`` | every pair set (``issame``) | ``verification`` {set: {accuracy, std, …}} | ``num_folds`` |
| ``tar_at_far`` | ``"templates"`` (IJB-style) | ``tar_at_far`` {FAR: TAR} | ``fars`` |

An evaluator is built from its section before any data is read (a bad field
is a :class:`ConfigError` naming it), bound to the dataset once it is open
(:meth:`Evaluator.bind`: a set it needs is missing, a k beyond the set's
size), and run on an :class:`experiments.input_pipeline.Embed` after training:
``run(embed) -> dict``, the result keys above. :func:`flatten` turns the
results into the scalars of ``metrics.jsonl`` and TensorBoard; :func:`tables`
prints them.

Example:
  >>> import ml_collections
  >>> evals = ml_collections.ConfigDict({"retrieval": {"type": "recall", "ks": (1, 2)}})
  >>> [type(e).__name__ for e in make_evaluators(evals, block_size=1024).values()]
  ['Recall']
  >>> flatten({"recall": {1: 0.5, 2: 0.75}})
  {'recall@1': 0.5, 'recall@2': 0.75}
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from circle_jax import metrics
from experiments.config_error import ConfigError
from experiments.input_pipeline import Embed
from experiments.input_pipeline import EvalSet


class Evaluator:
  """One metric over the dataset's evaluation sets."""

  #: The fields of its ``config.evals.<name>`` section besides ``type``, with defaults.
  FIELDS: Mapping[str, Any] = {}

  def __init__(self, name: str, section, *, block_size: int):
    self.name, self.block_size = name, block_size
    unknown = sorted(set(section) - set(self.FIELDS) - {"type"})
    if unknown:
      raise ConfigError(f"config.evals.{name}: unknown field(s) {unknown}; "
                        f"'{section['type']}' takes {sorted(self.FIELDS)}")
    for field, default in self.FIELDS.items():
      setattr(self, field, section.get(field, default))
    self.sets: dict[str, EvalSet] = {}

  def _where(self, field: str) -> str:
    return f"config.evals.{self.name}.{field}"

  def bind(self, eval_sets: Mapping[str, EvalSet]) -> None:
    """Checks that the dataset has what this evaluator reads; keeps those sets."""
    raise NotImplementedError

  def run(self, embed: Embed) -> dict:
    raise NotImplementedError

  def _need(self, eval_sets, *names: str) -> None:
    for n in names:
      if n not in eval_sets:
        raise ConfigError(f"config.evals.{self.name}: type '{self.TYPE}' reads the dataset's "
                          f"{n!r} set, and this dataset has {sorted(eval_sets)}")
      self.sets[n] = eval_sets[n]


def _positive_ints(where: str, values) -> tuple[int, ...]:
  values = tuple(values)
  if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
    raise ConfigError(f"{where}: every k must be a positive int, got {values!r}")
  return values


class Recall(Evaluator):
  """Recall@K of the ``"test"`` set against itself, each query left out of its gallery."""

  TYPE = "recall"
  FIELDS = {"ks": (1, 2, 4, 8), "raw_pixels": False}

  def __init__(self, name, section, *, block_size):
    super().__init__(name, section, block_size=block_size)
    self.ks = _positive_ints(self._where("ks"), self.ks)

  def bind(self, eval_sets):
    self._need(eval_sets, "test")
    test = self.sets["test"]
    if max(self.ks) >= test.size:
      raise ConfigError(f"{self._where('ks')}: k = {max(self.ks)} ≥ the {test.size} test images")
    if self.raw_pixels and test.pixels is None:
      raise ConfigError(f"{self._where('raw_pixels')}: this dataset's test set keeps no pixels "
                        "in memory (only the bundled digits do)")

  def run(self, embed):
    test = self.sets["test"]
    out = {"recall": metrics.recall_at_k(test.embed(embed), test.labels, self.ks,
                                         block_size=self.block_size)}
    if self.raw_pixels:
      raw = test.pixels.reshape(len(test.pixels), -1)
      out["raw_pixels"] = metrics.recall_at_k(raw, test.labels, self.ks, block_size=self.block_size)
    return out


class CmcMap(Evaluator):
  """Re-ID: CMC rank-k and mAP of the ``"query"`` set against the ``"gallery"``."""

  TYPE = "cmc_map"
  FIELDS = {"ranks": (1, 5, 10)}

  def __init__(self, name, section, *, block_size):
    super().__init__(name, section, block_size=block_size)
    self.ranks = _positive_ints(self._where("ranks"), self.ranks)

  def bind(self, eval_sets):
    self._need(eval_sets, "query", "gallery")

  def run(self, embed):
    q, g = self.sets["query"], self.sets["gallery"]
    r = metrics.cmc_map(q.embed(embed), q.labels, q.cams, g.embed(embed), g.labels, g.cams,
                        self.ranks, block_size=self.block_size)
    return {"cmc": r["cmc"], "map": r["map"], "num_queries": r["num_queries"]}


class Verification(Evaluator):
  """Faces: k-fold verification accuracy on every pair set (flip-fused embeddings)."""

  TYPE = "verification"
  FIELDS = {"num_folds": 10}

  def bind(self, eval_sets):
    self.sets = {n: s for n, s in eval_sets.items() if s.issame is not None}
    if isinstance(self.num_folds, bool) or not isinstance(self.num_folds, int) or self.num_folds < 2:
      raise ConfigError(f"{self._where('num_folds')}: must be an int ≥ 2, got {self.num_folds!r}")
    for n, s in self.sets.items():
      if len(s.issame) < self.num_folds:
        raise ConfigError(f"{self._where('num_folds')}: {self.num_folds} folds but set {n!r} has "
                          f"{len(s.issame)} pairs")

  def run(self, embed):
    out = {}
    for n, s in self.sets.items():
      scores = metrics.pair_scores(s.embed(embed, flip=True))
      r = metrics.verification_accuracy(scores, s.issame, num_folds=self.num_folds)
      out[n] = {**r, "num_pairs": len(s.issame)}
    return {"verification": out}


class TarAtFar(Evaluator):
  """Faces: 1:1 TAR at the given FARs over IJB-style template pairs (``"templates"``).

  Runs only where the dataset has templates (``config.data.ijb_path``); its
  table line says so where it has none.
  """

  TYPE = "tar_at_far"
  FIELDS = {"fars": (1e-3, 1e-4, 1e-5)}

  def bind(self, eval_sets):
    fars = tuple(self.fars)
    if not fars or not all(isinstance(f, float) and 0 < f < 1 for f in fars):
      raise ConfigError(f"{self._where('fars')}: every FAR must be a float in (0, 1), got {fars!r}")
    self.fars = fars
    if "templates" in eval_sets:
      self.sets["templates"] = eval_sets["templates"]

  def run(self, embed):
    if "templates" not in self.sets:
      return {"tar_at_far": None}
    t = self.sets["templates"]
    ijb = t.templates
    templates, feats = metrics.template_embeddings(t.embed(embed, flip=True), ijb.template_ids,
                                                   ijb.media_ids)
    scores = metrics.template_pair_scores(templates, feats, ijb.pairs_a, ijb.pairs_b)
    tar = metrics.tar_at_far(scores, ijb.issame, fars=self.fars)
    return {"tar_at_far": {f: v["tar"] for f, v in tar.items()}}


#: ``config.evals.<name>.type`` → evaluator class.
EVALUATORS: dict[str, type[Evaluator]] = {
    c.TYPE: c for c in (Recall, CmcMap, Verification, TarAtFar)}


def make_evaluators(evals, *, block_size: int) -> dict[str, Evaluator]:
  """``config.evals`` → ``{name: Evaluator}``, in the config's order; no data is read."""
  if not evals:
    raise ConfigError("config.evals: no evaluator; add one, e.g. "
                      "config.evals.retrieval = dict(type='recall', ks=(1, 2, 4, 8))")
  out = {}
  for name, section in evals.items():
    kind = section.get("type") if hasattr(section, "get") else None
    if kind not in EVALUATORS:
      raise ConfigError(f"config.evals.{name}.type: {kind!r}; known: {', '.join(EVALUATORS)}")
    out[name] = EVALUATORS[kind](name, section, block_size=block_size)
  return out


def evaluate(evaluators: Mapping[str, Evaluator], embed: Embed) -> dict:
  """Runs every evaluator; their result dicts merged (their keys never overlap)."""
  out = {}
  for e in evaluators.values():
    out.update(e.run(embed))
  return out


def flatten(results: Mapping[str, Any]) -> dict[str, float]:
  """The results as scalars named for ``metrics.jsonl``: ``recall@1``, ``cmc@5``, ``map``,
  ``lfw_accuracy``, ``tar@far=0.001``, …"""
  flat = {}
  for k, v in results.get("recall", {}).items():
    flat[f"recall@{k}"] = v
  for k, v in (results.get("raw_pixels") or {}).items():
    flat[f"raw_pixels_recall@{k}"] = v
  for k, v in results.get("cmc", {}).items():
    flat[f"cmc@{k}"] = v
  for key in ("map", "num_queries"):
    if key in results:
      flat[key] = results[key]
  for n, r in results.get("verification", {}).items():
    flat[f"{n}_accuracy"], flat[f"{n}_std"] = r["accuracy"], r["std"]
  for f, v in (results.get("tar_at_far") or {}).items():
    flat[f"tar@far={f:g}"] = v
  return flat


def nan_results(evaluators: Mapping[str, Evaluator]) -> dict[str, float]:
  """The flat metric names of ``evaluators``, each NaN: a run whose training diverged."""
  names = {}
  for e in evaluators.values():
    if isinstance(e, Recall):
      names.update({f"recall@{k}": math.nan for k in e.ks})
    elif isinstance(e, CmcMap):
      names.update({f"cmc@{k}": math.nan for k in e.ranks} | {"map": math.nan})
    elif isinstance(e, Verification):
      names.update({f"{n}_accuracy": math.nan for n in e.sets})
    elif isinstance(e, TarAtFar) and "templates" in e.sets:
      names.update({f"tar@far={f:g}": math.nan for f in e.fars})
  return names


def tables(results: Mapping[str, Any], label: str) -> str:
  """The printed tables of ``results`` (one run, named ``label``)."""
  parts = []
  if "recall" in results:
    ks = tuple(results["recall"])
    header = f"{'Recall@K (%)':<16}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
    rows = {"raw pixels": results["raw_pixels"]} if results.get("raw_pixels") else {}
    rows[label] = results["recall"]
    parts.append("\n".join([header, "-" * len(header)] + [
        f"{n:<16}" + "".join(f"{100 * r[k]:>8.2f}" for k in ks) for n, r in rows.items()]))
  if "cmc" in results:
    ranks = tuple(results["cmc"])
    header = f"{'Re-ID (%)':<16}" + "".join(f"{'R-' + str(k):>8}" for k in ranks) + f"{'mAP':>8}"
    parts.append("\n".join([header, "-" * len(header),
                            f"{label:<16}" + "".join(f"{100 * results['cmc'][k]:>8.2f}"
                                                     for k in ranks)
                            + f"{100 * results['map']:>8.2f}"]))
  if "verification" in results:
    header = f"{'Verification':<16}{'acc (%)':>10}{'± std':>8}{'pairs':>8}"
    lines = [f"{n:<16}{100 * r['accuracy']:>10.2f}{100 * r['std']:>8.2f}"
             f"{r['num_pairs']:>8}"
             for n, r in results["verification"].items()]
    parts.append("\n".join([header, "-" * len(header), *lines]) if lines
                 else "(no verification sets)")
  if "tar_at_far" in results:
    tar = results["tar_at_far"]
    parts.append("1:1 TAR@FAR: " + ", ".join(f"{100 * v:.2f} % at {f:g}" for f, v in tar.items())
                 if tar is not None else
                 "1:1 TAR@FAR: not measured (no IJB templates: config.data.ijb_path is empty)")
  return "\n\n".join(parts)


def mean_and_std(runs: list[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
  """Flat metrics of several runs (seeds) → ``{name: (mean, std)}``: the sample standard
  deviation (ddof = 1; 0 for a single run), as papers report the spread over seeds.

  Example:
    >>> mean_and_std([{"recall@1": 0.9}, {"recall@1": 0.8}, {"recall@1": 0.7}])["recall@1"]
    (0.8, 0.1)
  """
  out = {}
  for name in runs[0]:
    values = np.array([r[name] for r in runs], np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    out[name] = (round(float(values.mean()), 12), round(float(std), 12))
  return out
