"""experiments/benchmark.py: the quick config end to end, bad overrides, the load rule, verdicts."""

import json
import os
import subprocess
import sys

import pytest

from experiments import benchmark_lib
from experiments.configs import benchmark as benchmark_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEPS = dict(pairwise_time=("floor", "recompute_floor", "dense", "chunked"),
             class_time=("floor", "recompute_floor", "chunked", "dense"),
             pml=("circle_jax", "pml"))


@pytest.mark.slow
def test_quick_benchmark_runs(tmp_path, capsys):
  out = tmp_path / "bench.json"
  config = benchmark_config.get_config("quick")
  config.repeats = 1
  results = benchmark_lib.run(config, str(out))
  printed = capsys.readouterr().out
  saved = json.loads(out.read_text())
  assert saved["quick"]
  assert saved["config"]["pair_batches"] == list(benchmark_config.QUICK["pair_batches"])
  for section in benchmark_lib.SECTIONS:
    assert saved[section], section
    load = saved["load"][section]
    assert load["wall_s"] > 0 and load["under_load"] == bool(load["reasons"]), section
    for share in ("others_share", "steal_share", "idle_share"):
      assert load[share] is None or 0 <= load[share] <= 1, (section, share)
  assert saved["under_load"] == [s for s in benchmark_lib.TIMED if saved["load"][s]["under_load"]]
  assert ("measured under load" in printed) == bool(saved["under_load"])
  for floor in (benchmark_lib.PAIR_FLOOR, benchmark_lib.PAIR_RECOMPUTE,
                benchmark_lib.CLASS_FLOOR, benchmark_lib.CLASS_RECOMPUTE):
    assert floor in printed
  assert "PML / circle_jax" in printed and "Targets" in printed
  for section, steps in STEPS.items():
    for row in results[section]:
      for step in steps:
        t = row["times"][step]
        assert len(t["wall_s"]) == t["repeats"] >= 1, (section, step)
        assert 0 < t["wall_min_s"] <= t["wall_median_s"], (section, step)
        assert t["cpu_median_s"] >= 0, (section, step)
  for row in results["pairwise_time"] + results["class_time"]:
    assert row["chunked_over_floor"] > 0 and row["chunked_over_recompute_floor"] > 0
  assert all(r["pml_over_circle_jax"] > 0 for r in results["pml"])
  # The quick shapes are tiny, but the memory properties already hold there.
  temps = [r["chunked_temp_mib"] for r in results["class_memory"]]
  assert max(temps) <= 1.1 * min(temps) + 0.1
  assert any("no collective grows with C" in line for line in results["targets"])
  # One line per target: the two pair-wise dense ones are one at the quick shapes
  # (one B stands for both 1024 and 4096); then chunked, class-level, PML,
  # class memory, pair-wise memory, collectives.
  assert len(results["targets"]) == 7, results["targets"]


def test_load_rule():
  assert benchmark_lib.load_reasons(0.02, 0.01, [0.3, 0.2, 0.1], 2) == []
  assert benchmark_lib.load_reasons(None, None, None, 2) == []
  (others,) = benchmark_lib.load_reasons(0.3, 0.0, [0.0, 0.0, 0.0], 2)
  assert "other processes used 30 %" in others
  (steal,) = benchmark_lib.load_reasons(0.0, 0.06, None, 2)
  assert "steal 6.0 %" in steal
  (avg,) = benchmark_lib.load_reasons(0.0, 0.0, [1.5, 1.0, 1.0], 2)
  assert "load average 1.50" in avg
  assert benchmark_lib.load_reasons(0.0, 0.0, [1.5, 1.0, 1.0], 4) == []


def test_load_summary_counts_only_other_processes():
  zeros = dict.fromkeys(benchmark_lib._STAT_FIELDS, 0.0)
  start = dict(wall=0.0, own_cpu=0.0, stat=zeros, loadavg=[0.1, 0.1, 0.1])
  # 20 CPU-seconds elapsed: 10 busy, of which 2 are ours; 1 stolen.
  end_stat = dict(zeros, user=9.0, system=1.0, idle=9.0, steal=1.0)
  end = dict(wall=10.0, own_cpu=2.0, stat=end_stat, loadavg=[0.9, 0.3, 0.1])
  load = benchmark_lib.load_summary(start, end, [0.1, 0.1, 0.1], 2)
  assert abs(load["others_share"] - 8 / 20) < 1e-9
  assert abs(load["steal_share"] - 1 / 20) < 1e-9
  assert load["under_load"] and len(load["reasons"]) == 1
  quiet = benchmark_lib.load_summary(start, dict(end, own_cpu=10.0), [0.1, 0.1, 0.1], 2)
  assert quiet["others_share"] == 0 and not quiet["under_load"]


def _pair_row(batch, dense, chunked):
  return dict(batch=batch, dense_over_floor=dense, chunked_over_floor=chunked,
              chunked_over_recompute_floor=chunked / 1.5)


def test_targets_state_met_and_not_met():
  loaded = dict(under_load=True, reasons=["steal 9.0 % (> 5 %)"])
  results = dict(
      config=benchmark_config.FULL,
      load=dict(pairwise_time=loaded, pml=dict(under_load=False, reasons=[])),
      pairwise_time=[_pair_row(1024, 1.52, 1.65), _pair_row(4096, 1.31, 1.9)],
      pml=[dict(batch=1024, pml_over_circle_jax=3.2)],
  )
  lines = benchmark_lib.targets(results)
  assert lines[0].startswith("pair-wise dense B=1024: 1.52×") and "NOT met" in lines[0]
  assert lines[1].startswith("pair-wise dense B=4096: 1.31×") and "(target ≤ 1.4×: met)" in lines[1]
  assert "1.65×" in lines[2] and "(target ≤ 1.7×: met" in lines[2]
  assert all(line.endswith("(measured under load)") for line in lines[:3])
  assert "3.2×" in lines[3] and "NOT met" in lines[3] and "under load" not in lines[3]
  assert len(lines) == 4


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_names_a_bad_override_in_one_line():
  done = _cli("--config", "experiments/configs/benchmark.py:quick", "--config.repeat=1")
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith(
      "error: --config.repeat: the config has no field 'repeat'"), done.stderr[-2000:]
  done = _cli("--config", "experiments/configs/benchmark.py:quick", "--config.skip=pml,gpu")
  assert done.returncode != 0 and "unknown sections ['gpu']" in done.stderr, done.stderr[-2000:]
