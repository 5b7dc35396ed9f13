"""IJB-B / IJB-C 1:1 verification meta files (template ↔ media ↔ image, template pairs)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from circle_jax.data._errors import DatasetNotFoundError

IJB_HOW = ("put the IJB-C release's meta files (ijbc_face_tid_mid.txt, "
           "ijbc_template_pair_label.txt) in <root>/meta/ and the face crops, aligned to the "
           "model's input, in <root>/<image_dir>/; set config.data.ijb_path to <root>")


@dataclasses.dataclass(frozen=True)
class IjbProtocol:
  """Images with their template and media ids, and the labelled template pairs."""

  image_paths: tuple[str, ...]
  template_ids: np.ndarray   # [N] int64
  media_ids: np.ndarray      # [N] int64
  pairs_a: np.ndarray        # [P] int64
  pairs_b: np.ndarray        # [P] int64
  issame: np.ndarray         # [P] bool


def _rows(path: str, ncols: int) -> list[list[str]]:
  rows = []
  with open(path) as f:
    for line_no, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) < ncols:
        raise ValueError(f"{path}:{line_no}: expected {ncols} columns, got {line.strip()!r}")
      rows.append(parts[:ncols])
  return rows


def load_ijb(root: str, name: str = "ijbc", image_dir: str = "loose_crop") -> IjbProtocol:
  """Reads ``<root>/meta/<name>_face_tid_mid.txt`` (``image template media``) and
  ``<root>/meta/<name>_template_pair_label.txt`` (``template template 0/1``).

  Args:
    root: the dataset folder.
    name: ``"ijbc"`` or ``"ijbb"`` (the meta files' prefix).
    image_dir: the folder under ``root`` holding the face images.

  Returns:
    An :class:`IjbProtocol`.

  Raises:
    DatasetNotFoundError: a meta file or the image folder is missing.
  """
  faces = os.path.join(root, "meta", f"{name}_face_tid_mid.txt")
  pairs = os.path.join(root, "meta", f"{name}_template_pair_label.txt")
  images = os.path.join(root, image_dir)
  for path in (faces, pairs, images):
    if not os.path.exists(path):
      raise DatasetNotFoundError(name, path, IJB_HOW, "missing")
  face_rows = _rows(faces, 3)
  pair_rows = _rows(pairs, 3)
  return IjbProtocol(
      image_paths=tuple(os.path.join(images, r[0]) for r in face_rows),
      template_ids=np.asarray([int(r[1]) for r in face_rows], np.int64),
      media_ids=np.asarray([int(r[2]) for r in face_rows], np.int64),
      pairs_a=np.asarray([int(r[0]) for r in pair_rows], np.int64),
      pairs_b=np.asarray([int(r[1]) for r in pair_rows], np.int64),
      issame=np.asarray([int(r[2]) for r in pair_rows], np.int64) == 1,
  )
