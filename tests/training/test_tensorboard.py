"""TensorBoard event files, read back by TensorFlow's own reader and by TensorBoard's loader."""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from circle_jax import training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_scalars(logdir):
  """``[(file, step, tag, value)]`` of every event file in ``logdir``, in name order.

  Read with TensorFlow's record reader (its own C++ framing and CRC checks),
  independent of the writer's code.
  """
  tf = pytest.importorskip("tensorflow")
  rows = []
  for path in sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*"))):
    events = list(tf.compat.v1.train.summary_iterator(path))
    assert events[0].file_version == "brain.Event:2"
    rows += [(os.path.basename(path), e.step, v.tag, v.simple_value)
             for e in events[1:] for v in e.summary.value]
  return rows


def _same(a, b):
  return a == b or (math.isnan(a) and math.isnan(b))


def test_scalars_read_back_exactly(tmp_path):
  written = {1: {"train/loss": 0.7, "train/learning_rate": 1e-3, "train/steps": 3},
             5: {"train/loss": np.float32(0.25), "train/grad_norm": np.asarray(2.5, np.float64)},
             9: {"train/loss": float("nan"), "eval/recall@1": float("inf")}}
  with training.TensorBoardWriter(tmp_path) as w:
    for step, scalars in written.items():
      w.write_scalars(step, scalars)
  rows = read_scalars(tmp_path)
  assert len({name for name, *_ in rows}) == 1
  expected = [(step, tag, float(np.float32(v)))  # stored as 32-bit floats
              for step, scalars in written.items() for tag, v in scalars.items()]
  assert [(s, t) for _, s, t, _ in rows] == [(s, t) for s, t, _ in expected]
  assert all(_same(v, e) for (*_, v), (*_, e) in zip(rows, expected)), rows


def test_a_second_writer_adds_a_file_and_both_runs_are_read(tmp_path):
  with training.TensorBoardWriter(tmp_path) as first:
    first.write_scalars(1, {"train/loss": 1.0})
    first.write_scalars(2, {"train/loss": 0.8})
  with training.TensorBoardWriter(tmp_path) as resumed:  # a resumed run
    resumed.write_scalars(2, {"train/loss": 0.8})
    resumed.write_scalars(3, {"train/loss": 0.5})
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 2 and resumed.path.endswith(files[1])
  rows = read_scalars(tmp_path)
  assert [(f, s, v) for f, s, _, v in rows] == [
      (files[0], 1, 1.0), (files[0], 2, np.float32(0.8)),
      (files[1], 2, np.float32(0.8)), (files[1], 3, 0.5)]
  # TensorBoard's own loader reads the directory as one run over every step.
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [
      (1, 1.0), (2, np.float32(0.8)), (2, np.float32(0.8)), (3, 0.5)]


def test_a_closed_writer_refuses_more(tmp_path):
  w = training.TensorBoardWriter(tmp_path)
  w.close()
  w.close()  # twice is fine
  with pytest.raises(ValueError, match="closed"):
    w.write_scalars(1, {"a": 1.0})


def test_metrics_log_writes_the_jsonl_of_jsonl_writer_and_the_numbers_to_tensorboard(tmp_path):
  records = [
      {"step": 2, "loss": np.float32(0.5), "grad_norm": 1.5, "learning_rate": 1e-3,
       "steps_per_second": 4.0, "input_wait": 0.0},
      {"event": "resume", "step": 2},
      {"step": 4, "loss": float("nan"), "grad_norm": 2.0, "learning_rate": 5e-4,
       "steps_per_second": 3.0, "input_wait": 0.1, "note": "text", "flag": True},
      {"step": 4, "event": "eval", "recall@1": 0.875, "num_queries": 10, "ks": [1, 2]},
  ]
  reference = training.JsonlWriter(tmp_path / "reference.jsonl")
  with training.MetricsLog(tmp_path / "run") as log:
    for record in records:
      log.write(record)
      reference.write(record)
  assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == (
      tmp_path / "reference.jsonl").read_bytes()
  assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[1]) == records[1]
  rows = [(s, t, v) for _, s, t, v in read_scalars(tmp_path / "run" / "tensorboard")]
  expected = [(2, "train/loss", 0.5), (2, "train/grad_norm", 1.5),
              (2, "train/learning_rate", np.float32(1e-3)), (2, "train/steps_per_second", 4.0),
              (2, "train/input_wait", 0.0),
              (4, "train/loss", float("nan")), (4, "train/grad_norm", 2.0),
              (4, "train/learning_rate", np.float32(5e-4)), (4, "train/steps_per_second", 3.0),
              (4, "train/input_wait", np.float32(0.1)),
              (4, "eval/recall@1", 0.875), (4, "eval/num_queries", 10.0)]
  assert [r[:2] for r in rows] == [e[:2] for e in expected]
  assert all(_same(r[2], float(e[2])) for r, e in zip(rows, expected)), rows


def test_importing_loads_no_tensorboard_and_writing_loads_no_tensorflow(tmp_path):
  code = (
      "import sys, circle_jax, circle_jax.training as t; "
      "before = sorted({m.split('.')[0] for m in sys.modules} & {'tensorboard', 'tensorflow'}); "
      f"w = t.MetricsLog({str(tmp_path)!r}); w.write({{'step': 1, 'loss': 0.5}}); w.close(); "
      "after = sorted({m.split('.')[0] for m in sys.modules} & {'tensorboard', 'tensorflow'}); "
      "print(before, after)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO)
  assert out.stdout.strip() == "[] ['tensorboard']", out.stderr[-2000:]
