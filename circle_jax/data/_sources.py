"""Random-access image sources: labels up front, pixels decoded per batch.

A source holds the labels of every item (what the samplers need) and decodes
only the images a batch asks for, so a dataset larger than memory trains with
the same (seed, step) → batch determinism as the bundled digits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from circle_jax.data._images import decode_image
from circle_jax.data._images import load_image
from circle_jax.data._recordio import RecordIOReader


class ImageSource:
  """Base: ``labels`` [N] int32, ``size`` (H, W), ``images(indices)`` → uint8 [n, H, W, 3]."""

  labels: np.ndarray
  size: tuple[int, int]

  def __len__(self) -> int:
    return len(self.labels)

  def images(self, indices: Sequence[int], map_fn=map) -> np.ndarray:
    """uint8 [n, H, W, 3]; ``map_fn`` (e.g. a thread pool's ``map``) decodes in parallel."""
    if not len(indices):
      return np.zeros((0, *self.size, 3), np.uint8)
    return np.stack(list(map_fn(self.image, [int(i) for i in indices])))

  def image(self, i: int) -> np.ndarray:
    """uint8 [H, W, 3] of item ``i``."""
    raise NotImplementedError


class FileImageSource(ImageSource):
  """Image files on disk, resized to ``size`` when read.

  Example:
    >>> import tempfile, os
    >>> from circle_jax.data._images import encode_image
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> _ = open(p, "wb").write(encode_image(np.zeros((5, 7, 3), np.uint8), "PNG"))
    >>> FileImageSource([p], [3], size=(4, 2)).images([0]).shape
    (1, 4, 2, 3)
  """

  def __init__(self, paths: Sequence[str], labels, size: Sequence[int]):
    self.paths = tuple(paths)
    self.labels = np.asarray(labels, np.int32)
    self.size = (int(size[0]), int(size[1]))
    if len(self.paths) != len(self.labels):
      raise ValueError(f"FileImageSource: {len(self.paths)} paths but {len(self.labels)} labels")

  def image(self, i: int) -> np.ndarray:
    return load_image(self.paths[i], self.size)


class RecordIOImageSource(ImageSource):
  """Images of a RecordIO pack (``keys`` are record keys, one per item)."""

  def __init__(self, reader: RecordIOReader, keys, labels, size: Sequence[int]):
    self.reader = reader
    self.keys = np.asarray(keys, np.int64)
    self.labels = np.asarray(labels, np.int32)
    self.size = (int(size[0]), int(size[1]))
    if len(self.keys) != len(self.labels):
      raise ValueError(f"RecordIOImageSource: {len(self.keys)} keys but {len(self.labels)} labels")

  def image(self, i: int) -> np.ndarray:
    return self.reader.decode(int(self.keys[i]), self.size)


class ArrayImageSource(ImageSource):
  """Images already in memory: [N, H, W, C], uint8 (or float, e.g. the bundled digits)."""

  def __init__(self, images: np.ndarray, labels):
    self.array = np.asarray(images)
    if self.array.ndim != 4:
      raise ValueError(f"ArrayImageSource: images must be [N, H, W, C], got {self.array.shape}")
    self.labels = np.asarray(labels, np.int32)
    if len(self.labels) != len(self.array):
      raise ValueError(f"ArrayImageSource: {len(self.array)} images but {len(self.labels)} labels")
    self.size = tuple(self.array.shape[1:3])

  def images(self, indices, map_fn=map) -> np.ndarray:
    del map_fn  # already decoded
    if not len(indices):
      return np.zeros((0,) + self.array.shape[1:], self.array.dtype)
    return self.array[np.asarray(indices, np.int64)]

  def image(self, i: int) -> np.ndarray:
    return self.array[i]


class EncodedImageSource(ImageSource):
  """Encoded images in memory (e.g. the pairs of a ``.bin`` verification set), decoded per read."""

  def __init__(self, encoded: Sequence[bytes], labels, size: Sequence[int]):
    self.encoded = tuple(encoded)
    self.labels = np.asarray(labels, np.int32)
    self.size = (int(size[0]), int(size[1]))
    if len(self.encoded) != len(self.labels):
      raise ValueError(f"EncodedImageSource: {len(self.encoded)} images but {len(self.labels)} "
                       "labels")

  def image(self, i: int) -> np.ndarray:
    return decode_image(self.encoded[i], self.size)
