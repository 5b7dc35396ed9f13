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


def open_image(data: bytes):
  """Encoded image bytes (JPEG, PNG, …) → an RGB ``PIL.Image``, its pixels decoded on first use.

  Its size is known before any pixel is decoded, so a crop can be chosen before
  decoding (:func:`resize_region`).

  Raises:
    ValueError: bytes that are not a readable image.

  Example:
    >>> open_image(encode_image(np.zeros((4, 6, 3), np.uint8), "PNG")).size  # (width, height)
    (6, 4)
  """
  image_mod = _pil()
  try:
    img = image_mod.open(io.BytesIO(data))
    if img.mode != "RGB":
      img = img.convert("RGB")
  except Exception as e:  # Pillow raises several types for corrupt data
    raise ValueError(f"decode_image: not a readable image ({len(data)} bytes): {e}") from None
  return img


def resize_region(img, size: Sequence[int], box: Sequence[float] | None = None) -> np.ndarray:
  """The region ``box`` of a PIL image, resized (bilinear) to ``size``: uint8 [h, w, 3].

  Args:
    img: a ``PIL.Image`` (:func:`open_image`).
    size: ``(height, width)`` of the result.
    box: ``(top, left, bottom, right)``, integer pixels of ``img`` (None: the
      whole image); no pixel outside it contributes to the result.

  Raises:
    ValueError: a box outside the image or empty, or pixels that do not decode.

  Example:
    >>> img = open_image(encode_image(np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "PNG"))
    >>> resize_region(img, (1, 2), box=(1, 2, 2, 4))[0, :, 0].tolist()  # pixels (1, 2), (1, 3)
    [18, 21]
  """
  h, w = int(size[0]), int(size[1])
  if box is None:
    box = (0, 0, img.height, img.width)
  top, left, bottom, right = box
  if not (0 <= top < bottom <= img.height and 0 <= left < right <= img.width):
    raise ValueError(f"resize_region: box (top, left, bottom, right) = {tuple(box)} is not inside "
                     f"the {img.height}×{img.width} image")
  try:
    if (top, left, bottom, right) != (0, 0, img.height, img.width):
      # Cropped first: resize(box=…) would let the filter read pixels outside the box.
      img = img.crop((left, top, right, bottom))
    if (h, w) != (img.height, img.width):
      img = img.resize((w, h), _pil().BILINEAR)
    return np.asarray(img, np.uint8)
  except Exception as e:  # pylint: disable=broad-except  (truncated or damaged pixel data)
    raise ValueError(f"decode_image: not a readable image (its pixels): {e}") from None


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
  img = open_image(data)
  return resize_region(img, (img.height, img.width) if size is None else size)


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
