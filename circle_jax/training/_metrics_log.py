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

  Each line is flushed and fsync'ed, so a line written before the process is
  killed stays written.

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
    line = json.dumps({str(k): _plain(v) for k, v in record.items()})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
      f.flush()
      os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """All records of a JSON-lines file (an empty list if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
