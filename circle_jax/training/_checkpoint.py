"""Orbax checkpoints of the train state: every N steps, the last few kept, resume from the latest."""

from __future__ import annotations

import os

import flax.serialization
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a :class:`TrainState` under ``directory``.

  The state is stored as its plain state dict (``step``, ``params``,
  ``batch_stats``, ``opt_state``); saves are synchronous, and Orbax writes each
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
    ...   ckpt.save(5, state)
    ...   ckpt.latest_step(), int(ckpt.restore(state).step)
    True
    (5, 0)
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

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves ``state`` as ``step`` if it is due (or ``force``); returns whether it saved."""
    if not force and int(step) % self.every_steps:
      return False
    if self.latest_step() == int(step):
      return False
    saved = self._manager.save(
        int(step), args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)), force=True)
    self._manager.wait_until_finished()
    return saved

  def restore(self, state, step: int | None = None):
    """``state`` with the leaves of checkpoint ``step`` (newest by default), placed like ``state``'s."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(state))
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(state, restored)

  def close(self):
    self._manager.close()
