"""The evaluators of config.evals on hand-built evaluation sets: flatten and nan_results name
the same metrics, the printed tables, NaN (diverged) members in the seed tables, bad fields."""

import math
import types

import ml_collections
import numpy as np
import pytest

from experiments import evaluators as ev
from experiments import grid
from experiments.config_error import ConfigError
from experiments.input_pipeline import EvalSet

EVALS = {
    "retrieval": {"type": "recall", "ks": (1, 2, 4), "raw_pixels": True, "mhd": True},
    "oneshot": {"type": "one_shot", "raw_pixels": True, "mhd": True},
    "reid": {"type": "cmc_map", "ranks": (1, 2)},
    "faces": {"type": "verification", "num_folds": 2},
    "ijb": {"type": "tar_at_far", "fars": (0.25, 0.5)},
}


def _fixed(x):
  """An EvalSet's embed: fixed embeddings, whatever Embed is passed (None here)."""
  return lambda embed, flip=False: x


def _ink(rng, n, h=7, w=7):
  masks = rng.random((n, h, w)) < 0.3
  masks[:, h // 2, w // 2] = True   # each drawing has ink
  return masks


def _eval_sets(rng):
  sets = {}
  # Recall: 12 items of 4 classes, with pixels and ink.
  labels = np.repeat(np.arange(4), 3)
  pixels = rng.random((12, 6, 6, 1)).astype(np.float32)
  ink = _ink(rng, 12)
  sets["test"] = EvalSet("test", 12, _fixed(rng.normal(size=(12, 5))), labels=labels,
                         pixels=pixels, ink=lambda native=True: ink)
  # One-shot: 2 runs of 3 support images (classes 0, 1, 2) and 3 queries.
  runs = np.repeat([0, 1], 6)
  support = np.tile([True] * 3 + [False] * 3, 2)
  shot_labels = np.array([0, 1, 2, 2, 0, 1, 0, 1, 2, 1, 1, 0])
  shot_ink = _ink(rng, 12, 9, 8)
  sets["one_shot"] = EvalSet("one_shot", 12, _fixed(rng.normal(size=(12, 5))),
                             labels=shot_labels, pixels=rng.random((12, 6, 6, 1)),
                             ink=lambda native=True: shot_ink, runs=runs, support=support)
  # Re-ID: 4 queries, a gallery of 10 (each query's id on another camera too).
  sets["query"] = EvalSet("query", 4, _fixed(rng.normal(size=(4, 5))),
                          labels=np.array([1, 2, 3, 4]), cams=np.zeros(4, int))
  sets["gallery"] = EvalSet("gallery", 10, _fixed(rng.normal(size=(10, 5))),
                            labels=np.array([1, 2, 3, 4, 1, 2, 5, 6, 7, 8]),
                            cams=np.array([1, 1, 1, 1, 2, 2, 1, 1, 2, 2]))
  # A pair set: 8 pairs, images 2i and 2i + 1.
  sets["lfw"] = EvalSet("lfw", 16, _fixed(rng.normal(size=(16, 5))),
                        issame=np.array([1, 0] * 4, bool))
  # IJB-style templates: 6 templates of 2 images, 6 template pairs.
  ijb = types.SimpleNamespace(template_ids=np.repeat(np.arange(6), 2),
                              media_ids=np.arange(12),
                              pairs_a=np.array([0, 0, 1, 2, 3, 4]),
                              pairs_b=np.array([1, 2, 3, 4, 5, 5]),
                              issame=np.array([1, 0, 1, 0, 1, 0], bool))
  sets["templates"] = EvalSet("templates", 12, _fixed(rng.normal(size=(12, 5))), templates=ijb)
  return sets


def _bound(evals=None, sets=None, rng=None):
  evaluators = ev.make_evaluators(ml_collections.ConfigDict(evals or EVALS), block_size=64)
  sets = sets if sets is not None else _eval_sets(rng or np.random.default_rng(0))
  for e in evaluators.values():
    e.bind(sets)
  return evaluators


@pytest.fixture(scope="module")
def evaluated():
  evaluators = _bound()
  return evaluators, ev.evaluate(evaluators, None)


@pytest.mark.parametrize("name", list(EVALS))
def test_nan_results_name_what_flatten_gives(evaluated, name):
  evaluators, results = evaluated
  e = evaluators[name]
  flat = e.flatten(results)
  assert flat, name   # every evaluator measured something on these sets
  nan = ev.nan_results({name: e})
  assert list(nan) == list(flat) == list(e.metric_names())
  assert all(math.isnan(v) for v in nan.values())
  assert all(isinstance(v, (int, float)) and not math.isnan(v) for v in flat.values())


def test_flat_names(evaluated):
  evaluators, results = evaluated
  flat = ev.flatten(results, evaluators)
  # ConfigDict iterates its keys sorted: the evaluators run, and name, in that order.
  assert list(evaluators) == sorted(EVALS)
  assert list(flat) == [n for e in evaluators.values() for n in e.metric_names()]
  assert sorted(flat) == sorted([
      "recall@1", "recall@2", "recall@4",
      "raw_pixels_recall@1", "raw_pixels_recall@2", "raw_pixels_recall@4",
      "mhd_recall@1", "mhd_recall@2", "mhd_recall@4",
      "one_shot_error", "raw_pixels_one_shot_error", "mhd_one_shot_error",
      "cmc@1", "cmc@2", "map", "num_queries",
      "lfw_accuracy", "lfw_std",
      "tar@far=0.25", "tar@far=0.5"])
  assert list(ev.nan_results(evaluators)) == list(flat)


def test_one_shot_error_is_over_all_queries_of_all_runs(evaluated):
  evaluators, results = evaluated
  r = results["one_shot"]
  for key in ("embedding", "raw_pixels", "mhd"):
    assert len(r[key]["per_run"]) == 2
    assert r[key]["error"] == pytest.approx(np.mean(r[key]["per_run"]))   # equal-sized runs
    thirds = 3 * np.array(r[key]["per_run"])   # 3 queries a run
    np.testing.assert_allclose(thirds, np.round(thirds), atol=1e-12)
  # Brute force for the embeddings' error: cosine nearest support image, ties wrong.
  s = evaluators["oneshot"].sets["one_shot"]
  x = s.embed(None)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  wrong = 0
  for q in np.flatnonzero(~s.support):
    sup = np.flatnonzero(s.support & (s.runs == s.runs[q]))
    sims = x[sup] @ x[q]
    right = sims[s.labels[sup] == s.labels[q]].max()
    wrong += (sims[s.labels[sup] != s.labels[q]] >= right).any()
  assert r["embedding"]["error"] == pytest.approx(wrong / 6)


def test_tables_show_every_evaluator_and_baseline(evaluated):
  evaluators, results = evaluated
  text = ev.tables(results, "label", evaluators)
  for header in ("Recall@K", "One-shot", "Re-ID", "Verification", "TAR@FAR"):
    assert header in text, header
  assert "raw pixels" in text and "MHD of the ink" in text
  # The baselines in both the recall and the one-shot table, and the run's own row.
  assert text.count("raw pixels") == 2 and text.count("MHD of the ink") == 2
  assert text.count("label") >= 3


@pytest.mark.parametrize("nan_first", [False, True])
def test_a_diverged_member_in_the_seed_and_member_tables(evaluated, nan_first):
  evaluators, results = evaluated
  real, nan = ev.flatten(results, evaluators), ev.nan_results(evaluators)
  runs = [nan, real] if nan_first else [real, nan]
  stats = ev.mean_and_std(runs)     # no KeyError: the two name the same metrics
  assert list(stats) == list(real)
  assert all(math.isnan(m) for m, _ in stats.values())
  summary = {"circle γ=80 m=0.4": stats, "triplet m=0.2": ev.mean_and_std([real, real])}
  table = grid.format_seed_table(summary, 2)
  assert "nan ± nan" in table and "mhd_" not in table and "num_queries" not in table
  member_table = grid.format_table(["a", "b"], {"metrics": runs, "final_loss": [0.5, math.nan]},
                                   None)
  assert member_table.count("\n") == 3 and "nan" in member_table


def test_a_diverged_member_without_templates(rng):
  # TarAtFar names no metric when the dataset has no templates; its table says so.
  sets = _eval_sets(rng)
  del sets["templates"]
  evaluators = _bound(sets=sets)
  results = ev.evaluate(evaluators, None)
  assert results["tar_at_far"] is None
  assert ev.flatten(results, evaluators).keys() == ev.nan_results(evaluators).keys()
  assert "not measured" in ev.tables(results, "label", evaluators)


# ---------------------------------------------------------------- bad fields


def test_a_flag_that_is_not_a_bool_is_named():
  for kind in ("recall", "one_shot"):
    with pytest.raises(ConfigError, match=r"config\.evals\.mine\.mhd: expected True or False"):
      ev.make_evaluators(ml_collections.ConfigDict({"mine": {"type": kind, "mhd": "yes"}}),
                         block_size=64)
  with pytest.raises(ConfigError, match=r"config\.evals\.mine\.raw_pixels"):
    ev.make_evaluators(ml_collections.ConfigDict({"mine": {"type": "recall", "raw_pixels": 1}}),
                       block_size=64)


def test_one_shot_without_runs_is_named(rng):
  sets = _eval_sets(rng)
  del sets["one_shot"]
  with pytest.raises(ConfigError, match=r"config\.evals\.oneshot: .*'one_shot'"):
    _bound({"oneshot": EVALS["oneshot"]}, sets)
  sets = _eval_sets(rng)
  sets["one_shot"] = EvalSet("one_shot", 12, _fixed(np.ones((12, 2))), labels=np.zeros(12, int))
  with pytest.raises(ConfigError, match=r"config\.evals\.oneshot: .*no runs"):
    _bound({"oneshot": {"type": "one_shot"}}, sets)


def test_mhd_without_ink_is_named(rng):
  sets = _eval_sets(rng)
  t = sets["test"]
  sets["test"] = EvalSet("test", t.size, t.embed, labels=t.labels, pixels=t.pixels)
  with pytest.raises(ConfigError, match=r"config\.evals\.retrieval\.mhd: .*'test' set has no"):
    _bound({"retrieval": EVALS["retrieval"]}, sets)
  # Without mhd, the same set binds.
  _bound({"retrieval": {"type": "recall", "raw_pixels": True}}, sets)
  sets["test"] = EvalSet("test", t.size, t.embed, labels=t.labels, ink=t.ink)
  with pytest.raises(ConfigError, match=r"config\.evals\.retrieval\.raw_pixels"):
    _bound({"retrieval": EVALS["retrieval"]}, sets)


def test_unknown_fields_and_types_are_named():
  with pytest.raises(ConfigError, match=r"config\.evals\.r: unknown field\(s\) \['kss'\]"):
    ev.make_evaluators(ml_collections.ConfigDict({"r": {"type": "recall", "kss": (1,)}}),
                       block_size=64)
  with pytest.raises(ConfigError, match=r"config\.evals\.r\.type"):
    ev.make_evaluators(ml_collections.ConfigDict({"r": {"type": "oneshot"}}), block_size=64)
