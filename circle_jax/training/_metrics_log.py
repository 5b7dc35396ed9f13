"""Metrics as JSON lines, appended and flushed as they are written; as TensorBoard scalars too."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import warnings
from typing import Any, Mapping

import numpy as np

from circle_jax.training._tensorboard import TensorBoardWriter
from circle_jax.training._tensorboard import is_scalar


def _plain(value):
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


class JsonlWriter:
  """Appends one JSON object per line to ``path``; never truncates it.

  Each line goes to the file in one ``write`` call on an append-only
  descriptor and is fsync'ed before ``write`` returns, so a process killed
  (even by SIGKILL) leaves every line it wrote whole, and a resumed run appends
  after them.

  Example:
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...   w = JsonlWriter(os.path.join(d, "m.jsonl"))
    ...   w.write({"step": 1, "loss": np.float32(0.5)})
    ...   open(os.path.join(d, "m.jsonl")).read()
    '{"step": 1, "loss": 0.5}\\n'

  A file whose last line was cut short (the machine, not the process, went
  down mid-write) gets a newline first, so the torn line stays alone on its
  line (`read_jsonl` skips it with a warning) and the new records are whole.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._end_torn_line()

  def _end_torn_line(self) -> None:
    try:
      with open(self.path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
          return
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    except FileNotFoundError:
      return
    if last != b"\n":
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
      try:
        os.write(fd, b"\n")
        os.fsync(fd)
      finally:
        os.close(fd)

  def write(self, record: Mapping[str, Any]) -> None:
    line = (json.dumps({str(k): _plain(v) for k, v in record.items()}) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      # One system call per line: a signal cannot land between two halves of it.
      written = os.write(fd, line)
      if written != len(line):
        raise OSError(f"{self.path}: wrote {written} of {len(line)} bytes of a metrics line")
      os.fsync(fd)
    finally:
      os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """All records of a JSON-lines file (an empty list if it does not exist).

  A line that is not a JSON object (a record torn by a machine crash) is
  skipped with a warning naming the file and the line.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        record = None
      if not isinstance(record, dict):
        warnings.warn(f"{os.fspath(path)}:{number}: skipped a torn or damaged line "
                      f"({line.strip()[:60]!r})", stacklevel=2)
        continue
      records.append(record)
  return records


class MetricsLog:
  """A run's metrics: ``<workdir>/metrics.jsonl`` and TensorBoard files in ``<workdir>/tensorboard``.

  Every record goes whole to ``metrics.jsonl`` (a `JsonlWriter`: appended,
  flushed; NaN is written as JSON's ``NaN``), first, so the JSON file stays
  the complete log. Its real-number fields, other than ``step`` and
  ``event``, then go to TensorBoard at its ``step`` (`TensorBoardWriter`: a new
  event file per ``MetricsLog``, NaN written as it is), named by the record's
  kind:

  * no ``event`` (a training record): ``train/<name>``, e.g. ``train/loss``;
  * ``"event": "eval"``, or any other event: ``<event>/<name>``, e.g.
    ``eval/recall@1``;
  * ``"event": "resume"``: nothing, it marks the log, it measures nothing.

  Strings, lists, bools and records without a ``step`` are not plotted.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   with MetricsLog(d) as log:
    ...     log.write({"step": 10, "loss": 0.5, "learning_rate": 1e-3})
    ...     log.write({"step": 10, "event": "eval", "recall@1": 0.9})
    ...   print(read_jsonl(os.path.join(d, "metrics.jsonl")))
    ...   print(sorted(os.listdir(d)), len(os.listdir(os.path.join(d, "tensorboard"))))
    [{'step': 10, 'loss': 0.5, 'learning_rate': 0.001},
     {'step': 10, 'event': 'eval', 'recall@1': 0.9}]
    ['metrics.jsonl', 'tensorboard'] 1

  View with ``tensorboard --logdir <workdir>/tensorboard``.
  """

  # Markers of the log: in metrics.jsonl only.
  JSONL_ONLY_EVENTS = ("resume",)

  def __init__(self, workdir: str | os.PathLike):
    workdir = os.fspath(workdir)
    self.jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    self.tensorboard = TensorBoardWriter(os.path.join(workdir, "tensorboard"))

  def write(self, record: Mapping[str, Any]) -> None:
    self.jsonl.write(record)
    event = record.get("event")
    if "step" not in record or event in self.JSONL_ONLY_EVENTS:
      return
    group = "train" if event is None else str(event)
    scalars = {f"{group}/{name}": value for name, value in record.items()
               if name not in ("step", "event") and is_scalar(value)}
    self.tensorboard.write_scalars(int(record["step"]), scalars)

  def close(self) -> None:
    self.tensorboard.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class WorkdirInUseError(RuntimeError):
  """Another live run holds the workdir's lock."""


class WorkdirLock:
  """An exclusive lock on a workdir for the lifetime of a run.

  Two runs writing one workdir would interleave their metrics lines and
  checkpoints. The lock is an advisory ``flock`` on ``<workdir>/.lock``: the
  kernel drops it when the process ends, however it ends (SIGKILL included),
  so a killed run never leaves a stale lock behind. The holder's pid and host
  are written into the file for the error message.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   with WorkdirLock(d):
    ...     try:
    ...       WorkdirLock(d).acquire()
    ...     except WorkdirInUseError as e:
    ...       print("in use" in str(e))
    True
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = os.path.join(os.fspath(workdir), ".lock")
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise WorkdirInUseError(
            f"{os.path.dirname(self.path)} is in use by another run ({holder}); "
            "wait for it to end or choose another --workdir") from None
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
