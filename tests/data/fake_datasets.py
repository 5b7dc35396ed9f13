"""Writers of small synthetic datasets in the on-disk formats the readers accept.

Written independently of the readers (struct/pickle/Pillow directly), so a
reader that misparses the format fails the tests.
"""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A


def image_bytes(seed: int, size=(16, 8), fmt="PNG") -> bytes:
  """A small random RGB image, encoded (PNG: lossless, so pixels can be compared)."""
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format=fmt)
  return buf.getvalue()


def write_market1501(root, *, train_ids=(1, 2, 3), test_ids=(4, 5), cams=3, per_cam=2,
                     size=(16, 8)):
  """A Market-1501 tree: per id, ``per_cam`` images per camera, plus junk (−1) and distractors (0).

  Returns the expected counts: {"train": n, "query": n, "gallery": n}.
  """
  counts = {}
  seed = 0
  for folder, ids, extra in (("bounding_box_train", train_ids, ()),
                             ("query", test_ids, ()),
                             ("bounding_box_test", test_ids, (0, -1))):
    d = os.path.join(root, folder)
    os.makedirs(d)
    n = 0
    for pid in list(ids) + list(extra):
      for c in range(1, cams + 1):
        # The query folder holds one image per (id, camera), as in Market-1501.
        for k in range(1 if folder == "query" else per_cam):
          name = f"{pid:04d}_c{c}s1_{k:06d}_00.jpg" if pid >= 0 else f"-1_c{c}s1_{k:06d}_00.jpg"
          with open(os.path.join(d, name), "wb") as f:
            f.write(image_bytes(seed, size, "JPEG"))
          seed += 1
          n += pid != -1
    with open(os.path.join(d, "Thumbs.db"), "wb") as f:
      f.write(b"not an image")
    counts[folder] = n
  return counts


def write_msmt17(root, *, size=(16, 8)):
  """An MSMT17_V1-style tree with list files; returns {list name: [(path, pid, cam)]}."""
  rows = {}
  seed = 0
  for list_name, image_dir, ids in (("list_train.txt", "train", (0, 1)),
                                    ("list_val.txt", "train", (2,)),
                                    ("list_query.txt", "test", (0, 1)),
                                    ("list_gallery.txt", "test", (0, 1, 2))):
    lines = []
    for pid in ids:
      for cam in (1, 7, 15):
        rel = f"{pid:04d}/{pid:04d}_{seed:03d}_{cam:02d}_0303morning_0015_0.jpg"
        path = os.path.join(root, image_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(image_bytes(seed, size, "JPEG"))
        lines.append((rel, pid, cam - 1))
        seed += 1
    with open(os.path.join(root, list_name), "w") as f:
      f.writelines(f"{rel} {pid}\n" for rel, pid, _ in lines)
    rows[list_name] = lines
  return rows


def _record(payload: bytes) -> bytes:
  """One RecordIO record; payloads containing the (aligned) magic are split into parts."""
  magic = struct.pack("<I", MAGIC)
  pieces, start = [], 0
  for pos in range(0, len(payload) - 3, 4):
    if payload[pos:pos + 4] == magic:
      pieces.append(payload[start:pos])
      start = pos + 4
  pieces.append(payload[start:])
  out = b""
  for i, piece in enumerate(pieces):
    if len(pieces) == 1:
      cflag = 0
    else:
      cflag = 1 if i == 0 else (3 if i == len(pieces) - 1 else 2)
    out += struct.pack("<II", MAGIC, (cflag << 29) | len(piece)) + piece + b"\0" * (-len(piece) % 4)
  return out


def header(flag, label, id1=0, id2=0, labels=()):
  return struct.pack("<IfQQ", flag, label, id1, id2) + np.asarray(labels, "<f4").tobytes()


def write_recordio_pack(root, identities, *, insightface_header=True, size=(16, 16),
                        magic_in_record=None):
  """A train.rec/train.idx pack with ``identities[i]`` images of identity i.

  With ``insightface_header``, record 0 gives the image and identity ranges
  and identity records follow the images; otherwise every record is an image
  with its label in the header. ``magic_in_record``: index of an image whose
  payload gets the magic number embedded (exercises split records).
  Returns (image payload bytes by key, label by key).
  """
  os.makedirs(root, exist_ok=True)
  records, images, labels = {}, {}, {}
  key = 1 if insightface_header else 0
  ranges = []
  for ident, count in enumerate(identities):
    start = key
    for _ in range(count):
      data = image_bytes(1000 + key, size)
      if magic_in_record == key:
        data = data + b"\0" * (-len(data) % 4) + struct.pack("<I", MAGIC) + b"tail"
      records[key] = header(0, float(ident), key) + data
      images[key], labels[key] = data, ident
      key += 1
    ranges.append((start, key))
  if insightface_header:
    first_id = key
    for start, stop in ranges:
      records[key] = header(2, 0.0, key, labels=(start, stop))
      key += 1
    records[0] = header(2, 0.0, 0, labels=(first_id, key))
  offset = 0
  with open(os.path.join(root, "train.rec"), "wb") as rec, \
       open(os.path.join(root, "train.idx"), "w") as idx:
    for k in sorted(records):
      blob = _record(records[k])
      rec.write(blob)
      idx.write(f"{k}\t{offset}\n")
      offset += len(blob)
  return images, labels


def write_verification_bin(path, num_pairs, size=(16, 16)):
  """A ``.bin`` file: pickle of (2N encoded images, N is-same flags); returns the flags."""
  imgs = [image_bytes(5000 + i, size) for i in range(2 * num_pairs)]
  issame = [bool(i % 2) for i in range(num_pairs)]
  with open(path, "wb") as f:
    pickle.dump((imgs, issame), f, protocol=2)
  return imgs, issame


def write_identity_folders(root, counts, size=(16, 16)):
  for ident, n in enumerate(counts):
    d = os.path.join(root, f"id_{ident:03d}")
    os.makedirs(d)
    for k in range(n):
      with open(os.path.join(d, f"{k}.png"), "wb") as f:
        f.write(image_bytes(9000 + 100 * ident + k, size))


def write_ijb(root, *, templates=6, images_per_template=3, size=(16, 16), name="ijbc"):
  """An IJB-style tree: meta/<name>_face_tid_mid.txt, meta/<name>_template_pair_label.txt,
  loose_crop/<image>.png; returns (rows of (image, template, media), pairs of (t1, t2, label))."""
  os.makedirs(os.path.join(root, "meta"))
  os.makedirs(os.path.join(root, "loose_crop"))
  rows = []
  for t in range(templates):
    for k in range(images_per_template):
      img = f"{t}_{k}.png"
      with open(os.path.join(root, "loose_crop", img), "wb") as f:
        f.write(image_bytes(7000 + 10 * t + k, size))
      rows.append((img, 100 + t, 1000 + 10 * t + k // 2))   # two media per template
  pairs = [(100 + a, 100 + b, int(a // 2 == b // 2)) for a in range(templates)
           for b in range(a + 1, templates)]
  with open(os.path.join(root, "meta", f"{name}_face_tid_mid.txt"), "w") as f:
    f.writelines(f"{img} {t} {m}\n" for img, t, m in rows)
  with open(os.path.join(root, "meta", f"{name}_template_pair_label.txt"), "w") as f:
    f.writelines(f"{a} {b} {y}\n" for a, b, y in pairs)
  return rows, pairs


def write_tfds(data_dir, builder_name, labels_by_split, *, sizes=None,
               bbox=(0.0, 0.0, 0.5, 1.0), file_format="array_record"):
  """Prepares a tiny ``builder_name`` (a real TFDS builder) in ``data_dir`` as ArrayRecord files.

  What ``tfds build <builder> --file_format=array_record`` writes, through
  TFDS's own preparation code (dataset_info.json, features.json, sharded
  ArrayRecord files), but with synthetic examples: one per label of
  ``labels_by_split[split]``, the label in the builder's label feature (the
  first ClassLabel whose name is ``label`` or ``class_id``). Images are PNGs
  (lossless), 6×4 and black, or with ``sizes`` = (h, w) filled with the label
  value mod 256, so pixels can be traced back to labels. Needs no TensorFlow
  (every image is passed encoded) unless ``file_format="tfrecord"``. Returns
  ``data_dir``.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = type(tfds.builder(builder_name, data_dir=str(data_dir)))
  h, w = sizes if sizes else (6, 4)
  # Built once: each builder made for an unprepared directory looks for its info
  # on GCS and leaves an empty temporary folder behind (TFDS's doing).
  features = base(data_dir=str(data_dir)).info.features

  def example(label):
    out = {}
    for key, feature in features.items():
      if isinstance(feature, tfds.features.Image):
        channels = feature.shape[-1]
        value = int(label) % 256 if sizes and key == "image" else 0
        out[key] = io.BytesIO(_constant_png(h, w, value, channels))
      elif isinstance(feature, tfds.features.ClassLabel):
        out[key] = int(label) if key in ("label", "class_id") else 0
      elif isinstance(feature, tfds.features.BBoxFeature):
        out[key] = tfds.features.BBox(*bbox)
      elif isinstance(feature, tfds.features.Text):
        out[key] = f"{key} {label}"
      else:
        raise TypeError(f"write_tfds: no synthetic value for {builder_name}'s {key}: {feature}")
    return out

  class Synthetic(base, skip_registration=True):  # pylint: disable=missing-class-docstring
    name = builder_name
    # No url-checksums file belongs to this class: without a code path TFDS
    # looks none up (looking one up beside a package needs importlib_resources).
    code_path = None

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in labels_by_split}

    def _generate_examples(self, split):  # pylint: disable=arguments-differ
      for k, label in enumerate(labels_by_split[split]):
        yield f"{split}_{k}", example(label)

  tfds.disable_progress_bar()
  Synthetic(data_dir=str(data_dir), file_format=file_format).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return str(data_dir)


def _constant_png(h, w, value, channels=3) -> bytes:
  buf = io.BytesIO()
  pixels = np.full((h, w, channels), value, np.uint8)
  Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buf, format="PNG")
  return buf.getvalue()
