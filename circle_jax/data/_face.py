"""Face recognition data: identity-per-folder trees and the ``.bin`` verification sets."""

from __future__ import annotations

import os
import pickle

import numpy as np

from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._images import decode_image

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

FOLDER_HOW = ("arrange aligned face crops as <root>/<identity>/<image>.jpg (one folder per "
              "identity) and set config.data.path to <root>")
BIN_HOW = ("put the verification files (lfw.bin, cfp_fp.bin, agedb_30.bin, as shipped with the "
           "insightface training packs) in the folder given by config.data.val_path")


def load_identity_folders(root: str) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
  """Image paths and labels of ``root/<identity>/<image>``, identities in sorted order.

  Args:
    root: the folder of identity folders.

  Returns:
    ``(paths, labels [N] int32, identities)``; label i is ``identities[i]``.

  Raises:
    DatasetNotFoundError: no such folder, or no image in it.
  """
  if not root or not os.path.isdir(root):
    raise DatasetNotFoundError("face_folders", root or "an empty path", FOLDER_HOW, "folder missing")
  paths, labels, names = [], [], []
  for name in sorted(os.listdir(root)):
    sub = os.path.join(root, name)
    if not os.path.isdir(sub):
      continue
    files = sorted(f for f in os.listdir(sub) if f.lower().endswith(_IMAGE_EXTENSIONS))
    if not files:
      continue
    label = len(names)
    names.append(name)
    paths.extend(os.path.join(sub, f) for f in files)
    labels.extend([label] * len(files))
  if not paths:
    raise DatasetNotFoundError("face_folders", root, FOLDER_HOW, "no identity folder with images")
  return tuple(paths), np.asarray(labels, np.int32), tuple(names)


def read_verification_bin(path: str) -> tuple[list[bytes], np.ndarray]:
  """A verification ``.bin``: a pickle of (encoded images, is-same flags), two images per pair.

  Args:
    path: e.g. ``…/lfw.bin``.

  Returns:
    ``(images, issame)``: 2N encoded images (pair i is images 2i, 2i + 1) and
    [N] bools.

  Raises:
    DatasetNotFoundError: no file. ValueError: not the expected structure.
  """
  if not os.path.isfile(path):
    raise DatasetNotFoundError(os.path.basename(path), path, BIN_HOW, "file missing")
  with open(path, "rb") as f:
    try:
      # The files were pickled by Python 2: byte strings need encoding="bytes".
      obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # pylint: disable=broad-except  (UnpicklingError, EOFError, …)
      raise ValueError(f"{path}: not a pickled verification set ({type(e).__name__}: "
                       f"{str(e)[:120]})") from None
  if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
    raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(obj).__name__}")
  images, issame = obj
  images = [bytes(np.asarray(b, np.uint8).tobytes()) if isinstance(b, np.ndarray) else bytes(b)
            for b in images]
  issame = np.asarray(issame, bool).reshape(-1)
  if len(images) != 2 * len(issame):
    raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs (need 2 per pair)")
  if not len(issame):
    raise ValueError(f"{path}: no pairs")
  return images, issame


def load_verification_bin(path: str, size=(112, 112)) -> tuple[np.ndarray, np.ndarray]:
  """:func:`read_verification_bin`, decoded: uint8 [2N, H, W, 3] images and [N] bools."""
  images, issame = read_verification_bin(path)
  return np.stack([decode_image(b, size) for b in images]), issame
