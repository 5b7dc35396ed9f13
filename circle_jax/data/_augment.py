"""Augmentation on the host: shifts, flips, rotations and scaling of decoded batches; crop
geometry for photos.

The crop functions only choose boxes (numpy); ``circle_jax.data._images``
decodes and resizes the chosen region with Pillow.
"""

from __future__ import annotations

import math

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


def affine_images(images: np.ndarray, angles: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """Image i rotated by ``angles[i]`` radians and scaled by ``scales[i]`` about its centre.

  Each output pixel samples the input at the inverse-mapped point, bilinearly;
  points outside the image read 0 (drawings are ink on a black ground, so the
  ground stays black).

  Args:
    images: [B, H, W] or [B, H, W, C], any real dtype (the result keeps it;
      integer images are rounded).
    angles: [B] radians, counter-clockwise.
    scales: [B] factors > 0 (> 1 enlarges).

  Example:
    >>> x = np.zeros((1, 5, 5)); x[0, 2, 4] = 1.0
    >>> np.argwhere(affine_images(x, np.array([np.pi / 2]), np.array([1.0]))[0] > 0.5).tolist()
    [[0, 2]]
  """
  b, h, w = images.shape[:3]
  x = images.reshape(b, h, w, -1).astype(np.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")   # [H, W]
  cos = (np.cos(angles) / scales)[:, None, None]
  sin = (np.sin(angles) / scales)[:, None, None]
  # Inverse map: rotate the output point by −angle and shrink it by the scale.
  # (Rows grow downwards, so a counter-clockwise turn on screen negates sin.)
  src_y = cos * yy[None] + sin * xx[None] + cy
  src_x = -sin * yy[None] + cos * xx[None] + cx
  y0, x0 = np.floor(src_y).astype(np.int64), np.floor(src_x).astype(np.int64)
  fy, fx = (src_y - y0)[..., None], (src_x - x0)[..., None]
  batch = np.arange(b)[:, None, None]

  def tap(r, c):
    inside = ((r >= 0) & (r < h) & (c >= 0) & (c < w))[..., None]
    return np.where(inside, x[batch, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)], 0.0)

  out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
         + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
  if np.issubdtype(images.dtype, np.integer):
    info = np.iinfo(images.dtype)
    out = np.clip(np.rint(out), info.min, info.max)
  return out.astype(images.dtype).reshape(images.shape)


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


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, *,
                            area_range=(0.16, 1.0), aspect_range=(3 / 4, 4 / 3),
                            attempts: int = 10) -> tuple[int, int, int, int]:
  """A random box of an image: the crop of a random-resized-crop augmentation.

  Up to ``attempts`` times, draws an area (a uniform fraction in
  ``area_range`` of the image's) and an aspect ratio width / height
  (log-uniform in ``aspect_range``, so portrait and landscape are equally
  likely) and keeps the first box of that shape that fits, at a uniform
  position; if none fits, the whole image.

  Args:
    height, width: the image size in pixels (≥ 1).
    rng: the generator (one per image and step, for reproducible crops).
    area_range: (min, max) fraction of the image area.
    aspect_range: (min, max) width / height.
    attempts: draws before falling back to the whole image.

  Returns:
    ``(top, left, bottom, right)`` in pixels, ``0 ≤ top < bottom ≤ height``
    and ``0 ≤ left < right ≤ width``.

  Example:
    >>> top, left, bottom, right = random_resized_crop_box(100, 80, np.random.default_rng(0))
    >>> 0 <= top < bottom <= 100 and 0 <= left < right <= 80
    True
    >>> (top, left, bottom, right) == random_resized_crop_box(100, 80, np.random.default_rng(0))
    True
    >>> random_resized_crop_box(1, 1, np.random.default_rng(0))
    (0, 0, 1, 1)
  """
  if height < 1 or width < 1:
    raise ValueError(f"random_resized_crop_box: empty image {height}×{width}")
  if not 0 < area_range[0] <= area_range[1] <= 1:
    raise ValueError(f"random_resized_crop_box: area_range must satisfy 0 < min ≤ max ≤ 1, got "
                     f"{tuple(area_range)}")
  log_aspect = (math.log(aspect_range[0]), math.log(aspect_range[1]))
  for _ in range(attempts):
    area = height * width * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(*log_aspect))
    h = int(round(math.sqrt(area / aspect)))
    w = int(round(math.sqrt(area * aspect)))
    if 0 < h <= height and 0 < w <= width:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, top + h, left + w
  return 0, 0, height, width


def bbox_pixels(bbox, height: int, width: int) -> tuple[int, int, int, int]:
  """A normalised box ``[ymin, xmin, ymax, xmax]`` (TFDS's BBoxFeature) → pixels of an image.

  The pixel box covers the normalised one (floor of the minima, ceiling of the
  maxima), at least one pixel, inside the image.

  Returns:
    ``(top, left, bottom, right)``.

  Example:
    >>> bbox_pixels([0.25, 0.5, 0.5, 0.84], 40, 60)
    (10, 30, 20, 51)
  """
  ymin, xmin, ymax, xmax = (float(v) for v in bbox)
  top = min(max(int(math.floor(ymin * height)), 0), height - 1)
  left = min(max(int(math.floor(xmin * width)), 0), width - 1)
  bottom = min(max(int(math.ceil(ymax * height)), top + 1), height)
  right = min(max(int(math.ceil(xmax * width)), left + 1), width)
  return top, left, bottom, right


def centre_crop_geometry(height: int, width: int, size: int,
                         resize_ratio: float) -> tuple[tuple[int, int], tuple[int, int]]:
  """The evaluation view: shorter side resized to ``size · resize_ratio``, then the centre square.

  Args:
    height, width: the image (or box) size.
    size: S, the side of the square.
    resize_ratio: the shorter side before the crop, as a multiple of S (256 /
      224 is the usual ImageNet view).

  Returns:
    ``((H', W'), (top, left))``: the resized size (each side rounded, at least
    S) and the top-left corner of the S×S crop in it.

  Example:
    >>> centre_crop_geometry(300, 400, 224, 256 / 224)
    ((256, 341), (16, 58))
  """
  scale = size * resize_ratio / min(height, width)
  h = max(int(round(height * scale)), size)
  w = max(int(round(width * scale)), size)
  return (h, w), ((h - size) // 2, (w - size) // 2)
