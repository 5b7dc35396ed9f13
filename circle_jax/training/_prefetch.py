"""Batches put on the devices ahead of the step that uses them, in a background thread."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

from jax.sharding import Mesh

from circle_jax.training._sharding import make_global_batch
from circle_jax.training._sharding import process_rows

# Keys of a host batch that describe it rather than hold one row per example.
_META = ("step", "decoded")
_END = object()


class MeshPrefetcher:
  """Iterates ``(meta, batch, position)`` with global batches already on the mesh.

  A thread pulls this process's rows of each batch from ``host_batches`` (e.g.
  :func:`circle_jax.data.grain_batches`), builds the global arrays with
  :func:`make_global_batch` and queues up to ``size`` of them, so the transfer
  and the host-side decoding overlap the running step. ``position()`` is read
  right after each batch is taken from ``host_batches``: saved with the state
  after that batch's step, it restarts the input exactly after it.

  Attributes:
    wait_seconds: time the consumer spent blocked waiting for a batch.
    decoded: the sum of the batches' ``"decoded"`` counts (images read and
      decoded by this process).

  Example:
    >>> import numpy as np
    >>> from circle_jax.training._sharding import make_mesh
    >>> host = iter([{"label": np.arange(4), "step": np.int64(s)} for s in range(3)])
    >>> it = MeshPrefetcher(host, make_mesh(1), 4)
    >>> [(int(meta["step"]), b["label"].shape) for meta, b, _ in it]
    [(0, (4,)), (1, (4,)), (2, (4,))]
  """

  def __init__(self, host_batches: Iterator[dict], mesh: Mesh, batch_size: int, *, size: int = 2,
               position: Callable[[], Any] | None = None):
    if size < 1:
      raise ValueError(f"MeshPrefetcher: size must be ≥ 1, got {size}")
    self._host = host_batches
    self._mesh = mesh
    self._batch_size = batch_size
    self._rows = process_rows(mesh, batch_size)
    self._position = position or (lambda: None)
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self.wait_seconds = 0.0
    self.decoded = 0
    self._thread = threading.Thread(target=self._fill, daemon=True, name="mesh-prefetch")
    self._thread.start()

  def _fill(self):
    try:
      for host in self._host:
        meta = {k: host[k] for k in _META if k in host}
        arrays = {k: v for k, v in host.items() if k not in _META}
        item = (meta, make_global_batch(arrays, self._mesh, self._batch_size, self._rows),
                self._position())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put(_END)
    except BaseException as e:  # handed to the consumer, raised there
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self):
    t = time.perf_counter()
    item = self._queue.get()
    self.wait_seconds += time.perf_counter() - t
    if item is _END:
      self._queue.put(_END)
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    self.decoded += int(item[0].get("decoded", 0))
    return item

  def close(self):
    """Stops the thread (batches already queued are dropped)."""
    self._stop.set()
    self._thread.join(timeout=5)
