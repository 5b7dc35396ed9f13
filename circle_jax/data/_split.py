"""Class-disjoint train/test splits (the fine-grained retrieval protocol)."""

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
