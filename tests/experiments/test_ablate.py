"""experiments/grid.py (experiments.ablate): the grid from a config, seeds as an axis, and a tiny
one-program-vs-sequential run."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import builder
from experiments import grid as ablate
from experiments.configs import ablate as ablate_config


def _tiny(config):
  config.num_steps = 3
  config.log_every = 3
  config.num_devices = 1
  config.model.features = (4,)
  config.model.embedding_dim = 8
  config.optimizer.warmup_steps = 0
  return config


def test_members_sweep_product_alpha_and_losses():
  c = ablate_config.get_config()
  base = (float(c.loss.gamma), float(c.loss.margin))
  c.ablation.gammas, c.ablation.margins = (32.0, base[0]), (0.0, base[1])
  sweep = [(m.hparams["gamma"], m.hparams["margin"]) for m in ablate.members_from_config(c)]
  # One at a time from the base; the base point itself only once.
  assert sweep == [(32.0, base[1]), base, (base[0], 0.0)]
  c.ablation.mode = "product"
  c.ablation.grad_through_alpha = (False, True)
  c.ablation.losses = ("circle_class", "am_softmax")
  members = ablate.members_from_config(c)
  assert len(members) == 4 * 2 + 4    # α on/off for Circle only
  assert sum(bool(m.options) for m in members) == 4
  assert {m.loss for m in members} == {"circle_class", "am_softmax"}
  c.ablation.mode = "grid"
  with pytest.raises(builder.ConfigError, match="config.ablation.mode: 'grid'"):
    ablate.members_from_config(c)
  c.ablation.mode, c.ablation.losses = "sweep", ("circel",)
  with pytest.raises(builder.ConfigError, match="unknown loss name 'circel'"):
    ablate.members_from_config(c)
  # Seeds are an axis: every member once per seed; none given is config.seed alone.
  c.ablation.losses, c.ablation.gammas, c.ablation.margins = (), (32.0, 64.0), ()
  c.ablation.grad_through_alpha = (False,)
  assert ablate.grid_from_config(c)[1] == [c.seed, c.seed]
  c.ablation.seeds = (0, 1, 2)
  members, seeds = ablate.grid_from_config(c)
  assert seeds == [0, 1, 2, 0, 1, 2] and [m.hparams["gamma"] for m in members] == [32.0] * 3 + [64.0] * 3
  # Every training config has an ablation section: by default its own loss alone.
  from experiments.configs import digits
  members, seeds = ablate.grid_from_config(digits.get_config())
  assert [(m.loss, dict(m.hparams)) for m in members] == [("circle_pair", {"gamma": 80.0, "margin": 0.4})]


def test_member_strategy_from_config(tmp_path):
  c = ablate_config.get_config()
  assert c.ablation.members == "auto"
  assert ablate.member_strategy(c) == ("unroll" if jax.devices()[0].platform == "cpu" else "vmap")
  for value in ("vmap", "unroll", "map"):
    c.ablation.members = value
    assert ablate.member_strategy(c) == value
  c.ablation.members = "pmap"
  with pytest.raises(builder.ConfigError,
                     match="config.ablation.members: 'pmap'; known: 'auto', 'vmap', 'unroll', 'map'"):
    ablate.member_strategy(c)
  with pytest.raises(builder.ConfigError, match="config.ablation.members: 'pmap'"):
    ablate.run(c, str(tmp_path), sequential=False)


@pytest.mark.slow
def test_tiny_ablation_matches_its_sequential_runs(tmp_path, capsys):
  c = _tiny(ablate_config.get_config())
  c.ablation.gammas, c.ablation.margins = (32.0, 1024.0), (0.0,)   # three members
  record = ablate.run(c, str(tmp_path))
  out = capsys.readouterr().out
  strategy = ablate.member_strategy(c)   # "unroll" on a CPU
  assert f"grid ({strategy})" in out and "sequential / grid =" in out and "| member |" in out
  on_disk = json.loads((tmp_path / "ablation.json").read_text())
  assert on_disk["ratio"] == pytest.approx(record["sequential_seconds"] / record["grid_seconds"])
  assert on_disk["member_strategy"] == strategy
  assert len(on_disk["members"]) == 3 and os.path.getsize(tmp_path / "ablation.png") > 1000
  # The same members trained separately: the same losses, and the same recall up to the
  # few of 2,500 queries whose nearest neighbours are within float rounding of each other
  # (a 3-step tiny model has many such near-ties; 10 queries = 0.4 points).
  np.testing.assert_allclose(record["final_loss"], record["sequential_final_loss"], rtol=1e-4)
  for a, b in zip(record["metrics"], record["sequential_metrics"]):
    assert abs(a["recall@1"] - b["recall@1"]) <= 0.004 + 1e-9
  # Different γ really trained different models.
  assert len({round(v, 3) for v in record["final_loss"]}) == 3
  # The other strategy of the override trains the same members to the same losses, to the
  # rounding that γ = 1024 amplifies over 3 steps (measured 1.2e-5 relative, as against the
  # sequential runs).
  c.ablation.members = "vmap" if strategy != "vmap" else "unroll"
  members = ablate.members_from_config(c)
  other = ablate.run_grid(ablate.make_setup(c, members), say=lambda *a, **k: None)
  assert other["member_strategy"] == c.ablation.members
  np.testing.assert_allclose(other["final_loss"], record["final_loss"], rtol=1e-4)


@pytest.mark.slow
def test_seeds_axis_reports_mean_and_std_over_seeds(tmp_path, capsys):
  c = _tiny(ablate_config.get_config())
  c.ablation.gammas, c.ablation.margins, c.ablation.seeds = (32.0,), (), (0, 1)
  record = ablate.run(c, str(tmp_path), sequential=False)
  assert [m["seed"] for m in record["members"]] == [0, 1]
  r1 = [r["recall@1"] for r in record["metrics"]]
  assert r1[0] != r1[1]   # the seeds trained different models
  (stats,) = record["over_seeds"].values()
  assert stats["recall@1"] == pytest.approx([np.mean(r1), np.std(r1, ddof=1)])
  assert "mean ± std over 2 seeds" in capsys.readouterr().out
