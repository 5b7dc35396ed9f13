"""Batch samplers whose output is a pure function of (seed, step)."""

from __future__ import annotations

import numpy as np


def _rng(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), *map(int, stream)])


def pk_batch_indices(labels, num_classes_per_batch: int, num_per_class: int, *, seed: int,
                     step: int) -> np.ndarray:
  """A P×K batch: P distinct classes, K items of each, for pair-wise losses.

  Classes are drawn without replacement; items without replacement within a
  class (with replacement only when a class has fewer than K items). The batch
  depends only on ``(seed, step)``, so a run resumed at ``step`` continues with
  the same batches as an uninterrupted one.

  Args:
    labels: [N] integer labels of the training pool.
    num_classes_per_batch: P, at most the number of classes.
    num_per_class: K ≥ 1.
    seed: integer seed.
    step: training step.

  Returns:
    [P·K] int64 indices into ``labels``, grouped by class (K consecutive items
    per class).

  Raises:
    ValueError: P larger than the number of classes, or P, K < 1.

  Example:
    >>> y = np.repeat(np.arange(5), 10)
    >>> idx = pk_batch_indices(y, 2, 3, seed=0, step=7)
    >>> idx.shape, len(set(y[idx].tolist()))
    ((6,), 2)
    >>> bool((idx == pk_batch_indices(y, 2, 3, seed=0, step=7)).all())
    True
  """
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if num_classes_per_batch < 1 or num_per_class < 1:
    raise ValueError(f"pk_batch_indices: P and K must be ≥ 1, got P={num_classes_per_batch}, "
                     f"K={num_per_class}")
  if num_classes_per_batch > len(classes):
    raise ValueError(f"pk_batch_indices: P={num_classes_per_batch} classes per batch but only "
                     f"{len(classes)} classes in the training pool")
  rng = _rng(seed, step)
  chosen = rng.choice(classes, size=num_classes_per_batch, replace=False)
  out = []
  for c in chosen:
    members = np.flatnonzero(labels == c)
    out.append(rng.choice(members, size=num_per_class, replace=len(members) < num_per_class))
  return np.concatenate(out).astype(np.int64)


def shuffled_batch_indices(num_items: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
  """Batch ``step`` of an endless stream of epochs, each a fresh permutation.

  The stream is the concatenation of ``permutation(seed, epoch)`` for epochs
  0, 1, 2, …; batch ``step`` is items ``[step·B, (step+1)·B)`` of it (a batch
  may straddle two epochs). Used for class-level losses, which need no P×K
  structure.

  Args:
    num_items: N ≥ 1.
    batch_size: B ≥ 1.
    seed: integer seed.
    step: training step.

  Returns:
    [B] int64 indices in [0, N).

  Example:
    >>> first_epoch = np.concatenate([shuffled_batch_indices(6, 3, seed=1, step=s) for s in (0, 1)])
    >>> sorted(first_epoch.tolist())
    [0, 1, 2, 3, 4, 5]
  """
  if num_items < 1 or batch_size < 1:
    raise ValueError(f"shuffled_batch_indices: need N ≥ 1 and B ≥ 1, got N={num_items}, B={batch_size}")
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_items)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = _rng(seed, epoch).permutation(num_items)
    sel = epochs == epoch
    out[sel] = perm[offsets[sel]]
  return out
