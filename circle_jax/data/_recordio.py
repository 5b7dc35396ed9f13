"""Reader for the RecordIO packs (``train.rec`` + ``train.idx``) of MS1M-style face datasets.

The format, as written by MXNet's ``MXIndexedRecordIO`` and distributed by
insightface, read here without MXNet:

* ``train.idx``: text, one ``<key>\\t<byte offset>`` line per record.
* ``train.rec``: records, each a little-endian uint32 magic ``0xced7230a``, a
  uint32 whose low 29 bits are the payload length and top 3 bits a
  continuation flag (0 whole record; 1 / 2 / 3 first / middle / last part of a
  record that was split where its payload contained the magic number, the
  magic being implied between parts), then the payload padded to 4 bytes.
* payload: an ``IRHeader`` (``<IfQQ``: flag, label, id, id2; 24 bytes), then
  ``flag`` float32 labels if flag > 0, then the encoded image.
* record 0 (insightface packs): flag > 0 and labels ``[a, b]``: images are
  records 1 … a − 1, and records a … b − 1 hold one identity each, with labels
  ``[first, end)`` = the range of that identity's image records.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading

import numpy as np

from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._images import decode_image

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


@dataclasses.dataclass(frozen=True)
class RecordHeader:
  """The IRHeader of one record: ``label`` is a float, or a tuple of floats when flag > 0."""

  flag: int
  label: float | tuple[float, ...]
  id: int
  id2: int


def unpack_record(payload: bytes) -> tuple[RecordHeader, bytes]:
  """A record payload → (header, image bytes).

  Example:
    >>> p = struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"jpeg"
    >>> unpack_record(p)
    (RecordHeader(flag=0, label=3.0, id=7, id2=0), b'jpeg')
  """
  if len(payload) < _HEADER.size:
    raise ValueError(f"unpack_record: payload of {len(payload)} bytes is shorter than the "
                     f"{_HEADER.size}-byte IRHeader")
  flag, label, id1, id2 = _HEADER.unpack_from(payload)
  rest = payload[_HEADER.size:]
  if flag > 0:
    if len(rest) < 4 * flag:
      raise ValueError(f"unpack_record: header says {flag} labels but only {len(rest)} bytes follow")
    label = tuple(float(v) for v in np.frombuffer(rest[:4 * flag], "<f4"))
    rest = rest[4 * flag:]
  return RecordHeader(flag, label, id1, id2), rest


RECORDIO_HOW = ("put the pack's train.rec and train.idx (as distributed for MS1M-ArcFace / "
                "MS1MV2 / Glint360K) in <root> and set config.data.path to <root>")


class RecordIOReader:
  """Random access to an indexed RecordIO pack.

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> rec = struct.pack("<IfQQ", 0, 5.0, 0, 0) + b"img"
    >>> pad = b"\\0" * (-len(rec) % 4)
    >>> _ = open(os.path.join(d, "train.rec"), "wb").write(
    ...     struct.pack("<II", MAGIC, len(rec)) + rec + pad)
    >>> _ = open(os.path.join(d, "train.idx"), "w").write("0\\t0\\n")
    >>> r = RecordIOReader(d)
    >>> r.keys, r.read(0)
    ([0], (RecordHeader(flag=0, label=5.0, id=0, id2=0), b'img'))
  """

  def __init__(self, root: str, name: str = "train"):
    if not root:
      raise DatasetNotFoundError("recordio", "an empty path", RECORDIO_HOW)
    self.rec_path = os.path.join(root, f"{name}.rec")
    self.idx_path = os.path.join(root, f"{name}.idx")
    for path in (self.rec_path, self.idx_path):
      if not os.path.isfile(path):
        raise DatasetNotFoundError("recordio", path, RECORDIO_HOW, "file missing")
    self._offsets = _read_index(self.idx_path)
    self.keys = sorted(self._offsets)
    if not self.keys:
      raise ValueError(f"{self.idx_path}: the index lists no records (an empty pack)")
    self._size = os.path.getsize(self.rec_path)
    for key in (self.keys[0], self.keys[-1]):
      if not 0 <= self._offsets[key] <= self._size - 8:
        raise ValueError(f"{self.idx_path}: record {key} at offset {self._offsets[key]} lies "
                         f"outside {self.rec_path} ({self._size} bytes): the index does not "
                         "belong to this .rec, or the .rec is truncated")
    self._file = None
    self._open_lock = threading.Lock()
    # Packs written by MXNet's im2rec / insightface store each record's key as
    # its header id. Where the records checked here all do, every read checks
    # it too, so an index whose offsets were swapped cannot mislabel images
    # silently; packs written otherwise (ids all 0, say) are read unchecked.
    self.ids_are_keys = False
    spread = np.unique(np.linspace(0, len(self.keys) - 1, min(16, len(self.keys))).astype(int))
    sample = [self.keys[i] for i in spread]
    ids = {key: self.read(key)[0].id for key in sample}
    matches = sum(ids[key] == key for key in sample)
    if matches == len(sample) and any(key != 0 for key in sample):
      self.ids_are_keys = True
    elif len(sample) > matches > len(sample) // 2:  # ids = keys, but not everywhere
      key = next(k for k in sample if ids[k] != k)
      raise ValueError(f"{self.rec_path}: record {key} (offset {self._offsets[key]}) holds "
                       f"the record with id {ids[key]}: the offsets of {self.idx_path} do "
                       "not match this .rec (swapped or from another pack)")

  def __len__(self) -> int:
    return len(self.keys)

  def __getstate__(self):  # picklable for worker processes: reopen the file lazily
    state = dict(self.__dict__)
    state["_file"] = None
    del state["_open_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open_lock = threading.Lock()

  def read_payload(self, key: int) -> bytes:
    """The payload of record ``key``, parts re-joined.

    Reads are positional (``os.pread``): the batch loaders call this from a
    thread pool, and a shared seek-then-read file position would let one
    thread's seek land between another's seek and read.
    """
    if key not in self._offsets:
      raise KeyError(f"RecordIOReader: no record {key} in {self.idx_path}")
    fd = self._fd()
    offset = self._offsets[key]
    where = f"{self.rec_path}: record {key} (offset {self._offsets[key]})"
    parts = []
    while True:
      head = os.pread(fd, 8, offset)
      if len(head) < 8:
        raise ValueError(f"{where}: truncated (the file ends inside its header)")
      magic, word = struct.unpack("<II", head)
      if magic != MAGIC:
        raise ValueError(f"{where}: bad magic {magic:#x} at offset {offset}; the index does "
                         "not point at a record, or this is not a RecordIO file")
      cflag, length = word >> 29, word & _LENGTH_MASK
      if parts and cflag not in (2, 3) or not parts and cflag not in (0, 1):
        raise ValueError(f"{where}: part {len(parts) + 1} has continuation flag {cflag}; "
                         "the record is damaged or the offset points into another record")
      part = os.pread(fd, length, offset + 8)
      if len(part) != length:  # os.pread may return fewer bytes at the end of the file
        raise ValueError(f"{where}: truncated (the header says {length} bytes, the file "
                         f"holds {len(part)})")
      parts.append(part)
      offset += 8 + length + (-length % 4)
      if cflag in (0, 3):
        break
    return struct.pack("<I", MAGIC).join(parts)

  def _fd(self) -> int:
    with self._open_lock:
      if self._file is None:
        self._file = open(self.rec_path, "rb")
      return self._file.fileno()

  def read(self, key: int) -> tuple[RecordHeader, bytes]:
    """Record ``key`` → (header, image bytes)."""
    try:
      header, data = unpack_record(self.read_payload(key))
    except ValueError as e:
      if str(e).startswith(self.rec_path):
        raise
      raise ValueError(f"{self.rec_path}: record {key}: {e}") from None
    if self.ids_are_keys and header.id != key:
      raise ValueError(f"{self.rec_path}: record {key} (offset {self._offsets[key]}) holds "
                       f"the record with id {header.id}: the offsets of {self.idx_path} do "
                       "not match this .rec (swapped or from another pack)")
    return header, data

  def decode(self, key: int, size) -> np.ndarray:
    """Record ``key``'s image, decoded and resized to ``size``; errors name the record."""
    _, data = self.read(key)
    try:
      return decode_image(data, size)
    except ValueError as e:
      raise ValueError(f"{self.rec_path}: record {key}: {e}") from None

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def _read_index(path: str) -> dict[int, int]:
  """The ``<key>\\t<offset>`` lines of a ``.idx`` file; errors name the file and line."""
  offsets = {}
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError:
    raise ValueError(f"{path}: not a RecordIO index (not text: expected '<key>\\t<offset>' "
                     "lines)") from None
  for line_no, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    parts = line.split()
    try:
      if len(parts) != 2:
        raise ValueError
      key, offset = int(parts[0]), int(parts[1])
    except ValueError:
      raise ValueError(f"{path}:{line_no}: expected '<key>\\t<offset>' (two integers), got "
                       f"{line[:80]!r}") from None
    if offset < 0 or key in offsets:
      raise ValueError(f"{path}:{line_no}: " + (f"negative offset {offset}" if offset < 0 else
                                               f"record {key} listed twice"))
    offsets[key] = offset
  return offsets


def face_pack_index(reader: RecordIOReader) -> tuple[np.ndarray, np.ndarray]:
  """The image records of a face pack and their identity labels.

  With an insightface record 0 (flag > 0) the labels come from the identity
  records (no image header is read); otherwise every record is an image and
  its header's (first) label is its identity.

  Returns:
    ``(keys [N] int64, labels [N] int32)``, labels remapped to 0 … C − 1.
  """
  head, _ = reader.read(reader.keys[0])
  if head.flag > 0 and isinstance(head.label, tuple) and len(head.label) >= 2:
    first_id, end_id = int(head.label[0]), int(head.label[1])
    keys, labels = [], []
    for identity, key in enumerate(range(first_id, end_id)):
      ih, _ = reader.read(key)
      start, stop = int(ih.label[0]), int(ih.label[1])
      keys.extend(range(start, stop))
      labels.extend([identity] * (stop - start))
    return np.asarray(keys, np.int64), np.asarray(labels, np.int32)
  keys = np.asarray(reader.keys, np.int64)
  raw = []
  for key in reader.keys:
    h, _ = reader.read(key)
    raw.append(h.label[0] if isinstance(h.label, tuple) else h.label)
  labels = np.unique(np.asarray(raw, np.float64), return_inverse=True)[1]
  return keys, labels.astype(np.int32)
