"""Person re-ID datasets read from the user's unpacked folders: Market-1501 and MSMT17.

Only file names and list files are read here (no image is decoded); images are
loaded per batch by :class:`circle_jax.data.FileImageSource`.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from circle_jax.data._errors import DatasetNotFoundError

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


@dataclasses.dataclass(frozen=True)
class ReidSplit:
  """One side of a re-ID dataset.

  Attributes:
    paths: image file paths.
    pids: [N] int identities as in the dataset (0 = Market-1501 distractor).
    cams: [N] int cameras, 0-based.
  """

  paths: tuple[str, ...]
  pids: np.ndarray
  cams: np.ndarray

  def __len__(self) -> int:
    return len(self.paths)


@dataclasses.dataclass(frozen=True)
class ReidDataset:
  """Train, query and gallery sides; ``train_labels`` are the train pids remapped to 0 … C − 1."""

  name: str
  train: ReidSplit
  query: ReidSplit
  gallery: ReidSplit

  @property
  def train_labels(self) -> np.ndarray:
    return np.unique(self.train.pids, return_inverse=True)[1].astype(np.int32)

  @property
  def num_train_ids(self) -> int:
    return len(np.unique(self.train.pids))


def parse_market1501_name(name: str) -> tuple[int, int]:
  """``"0002_c1s1_000451_03.jpg"`` → (pid 2, camera 0); pid −1 marks junk.

  Example:
    >>> parse_market1501_name("0002_c1s1_000451_03.jpg"), parse_market1501_name("-1_c3s2_0_00.jpg")
    ((2, 0), (-1, 2))
  """
  m = _MARKET_NAME.match(os.path.basename(name))
  if m is None:
    raise ValueError(f"parse_market1501_name: {name!r} is not <pid>_c<camera>…")
  cam = int(m.group(2))
  if cam < 1:
    raise ValueError(f"parse_market1501_name: {name!r}: cameras are numbered from 1")
  return int(m.group(1)), cam - 1


def _market_dir(root: str, folder: str) -> ReidSplit:
  where = os.path.join(root, folder)
  paths, pids, cams = [], [], []
  for fname in sorted(os.listdir(where)):
    if not fname.lower().endswith(_IMAGE_EXTENSIONS):
      continue  # Thumbs.db and the like
    pid, cam = parse_market1501_name(fname)
    if pid == -1:  # junk detections: in no split, per the protocol
      continue
    paths.append(os.path.join(where, fname))
    pids.append(pid)
    cams.append(cam)
  return ReidSplit(tuple(paths), np.asarray(pids, np.int64), np.asarray(cams, np.int64))


MARKET1501_HOW = ("unpack Market-1501-v15.09.15.zip so that <root> holds the folders "
                  "bounding_box_train/, query/ and bounding_box_test/, and set config.data.path "
                  "to <root>")


def load_market1501(root: str) -> ReidDataset:
  """Market-1501 from ``root/{bounding_box_train, query, bounding_box_test}``.

  pid −1 (junk) is dropped everywhere; pid 0 (distractors) is kept in the
  gallery as negatives. Full dataset: 12,936 train images of 751 ids, 3,368
  queries, 15,913 gallery images.

  Args:
    root: the unpacked dataset folder.

  Returns:
    A :class:`ReidDataset`.

  Raises:
    DatasetNotFoundError: a folder is missing (the message says how to prepare it).
    ValueError: a folder holds no usable image (the message names it).
  """
  if not root:
    raise DatasetNotFoundError("market1501", "an empty path", MARKET1501_HOW)
  for folder in ("bounding_box_train", "query", "bounding_box_test"):
    if not os.path.isdir(os.path.join(root, folder)):
      raise DatasetNotFoundError("market1501", os.path.join(root, folder), MARKET1501_HOW,
                                 "folder missing")
  return _checked(ReidDataset("market1501", _market_dir(root, "bounding_box_train"),
                              _market_dir(root, "query"), _market_dir(root, "bounding_box_test")),
                  {"train": os.path.join(root, "bounding_box_train"),
                   "query": os.path.join(root, "query"),
                   "gallery": os.path.join(root, "bounding_box_test")})


def _checked(dataset: "ReidDataset", where: dict) -> "ReidDataset":
  """The dataset, if each of its splits has an image (its source is named otherwise)."""
  for role, split in (("train", dataset.train), ("query", dataset.query),
                      ("gallery", dataset.gallery)):
    if not len(split):
      raise ValueError(f"{where[role]}: no {role} images (an empty or junk-only folder or "
                       "list); check that the dataset was unpacked completely")
  return dataset


MSMT17_HOW = ("unpack MSMT17_V1 (or V2) so that <root> holds list_train.txt, list_val.txt, "
              "list_query.txt, list_gallery.txt and the image folders train/ and test/ "
              "(V2: mask_train_v2/ and mask_test_v2/), and set config.data.path to <root>")


def _msmt_list(root: str, image_dir: str, list_name: str) -> ReidSplit:
  list_path = os.path.join(root, list_name)
  paths, pids, cams = [], [], []
  with open(list_path) as f:
    for line_no, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      parts = line.split()
      if len(parts) != 2:
        raise ValueError(f"{list_path}:{line_no}: expected '<path> <pid>', got {line!r}")
      rel, pid = parts[0], int(parts[1])
      # File names are <pid>_<index>_<camera 1-15>_<date><time>_<…>.jpg.
      fields = os.path.basename(rel).split("_")
      if len(fields) < 3 or not fields[2].isdigit():
        raise ValueError(f"{list_path}:{line_no}: cannot read the camera from {rel!r}")
      paths.append(os.path.join(root, image_dir, rel))
      pids.append(pid)
      cams.append(int(fields[2]) - 1)
  return ReidSplit(tuple(paths), np.asarray(pids, np.int64), np.asarray(cams, np.int64))


def load_msmt17(root: str, *, include_val: bool = True) -> ReidDataset:
  """MSMT17 from its list files (``"<relative path> <pid>"`` per line).

  The camera is the third ``_`` field of the file name, minus one (15
  cameras). Full dataset: 32,621 train + val images of 1,041 ids, 11,659
  queries, 82,161 gallery images (3,060 test ids).

  Args:
    root: the unpacked dataset folder.
    include_val: train on list_train + list_val (the usual protocol).

  Returns:
    A :class:`ReidDataset`.

  Raises:
    DatasetNotFoundError: a list file or image folder is missing.
  """
  if not root:
    raise DatasetNotFoundError("msmt17", "an empty path", MSMT17_HOW)
  lists = ["list_train.txt", "list_query.txt", "list_gallery.txt"]
  if include_val:
    lists.append("list_val.txt")
  for name in lists:
    if not os.path.isfile(os.path.join(root, name)):
      raise DatasetNotFoundError("msmt17", os.path.join(root, name), MSMT17_HOW, "list file missing")
  dirs = {}
  for role, candidates in (("train", ("train", "mask_train_v2")), ("test", ("test", "mask_test_v2"))):
    found = [c for c in candidates if os.path.isdir(os.path.join(root, c))]
    if not found:
      raise DatasetNotFoundError("msmt17", os.path.join(root, candidates[0]), MSMT17_HOW,
                                 "image folder missing")
    dirs[role] = found[0]
  train = _msmt_list(root, dirs["train"], "list_train.txt")
  if include_val:
    val = _msmt_list(root, dirs["train"], "list_val.txt")
    train = ReidSplit(train.paths + val.paths, np.concatenate([train.pids, val.pids]),
                      np.concatenate([train.cams, val.cams]))
  return _checked(ReidDataset("msmt17", train, _msmt_list(root, dirs["test"], "list_query.txt"),
                              _msmt_list(root, dirs["test"], "list_gallery.txt")),
                  {"train": os.path.join(root, "list_train.txt"),
                   "query": os.path.join(root, "list_query.txt"),
                   "gallery": os.path.join(root, "list_gallery.txt")})
