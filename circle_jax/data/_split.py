"""Train/test splits: by class (the fine-grained retrieval protocol) or by image within classes."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def class_disjoint_split(labels, train_classes: Sequence[int], test_classes: Sequence[int]):
  """Indices of the items whose class is in ``train_classes`` / ``test_classes``.

  No class is on both sides: test-time retrieval is of classes never seen in
  training, as for CUB-200-2011 (classes 0–99 train, 100–199 test).

  Args:
    labels: [N] integer labels.
    train_classes: classes for training.
    test_classes: classes for testing; must not overlap ``train_classes``.

  Returns:
    ``(train_index, test_index)``: int64 index arrays in increasing order.

  Raises:
    ValueError: overlapping class lists, or a class with no item.

  Example:
    >>> class_disjoint_split(np.array([0, 1, 2, 1, 0]), [0, 1], [2])
    (array([0, 1, 3, 4]), array([2]))
  """
  labels = np.asarray(labels)
  train_classes, test_classes = list(train_classes), list(test_classes)
  overlap = sorted(set(train_classes) & set(test_classes))
  if overlap:
    raise ValueError(f"class_disjoint_split: classes {overlap} are in both train and test")
  present = set(np.unique(labels).tolist())
  missing = sorted(set(train_classes + test_classes) - present)
  if missing:
    raise ValueError(f"class_disjoint_split: classes {missing} have no items in labels")
  train = np.flatnonzero(np.isin(labels, train_classes))
  test = np.flatnonzero(np.isin(labels, test_classes))
  return train, test


def stratified_split(labels, classes: Sequence[int], *, test_fraction: float = 0.5, seed: int = 0):
  """Indices of a per-class random split of the items of ``classes`` into train and test.

  The closed-set protocol: every class is on both sides, with
  ``round(test_fraction · n_c)`` of its ``n_c`` items in test (at least one on
  each side). Retrieval at test time is then of classes the model was trained
  on, unlike :func:`class_disjoint_split`.

  Args:
    labels: [N] integer labels.
    classes: the classes to split (others are left out).
    test_fraction: share of each class that goes to test, in (0, 1).
    seed: the split is a pure function of (labels, classes, test_fraction, seed).

  Returns:
    ``(train_index, test_index)``: int64 index arrays in increasing order.

  Raises:
    ValueError: ``test_fraction`` outside (0, 1), repeated classes, or a class
      with fewer than two items.

  Example:
    >>> train, test = stratified_split(np.array([0, 0, 1, 1, 1, 1, 2]), [0, 1], seed=0)
    >>> len(train), len(test), sorted(np.array([0, 0, 1, 1, 1, 1, 2])[test].tolist())
    (3, 3, [0, 1, 1])
  """
  labels = np.asarray(labels)
  classes = [int(c) for c in classes]
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction}")
  if len(set(classes)) != len(classes):
    raise ValueError(f"stratified_split: repeated classes in {classes}")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in classes:
    items = np.flatnonzero(labels == c)
    if len(items) < 2:
      raise ValueError(f"stratified_split: class {c} has {len(items)} item(s); "
                       "it needs at least one on each side")
    n_test = min(max(int(round(test_fraction * len(items))), 1), len(items) - 1)
    items = rng.permutation(items)
    test.append(items[:n_test])
    train.append(items[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
