"""Bundled Omniglot read in place from its zips: the background splits, the class-disjoint
alphabet split, Lake's one-shot runs, and the errors a damaged or wrong zip raises.

References are independent of the loader: member names, images and run listings
are read here with ``zipfile`` and Pillow directly.
"""

import io
import os
import pickle
import re
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from circle_jax import data as cdata

SMALL1_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")


@pytest.fixture(scope="module")
def small1():
  return cdata.load_omniglot_background("small1")


@pytest.fixture(scope="module")
def small2():
  return cdata.load_omniglot_background("small2")


@pytest.fixture(scope="module")
def runs():
  return cdata.load_one_shot_runs()


def _decode_ink(path, member):
  """Independent decode: bool [H, W], True where the PNG is dark (the pen)."""
  with zipfile.ZipFile(path) as z:
    img = Image.open(io.BytesIO(z.read(member))).convert("L")
  return np.asarray(img) < 128


# ------------------------------------------------------------------ counts


def test_background_split_counts(small1, small2):
  assert (len(small1), small1.num_classes) == (2720, 136)
  assert (len(small2), small2.num_classes) == (3120, 156)
  assert small1.alphabet_names == SMALL1_ALPHABETS
  assert len(small1.labels) == len(small1.alphabets) == len(small1.drawers) == 2720
  # 20 drawers of every character, labels 0 … C − 1.
  assert np.bincount(small1.labels).tolist() == [20] * 136
  assert sorted(set(small1.drawers.tolist())) == list(range(1, 21))
  assert len(set(small1.character_ids.tolist())) == 136
  # Greek and Latin are in both splits, with the same ids: 136 + 156 − 50.
  union = set(small1.character_ids.tolist()) | set(small2.character_ids.tolist())
  assert len(union) == 242


def test_labels_follow_member_names(small1):
  # Each image's character, alphabet and drawer, re-parsed from its member name.
  src = small1.source
  for i in range(0, len(small1), 53):
    _, alphabet, char, file = src.members[i].split("/")
    cid, drawer = re.match(r"^(\d+)_(\d\d)\.png$", file).groups()
    label = src.labels[i]
    assert small1.characters[label] == f"{alphabet}/{char}"
    assert small1.character_ids[label] == int(cid)
    assert small1.alphabet_names[small1.alphabets[i]] == alphabet
    assert small1.drawers[i] == int(drawer)


def test_runs_counts(runs):
  assert len(runs.source) == 800 and runs.num_runs == 20
  assert np.bincount(runs.runs).tolist() == [40] * 20
  for r in range(20):
    sup = runs.support[runs.runs == r]
    assert sup.sum() == 20 and (~sup).sum() == 20
    # One support image of each of the 20 classes.
    assert sorted(runs.source.labels[(runs.runs == r) & runs.support].tolist()) == list(range(20))


# --------------------------------------------------------- alphabet split


@pytest.mark.parametrize("train,test,n_images,n_chars", [
    ("small1", "small2", 2120, 106), ("small2", "small1", 1720, 86)])
def test_unseen_alphabets_are_class_disjoint(train, test, n_images, n_chars, small1, small2):
  trained = {"small1": small1, "small2": small2}[train]
  unseen = cdata.unseen_alphabets(train)
  assert not set(unseen) & set(trained.alphabet_names)
  held_out = cdata.load_omniglot_background(test, alphabets=unseen)
  assert (len(held_out), held_out.num_classes) == (n_images, n_chars)
  assert held_out.alphabet_names == tuple(sorted(unseen))
  assert not set(held_out.character_ids.tolist()) & set(trained.character_ids.tolist())
  assert held_out.labels.max() == n_chars - 1


def test_unknown_split_or_alphabet_is_a_value_error():
  with pytest.raises(ValueError, match="small3"):
    cdata.load_omniglot_background("small3")
  with pytest.raises(ValueError, match="Klingon"):
    cdata.load_omniglot_background("small1", alphabets=["Greek", "Klingon"])
  with pytest.raises(ValueError):
    cdata.unseen_alphabets("small3")


# ----------------------------------------------------------------- images


def test_images_are_ink_bright_on_black(small1):
  x = small1.source.images(np.arange(0, len(small1), 41))
  assert x.shape == (67, 28, 28, 1) and x.dtype == np.uint8
  assert x.mean() < 60 and x.max() == 255
  per_image = x.reshape(len(x), -1)
  assert (per_image.mean(1) < 60).all() and (per_image.max(1) > 127).all()
  # The border of a centred drawing is ground.
  assert np.median(np.concatenate([x[:, 0], x[:, -1]])) == 0


def test_native_size_and_ink_match_an_independent_decode(small1):
  full = cdata.load_omniglot_background("small1", size=None, alphabets=["Latin"])
  assert full.source.image(0).shape == (105, 105, 1)
  for i in (0, 17, len(full) - 1):
    member = full.source.members[i]
    want = _decode_ink(full.source.path, member)
    ink = full.source.ink(i)
    assert ink.dtype == bool and ink.shape == (105, 105)
    np.testing.assert_array_equal(ink, want)
    np.testing.assert_array_equal(full.source.image(i)[..., 0] > 127, want)
    # The 28×28 set reads the same member, at its own size, with the same ink.
    j = small1.source.members.index(member)
    np.testing.assert_array_equal(small1.source.ink(j), want)
  all_ink = full.source.all_ink()
  assert all_ink.shape == (len(full), 105, 105) and all_ink.reshape(len(full), -1).any(1).all()
  np.testing.assert_array_equal(all_ink[17], _decode_ink(full.source.path, full.source.members[17]))
  # At the images' size: the resized images above half intensity.
  latin = np.flatnonzero(np.array(small1.alphabet_names)[small1.alphabets] == "Latin")
  small_ink = cdata.load_omniglot_background("small1", alphabets=["Latin"]).source.all_ink(False)
  assert small_ink.shape == (len(full), 28, 28)
  np.testing.assert_array_equal(small_ink, small1.source.images(latin)[..., 0] > 127)


def test_one_shot_labels_follow_class_labels_txt(runs):
  path = cdata.omniglot_path("runs")
  with zipfile.ZipFile(path) as z:
    for run in (1, 13):
      text = z.read(f"run{run:02d}/class_labels.txt").decode()
      pairs = dict(line.split() for line in text.splitlines() if line.strip())
      assert len(pairs) == 20
      base = (run - 1) * 40
      for c in range(20):
        assert runs.source.members[base + c] == f"run{run:02d}/training/class{c + 1:02d}.png"
        assert runs.source.labels[base + c] == c and runs.support[base + c]
      for j in range(20):
        item = f"run{run:02d}/test/item{j + 1:02d}.png"
        assert runs.source.members[base + 20 + j] == item
        assert not runs.support[base + 20 + j]
        want = int(re.search(r"class(\d\d)\.png$", pairs[item]).group(1)) - 1
        assert runs.source.labels[base + 20 + j] == want, item


def test_zip_source_survives_pickle(runs):
  src = runs.source
  idx = np.array([0, 5, 399, 799])
  before = src.images(idx)               # the zip is open in this process now
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(copy.images(idx), before)
  np.testing.assert_array_equal(copy.labels, src.labels)
  assert copy.members == src.members and copy.size == src.size
  np.testing.assert_array_equal(copy.ink(5), src.ink(5))


# ----------------------------------------------------------- damaged data


def _copy_bundled(folder):
  os.makedirs(folder, exist_ok=True)
  for name in ("small1", "small2", "runs"):
    shutil.copy(cdata.omniglot_path(name), folder)
  return str(folder)


def _rewrite_zip(path, replace):
  """Rewrites ``path`` member by member (same names, order and compression), data through
  ``replace(name, data)``."""
  with zipfile.ZipFile(path) as z:
    items = [(info, z.read(info.filename)) for info in z.infolist()]
  with zipfile.ZipFile(path, "w") as z:
    for info, data in items:
      z.writestr(info, replace(info.filename, data))


def _a_png_member(path, k=100):
  with zipfile.ZipFile(path) as z:
    return [n for n in z.namelist() if n.endswith(".png")][k]


def test_a_garbage_member_names_file_and_member(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  bad = _a_png_member(path)
  _rewrite_zip(path, lambda n, d: b"this is no png" if n == bad else d)
  with pytest.raises(cdata.DatasetError) as e:
    cdata.load_omniglot_background("small1", folder=folder)
  assert path in str(e.value) and bad in str(e.value)
  # The other split is untouched.
  assert len(cdata.load_omniglot_background("small2", folder=folder)) == 3120


def test_a_truncated_png_member_names_it(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  bad = _a_png_member(path, 7)
  _rewrite_zip(path, lambda n, d: d[:len(d) // 2] if n == bad else d)
  with pytest.raises(cdata.DatasetError, match=re.escape(bad)):
    cdata.load_omniglot_background("small1", folder=folder)


def _flip_compressed_bytes(path, member, at):
  """Flips two bytes of ``member``'s compressed data in place (sizes and CRC field unchanged)."""
  with zipfile.ZipFile(path) as z:
    info = z.getinfo(member)
  raw = bytearray(open(path, "rb").read())
  off = info.header_offset
  assert raw[off:off + 4] == b"PK\x03\x04"
  name_len, extra_len = struct.unpack("<HH", raw[off + 26:off + 30])
  start = off + 30 + name_len + extra_len
  pos = start + at(info.compress_size)
  raw[pos] ^= 0xFF
  raw[pos + 1] ^= 0x55
  open(path, "wb").write(raw)
  return info


@pytest.mark.parametrize("k,at", [(5, lambda n: n // 2), (42, lambda n: n - 5)])
def test_flipped_compressed_bytes_fail_the_crc(tmp_path, k, at):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  bad = _a_png_member(path, k)
  info = _flip_compressed_bytes(path, bad, at)
  assert os.path.getsize(path) == os.path.getsize(cdata.omniglot_path("small1"))
  assert info.compress_type == zipfile.ZIP_DEFLATED
  with pytest.raises(cdata.DatasetError) as e:
    cdata.load_omniglot_background("small1", folder=folder)
  assert path in str(e.value) and bad in str(e.value)


def test_a_deflate_stream_that_no_longer_inflates_names_the_member(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  bad = _a_png_member(path, 79)
  _flip_compressed_bytes(path, bad, lambda n: 10)   # "invalid distance too far back"
  with pytest.raises(cdata.DatasetError, match=re.escape(bad)):
    cdata.load_omniglot_background("small1", folder=folder)


def test_a_stored_member_with_flipped_bytes_fails_the_crc(tmp_path):
  # Stored (not deflated), the flipped bytes can only be caught by the CRC.
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  with zipfile.ZipFile(path) as z:
    items = [(info, z.read(info.filename)) for info in z.infolist()]
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    for info, data in items:
      info.compress_type = zipfile.ZIP_STORED
      z.writestr(info, data)
  assert len(cdata.load_omniglot_background("small1", folder=folder)) == 2720
  bad = _a_png_member(path, 3)
  _flip_compressed_bytes(path, bad, lambda n: n // 2)
  with pytest.raises(cdata.DatasetError, match="CRC") as e:
    cdata.load_omniglot_background("small1", folder=folder)
  assert bad in str(e.value)


def test_a_member_outside_the_layout_is_named(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "images_background_small1.zip")
  with zipfile.ZipFile(path) as z:
    png = z.read(_a_png_member(path))
  with zipfile.ZipFile(path, "a") as z:
    z.writestr("foo/bar.png", png)
  with pytest.raises(cdata.DatasetError, match="foo/bar.png") as e:
    cdata.load_omniglot_background("small1", folder=folder)
  assert path in str(e.value)


def test_the_other_splits_zip_under_this_name_is_refused(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  shutil.copy(cdata.omniglot_path("small2"), os.path.join(folder, "images_background_small1.zip"))
  with pytest.raises(cdata.DatasetError, match="images_background_small2/"):
    cdata.load_omniglot_background("small1", folder=folder)


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  for name, load in (("images_background_small1.zip", lambda: cdata.load_omniglot_background(
      "small1", folder=folder)), ("all_runs.zip", lambda: cdata.load_one_shot_runs(folder))):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
      f.write(b"<html>404 not found</html>" * 10)
    with pytest.raises(cdata.DatasetError, match="not a readable zip") as e:
      load()
    assert path in str(e.value)


def test_a_missing_folder_is_dataset_not_found(tmp_path):
  for load in (lambda f: cdata.load_omniglot_background("small1", folder=f),
               lambda f: cdata.load_one_shot_runs(f)):
    with pytest.raises(cdata.DatasetNotFoundError) as e:
      load(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "nowhere") in str(e.value)


def test_a_corrupted_run_listing_names_class_labels_txt(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "all_runs.zip")

  def damage(name, data):
    if name != "run03/class_labels.txt":
      return data
    lines = data.decode().splitlines()
    lines[4] = "hello world"
    return "\n".join(lines).encode()

  _rewrite_zip(path, damage)
  with pytest.raises(cdata.DatasetError, match=r"run03/class_labels\.txt.*line 5") as e:
    cdata.load_one_shot_runs(folder)
  assert path in str(e.value)


def test_a_run_listing_pairing_the_wrong_items_is_refused(tmp_path):
  folder = _copy_bundled(tmp_path / "om")
  path = os.path.join(folder, "all_runs.zip")

  def damage(name, data):   # item05 listed twice, item06 never
    if name != "run07/class_labels.txt":
      return data
    return data.decode().replace("test/item06.png", "test/item05.png").encode()

  _rewrite_zip(path, damage)
  with pytest.raises(cdata.DatasetError, match=r"run07/class_labels\.txt"):
    cdata.load_one_shot_runs(folder)
