"""experiments/benchmark.py --quick runs end to end and reports every section."""

import json

from experiments import benchmark


def test_quick_benchmark_runs(tmp_path, capsys):
  out = tmp_path / "bench.json"
  results = benchmark.main(["--quick", "--out", str(out), "--repeats", "1"])
  printed = capsys.readouterr().out
  saved = json.loads(out.read_text())
  assert saved["quick"] and saved["config"]["pair_batches"] == list(benchmark.QUICK["pair_batches"])
  for section in ("pairwise_time", "class_level", "pairwise_memory", "sharded_class_level"):
    assert saved[section], section
  assert "| B | D | matmul" in printed and "Targets:" in printed
  for row in results["pairwise_time"]:
    assert row["matmul_s"] > 0 and row["dense_s"] > 0 and row["chunked_s"] > 0
  # The quick shapes are tiny, but the memory properties already hold there.
  temps = [r["chunked_temp_mib"] for r in results["class_level"]]
  assert max(temps) <= 1.1 * min(temps) + 0.1
  assert any("no collective grows with C" in line for line in results["targets"])
