"""End-to-end on the bundled Omniglot: a short run learns, the config's variants, bad fields."""

import math

import pytest

from experiments import builder
from experiments import evaluators
from experiments import input_pipeline
from experiments import train
from experiments.configs import omniglot


def test_a_short_run_beats_both_raw_pixel_baselines(tmp_path, capsys):
  # The runlocal variant: 20 steps. Measured: R@1 53.3 % against 36.6 % for raw
  # pixels, one-shot error 56 % against 75.5 %; half those gaps are asked for.
  c = omniglot.get_config("local")
  c.num_devices = 1
  result = train.train_and_evaluate(c, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "One-shot, 20 runs" in out and "Recall@K (%)" in out and "raw pixels" in out
  assert "Japanese_(katakana), Sanskrit, Tagalog" in out
  assert result["recall"][1] > result["raw_pixels"][1] + 0.08
  shot = result["one_shot"]
  assert len(shot["embedding"]["per_run"]) == 20
  assert shot["embedding"]["error"] < shot["raw_pixels"]["error"] - 0.09
  # Every run holds 20 queries, so the overall error is the mean of the runs'.
  assert math.isclose(shot["embedding"]["error"],
                      sum(shot["embedding"]["per_run"]) / 20, rel_tol=1e-12)


def test_the_variants_and_their_evaluation_sets():
  full, mirror = omniglot.get_config(), omniglot.get_config("small2")
  assert full.data.background == "small1" and mirror.data.background == "small2"
  assert full.evals.retrieval.mhd and full.evals.one_shot.mhd
  local = omniglot.get_config("small2,local")
  assert local.data.background == "small2" and local.num_steps < full.num_steps
  assert not local.evals.retrieval.mhd and not local.evals.one_shot.mhd
  sets = input_pipeline.make_pipeline(mirror).eval_sets()
  test, runs = sets["test"], sets["one_shot"]
  assert test.size == 1720 and len(set(test.labels.tolist())) == 86
  assert runs.size == 800 and int(runs.support.sum()) == 400
  assert test.pixels.shape == (1720, 28, 28, 1) and 0 <= test.pixels.min() < test.pixels.max() <= 1


@pytest.mark.parametrize("arg", ["small3", "small1,small2", "locale"])
def test_an_unknown_variant_is_refused(arg):
  with pytest.raises(ValueError, match="config arg"):
    omniglot.get_config(arg)


@pytest.mark.parametrize("field,value,match", [
    ("data.background", "small3", r"config.data.background: 'small3'"),
    ("data.max_scale", 1.0, r"config.data.max_scale: .* must be < 1"),
    ("data.max_rotation", -5.0, r"config.data.max_rotation: expected a number ≥ 0"),
    ("evals.retrieval.ks", (1, 2500), r"config.evals.retrieval.ks: k = 2500 ≥ the 2120 test"),
])
def test_a_bad_field_is_named_before_training(field, value, match):
  c = omniglot.get_config("local")
  c.num_devices = 1
  section, name = field.rsplit(".", 1)
  target = c
  for part in section.split("."):
    target = target[part]
  target[name] = value
  with pytest.raises(builder.ConfigError, match=match):
    builder.build(c)


def test_a_diverged_member_is_marked_nan_under_every_name_it_would_have():
  c = omniglot.get_config("local")
  e = evaluators.make_evaluators(c.evals, block_size=1024)
  names = evaluators.nan_results(e)
  assert {"recall@1", "raw_pixels_recall@8", "one_shot_error",
          "raw_pixels_one_shot_error"} <= set(names)
  assert all(math.isnan(v) for v in names.values())
