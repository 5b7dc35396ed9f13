"""The bundled digits split into a training and a test side."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from circle_jax.data._digits import load_digits
from circle_jax.data._split import class_disjoint_split
from circle_jax.data._split import stratified_split


@dataclasses.dataclass(frozen=True)
class RetrievalData:
  """Train and test sides of a split, images as float32 in [0, 1].

  Attributes:
    train_images: [N_train, H, W, 1] float32.
    train_labels: [N_train] int32, remapped to 0 … C_train − 1 (the rows of
      the class-proxy matrix for class-level losses).
    test_images: [N_test, H, W, 1] float32.
    test_labels: [N_test] int32, the original class ids.
    train_classes: the original ids of the training classes, in label order.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  train_classes: tuple[int, ...]

  @property
  def num_train_classes(self) -> int:
    return len(self.train_classes)


def load_retrieval_data(name: str = "mnist_5k", path: str | None = None, *,
                        train_classes: Sequence[int] = (0, 1, 2, 3, 4),
                        test_classes: Sequence[int] = (5, 6, 7, 8, 9),
                        split: str = "class_disjoint", test_fraction: float = 0.5,
                        seed: int = 0) -> RetrievalData:
  """Loads a bundled digits dataset and splits it by class (default) or by image.

  Args:
    name: see :func:`load_digits`.
    path: optional data file for ``"mnist_5k"`` (``None``/empty: the bundled one).
    train_classes: digit classes to train on.
    test_classes: digit classes to retrieve at test time.
    split: ``"class_disjoint"`` (:func:`class_disjoint_split`: the test
      classes are unseen in training, the fine-grained retrieval protocol) or
      ``"by_image"`` (:func:`stratified_split`: the closed-set protocol, where
      ``test_classes`` must equal ``train_classes`` and each class's images are
      divided between the two sides).
    test_fraction: ``"by_image"`` only: the share of each class in test.
    seed: ``"by_image"`` only: the seed of the split.

  Returns:
    A :class:`RetrievalData`.

  Example:
    >>> d = load_retrieval_data()
    >>> d.train_images.shape, d.test_images.shape, sorted(set(d.train_labels.tolist()))
    ((2500, 28, 28, 1), (2500, 28, 28, 1), [0, 1, 2, 3, 4])
  """
  if split == "class_disjoint":
    pass
  elif split == "by_image":
    if sorted(train_classes) != sorted(test_classes):
      raise ValueError(f"load_retrieval_data: split='by_image' retrieves the training classes; "
                       f"test_classes {tuple(test_classes)} must equal train_classes "
                       f"{tuple(train_classes)}")
  else:
    raise ValueError(f"load_retrieval_data: split must be 'class_disjoint' or 'by_image', "
                     f"got {split!r}")
  images, labels = load_digits(name, path or None)
  if split == "class_disjoint":
    train_idx, test_idx = class_disjoint_split(labels, train_classes, test_classes)
  else:
    train_idx, test_idx = stratified_split(labels, train_classes, test_fraction=test_fraction,
                                           seed=seed)
  classes = tuple(sorted(int(c) for c in train_classes))
  to_float = lambda x: (x.astype(np.float32) / 255.0)[..., None]
  return RetrievalData(
      train_images=to_float(images[train_idx]),
      train_labels=np.searchsorted(classes, labels[train_idx]).astype(np.int32),
      test_images=to_float(images[test_idx]),
      test_labels=labels[test_idx].astype(np.int32),
      train_classes=classes,
  )

