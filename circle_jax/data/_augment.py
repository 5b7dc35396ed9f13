"""Light augmentation for small grey-scale images."""

from __future__ import annotations

import numpy as np


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
  """Translates each image by up to ``max_shift`` pixels in x and y, zero-filled.

  Digits are centred in their frame; a few pixels of translation is the
  augmentation that keeps them legible (no flips: a flipped 2 is not a 2).

  Args:
    images: [B, H, W] or [B, H, W, C] array.
    max_shift: largest shift in pixels, ≥ 0 (0 returns the input unchanged).
    rng: numpy generator (seed it per step for reproducible batches).

  Returns:
    An array of the same shape and dtype.

  Example:
    >>> x = np.zeros((1, 5, 5)); x[0, 2, 2] = 1
    >>> y = random_shift(x, 2, np.random.default_rng(0))
    >>> y.shape, float(y.sum())
    ((1, 5, 5), 1.0)
  """
  if max_shift < 0:
    raise ValueError(f"random_shift: max_shift must be ≥ 0, got {max_shift}")
  if max_shift == 0:
    return images
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, images.shape[0]))
  return shift_images(images, max_shift, dy, dx)


def shift_images(images: np.ndarray, max_shift: int, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
  """Image i moved by ``(dy[i] − max_shift, dx[i] − max_shift)`` pixels, zero-filled.

  The applying half of :func:`random_shift`, for offsets drawn elsewhere (for a
  whole batch, of which a process applies its own rows).

  Args:
    images: [B, H, W] or [B, H, W, C].
    max_shift: the padding, ≥ 0.
    dy, dx: [B] ints in ``[0, 2·max_shift]``.

  Example:
    >>> x = np.zeros((1, 3, 3)); x[0, 1, 1] = 1
    >>> np.argwhere(shift_images(x, 1, np.array([0]), np.array([2]))[0]).tolist()
    [[2, 0]]
  """
  b, h, w = images.shape[:3]
  pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
  padded = np.pad(images, pad)
  rows = np.asarray(dy)[:, None] + np.arange(h)[None, :]     # [B, H]
  cols = np.asarray(dx)[:, None] + np.arange(w)[None, :]     # [B, W]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors each image left–right with probability ½ (faces, people, birds, cars).

  Args:
    images: [B, H, W, C].
    rng: numpy generator.

  Returns:
    An array of the same shape and dtype.

  Example:
    >>> x = np.arange(4).reshape(1, 1, 4, 1)
    >>> sorted({tuple(random_flip(x, np.random.default_rng(s))[0, 0, :, 0].tolist()) for s in range(8)})
    [(0, 1, 2, 3), (3, 2, 1, 0)]
  """
  return flip_images(images, rng.random(images.shape[0]) < 0.5)


def flip_images(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
  """Image i mirrored left–right where ``flip[i]``: the applying half of :func:`random_flip`.

  Example:
    >>> flip_images(np.arange(4).reshape(2, 1, 2, 1), np.array([True, False]))[:, 0, :, 0].tolist()
    [[1, 0], [2, 3]]
  """
  return np.where(np.asarray(flip)[:, None, None, None], images[:, :, ::-1], images)
