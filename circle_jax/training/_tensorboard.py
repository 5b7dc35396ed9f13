"""Scalars as TensorBoard event files, written without TensorFlow."""

from __future__ import annotations

import itertools
import numbers
import os
import socket
import time
from typing import Mapping

import numpy as np

# Two writers of one process opened in the same second get different file names.
_file_counter = itertools.count()


def _tensorboard_modules():
  """The event protos and the record framer of the ``tensorboard`` package.

  Imported on first use: ``import circle_jax.training`` stays free of it. Only
  the protos and ``RecordWriter`` (length, masked CRC32C, payload) are used, not
  its ``EventFileWriter``: that one opens files through ``tensorboard.compat.tf``,
  which imports all of TensorFlow whenever TensorFlow is installed (seconds and
  hundreds of MB in every training process), where plain ``open`` does.
  """
  try:
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer import record_writer
  except ImportError as e:
    raise ImportError("TensorBoard event files need the tensorboard package: "
                      "pip install 'tensorboard>=2.21.0' (or circle_jax[train])") from e
  return event_pb2, summary_pb2, record_writer.RecordWriter


def is_scalar(value) -> bool:
  """A real number (Python, NumPy or a 0-d array), not a bool: what TensorBoard plots."""
  if isinstance(value, (bool, np.bool_)):
    return False
  if isinstance(value, numbers.Real):
    return True
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    array = np.asarray(value)
    return array.ndim == 0 and (np.issubdtype(array.dtype, np.integer)
                                or np.issubdtype(array.dtype, np.floating))
  return False


class TensorBoardWriter:
  """Writes scalars to a new TensorBoard event file in ``logdir``.

  Each writer opens its own file, ``events.out.tfevents.<time>.<host>.<pid>.<n>``,
  and never touches the others: a resumed run adds a file beside the first
  run's, and TensorBoard reads them in name order as one run. Every
  ``write_scalars`` call is handed to the operating system before it returns,
  so a killed process loses none of it.

  Values are stored as TensorBoard's ``simple_value``, a 32-bit float; NaN and
  infinities are written as they are (TensorBoard shows them), not skipped.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...   with TensorBoardWriter(d) as w:
    ...     w.write_scalars(10, {"train/loss": 0.5, "train/learning_rate": 1e-3})
    ...   [name.split(".")[:3] for name in os.listdir(d)]
    [['events', 'out', 'tfevents']]

  View with ``tensorboard --logdir <logdir>``.
  """

  def __init__(self, logdir: str | os.PathLike):
    self._event_pb2, self._summary_pb2, record_writer = _tensorboard_modules()
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_counter)}")
    self.path = os.path.join(self.logdir, name)
    # "x": a file of another writer is never reopened (and so never truncated).
    self._records = record_writer(open(self.path, "xb"))  # pylint: disable=consider-using-with
    # The first record of every event file: the reader checks the format version.
    self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One event at ``step`` holding every ``{tag: value}`` of ``scalars``, flushed."""
    if self._records.closed:
      raise ValueError(f"{self.path}: the writer is closed")
    values = [self._summary_pb2.Summary.Value(tag=str(tag), simple_value=float(value))
              for tag, value in scalars.items()]
    if values:
      self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                        summary=self._summary_pb2.Summary(value=values)))
      self.flush()

  def flush(self) -> None:
    """Hands what was written to the operating system (a killed process keeps it)."""
    if not self._records.closed:
      self._records.flush()

  def close(self) -> None:
    if not self._records.closed:
      self._records.flush()
      self._records.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

