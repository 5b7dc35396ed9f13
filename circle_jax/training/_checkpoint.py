"""Orbax checkpoints of the train state: every N steps, the last few kept, resume from the latest."""

from __future__ import annotations

import json
import os
from typing import Any

import flax.serialization
import jax
import orbax.checkpoint as ocp

# The train state and, beside it, the input pipeline's position (one JSON file
# per process, as grain's Orbax handler writes them).
_STATE, _DATA = "state", "data"


class _Position:
  """A JSON-able input position in the shape grain's Orbax handler saves and restores."""

  def __init__(self, value: Any = None):
    self.value = value

  def get_state(self) -> bytes:
    return json.dumps(self.value).encode()

  def set_state(self, state: bytes) -> None:
    self.value = json.loads(state.decode())

  def start_prefetch(self) -> None:
    pass


class Checkpointer:
  """Saves and restores a :class:`TrainState` under ``directory``.

  The state is stored as its plain state dict (``step``, ``params``,
  ``batch_stats``, ``opt_state``), with the input pipeline's position beside
  it when one is given (``data``: any JSON-able value, one per process, e.g.
  a grain iterator's ``get_state()``; :meth:`restore_data`). Every process
  takes part in each save and restore; each writes its own shards and its own
  input position. Saves are synchronous, and Orbax writes each
  step to a temporary directory it renames only when complete, so a process
  killed (even by SIGKILL) mid-save leaves the previous checkpoints intact and
  the next run resumes from the newest complete one.

  Args:
    directory: where the step directories go (created).
    every_steps: save only steps that are multiples of this (``force`` overrides).
    max_to_keep: the number of newest checkpoints kept.

  Example:
    >>> import tempfile, jax.numpy as jnp, optax
    >>> from circle_jax.models import SmallCNN
    >>> from circle_jax.training import create_train_state
    >>> state = create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                            jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> with tempfile.TemporaryDirectory() as d:
    ...   ckpt = Checkpointer(d, every_steps=1)
    ...   ckpt.save(5, state, data={"next_step": 5})
    ...   ckpt.latest_step(), int(ckpt.restore(state).step), ckpt.restore_data()
    True
    (5, 0, {'next_step': 5})
  """

  def __init__(self, directory: str | os.PathLike, *, every_steps: int, max_to_keep: int = 3):
    if every_steps < 1:
      raise ValueError(f"Checkpointer: every_steps must be ≥ 1, got {every_steps}")
    self.every_steps = int(every_steps)
    # The interval is applied here, not by Orbax (which always saves a first step).
    options = ocp.CheckpointManagerOptions( max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or ``None``."""
    return self._manager.latest_step()

  def save(self, step: int, state, *, force: bool = False, data: Any = None) -> bool:
    """Saves ``state`` (and the input position ``data``) as ``step`` if due or ``force``.

    Returns whether it saved.
    """
    if not force and int(step) % self.every_steps:
      return False
    if self.latest_step() == int(step):
      return False
    import grain.checkpoint  # pylint: disable=g-import-not-at-top  (registers its Orbax handler)
    items = {_STATE: ocp.args.StandardSave(flax.serialization.to_state_dict(state))}
    if data is not None:
      items[_DATA] = grain.checkpoint.CheckpointSave(_Position(data))
    saved = self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()
    return saved

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
    return step

  def restore(self, state, step: int | None = None):
    """``state`` with the leaves of checkpoint ``step`` (newest by default), placed like ``state``'s."""
    step = self._step(step)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(state))
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)}))
    return flax.serialization.from_state_dict(state, restored[_STATE])

  def restore_data(self, step: int | None = None) -> Any:
    """This process's input position saved with checkpoint ``step`` (newest), or ``None``."""
    step = self._step(step)
    if not os.path.isdir(os.path.join(self._manager.directory, str(step), _DATA)):
      return None
    import grain.checkpoint  # pylint: disable=g-import-not-at-top
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{_DATA: grain.checkpoint.CheckpointRestore(_Position())}))
    return restored[_DATA].value

  def restore_newest_good(self, state, *, say=print):
    """Restores the newest checkpoint that restores whole, setting damaged ones aside.

    A checkpoint can be damaged after Orbax finished it (a disk or a copy that
    truncated or garbled a file, a deleted manifest). Rather than ending the
    run with Orbax's trace, each newer checkpoint that fails to restore is
    moved to ``<directory>_damaged/<step>`` (kept for inspection, out of
    Orbax's way), with one line saying so, and the next older one is tried.
    With several processes they decide together: a step counts as damaged if
    it fails on any process.

    Damage is told apart from a state that no longer fits (a changed model)
    by the older checkpoints: newer ones are set aside only once an older one
    restores. When none restores, nothing is moved and the error of the
    newest is raised.

    Returns:
      ``(state, step, data)``: the restored state, its step and this
      process's input position (:meth:`restore_data`); ``(state, None,
      None)`` (the given state) when there is no checkpoint.

    Raises:
      CheckpointRestoreError: checkpoints exist but none restores.
    """
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored, data, error = self.restore(state, step), self.restore_data(step), None
      except Exception as e:  # pylint: disable=broad-except  (any damage, any layer)
        restored, data, error = None, None, e
      if _all_processes_ok(error is None):
        for bad_step, bad_error in failed:
          self._set_aside(bad_step, bad_error, say)
        return restored, step, data
      failed.append((step, error))
    if failed:
      step, error = failed[0]
      raise CheckpointRestoreError(
          f"no checkpoint in {self._manager.directory} restores (the newest, step {step}: "
          f"{_summary(error)}); a changed model or optimiser does not fit its old "
          "checkpoints: use a new workdir") from error
    return state, None, None

  def _set_aside(self, step: int, error: BaseException | None, say) -> None:
    source = os.path.join(os.fspath(self._manager.directory), str(step))
    target_dir = os.fspath(self._manager.directory).rstrip(os.sep) + "_damaged"
    target = os.path.join(target_dir, str(step))
    reason = _summary(error)
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      suffix = 0
      while os.path.exists(target):
        suffix += 1
        target = os.path.join(target_dir, f"{step}.{suffix}")
      os.rename(source, target)
    _sync_processes(f"checkpoint_set_aside_{step}")
    self._manager.reload()
    say(f"warning: the checkpoint of step {step} does not restore ({reason}); moved to "
        f"{target}; trying the one before it", flush=True)

  def close(self):
    self._manager.close()


class CheckpointRestoreError(RuntimeError):
  """Checkpoints exist in the directory, but none of them restores."""


def _summary(error: BaseException | None) -> str:
  """One line about a restore error (None: it failed on another process)."""
  if error is None:
    return "failed on another process"
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _all_processes_ok(ok: bool) -> bool:
  """Whether ``ok`` holds on every process (all of them call this together)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _sync_processes(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
