"""metrics.jsonl after a machine crash, and one run per workdir."""

import os
import signal
import subprocess
import sys
import time

import pytest

from circle_jax import training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_torn_last_line_is_ended_and_skipped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  first = training.JsonlWriter(path)
  first.write({"step": 1, "loss": 0.5})
  first.write({"step": 2, "loss": 0.4})
  with open(path, "ab") as f:  # the machine went down in the middle of a line
    f.write(b'{"step": 3, "lo')
  resumed = training.JsonlWriter(path)
  resumed.write({"event": "resume", "step": 2})
  lines = path.read_text().splitlines()
  assert lines[2] == '{"step": 3, "lo' and lines[3] == '{"event": "resume", "step": 2}'
  with pytest.warns(UserWarning, match=r"metrics.jsonl:3: skipped a torn"):
    records = training.read_jsonl(path)
  assert records == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4},
                     {"event": "resume", "step": 2}]


def test_a_whole_file_gets_no_extra_newline(tmp_path):
  path = tmp_path / "metrics.jsonl"
  training.JsonlWriter(path).write({"step": 1})
  training.JsonlWriter(path).write({"step": 2})
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_second_lock_on_a_workdir_fails_and_names_the_holder(tmp_path):
  with training.WorkdirLock(tmp_path):
    with pytest.raises(training.WorkdirInUseError, match=f"in use by another run \\(pid {os.getpid()}"):
      training.WorkdirLock(tmp_path).acquire()
  training.WorkdirLock(tmp_path).acquire().release()  # released: free again


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from circle_jax.training import _metrics_log as m; "
       f"m.WorkdirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
      stdout=subprocess.PIPE, cwd=REPO, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(training.WorkdirInUseError, match=f"pid {holder.pid}"):
      training.WorkdirLock(tmp_path).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  training.WorkdirLock(tmp_path).acquire().release()


def test_main_refuses_a_workdir_in_use(tmp_path):
  with training.WorkdirLock(tmp_path):
    start = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "experiments.main", "--config", "experiments/configs/digits.py",
         "--workdir", str(tmp_path), "--config.num_steps=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1, run.stderr[-2000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "is in use by another run" in last, run.stderr[-2000:]
  assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()
  assert time.time() - start < 300
