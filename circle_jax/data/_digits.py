"""The bundled digits: real digit images that ship inside installed packages (no download).

:func:`load_digits` reads them; :func:`load_digits_split` divides them into a
training and a test side, by class (retrieval of unseen digits) or by image
(closed-set retrieval).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import os
from typing import Sequence

import numpy as np

from circle_jax.data._split import class_disjoint_split
from circle_jax.data._split import stratified_split

# Shipped inside the package (bundled/README.md: provenance, licence, checksum).
_MNIST_5K = "bundled/mnist_5k.csv.gz"


def mnist_5k_path() -> str:
  """Path of the bundled ``mnist_5k.csv.gz`` (5,000 real MNIST digits, 500 per class).

  The file ships inside ``circle_jax.data`` (``bundled/README.md`` gives its
  source, checksum and licence), so reading it installs nothing.

  Returns:
    The file's path inside the installed package.

  Raises:
    FileNotFoundError: the installation lacks the file (the message names the path).

  Example:
    >>> mnist_5k_path().endswith("mnist_5k.csv.gz")
    True
  """
  path = importlib.resources.files("circle_jax.data").joinpath(_MNIST_5K)
  if not path.is_file():
    raise FileNotFoundError(f"the bundled digits are missing from this installation of "
                            f"circle_jax: {path} (reinstall the package)")
  return str(path)


def load_mnist_5k(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads 28×28 digits from a gzipped CSV: 784 pixel columns then the label.

  The default file is the bundled ``mnist_5k.csv.gz`` (:func:`mnist_5k_path`):
  5,000 real MNIST digits, 500 per class, pixels 0–255.

  Args:
    path: the ``.csv.gz`` file; ``None`` for the bundled one.

  Returns:
    ``(images, labels)``: images ``[N, 28, 28]`` uint8, labels ``[N]`` int32.

  Raises:
    FileNotFoundError: the file does not exist (the message names it).
    ValueError: the file is not 785 integer columns per row.

  Example:
    >>> images, labels = load_mnist_5k()
    >>> images.shape, images.dtype, labels.shape, int(labels.max())
    ((5000, 28, 28), dtype('uint8'), (5000,), 9)
  """
  path = mnist_5k_path() if path is None else os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"digits data file not found: {path}")
  try:
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read {path} as a gzipped CSV of integers: {e}") from e
  if table.shape[1] != 28 * 28 + 1:
    raise ValueError(
        f"{path}: expected 785 columns (784 pixels + label) per row, got {table.shape[1]}")
  if table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
    raise ValueError(f"{path}: pixel values outside [0, 255]")
  return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int32)


def load_digits(name: str = "mnist_5k", path: str | os.PathLike | None = None):
  """Loads a bundled digits dataset by name.

  Args:
    name: ``"mnist_5k"`` (28×28, bundled) or ``"sklearn_digits"`` (1,797
      8×8 digits from scikit-learn, pixels rescaled from 0–16 to 0–255).
    path: only for ``"mnist_5k"``: a CSV in the same format to read instead.

  Returns:
    ``(images, labels)``: ``[N, H, W]`` uint8 and ``[N]`` int32.

  Raises:
    ValueError: unknown ``name``. FileNotFoundError: missing data.

  Example:
    >>> load_digits("mnist_5k")[0].shape
    (5000, 28, 28)
  """
  if name == "mnist_5k":
    return load_mnist_5k(path)
  if name == "sklearn_digits":
    if path is not None:
      raise ValueError("load_digits: 'sklearn_digits' reads scikit-learn's bundled copy; path must be None")
    try:
      from sklearn.datasets import load_digits as sk_load  # pylint: disable=g-import-not-at-top
    except ModuleNotFoundError as e:
      raise FileNotFoundError("'sklearn_digits' needs scikit-learn installed") from e
    bunch = sk_load()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int32)
  raise ValueError(f"load_digits: unknown dataset {name!r}; known: 'mnist_5k', 'sklearn_digits'")


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
  """The bundled digits split into a training and a test side, images as float32 in [0, 1].

  From :func:`load_digits_split`: class-disjoint (the test classes are unseen
  in training) or by image (each class's images divided between the sides).

  Attributes:
    train_images: [N_train, H, W, 1] float32.
    train_labels: [N_train] int32, remapped to 0 … C_train − 1 (the rows of
      the class-proxy matrix for class-level losses).
    test_images: [N_test, H, W, 1] float32.
    test_labels: [N_test] int32, the original class ids.
    train_classes: the original ids of the training classes, in label order.

  Example:
    >>> d = load_digits_split(split="by_image", train_classes=range(10), test_classes=range(10))
    >>> d.num_train_classes, sorted(set(d.test_labels.tolist())) == list(range(10))
    (10, True)
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  train_classes: tuple[int, ...]

  @property
  def num_train_classes(self) -> int:
    """The number of training classes C_train (the rows of the class-proxy matrix)."""
    return len(self.train_classes)


def load_digits_split(name: str = "mnist_5k", path: str | None = None, *,
                      train_classes: Sequence[int] = (0, 1, 2, 3, 4),
                      test_classes: Sequence[int] = (5, 6, 7, 8, 9),
                      split: str = "class_disjoint", test_fraction: float = 0.5,
                      seed: int = 0) -> DigitsSplit:
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
    A :class:`DigitsSplit`.

  Example:
    >>> d = load_digits_split()
    >>> d.train_images.shape, d.test_images.shape, sorted(set(d.train_labels.tolist()))
    ((2500, 28, 28, 1), (2500, 28, 28, 1), [0, 1, 2, 3, 4])
  """
  if split == "class_disjoint":
    pass
  elif split == "by_image":
    if sorted(train_classes) != sorted(test_classes):
      raise ValueError(f"load_digits_split: split='by_image' retrieves the training classes; "
                       f"test_classes {tuple(test_classes)} must equal train_classes "
                       f"{tuple(train_classes)}")
  else:
    raise ValueError(f"load_digits_split: split must be 'class_disjoint' or 'by_image', "
                     f"got {split!r}")
  images, labels = load_digits(name, path or None)
  if split == "class_disjoint":
    train_idx, test_idx = class_disjoint_split(labels, train_classes, test_classes)
  else:
    train_idx, test_idx = stratified_split(labels, train_classes, test_fraction=test_fraction,
                                           seed=seed)
  classes = tuple(sorted(int(c) for c in train_classes))
  to_float = lambda x: (x.astype(np.float32) / 255.0)[..., None]
  return DigitsSplit(
      train_images=to_float(images[train_idx]),
      train_labels=np.searchsorted(classes, labels[train_idx]).astype(np.int32),
      test_images=to_float(images[test_idx]),
      test_labels=labels[test_idx].astype(np.int32),
      train_classes=classes,
  )

