"""Omniglot, read in place from its zips: the "minimal" background splits and Lake's one-shot runs.

Three zips ship inside ``circle_jax.data`` (``bundled/omniglot/README.md``:
provenance, checksums, MIT licence): ``images_background_small1.zip`` and
``images_background_small2.zip`` (5 alphabets each, 20 drawers of every
character) and ``all_runs.zip`` (20 within-alphabet one-shot runs on alphabets
that neither background split has). Nothing is unpacked: a
:class:`ZipImageSource` decodes the PNG members a batch asks for (Pillow),
inverted so ink is bright on a black ground as in MNIST, and resized.

Every member is opened and decoded once when a set is loaded, so a damaged or
wrong zip raises :class:`~circle_jax.data.DatasetError` naming the file and
the member before any training step.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import os
import re
import zipfile
import zlib
from typing import Sequence

import numpy as np

from circle_jax.data._errors import DatasetError
from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._sources import ImageSource

#: The background splits by name, and the zip holding each (and the runs).
FILES = {"small1": "images_background_small1.zip", "small2": "images_background_small2.zip",
         "runs": "all_runs.zip"}
_MEMBER = re.compile(r"^images_background_(small[12])/([^/]+)/(character\d\d)/(\d+)_(\d\d)\.png$")
_RUN_LINE = re.compile(r"^(run\d\d)/test/(item\d\d)\.png\s+(run\d\d)/training/class(\d\d)\.png$")


def omniglot_path(name: str, folder: str | os.PathLike | None = None) -> str:
  """Path of an Omniglot zip: ``name`` is ``"small1"``, ``"small2"`` or ``"runs"``.

  Args:
    name: a key of ``FILES``.
    folder: a folder holding the zips under their original names; ``None`` or
      ``""`` for the copies bundled with the package.

  Raises:
    ValueError: an unknown name. DatasetNotFoundError: no such file.

  Example:
    >>> os.path.basename(omniglot_path("runs"))
    'all_runs.zip'
  """
  if name not in FILES:
    raise ValueError(f"omniglot_path: unknown file {name!r}; known: {', '.join(FILES)}")
  if folder:
    path = os.path.join(os.fspath(folder), FILES[name])
  else:
    path = str(importlib.resources.files("circle_jax.data").joinpath("bundled", "omniglot",
                                                                     FILES[name]))
  if not os.path.isfile(path):
    raise DatasetNotFoundError("omniglot", path, "put the Omniglot zips "
                               f"({', '.join(FILES.values())}) in that folder, or leave "
                               "config.data.path empty for the bundled copies")
  return path


def _decode_member(data: bytes, size: tuple[int, int] | None) -> np.ndarray:
  """PNG bytes → uint8 [H, W] with ink 255 on 0, resized (bilinear, antialiased) to ``size``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.open(io.BytesIO(data))
  img = Image.eval(img.convert("L"), lambda v: 255 - v)  # ink (black) → 255
  if size is not None and img.size != (size[1], size[0]):
    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
  return np.asarray(img, np.uint8)


class ZipImageSource(ImageSource):
  """PNG members of a zip, decoded per read: uint8 [H, W, 1], ink 255 on a black ground.

  Picklable (grain workers open the zip again in their own process). The zip
  is checked whole when the source is made: every member read (CRC) and
  decoded, so a damaged one fails then, with the file and the member named.

  Args:
    path: the zip file.
    members: the member names, one per item.
    labels: [N] int labels.
    size: (H, W) to resize to; ``None`` keeps each image's size (105×105).

  Example:
    >>> src = load_one_shot_runs().source
    >>> src.images([0, 1]).shape, src.image(0).dtype
    ((2, 28, 28, 1), dtype('uint8'))
  """

  def __init__(self, path: str, members: Sequence[str], labels, size: Sequence[int] | None):
    self.path = os.fspath(path)
    self.members = tuple(members)
    self.labels = np.asarray(labels, np.int32)
    if len(self.members) != len(self.labels):
      raise ValueError(f"ZipImageSource: {len(self.members)} members but {len(self.labels)} labels")
    self.native = None if size is None else (int(size[0]), int(size[1]))
    self._zip = None
    self._pid = None
    first = self.ink(0) if self.members else np.zeros((0, 0), bool)
    self.size = self.native or first.shape

  def __getstate__(self):
    return {**self.__dict__, "_zip": None, "_pid": None}

  def _file(self) -> zipfile.ZipFile:
    if self._zip is None or self._pid != os.getpid():
      self._zip, self._pid = _open_zip(self.path), os.getpid()
    return self._zip

  def _read(self, i: int, size) -> np.ndarray:
    member = self.members[i]
    try:
      return _decode_member(self._file().read(member), size)
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, ValueError) as e:
      raise DatasetError(f"{self.path}: member {member}: {e}") from None

  def image(self, i: int) -> np.ndarray:
    return self._read(int(i), self.native)[..., None]

  def ink(self, i: int) -> np.ndarray:
    """bool [h, w] of item ``i`` at the file's own size: True where the drawing has ink."""
    return self._read(int(i), None) > 127

  def check(self) -> None:
    """Reads and decodes every member; raises DatasetError naming the first that fails."""
    for i in range(len(self.members)):
      self._read(i, (2, 2))

  def all_ink(self, native: bool = True) -> np.ndarray:
    """bool [N, h, w]: the ink of every item (the drawings' points, for the MHD baseline).

    ``native``: at the files' own size (:meth:`ink`); else at ``size``, the
    resized images above half intensity.
    """
    if native:
      return np.stack([self.ink(i) for i in range(len(self))])
    return self.images(np.arange(len(self)))[..., 0] > 127


def _open_zip(path: str) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(path)
  except FileNotFoundError:
    raise DatasetNotFoundError("omniglot", path, "see circle_jax/data/bundled/omniglot/README.md")
  except (zipfile.BadZipFile, OSError) as e:
    raise DatasetError(f"{path}: not a readable zip file: {e}") from None


@dataclasses.dataclass(frozen=True)
class OmniglotSet:
  """Images of some Omniglot alphabets: labels are characters, alphabets are metadata.

  Attributes:
    source: the images (:class:`ZipImageSource`); ``source.labels`` [N] are
      character indices 0 … C − 1 into ``characters``.
    characters: ``"<alphabet>/characterNN"`` of each label.
    character_ids: [C] the number that prefixes the character's file names (the
      same drawings carry the same number in both splits).
    alphabet_names: the alphabets, sorted.
    alphabets: [N] index into ``alphabet_names`` of each image.
    drawers: [N] the drawer (1 … 20) of each image.
  """

  source: ZipImageSource
  characters: tuple[str, ...]
  character_ids: np.ndarray
  alphabet_names: tuple[str, ...]
  alphabets: np.ndarray
  drawers: np.ndarray

  @property
  def labels(self) -> np.ndarray:
    return self.source.labels

  @property
  def num_classes(self) -> int:
    return len(self.characters)

  def __len__(self) -> int:
    return len(self.source)


def load_omniglot_background(split: str = "small1", folder: str | os.PathLike | None = None, *,
                             size: Sequence[int] | None = (28, 28),
                             alphabets: Sequence[str] | None = None) -> OmniglotSet:
  """One of the "minimal" background splits, read in place from its zip.

  Args:
    split: ``"small1"`` or ``"small2"``.
    folder: a folder with the zips (``None``: the bundled copies).
    size: (H, W) of the images; ``None`` keeps 105×105.
    alphabets: keep only these alphabets (``None``: all five).

  Returns:
    An :class:`OmniglotSet`, images in the zip's order (alphabet, character,
    drawer), characters labelled 0 … C − 1 in that order.

  Raises:
    DatasetNotFoundError: no zip. DatasetError: a damaged zip or member, or
      members not laid out as ``images_background_smallK/<alphabet>/characterNN/<id>_<drawer>.png``
      (the message names the file and member). ValueError: unknown split or alphabet.

  Example:
    >>> s = load_omniglot_background("small1")
    >>> len(s), s.num_classes, s.alphabet_names[:2]
    (2720, 136, ('Balinese', 'Early_Aramaic'))
  """
  if split not in ("small1", "small2"):
    raise ValueError(f"load_omniglot_background: split must be 'small1' or 'small2', got {split!r}")
  path = omniglot_path(split, folder)
  rows = []
  with _open_zip(path) as archive:
    listing = archive.namelist()
  for name in sorted(listing):
    if name.endswith("/"):
      continue
    m = _MEMBER.match(name)
    if m is None or m.group(1) != split:
      raise DatasetError(f"{path}: member {name}: not images_background_{split}/<alphabet>/"
                         "characterNN/<id>_<drawer>.png (is this the right zip?)")
    rows.append((m.group(2), m.group(3), int(m.group(4)), int(m.group(5)), name))
  if not rows:
    raise DatasetError(f"{path}: no images")
  names = sorted({r[0] for r in rows})
  if alphabets is not None:
    unknown = sorted(set(alphabets) - set(names))
    if unknown:
      raise ValueError(f"load_omniglot_background: {split} has no alphabet(s) {unknown}; "
                       f"it has {names}")
    names = sorted(set(alphabets))
    rows = [r for r in rows if r[0] in names]
  characters = sorted({f"{r[0]}/{r[1]}" for r in rows})
  index = {c: i for i, c in enumerate(characters)}
  ids = {}
  for alphabet, char, cid, _, name in rows:
    if ids.setdefault(f"{alphabet}/{char}", cid) != cid:
      raise DatasetError(f"{path}: member {name}: character {alphabet}/{char} has files of "
                         f"two ids ({ids[f'{alphabet}/{char}']} and {cid})")
  source = ZipImageSource(path, [r[4] for r in rows], [index[f"{r[0]}/{r[1]}"] for r in rows],
                          size)
  source.check()
  return OmniglotSet(
      source=source, characters=tuple(characters),
      character_ids=np.array([ids[c] for c in characters], np.int64),
      alphabet_names=tuple(names),
      alphabets=np.array([names.index(r[0]) for r in rows], np.int32),
      drawers=np.array([r[3] for r in rows], np.int32))


def unseen_alphabets(train: str) -> tuple[str, ...]:
  """The alphabets of the other background split that ``train`` lacks: the class-disjoint test set.

  Example:
    >>> unseen_alphabets("small1")
    ('Japanese_(katakana)', 'Sanskrit', 'Tagalog')
    >>> unseen_alphabets("small2")
    ('Balinese', 'Early_Aramaic', 'Korean')
  """
  other = {"small1": "small2", "small2": "small1"}.get(train)
  if other is None:
    raise ValueError(f"unseen_alphabets: train must be 'small1' or 'small2', got {train!r}")
  return tuple(sorted(set(_alphabets(other)) - set(_alphabets(train))))


def _alphabets(split: str) -> tuple[str, ...]:
  return {"small1": ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"),
          "small2": ("Greek", "Japanese_(katakana)", "Latin", "Sanskrit", "Tagalog")}[split]


@dataclasses.dataclass(frozen=True)
class OneShotRuns:
  """Lake et al.'s 20 within-alphabet one-shot runs: 20 support and 20 query images each.

  Attributes:
    source: all 800 images (:class:`ZipImageSource`), run by run: the 20
      training images ``class01 … class20`` (the support, one per class), then
      the 20 test items ``item01 … item20``. ``source.labels`` [800] is the
      class (0 … 19) within the run: a test item's is the class of the
      training image that ``class_labels.txt`` pairs it with.
    runs: [800] the run (0 … 19) of each image.
    support: [800] bool: True for the training (support) images.
  """

  source: ZipImageSource
  runs: np.ndarray
  support: np.ndarray

  @property
  def num_runs(self) -> int:
    return int(self.runs.max()) + 1 if len(self.runs) else 0


def load_one_shot_runs(folder: str | os.PathLike | None = None, *,
                       size: Sequence[int] | None = (28, 28)) -> OneShotRuns:
  """The 20 one-shot runs of ``all_runs.zip``, with each test item's class from ``class_labels.txt``.

  Raises:
    DatasetNotFoundError: no zip. DatasetError: a damaged zip or member, a
      ``class_labels.txt`` that does not pair each test item with one training
      image of its run, or a run that is not 20 + 20 images (the message names
      the file and member).

  Example:
    >>> r = load_one_shot_runs()
    >>> len(r.source), r.num_runs, int(r.support.sum())
    (800, 20, 400)
  """
  path = omniglot_path("runs", folder)
  with _open_zip(path) as archive:
    return _read_runs(path, archive, size)


def _read_runs(path: str, archive: zipfile.ZipFile, size) -> OneShotRuns:
  names = set(archive.namelist())
  run_names = sorted({n.split("/")[0] for n in names if re.match(r"^run\d\d/", n)})
  if not run_names:
    raise DatasetError(f"{path}: no runNN/ folders (is this all_runs.zip?)")
  members, labels, runs, support = [], [], [], []
  for r, run in enumerate(run_names):
    listing = f"{run}/class_labels.txt"
    try:
      text = archive.read(listing).decode("utf-8")
    except KeyError:
      raise DatasetError(f"{path}: member {listing} is missing") from None
    except (zipfile.BadZipFile, zlib.error, UnicodeDecodeError, OSError) as e:
      raise DatasetError(f"{path}: member {listing}: {e}") from None
    pairs = {}
    for line_no, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      m = _RUN_LINE.match(line.strip())
      if m is None or m.group(1) != run or m.group(3) != run:
        raise DatasetError(f"{path}: member {listing}, line {line_no}: expected "
                           f"'{run}/test/itemNN.png {run}/training/classNN.png', got {line!r}")
      pairs[m.group(2)] = int(m.group(4)) - 1
    training = sorted(n for n in names if re.match(rf"^{run}/training/class\d\d\.png$", n))
    test = sorted(n for n in names if re.match(rf"^{run}/test/item\d\d\.png$", n))
    expected = [f"{run}/training/class{c:02d}.png" for c in range(1, 21)]
    if training != expected or len(test) != 20:
      raise DatasetError(f"{path}: {run} has {len(training)} training and {len(test)} test images; "
                         "a run is class01 … class20 and item01 … item20")
    items = [n.split("/")[-1][:-4] for n in test]
    if sorted(pairs) != items:
      raise DatasetError(f"{path}: member {listing} pairs items {sorted(pairs)}, the run's test "
                         f"images are {items}")
    members += training + test
    labels += list(range(20)) + [pairs[i] for i in items]
    runs += [r] * 40
    support += [True] * 20 + [False] * 20
  source = ZipImageSource(path, members, labels, size)
  source.check()
  return OneShotRuns(source=source, runs=np.array(runs, np.int32),
                     support=np.array(support, bool))
