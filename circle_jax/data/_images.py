"""Image decoding and resizing on the host (Pillow, imported when first needed)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def _pil():
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - Pillow is in requirements.txt
    raise ImportError("reading image files needs Pillow: pip install pillow") from e
  return Image


def decode_image(data: bytes, size: Sequence[int] | None = None) -> np.ndarray:
  """Encoded image bytes (JPEG, PNG, …) → uint8 RGB array, optionally resized.

  Args:
    data: the encoded file contents.
    size: ``(height, width)`` to resize to (bilinear), or None to keep the size.

  Returns:
    [H, W, 3] uint8.

  Raises:
    ValueError: bytes that are not a readable image.

  Example:
    >>> png = encode_image(np.full((4, 6, 3), 200, np.uint8), "PNG")
    >>> decode_image(png).shape, decode_image(png, (2, 3)).shape
    ((4, 6, 3), (2, 3, 3))
  """
  image_mod = _pil()
  try:
    img = image_mod.open(io.BytesIO(data))
    img = img.convert("RGB")
  except Exception as e:  # Pillow raises several types for corrupt data
    raise ValueError(f"decode_image: not a readable image ({len(data)} bytes): {e}") from None
  if size is not None:
    h, w = int(size[0]), int(size[1])
    if (img.height, img.width) != (h, w):
      img = img.resize((w, h), image_mod.BILINEAR)
  return np.asarray(img, np.uint8)


def encode_image(image: np.ndarray, fmt: str = "JPEG", quality: int = 95) -> bytes:
  """uint8 [H, W, 3] → encoded bytes (for writing test data and packs).

  Example:
    >>> len(encode_image(np.zeros((8, 8, 3), np.uint8), "PNG")) > 0
    True
  """
  buf = io.BytesIO()
  kwargs = {"quality": quality} if fmt.upper() == "JPEG" else {}
  _pil().fromarray(np.asarray(image, np.uint8)).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def load_image(path: str, size: Sequence[int] | None = None) -> np.ndarray:
  """An image file → uint8 [H, W, 3] (resized to ``size`` = (height, width) if given)."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return decode_image(data, size)
  except ValueError as e:
    raise ValueError(f"load_image: {path}: {e}") from None
