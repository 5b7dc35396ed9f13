"""Re-ID folder readers, RecordIO packs, .bin verification sets and identity folders."""

import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from circle_jax import data as cdata
from circle_jax.data._recordio import MAGIC
from tests.data import fake_datasets as fake


def test_market1501_tree(tmp_path):
  counts = fake.write_market1501(str(tmp_path))
  ds = cdata.load_market1501(str(tmp_path))
  assert len(ds.train) == counts["bounding_box_train"] == 3 * 3 * 2
  assert len(ds.query) == counts["query"] == 2 * 3
  # Junk (-1) dropped, distractors (0) kept.
  assert len(ds.gallery) == counts["bounding_box_test"] == 3 * 3 * 2
  assert -1 not in ds.gallery.pids and 0 in ds.gallery.pids
  assert sorted(set(ds.train.pids.tolist())) == [1, 2, 3]
  assert sorted(set(ds.query.cams.tolist())) == [0, 1, 2]
  assert ds.train_labels.tolist() == sorted(ds.train_labels.tolist())
  assert set(ds.train_labels.tolist()) == {0, 1, 2} and ds.num_train_ids == 3
  for path, pid, cam in zip(ds.gallery.paths, ds.gallery.pids, ds.gallery.cams):
    name = os.path.basename(path)
    assert name.startswith(f"{pid:04d}_c{cam + 1}")


def test_market1501_name_parsing():
  assert cdata.parse_market1501_name("0002_c1s1_000451_03.jpg") == (2, 0)
  assert cdata.parse_market1501_name("-1_c6s4_002452_01.jpg") == (-1, 5)
  with pytest.raises(ValueError, match="pid"):
    cdata.parse_market1501_name("readme.txt")


def test_msmt17_lists(tmp_path):
  rows = fake.write_msmt17(str(tmp_path))
  ds = cdata.load_msmt17(str(tmp_path))
  want_train = rows["list_train.txt"] + rows["list_val.txt"]
  assert len(ds.train) == len(want_train)
  assert ds.train.pids.tolist() == [p for _, p, _ in want_train]
  assert ds.train.cams.tolist() == [c for _, _, c in want_train]
  assert ds.gallery.cams.tolist() == [c for _, _, c in rows["list_gallery.txt"]]
  assert all(os.path.isfile(p) for p in ds.train.paths + ds.query.paths + ds.gallery.paths)
  assert len(cdata.load_msmt17(str(tmp_path), include_val=False).train) == len(
      rows["list_train.txt"])


def test_missing_reid_data_says_where_and_how(tmp_path):
  with pytest.raises(cdata.DatasetNotFoundError, match="bounding_box_train.*To prepare it"):
    cdata.load_market1501(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="list_train.txt.*MSMT17"):
    cdata.load_msmt17(str(tmp_path))


def test_file_image_source_decodes_and_resizes(tmp_path):
  fake.write_market1501(str(tmp_path), size=(16, 8))
  ds = cdata.load_market1501(str(tmp_path))
  src = cdata.FileImageSource(ds.train.paths, ds.train_labels, size=(32, 16))
  batch = src.images([0, 5])
  assert batch.shape == (2, 32, 16, 3) and batch.dtype == np.uint8
  same = cdata.FileImageSource(ds.train.paths, ds.train_labels, size=(16, 8)).images([3])[0]
  want = np.asarray(Image.open(ds.train.paths[3]).convert("RGB"))
  np.testing.assert_array_equal(same, want)


@pytest.mark.parametrize("insightface_header", [True, False])
def test_recordio_pack_roundtrip(tmp_path, insightface_header):
  identities = [3, 1, 4]
  images, labels = fake.write_recordio_pack(str(tmp_path), identities,
                                            insightface_header=insightface_header,
                                            magic_in_record=2)
  reader = cdata.RecordIOReader(str(tmp_path))
  keys, got_labels = cdata.face_pack_index(reader)
  assert keys.tolist() == sorted(images)
  assert got_labels.tolist() == [labels[k] for k in keys]
  for k in keys:
    head, data = reader.read(int(k))
    assert data == images[k], k          # record 2 was split around an embedded magic
    assert head.label == float(labels[k])
  src = cdata.RecordIOImageSource(reader, keys, got_labels, size=(16, 16))
  want = np.asarray(Image.open(io.BytesIO(images[int(keys[4])])).convert("RGB"))
  np.testing.assert_array_equal(src.images([4])[0], want)


def test_recordio_reads_from_many_threads_at_once(tmp_path):
  # The batch loaders read one RecordIOReader from a thread pool; a shared
  # seek-then-read file position used to mix records up under load.
  from concurrent.futures import ThreadPoolExecutor
  images, _ = fake.write_recordio_pack(str(tmp_path), [20, 20, 20, 20], insightface_header=False,
                                       magic_in_record=2)
  reader = cdata.RecordIOReader(str(tmp_path))
  keys = sorted(images) * 25
  with ThreadPoolExecutor(16) as pool:
    got = list(pool.map(lambda k: reader.read(k)[1], keys))
  assert got == [images[k] for k in keys]


def test_recordio_errors(tmp_path):
  with pytest.raises(cdata.DatasetNotFoundError, match="train.rec"):
    cdata.RecordIOReader(str(tmp_path))
  (tmp_path / "train.rec").write_bytes(b"\0" * 32)
  (tmp_path / "train.idx").write_text("0\t0\n")
  with pytest.raises(ValueError, match="bad magic"):
    cdata.RecordIOReader(str(tmp_path)).read(0)


def test_verification_bin(tmp_path):
  path = str(tmp_path / "lfw.bin")
  imgs, issame = fake.write_verification_bin(path, 5)
  raw, flags = cdata.read_verification_bin(path)
  assert raw == imgs and flags.tolist() == issame
  decoded, flags = cdata.load_verification_bin(path, size=(16, 16))
  assert decoded.shape == (10, 16, 16, 3)
  np.testing.assert_array_equal(decoded[7], np.asarray(Image.open(io.BytesIO(imgs[7]))))
  with pytest.raises(cdata.DatasetNotFoundError, match="cfp_fp.bin"):
    cdata.read_verification_bin(str(tmp_path / "cfp_fp.bin"))


def test_identity_folders(tmp_path):
  fake.write_identity_folders(str(tmp_path), [2, 3, 1])
  (tmp_path / "empty_id").mkdir()
  paths, labels, names = cdata.load_identity_folders(str(tmp_path))
  assert labels.tolist() == [0, 0, 1, 1, 1, 2]
  assert names == ("id_000", "id_001", "id_002")
  assert all(os.path.basename(os.path.dirname(p)) == names[y] for p, y in zip(paths, labels))
  with pytest.raises(cdata.DatasetNotFoundError, match="one folder per"):
    cdata.load_identity_folders(str(tmp_path / "missing"))


def test_importing_the_library_loads_no_tensorflow_torch_or_pillow():
  code = ("import sys, circle_jax, circle_jax.data, circle_jax.metrics, circle_jax.models; "
          "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', "
          "'tensorflow_datasets', 'torch', 'PIL'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"


def test_ijb_meta_files(tmp_path):
  rows, pairs = fake.write_ijb(str(tmp_path))
  p = cdata.load_ijb(str(tmp_path))
  assert [os.path.basename(x) for x in p.image_paths] == [r[0] for r in rows]
  assert p.template_ids.tolist() == [r[1] for r in rows]
  assert p.media_ids.tolist() == [r[2] for r in rows]
  assert list(zip(p.pairs_a.tolist(), p.pairs_b.tolist(), p.issame.astype(int).tolist())) == pairs
  with pytest.raises(cdata.DatasetNotFoundError, match="ijbb_face_tid_mid.txt"):
    cdata.load_ijb(str(tmp_path), name="ijbb")


def _write_pack(root, payloads):
  """train.rec/train.idx from {key: payload} (records split where the magic occurs)."""
  offset = 0
  with open(os.path.join(root, "train.rec"), "wb") as rec, \
       open(os.path.join(root, "train.idx"), "w") as idx:
    for key in sorted(payloads):
      blob = fake._record(payloads[key])
      rec.write(blob)
      idx.write(f"{key}\t{offset}\n")
      offset += len(blob)


def test_recordio_index_errors_name_file_and_line(tmp_path):
  fake.write_recordio_pack(str(tmp_path), [2, 2], insightface_header=False)
  idx = tmp_path / "train.idx"
  good = idx.read_text()
  idx.write_text(good + "abc\tdef\n")
  with pytest.raises(ValueError, match=r"train.idx:5: expected '<key>\\t<offset>' \(two integers\), "
                                       r"got 'abc\\tdef'"):
    cdata.RecordIOReader(str(tmp_path))
  idx.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
  with pytest.raises(ValueError, match=r"train.idx: not a RecordIO index \(not text"):
    cdata.RecordIOReader(str(tmp_path))
  idx.write_text("")
  (tmp_path / "train.rec").write_bytes(b"")
  with pytest.raises(ValueError, match=r"train.idx: the index lists no records \(an empty pack\)"):
    cdata.RecordIOReader(str(tmp_path))


def test_recordio_truncated_pack_is_named(tmp_path):
  fake.write_recordio_pack(str(tmp_path), [3, 3], insightface_header=False)
  rec = tmp_path / "train.rec"
  rec.write_bytes(rec.read_bytes()[:-40])  # the last record loses its tail
  # Opening the pack reads a few records at both ends, so this is caught at once.
  with pytest.raises(ValueError, match=r"train.rec: record 5 \(offset \d+\): truncated "
                                       r"\(the header says \d+ bytes, the file holds \d+\)"):
    cdata.RecordIOReader(str(tmp_path))


def test_recordio_garbled_image_names_the_record(tmp_path):
  images, labels = fake.write_recordio_pack(str(tmp_path), [2, 2], insightface_header=False)
  payloads = {k: fake.header(0, float(labels[k]), k) + images[k] for k in images}
  payloads[2] = fake.header(0, float(labels[2]), 2) + b"\x89PNG garbage" * 60
  _write_pack(str(tmp_path), payloads)
  reader = cdata.RecordIOReader(str(tmp_path))
  source = cdata.RecordIOImageSource(reader, reader.keys, [labels[k] for k in reader.keys], (16, 16))
  with pytest.raises(ValueError, match=r"train.rec: record 2: decode_image: not a readable image"):
    source.image(2)
  assert source.image(1).shape == (16, 16, 3)


def test_recordio_swapped_offsets_are_caught_where_ids_are_keys(tmp_path):
  fake.write_recordio_pack(str(tmp_path), [3, 3], insightface_header=False)
  idx = tmp_path / "train.idx"
  lines = idx.read_text().splitlines()
  (k2, o2), (k3, o3) = (l.split("\t") for l in lines[2:4])
  lines[2:4] = [f"{k2}\t{o3}", f"{k3}\t{o2}"]
  idx.write_text("\n".join(lines) + "\n")
  # Opening checks a spread of records: records 2 and 3 are among them.
  with pytest.raises(ValueError, match=r"record 2 \(offset \d+\) holds the record with id 3: "
                                       r"the offsets of .*train.idx do not match"):
    cdata.RecordIOReader(str(tmp_path))


def test_recordio_swapped_offsets_outside_the_sample_fail_on_read(tmp_path):
  fake.write_recordio_pack(str(tmp_path), [30, 30], insightface_header=False)
  reader = cdata.RecordIOReader(str(tmp_path))
  assert reader.ids_are_keys
  sampled = set(np.unique(np.linspace(0, 59, 16).astype(int)).tolist())
  a, b = [k for k in range(60) if k not in sampled][:2]
  idx = tmp_path / "train.idx"
  lines = idx.read_text().splitlines()
  offsets = dict(l.split("\t") for l in lines)
  offsets[str(a)], offsets[str(b)] = offsets[str(b)], offsets[str(a)]
  idx.write_text("".join(f"{k}\t{offsets[k]}\n" for k in offsets))
  reader = cdata.RecordIOReader(str(tmp_path))
  with pytest.raises(ValueError, match=rf"record {a} \(offset \d+\) holds the record with id {b}"):
    reader.read(a)
  with pytest.raises(ValueError, match="holds the record with id"):
    cdata.face_pack_index(reader)


def test_recordio_packs_without_ids_are_read_unchecked(tmp_path):
  images, labels = fake.write_recordio_pack(str(tmp_path), [2, 3], insightface_header=False)
  _write_pack(str(tmp_path), {k: fake.header(0, float(labels[k]), 0) + images[k] for k in images})
  reader = cdata.RecordIOReader(str(tmp_path))
  assert not reader.ids_are_keys
  keys, got = cdata.face_pack_index(reader)
  assert keys.tolist() == sorted(images) and got.tolist() == [0, 0, 1, 1, 1]


def test_recordio_record_split_in_three_parts(tmp_path):
  """A payload holding the magic twice (aligned) is written as first/middle/last parts."""
  magic = struct.pack("<I", MAGIC)
  image = fake.image_bytes(7, (16, 16))
  image += b"\0" * (-len(image) % 4)
  payload = fake.header(0, 0.0, 1) + image + magic + b"midl" + magic + b"last"
  assert len(fake._record(payload)) > len(payload) and fake._record(payload).count(magic) == 3
  _write_pack(str(tmp_path), {1: payload, 2: fake.header(0, 1.0, 2) + image})
  reader = cdata.RecordIOReader(str(tmp_path))
  assert reader.read_payload(1) == payload
  head, data = reader.read(1)
  assert head.id == 1 and data == image + magic + b"midl" + magic + b"last"
