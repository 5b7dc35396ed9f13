"""Metrics as JSON lines, appended and flushed to disk as they are written."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np


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
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

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
  """All records of a JSON-lines file (an empty list if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
