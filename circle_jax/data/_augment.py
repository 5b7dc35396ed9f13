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
  b, h, w = images.shape[:3]
  pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
  padded = np.pad(images, pad)
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, b))
  rows = dy[:, None] + np.arange(h)[None, :]                # [B, H]
  cols = dx[:, None] + np.arange(w)[None, :]                # [B, W]
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
  flip = rng.random(images.shape[0]) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)
