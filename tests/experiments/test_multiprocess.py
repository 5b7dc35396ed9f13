"""Real multi-process runs of ``experiments.main``: processes on this machine, loopback coordinator.

Each process gets its own CPU devices (``--xla_force_host_platform_device_count``)
and the processes talk through gloo; the same config on one process with as
many devices (this pytest process has 8) is the reference.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from circle_jax import training
from experiments import train
from experiments.configs import class_disjoint
from experiments.configs import face_circle
from tests.data import fake_datasets

# Real multi-process runs (several experiments.main processes): the slow tier.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The class-disjoint digits run, shortened. (A smaller CNN would be quicker, but its
# training is chaotic enough that 1 and 8 devices of one process part after a
# few steps; on this one they agree to ~1e-6.)
DIGITS = {"num_steps": 10, "log_every": 5, "checkpoint_every": 5, "max_checkpoints": 2,
          "eval.batch_size": 504}
# On 2 busy cores a compile can starve the heartbeat threads for seconds; 15 s leaves
# a wide margin and keeps the tests that wait for a lost peer short.
HEARTBEAT_S = 15
# How the survivor names the lost process 1: experiments.main's own line, or
# JAX's coordination service when it stops the process first.
LOST_1 = re.compile(r"lost process\(es\) \[1\] of 2|stopped sending heartbeats\):\s*1\b")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _flag(value) -> str:
  return str(tuple(value)) if isinstance(value, tuple) else str(value)


def _start(workdir, num_processes, devices_per_process, config_file, overrides, script=None):
  """``num_processes`` ``experiments.main`` processes of one run; returns the Popens."""
  port = _free_port()
  procs = []
  for i in range(num_processes):
    program = [script] if script else ["-m", "experiments.main"]
    cmd = [sys.executable, *program, "--config", config_file,
           "--workdir", str(workdir), f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={num_processes}", f"--process_id={i}",
           f"--heartbeat_timeout_seconds={HEARTBEAT_S}"]
    cmd += [f"--config.{k}={_flag(v)}" for k, v in overrides.items()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    log = open(os.path.join(str(workdir) + f".process{i}.log"), "w")
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _log(workdir, i) -> str:
  with open(str(workdir) + f".process{i}.log") as f:
    return f.read()


def _finish(workdir, procs, timeout=600):
  for i, p in enumerate(procs):
    try:
      p.wait(timeout=timeout)
    finally:
      if p.poll() is None:
        p.kill()
    assert p.returncode == 0, _log(workdir, i)[-4000:]


def _run(workdir, num_processes, devices_per_process, config_file, overrides):
  _finish(workdir, _start(workdir, num_processes, devices_per_process, config_file, overrides))


def _config(module, arg=None, **overrides):
  c = module.get_config(arg) if arg is not None else module.get_config()
  c.update_from_flattened_dict(overrides)
  return c


def _final_params(workdir):
  """The params of the newest checkpoint, as numpy arrays (whatever mesh wrote them)."""
  ckpt_dir = os.path.join(str(workdir), "checkpoints")
  path = os.path.join(ckpt_dir, str(max(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())),
                      "state")
  with ocp.PyTreeCheckpointer() as c:
    meta = c.metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return c.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))["params"]


def _records(workdir):
  return training.read_jsonl(os.path.join(str(workdir), "metrics.jsonl"))


def _losses(workdir):
  return {r["step"]: r["loss"] for r in _records(workdir) if "loss" in r}


def _input_stats(workdir, num_processes):
  out = []
  for i in range(num_processes):
    with open(os.path.join(str(workdir), "input", f"process_{i}-of-{num_processes}.json")) as f:
      out.append(json.load(f))
  return out


def _untimed(records):
  return [{k: v for k, v in r.items() if k not in ("steps_per_second", "input_wait")}
          for r in records]


@pytest.fixture(scope="module")
def digits_two_processes(tmp_path_factory):
  """The digits run as 2 processes × 4 devices, uninterrupted."""
  workdir = tmp_path_factory.mktemp("mp") / "two"
  _run(workdir, 2, 4, "experiments/configs/class_disjoint.py", DIGITS)
  return workdir


def _train_and_evaluate_like_one_process(digits_two_processes, tmp_path, capsys):
  two = digits_two_processes
  one = train.train_and_evaluate(_config(class_disjoint, **DIGITS, num_devices=8),
                                 str(tmp_path / "one"))
  capsys.readouterr()
  # The same per-step losses, final parameters and Recall@K, to float32 summation order.
  assert sorted(_losses(two)) == [5, 10]
  # Measured: 1.1e-7 relative at step 10 (2.4e-6 at step 20 of a 20-step run).
  np.testing.assert_allclose([_losses(two)[s] for s in (5, 10)],
                             [_losses(tmp_path / "one")[s] for s in (5, 10)], rtol=1e-4)
  p2, p1 = _final_params(two), _final_params(tmp_path / "one")
  # Two biases have a gradient that is zero in exact arithmetic (each is
  # followed by a BatchNorm that subtracts the mean): AdamW scales their
  # rounding noise to lr-sized steps, and they differ at ~5e-3 between any two
  # meshes. Every other parameter agrees to 6e-6 (measured; 3e-5 after 20 steps).
  for layer in ("bn_in", "fc"):
    for p in (p2, p1):
      assert np.abs(p["backbone"]["head"][layer].pop("bias")).max() < 0.02
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4), p2, p1)
  evals = [r for r in _records(two) if r.get("event") == "eval"]
  assert len(evals) == 1                     # written once, by the first process
  for k, v in one["recall"].items():
    assert evals[0][f"recall@{k}"] == pytest.approx(v, abs=2e-3)  # ≤ 5 of 2,500 queries
  # Only the first process prints.
  assert "step    10/10" in _log(two, 0) and "Recall@K" in _log(two, 0)
  assert "step " not in _log(two, 1) and "Recall@K" not in _log(two, 1)
  assert "on 8 device(s) in 2 processes" in _log(two, 0)


def _each_process_decodes_only_its_rows(digits_two_processes):
  stats = _input_stats(digits_two_processes, 2)
  batch = 5 * 16                              # class_disjoint.py's P × K
  for s in stats:
    assert s["rows_per_batch"] == batch // 2
    assert s["train_images_decoded"] == DIGITS["num_steps"] * batch // 2
  # 2,500 test images in 5 batches of 504: 252 rows a process, the padding
  # of the last batch (20 rows) all in the second process's half.
  assert [s["eval_images_decoded"] for s in stats] == [1260, 1240]


def _a_killed_process_stops_its_peer_and_both_resume(digits_two_processes, tmp_path):
  # Process 1 is killed with SIGKILL after the first checkpoint; process 0 notices through the
  # missed heartbeats and stops; both are started again. (Killing both at once is the same
  # restart without the wait; the single-process kill test covers the torn-write side.)
  expected = _records(digits_two_processes)
  workdir = tmp_path / "killed"
  procs = _start(workdir, 2, 4, "experiments/configs/class_disjoint.py", DIGITS)
  ckpt_dir = workdir / "checkpoints"
  deadline = time.time() + 300
  try:
    while (not (ckpt_dir.is_dir() and any(n.isdigit() for n in os.listdir(ckpt_dir)))
           and all(p.poll() is None for p in procs) and time.time() < deadline):
      time.sleep(0.002)
    assert all(p.poll() is None for p in procs), "a process ended before the first checkpoint"
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.time()
    procs[1].wait(timeout=60)
    # The survivor notices the lost peer through the missed heartbeats, and stops.
    procs[0].wait(timeout=HEARTBEAT_S + 50)
    waited = time.time() - t_kill
    assert procs[0].returncode != 0
    assert LOST_1.search(_log(workdir, 0)), _log(workdir, 0)[-3000:]
    assert waited < HEARTBEAT_S + 50
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[1].returncode == -signal.SIGKILL
  before = _records(workdir)
  saved = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  assert saved and saved[-1] < DIGITS["num_steps"]

  _run(workdir, 2, 4, "experiments/configs/class_disjoint.py", DIGITS)
  assert f"Resumed from the checkpoint of step {saved[-1]}" in _log(workdir, 0)
  after = _records(workdir)
  assert after[:len(before)] == before
  assert after[len(before)] == {"event": "resume", "step": saved[-1]}
  redone = after[len(before) + 1:]
  assert _untimed(redone) == _untimed([r for r in expected if r["step"] > saved[-1]])


def test_two_processes_like_one_then_killed_and_resumed(digits_two_processes, tmp_path, capsys):
  # One test, so that the uninterrupted 2-process run (the module fixture) is made once: under
  # pytest-xdist each worker that ran a test of it would make its own.
  _train_and_evaluate_like_one_process(digits_two_processes, tmp_path, capsys)
  _each_process_decodes_only_its_rows(digits_two_processes)
  _a_killed_process_stops_its_peer_and_both_resume(digits_two_processes, tmp_path)


_FAILING_MAIN = """
import sys
from absl import app
from circle_jax import data as cdata
from experiments import main

real = cdata.TrainBatches.__call__

def fail_on_process_1(self, step):
  import jax
  if jax.process_index() == 1 and step == 3:
    raise RuntimeError("damaged image on process 1")
  return real(self, step)

cdata.TrainBatches.__call__ = fail_on_process_1
app.run(main.main)
"""


def test_an_error_in_one_process_stops_every_process_promptly(tmp_path):
  # Not a crash of the machine but an exception (a damaged file, say) in one
  # process: it exits at once rather than at JAX's shutdown barrier, and the
  # other, waiting for it in a collective, fails instead of hanging.
  script = tmp_path / "failing_main.py"
  script.write_text(_FAILING_MAIN)
  workdir = tmp_path / "run"
  t = time.time()
  # num_devices=4 of the 2 × 4: two devices of each process make the mesh.
  procs = _start(workdir, 2, 4, "experiments/configs/class_disjoint.py",
                 {**DIGITS, "num_steps": 10, "num_devices": 4}, script=str(script))
  try:
    for p in procs:
      p.wait(timeout=HEARTBEAT_S + 120)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert time.time() - t < HEARTBEAT_S + 120
  assert [p.returncode != 0 for p in procs] == [True, True]
  assert "on 4 device(s) in 2 processes (mesh {'data': 4, 'model': 1})" in _log(workdir, 0)
  assert "RuntimeError: damaged image on process 1" in _log(workdir, 1)
  assert LOST_1.search(_log(workdir, 0)), _log(workdir, 0)[-3000:]


def test_face_pack_with_class_proxies_split_across_four_processes(tmp_path, capsys):
  # circle_class with the proxies on a 'model' axis of 2 that spans two
  # processes (4 processes × 1 device: mesh data 2 × model 2), against one
  # process with 4 devices. (Decoding in the training processes: eight
  # processes on two cores can starve gloo's connection set-up.)
  pack, bins = tmp_path / "pack", tmp_path / "bins"
  fake_datasets.write_recordio_pack(str(pack), [6, 5, 7, 6, 5], size=(40, 40))
  os.makedirs(bins)
  fake_datasets.write_verification_bin(str(bins / "lfw.bin"), 12, size=(40, 40))
  overrides = {"data.path": str(pack), "data.val_path": str(bins), "data.val_sets": ("lfw",),
               "data.num_workers": 0, "model_axis_size": 2, "num_steps": 3,
               # float32: the paper configs' bfloat16 compute rounds differently on the two
               # meshes, and γ = 256 makes that a 1e-3 loss difference by the second step.
               "model.dtype": "float32",
               "checkpoint_every": 3, "log_every": 1, "eval.batch_size": 16}
  # Three steps: at γ = 256 the summation-order differences grow ~10× a step on
  # this small CNN (measured relative loss differences 7e-7, 1.4e-6, 2e-5, then
  # 9e-4 and 4e-4 at steps 4 and 5).
  _run(tmp_path / "four", 4, 1, "experiments/configs/face_circle.py:local", overrides)
  one = train.train_and_evaluate(_config(face_circle, "local", **overrides, num_devices=4),
                                 str(tmp_path / "one"))
  assert "mesh {'data': 2, 'model': 2}" in capsys.readouterr().out
  four = tmp_path / "four"
  assert "in 4 processes (mesh {'data': 2, 'model': 2})" in _log(four, 0)
  assert sorted(_losses(four)) == [1, 2, 3]
  np.testing.assert_allclose([_losses(four)[s] for s in (1, 2, 3)],
                             [_losses(tmp_path / "one")[s] for s in (1, 2, 3)], rtol=1e-4)
  p4, p1 = _final_params(four), _final_params(tmp_path / "one")
  assert p4["class_weights"].shape == (6, 32)   # 5 identities padded to 6 rows
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), p4, p1)
  evals = [r for r in _records(four) if r.get("event") == "eval"]
  # 12 pairs in 10 folds: embeddings equal to float32 rounding can still move a
  # pair across a fold's threshold, which is 0.1 of the mean accuracy.
  assert evals[0]["lfw_accuracy"] == pytest.approx(one["verification"]["lfw"]["accuracy"],
                                                   abs=0.1 + 1e-9)
  stats = _input_stats(four, 4)
  assert [s["train_images_decoded"] for s in stats] == [3 * 4] * 4   # 16-image batches
  # 24 verification images in 2 batches of 16 (4 rows a process).
  assert sum(s["eval_images_decoded"] for s in stats) == 24
