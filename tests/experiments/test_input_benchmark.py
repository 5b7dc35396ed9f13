"""experiments/input_benchmark.py --quick: every section runs and the JSON holds its figures."""

import json
import os
import subprocess
import sys

import pytest

from experiments import input_benchmark_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quick_input_benchmark(tmp_path, capsys):
  out = tmp_path / "bench.json"
  # One training run (1 worker): the 0-worker one adds a compile, not a code path.
  results = input_benchmark_lib.run(str(tmp_path), quick=True, workers=(0, 1), threads=(1,),
                                    train_workers=(1,), out=str(out))
  printed = capsys.readouterr().out
  saved = json.loads(out.read_text())
  assert saved["quick"] and saved["total_seconds"] > 0
  env = saved["environment"]
  for key in ("load_start", "load_end"):
    assert env[key]["cores"] >= 1 and env[key]["load_1m"] >= 0
  for name in ("faces", "market"):
    d = saved["datasets"][name]
    loaders = {(r["loader"], r["workers"]) for r in d["rates"]}
    assert loaders == {("grain", 0), ("grain", 1), ("thread pool", 1)}
    for r in d["rates"] + [d["half_rows"]]:
      assert r["images_per_s"] > 0 and r["steps_per_s"] > 0 and r["startup_s"] >= 0
    assert all(r["ratio_to_thread_pool"] > 0 for r in d["rates"] if r["loader"] == "grain")
    assert d["half_rows"]["rows"] == d["batch"] // 2
  assert [r["num_workers"] for r in saved["training"]] == [1]
  for r in saved["training"]:
    assert r["steps"] == input_benchmark_lib.QUICK["train_steps"] and r["train_seconds"] > 0
    assert 0 <= r["wait_fraction"] <= 1 and 0 <= r["wait_fraction_after_first_window"] <= 1
  assert "| loader | workers | images/s | start-up s | ratio to thread pool |" in printed
  assert "Start: load average" in printed and "End: load average" in printed
  assert results["datasets"].keys() == saved["datasets"].keys()


def test_cli_names_an_unknown_flag_in_one_line():
  done = subprocess.run([sys.executable, "-m", "experiments.input_benchmark", "--quik"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith(
      "error: Unknown command line flag 'quik'"), done.stderr[-2000:]
