r"""Evaluators, chosen by ``config.evals`` as big_vision chooses its evals.

``config.evals`` maps a name to a section whose ``type`` is one of
:data:`EVALUATORS`; the other fields are that evaluator's settings:

| type | reads the dataset's | result keys | settings |
|---|---|---|---|
| ``recall`` | ``"test"`` set (labels) | ``recall`` {k: R@K}, ``raw_pixels``, ``mhd`` | ``ks``, ``raw_pixels``, ``mhd`` |
| ``one_shot`` | ``"one_shot"`` (runs, support) | ``one_shot`` {error, per_run, raw_pixels, mhd} | ``raw_pixels``, ``mhd`` |
| ``cmc_map`` | ``"query"``, ``"gallery"`` (ids, cameras) | ``cmc`` {k}, ``map``, ``num_queries`` | ``ranks`` |
| ``verification`` | every pair set (``issame``) | ``verification`` {set: {accuracy, std, …}} | ``num_folds`` |
| ``tar_at_far`` | ``"templates"`` (IJB-style) | ``tar_at_far`` {FAR: TAR} | ``fars`` |

Each evaluator owns its results from end to end: it is built from its section
before any data is read (a bad field is a :class:`ConfigError` naming it),
bound to the dataset once it is open (:meth:`Evaluator.bind`: a set it needs
is missing, a k beyond the set's size), run on an
:class:`experiments.input_pipeline.Embed` after training (:meth:`Evaluator.run`
→ the result keys above), and it names its scalars for ``metrics.jsonl`` and
TensorBoard (:meth:`Evaluator.flatten`; :meth:`Evaluator.metric_names`, the
same names, known before any result: a diverged ablation member is marked NaN
under each) and prints its table (:meth:`Evaluator.table`). The module-level
:func:`evaluate`, :func:`flatten`, :func:`nan_results` and :func:`tables` only
loop over the evaluators.

Example:
  >>> import ml_collections
  >>> evals = ml_collections.ConfigDict({"retrieval": {"type": "recall", "ks": (1, 2)}})
  >>> evaluators = make_evaluators(evals, block_size=1024)
  >>> [type(e).__name__ for e in evaluators.values()]
  ['Recall']
  >>> flatten({"recall": {1: 0.5, 2: 0.75}}, evaluators)
  {'recall@1': 0.5, 'recall@2': 0.75}
  >>> nan_results(evaluators)
  {'recall@1': nan, 'recall@2': nan}
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from circle_jax import metrics
from experiments.config_error import ConfigError
from experiments.input_pipeline import Embed
from experiments.input_pipeline import EvalSet


#: The baselines that ``recall`` and ``one_shot`` can add (measures that need no training),
#: by field, with the name their table rows carry.
BASELINES = {"raw_pixels": "raw pixels", "mhd": "MHD of the ink"}
#: The prefixes of the baselines' metrics in the flat results.
BASELINE_PREFIXES = tuple(f"{b}_" for b in BASELINES)


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
    self._memo: dict[str, Any] = {}

  def _once(self, key: str, compute):
    """``compute()``, kept: a baseline depends on the data alone, so an ablation's members
    (each evaluated by this evaluator) share one computation of it."""
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]

  def _where(self, field: str) -> str:
    return f"config.evals.{self.name}.{field}"

  def bind(self, eval_sets: Mapping[str, EvalSet]) -> None:
    """Checks that the dataset has what this evaluator reads; keeps those sets."""
    raise NotImplementedError

  def run(self, embed: Embed) -> dict:
    """The evaluator's results (its keys of the module table)."""
    raise NotImplementedError

  def flatten(self, results: Mapping[str, Any]) -> dict[str, float]:
    """Its scalars in ``results`` (its own keys; the others' are ignored), named for ``metrics.jsonl``."""
    raise NotImplementedError

  def metric_names(self) -> tuple[str, ...]:
    """The names :meth:`flatten` gives, known from the settings and the bound sets alone."""
    raise NotImplementedError

  def table(self, results: Mapping[str, Any], label: str) -> str:
    """Its printed table of ``results`` (one run, named ``label``)."""
    raise NotImplementedError

  def _need(self, eval_sets, *names: str) -> None:
    self._memo.clear()  # bound to (new) sets: nothing computed before applies
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


def _percent_table(title: str, columns: Sequence[str], rows: Mapping[str, Sequence[float]]) -> str:
  """A fixed-width table: ``title`` over the columns, one line of percentages per row."""
  width = max(16, *(len(n) + 2 for n in rows))
  header = f"{title:<{width}}" + "".join(f"{c:>8}" for c in columns)
  return "\n".join([header, "-" * len(header)] + [
      f"{name:<{width}}" + "".join(f"{100 * v:>8.2f}" for v in values) for name, values in rows.items()])


def _mhd_scores(test: EvalSet) -> np.ndarray:
  """Minus the Modified Hausdorff Distance between every two drawings of ``test`` (larger = closer).

  The ink of the images as evaluated (28×28 for Omniglot): all N² pairs at
  the files' 105×105 would cost about 16 times as much (minutes, not seconds).
  """
  return -metrics.modified_hausdorff_distances(test.ink(False))


class _WithBaselines(Evaluator):
  """An evaluator whose settings include the :data:`BASELINES` flags (all False by default)."""

  def __init__(self, name, section, *, block_size):
    super().__init__(name, section, block_size=block_size)
    _check_flags(self, *BASELINES)

  def _baselines(self) -> list[str]:
    """The baselines asked for, in :data:`BASELINES` order."""
    return [b for b in BASELINES if getattr(self, b)]


class Recall(_WithBaselines):
  """Recall@K of the ``"test"`` set against itself, each query left out of its gallery.

  With ``raw_pixels`` the same for the images' pixels (cosine), and with
  ``mhd`` for the Modified Hausdorff Distance between the drawings' ink in the
  images as evaluated (Omniglot's own baseline): two measures that need no
  training.
  """

  TYPE = "recall"
  FIELDS = {"ks": (1, 2, 4, 8), **dict.fromkeys(BASELINES, False)}

  def __init__(self, name, section, *, block_size):
    super().__init__(name, section, block_size=block_size)
    self.ks = _positive_ints(self._where("ks"), self.ks)

  def bind(self, eval_sets):
    self._need(eval_sets, "test")
    test = self.sets["test"]
    if max(self.ks) >= test.size:
      raise ConfigError(f"{self._where('ks')}: k = {max(self.ks)} ≥ the {test.size} test images")
    _check_baselines(self, test)

  def run(self, embed):
    test = self.sets["test"]
    out = {"recall": metrics.recall_at_k(test.embed(embed), test.labels, self.ks,
                                         block_size=self.block_size)}
    if self.raw_pixels:
      raw = test.pixels.reshape(len(test.pixels), -1)
      out["raw_pixels"] = self._once("raw_pixels", lambda: metrics.recall_at_k(
          raw, test.labels, self.ks, block_size=self.block_size))
    if self.mhd:
      out["mhd"] = self._once("mhd", lambda: metrics.recall_at_k_of_scores(
          _mhd_scores(test), test.labels, self.ks))
    return out

  def flatten(self, results):
    flat = {f"recall@{k}": v for k, v in results.get("recall", {}).items()}
    for b in self._baselines():
      flat.update({f"{b}_recall@{k}": v for k, v in (results.get(b) or {}).items()})
    return flat

  def metric_names(self):
    return tuple(f"{prefix}recall@{k}" for prefix in ["", *(f"{b}_" for b in self._baselines())]
                 for k in self.ks)

  def table(self, results, label):
    if "recall" not in results:
      return ""
    ks = tuple(results["recall"])
    rows = {BASELINES[b]: [results[b][k] for k in ks] for b in self._baselines()
            if results.get(b)}
    rows[label] = [results["recall"][k] for k in ks]
    return _percent_table("Recall@K (%)", [f"R@{k}" for k in ks], rows)


class OneShot(_WithBaselines):
  """One-shot classification on Lake et al.'s runs (the ``"one_shot"`` set).

  In each run, each query (test) image takes the class of its nearest support
  image, by cosine similarity of the embeddings (:func:`circle_jax.metrics.one_shot_error`;
  ties count as errors); the error is over all queries of all runs, and per
  run. ``raw_pixels`` and ``mhd`` add the same error for the pixels (cosine) and
  for the Modified Hausdorff Distance between the drawings' ink at the files'
  own size (Lake et al.'s baseline: 38.8 % on the 20 runs).
  """

  TYPE = "one_shot"
  FIELDS = dict.fromkeys(BASELINES, False)

  def bind(self, eval_sets):
    self._need(eval_sets, "one_shot")
    s = self.sets["one_shot"]
    if s.runs is None or s.support is None:
      raise ConfigError(f"config.evals.{self.name}: the dataset's 'one_shot' set has no runs")
    _check_baselines(self, s)

  def _errors(self, score_run) -> dict:
    """``score_run(query_idx, support_idx) -> [Nq, Ns]`` per run → {"error", "per_run"}."""
    s = self.sets["one_shot"]
    per_run, wrong, total = [], 0.0, 0
    for run in np.unique(s.runs):
      q = np.flatnonzero((s.runs == run) & ~s.support)
      sup = np.flatnonzero((s.runs == run) & s.support)
      error = metrics.one_shot_error(score_run(q, sup), s.labels[q], s.labels[sup])
      per_run.append(error)
      wrong, total = wrong + error * len(q), total + len(q)
    return {"error": wrong / total, "per_run": per_run}

  def run(self, embed):
    s = self.sets["one_shot"]
    out = {"embedding": self._errors(_cosine_scores(s.embed(embed)))}
    if self.raw_pixels:
      out["raw_pixels"] = self._once("raw_pixels", lambda: self._errors(
          _cosine_scores(s.pixels.reshape(s.size, -1))))
    if self.mhd:
      out["mhd"] = self._once("mhd", self._mhd_errors)
    return {"one_shot": out}

  def _mhd_errors(self) -> dict:
    ink = self.sets["one_shot"].ink(True)  # 400 pairs a run: the files' own size is cheap
    return self._errors(lambda q, sup: -metrics.modified_hausdorff_distances(ink[q], ink[sup]))

  def flatten(self, results):
    r = results.get("one_shot")
    if r is None:
      return {}
    flat = {"one_shot_error": r["embedding"]["error"]}
    flat.update({f"{b}_one_shot_error": r[b]["error"] for b in self._baselines() if b in r})
    return flat

  def metric_names(self):
    return ("one_shot_error", *(f"{b}_one_shot_error" for b in self._baselines()))

  def table(self, results, label):
    r = results.get("one_shot")
    if r is None:
      return ""
    rows = {BASELINES[b]: r[b] for b in self._baselines() if b in r}
    rows[label] = r["embedding"]
    n = len(r["embedding"]["per_run"])
    header = f"{f'One-shot, {n} runs':<20}{'error %':>8}{'best run':>10}{'worst':>8}"
    return "\n".join([header, "-" * len(header)] + [
        f"{name:<20}{100 * e['error']:>8.2f}{100 * min(e['per_run']):>10.1f}"
        f"{100 * max(e['per_run']):>8.1f}" for name, e in rows.items()])


def _cosine_scores(x: np.ndarray):
  """``(q, s) -> [Nq, Ns]`` cosine similarities of the rows of ``x`` (finite rows only)."""
  x = np.asarray(x, np.float64)
  if not np.isfinite(x).all():
    bad = np.flatnonzero(~np.isfinite(x).all(1))
    raise ValueError(f"one-shot: {len(bad)} embeddings hold NaN or inf (first: row {bad[0]})")
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return lambda q, s: x[q] @ x[s].T


def _check_flags(e: Evaluator, *names: str) -> None:
  for n in names:
    if not isinstance(getattr(e, n), bool):
      raise ConfigError(f"{e._where(n)}: expected True or False, got {getattr(e, n)!r}")  # pylint: disable=protected-access


def _check_baselines(e: Evaluator, s: EvalSet) -> None:
  """The set keeps what each baseline that ``e`` asks for reads."""
  if getattr(e, "raw_pixels", False) and s.pixels is None:
    raise ConfigError(f"{e._where('raw_pixels')}: this dataset's {s.name!r} set keeps no pixels "  # pylint: disable=protected-access
                      "in memory (only the bundled digits and Omniglot do)")
  if getattr(e, "mhd", False) and s.ink is None:
    raise ConfigError(f"{e._where('mhd')}: this dataset's {s.name!r} set has no drawings' ink "  # pylint: disable=protected-access
                      "(only Omniglot does)")


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

  def flatten(self, results):
    if "cmc" not in results:
      return {}
    return {**{f"cmc@{k}": v for k, v in results["cmc"].items()}, "map": results["map"],
            "num_queries": results["num_queries"]}

  def metric_names(self):
    return (*(f"cmc@{k}" for k in self.ranks), "map", "num_queries")

  def table(self, results, label):
    if "cmc" not in results:
      return ""
    ranks = tuple(results["cmc"])
    return _percent_table("Re-ID (%)", [f"R-{k}" for k in ranks] + ["mAP"],
                          {label: [results["cmc"][k] for k in ranks] + [results["map"]]})


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

  def flatten(self, results):
    flat = {}
    for n, r in results.get("verification", {}).items():
      flat[f"{n}_accuracy"], flat[f"{n}_std"] = r["accuracy"], r["std"]
    return flat

  def metric_names(self):
    return tuple(f"{n}_{m}" for n in self.sets for m in ("accuracy", "std"))

  def table(self, results, label):
    if "verification" not in results:
      return ""
    header = f"{'Verification':<16}{'acc (%)':>10}{'± std':>8}{'pairs':>8}"
    lines = [f"{n:<16}{100 * r['accuracy']:>10.2f}{100 * r['std']:>8.2f}{r['num_pairs']:>8}"
             for n, r in results["verification"].items()]
    return "\n".join([header, "-" * len(header), *lines]) if lines else "(no verification sets)"


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

  def flatten(self, results):
    return {f"tar@far={f:g}": v for f, v in (results.get("tar_at_far") or {}).items()}

  def metric_names(self):
    return tuple(f"tar@far={f:g}" for f in self.fars) if "templates" in self.sets else ()

  def table(self, results, label):
    if "tar_at_far" not in results:
      return ""
    tar = results["tar_at_far"]
    if tar is None:
      return "1:1 TAR@FAR: not measured (no IJB templates: config.data.ijb_path is empty)"
    return "1:1 TAR@FAR: " + ", ".join(f"{100 * v:.2f} % at {f:g}" for f, v in tar.items())


#: ``config.evals.<name>.type`` → evaluator class.
EVALUATORS: dict[str, type[Evaluator]] = {
    c.TYPE: c for c in (Recall, OneShot, CmcMap, Verification, TarAtFar)}


def make_evaluators(evals, *, block_size: int) -> dict[str, Evaluator]:
  """``config.evals`` → ``{name: Evaluator}``, by name (a ``ConfigDict`` sorts its keys); no data is read."""
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


def flatten(results: Mapping[str, Any], evaluators: Mapping[str, Evaluator]) -> dict[str, float]:
  """The results as scalars named for ``metrics.jsonl``: ``recall@1``, ``one_shot_error``,
  ``cmc@5``, ``map``, ``lfw_accuracy``, ``tar@far=0.001``, … (each evaluator's :meth:`Evaluator.flatten`)."""
  flat = {}
  for e in evaluators.values():
    flat.update(e.flatten(results))
  return flat


def nan_results(evaluators: Mapping[str, Evaluator]) -> dict[str, float]:
  """Every flat metric name of ``evaluators``, each NaN: a run whose training diverged."""
  return {name: math.nan for e in evaluators.values() for name in e.metric_names()}


def tables(results: Mapping[str, Any], label: str, evaluators: Mapping[str, Evaluator]) -> str:
  """The printed tables of ``results`` (one run, named ``label``), one per evaluator."""
  return "\n\n".join(t for e in evaluators.values() if (t := e.table(results, label)))


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
