"""Fine-grained sets read from TFDS directories prepared as ArrayRecord (tiny synthetic ones, written
by TFDS's own preparation code: no download), decoded with Pillow, without TensorFlow."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from circle_jax import data as cdata  # noqa: E402
from circle_jax.data._images import encode_image  # noqa: E402
from tests.data import fake_datasets as fake  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Per-split sizes of the real datasets and the class-half counts of the protocol.
REAL = {
    "cub200": {"builder": "caltech_birds2011", "train": 5994, "test": 5794, "classes": 200,
               "first_half": 5864, "second_half": 5924},
    "cars196": {"builder": "cars196", "train": 8144, "test": 8041, "classes": 196,
                "first_half": 8054, "second_half": 8131},
}


def _labels_with_half_counts(rng, spec):
  """Labels for train+test whose class halves hold exactly the protocol's counts."""
  half = spec["classes"] // 2
  first = np.repeat(np.arange(half), spec["first_half"] // half)
  first = np.concatenate([first, np.arange(spec["first_half"] - len(first))])
  second = np.repeat(np.arange(half, 2 * half), spec["second_half"] // half)
  second = np.concatenate([second, half + np.arange(spec["second_half"] - len(second))])
  both = rng.permutation(np.concatenate([first, second]))
  return {"train": both[:spec["train"]], "test": both[spec["train"]:]}


@pytest.mark.parametrize("name", ["cub200", "cars196"])
def test_class_disjoint_resplit_counts(rng, name, tmp_path):
  spec = REAL[name]
  labels = _labels_with_half_counts(rng, spec)
  data = cdata.load_fine_grained(name, fake.write_tfds(tmp_path, spec["builder"], labels))
  assert len(data.train) == spec["first_half"]
  assert len(data.test) == spec["second_half"]
  half = spec["classes"] // 2
  assert data.num_train_classes == half
  assert data.test.labels.min() == half and data.test.labels.max() == spec["classes"] - 1
  assert data.train.bboxes.shape == (spec["first_half"], 4)
  # The images stay in the files: the sides are views of the records.
  assert isinstance(data.train.encoded, cdata.TfdsRecords)
  assert data.train.encoded[0].startswith(b"\x89PNG")


def test_class_half_split_on_label_arrays():
  labels = np.array([0, 199, 99, 100, 5, 150])
  train, test = cdata.class_half_split(labels, 200)
  assert train.tolist() == [0, 2, 4] and test.tolist() == [1, 3, 5]
  with pytest.raises(ValueError, match="labels"):
    cdata.class_half_split(np.array([200]), 200)


def test_sop_keeps_the_tfds_split_and_checks_disjointness(tmp_path):
  labels = {"train": np.repeat(np.arange(0, 6), 3), "test": np.repeat(np.arange(6, 10), 2)}
  data = cdata.load_fine_grained(
      "sop", fake.write_tfds(tmp_path / "good", "stanford_online_products", labels))
  assert len(data.train) == 18 and len(data.test) == 8 and data.train.bboxes is None
  # Records are stored in a hashed order: compare the label multisets.
  assert sorted(data.train.labels.tolist()) == np.repeat(np.arange(6), 3).tolist()
  assert sorted(data.test.labels.tolist()) == np.repeat(np.arange(6, 10), 2).tolist()
  bad = {"train": np.array([0, 1]), "test": np.array([1, 2])}
  bad_dir = fake.write_tfds(tmp_path / "bad", "stanford_online_products", bad)
  with pytest.raises(ValueError, match="class-disjoint"):
    cdata.load_fine_grained("sop", bad_dir)


def test_missing_tfds_data_says_where_and_how(tmp_path):
  with pytest.raises(cdata.DatasetNotFoundError,
                     match=r"caltech_birds2011: no data at .*caltech_birds2011.*not prepared.*"
                     r"tfds build caltech_birds2011 --data_dir=<dir> --file_format=array_record"):
    cdata.load_fine_grained("cub200", data_dir=str(tmp_path))


def test_a_set_prepared_as_tfrecord_is_refused_with_the_array_record_command(tmp_path):
  pytest.importorskip("tensorflow")  # writing TFRecord files needs TensorFlow
  labels = {"train": np.array([0, 1]), "test": np.array([2, 3])}
  fake.write_tfds(tmp_path, "stanford_online_products", labels, file_format="tfrecord")
  with pytest.raises(cdata.DatasetNotFoundError,
                     match=r"prepared as tfrecord, which has no random access.*"
                     r"--file_format=array_record"):
    cdata.load_fine_grained("sop", str(tmp_path))


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
  # A CUB: classes 0… train, 100… test (after the merge and re-split); each
  # 20×12 image is filled with its label value.
  labels = {"train": np.repeat(np.arange(6), 7), "test": np.repeat(np.arange(100, 106), 7)}
  return fake.write_tfds(tmp_path_factory.mktemp("cub"), "caltech_birds2011", labels,
                         sizes=(20, 12))


@pytest.fixture(scope="module")
def small_data(small_dir):
  return cdata.load_fine_grained("cub200", small_dir)


def test_pk_batches_are_deterministic_and_have_positives(small_data):
  data = small_data
  kw = dict(sampler="pk", classes_per_batch=3, images_per_class=4, seed=1, image_size=8)
  first = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=3, **kw))
  assert len(first) == 3
  for b in first:
    assert b["image"].shape == (12, 8, 8, 3) and b["image"].dtype == np.uint8
    counts = np.unique(b["label"], return_counts=True)[1]
    assert counts.tolist() == [4, 4, 4]
  # Resuming at step 2 gives the same batch 2; the labels follow pk_batch_indices.
  again = next(iter(cdata.tfds_train_batches(data.train, first_step=2, num_steps=3, **kw)))
  np.testing.assert_array_equal(again["image"], first[2]["image"])
  assert int(again["step"]) == 2
  idx = cdata.pk_batch_indices(data.train.labels, 3, 4, seed=1, step=2)
  np.testing.assert_array_equal(again["label"], data.train.labels[idx])
  # Each image is filled with its class id: crops and flips keep the value,
  # so every image sits beside its own label.
  for b in first:
    np.testing.assert_array_equal(b["image"].reshape(12, -1).min(axis=1), b["label"])
    np.testing.assert_array_equal(b["image"].reshape(12, -1).max(axis=1), b["label"])


def test_train_batches_decode_in_grain_workers_alike(small_data):
  # The worker processes unpickle the TFDS data sources and reopen the files.
  kw = dict(first_step=0, num_steps=2, sampler="pk", classes_per_batch=2, images_per_class=2,
            seed=3, image_size=8)
  here = list(cdata.tfds_train_batches(small_data.train, **kw))
  there = list(cdata.tfds_train_batches(small_data.train, num_workers=1, **kw))
  for a, b in zip(here, there, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_eval_images_resize_and_centre_crop_with_bbox(small_data):
  data = small_data
  batches = list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=5))
  assert len(data.test) == 42 and [len(b) for b in batches] == [5] * 8 + [2]
  images = np.concatenate(batches)
  assert images.shape == (42, 8, 8, 3)
  # The images are constant (value = original label): centre crops keep the value.
  np.testing.assert_array_equal(images[:, 0, 0, 0], data.test.labels % 256)
  cropped = np.concatenate(list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=50,
                                                       crop_to_bbox=True)))
  assert cropped.shape == images.shape


def test_a_process_reads_only_its_rows_of_each_batch(small_data):
  data = small_data
  kw = dict(sampler="pk", classes_per_batch=3, images_per_class=4, seed=1, image_size=8)
  whole = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=2, **kw))
  rows = np.array([1, 2, 7, 11])     # crops and flips keep each row's draws
  part = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=2, rows=rows, **kw))
  for w, p in zip(whole, part):
    np.testing.assert_array_equal(p["image"], w["image"][rows])
    np.testing.assert_array_equal(p["label"], w["label"][rows])
    assert p["step"] == w["step"] and int(p["decoded"]) == len(rows)
  assert [int(b["step"]) for b in whole] == [0, 1]
  # Evaluation: explicit indices, −1 pads with a zero image.
  got = np.concatenate(list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=3,
                                                   indices=np.array([4, -1, 0]))))
  full = np.concatenate(list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=50)))
  np.testing.assert_array_equal(got[[0, 2]], full[[4, 0]])
  assert not got[1].any()


def test_bbox_crop_takes_exactly_the_box():
  """The crop's content, not only its shape: a 40×60 image that is 200 inside the
  box (rows 10–20, columns 30–50) and 0 elsewhere must crop to all-200, for the
  evaluation (centre-crop) and the training (random resized crop) paths alike.
  Using the box's x extent for the height, or y for the width, lets zeros in."""
  image = np.zeros((40, 60, 3), np.uint8)
  image[10:20, 30:50] = 200
  box = np.array([[10 / 40, 30 / 60, 20 / 40, 50 / 60]], np.float32)  # ymin, xmin, ymax, xmax
  png = np.array([encode_image(image, "PNG")], object)
  encoded = cdata.EncodedImages(png, np.array([0], np.int32), box)
  cropped = np.concatenate(list(cdata.tfds_eval_images(encoded, image_size=8, batch_size=1,
                                                       crop_to_bbox=True)))
  np.testing.assert_array_equal(cropped, 200)
  uncropped = np.concatenate(list(cdata.tfds_eval_images(encoded, image_size=8, batch_size=1)))
  assert (uncropped == 0).any()  # the test can tell a crop from no crop
  pairs = cdata.EncodedImages(np.repeat(png, 4), np.array([0, 0, 1, 1], np.int32),
                              np.repeat(box, 4, axis=0))
  batch = next(iter(cdata.tfds_train_batches(
      pairs, first_step=0, num_steps=1, sampler="pk", classes_per_batch=2, images_per_class=2,
      seed=0, image_size=8, crop_to_bbox=True)))
  np.testing.assert_array_equal(batch["image"], 200)


def test_random_resized_crops_are_functions_of_seed_step_and_position():
  # Noise, so that different crops or flips give different pixels.
  noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
  png = encode_image(noise, "PNG")
  n = 6
  source = cdata.FineGrainedSource(
      cdata.EncodedImages(np.array([png] * n, object), np.arange(n), None), 16)
  crop = cdata.RandomResizedCrop(min_area=0.16)
  rows = np.arange(n)

  def batch(seed, step, rows=rows):
    return crop.images(source, np.zeros(len(rows), np.int64), rows, n, seed=seed, step=step)

  a = batch(0, 3)
  assert a.shape == (n, 16, 16, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, batch(0, 3))                    # same draws, same pixels
  # The same image at every position: positions draw differently …
  assert len({x.tobytes() for x in a}) == n
  # … and so do other steps and seeds, position by position.
  assert all((x != y).any() for x, y in zip(a, batch(0, 4)))
  assert all((x != y).any() for x, y in zip(a, batch(1, 3)))
  # A process holding rows 1 and 4 gets exactly those images.
  np.testing.assert_array_equal(batch(0, 3, np.array([1, 4])), a[[1, 4]])
  # Through TrainBatches, with normalisation: float32, the same views.
  fn = cdata.TrainBatches(source, np.array([4]), "shuffle", 2, 3, seed=0, augment=crop,
                          mean=(0.0,), std=(1.0,))
  out = fn(3)
  assert out["image"].shape == (1, 16, 16, 3) and out["image"].dtype == np.float32
  np.testing.assert_allclose(out["image"][0] * 255, a[4], atol=1e-3)


def test_random_resized_crop_boxes_stay_inside_and_in_range():
  rng = np.random.default_rng(0)
  areas, fallback = [], 0
  for _ in range(300):
    top, left, bottom, right = cdata.random_resized_crop_box(50, 80, rng, area_range=(0.2, 1.0))
    assert 0 <= top < bottom <= 50 and 0 <= left < right <= 80
    h, w = bottom - top, right - left
    if (h, w) == (50, 80):
      fallback += 1
      continue
    areas.append(h * w / 4000)
    assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1  # the aspect range, up to rounding
  assert 0.19 <= min(areas) and max(areas) <= 1.0 and fallback < 300


@pytest.mark.parametrize("height, width", [(60, 90), (90, 60)])
def test_eval_view_is_the_centre_of_the_resized_image(height, width):
  """An independent check of the geometry: an image whose red channel is 2·x + 20 and
  green 2·y + 20 (linear ramps, which bilinear resampling reproduces) must map output
  pixel (i, j) to the source point of the resize-then-centre-crop view:
  scale = S·r / min(h, w), the resized image round(h·scale) × round(w·scale), the
  crop offset half its excess, and pixel centres aligned (x_src + ½ = (x + ½) / scale)."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([2 * x + 20, 2 * y + 20, np.zeros_like(x)], axis=-1).astype(np.uint8)
  s, ratio = 16, 1.5
  encoded = cdata.EncodedImages(np.array([encode_image(image, "PNG")], object), np.array([0]),
                                None)
  out = cdata.FineGrainedSource(encoded, s, resize_ratio=ratio).image(0).astype(float)
  assert out.shape == (s, s, 3)
  scale = s * ratio / min(height, width)
  rh, rw = round(height * scale), round(width * scale)
  top, left = (rh - s) // 2, (rw - s) // 2
  src_y = (np.arange(s) + top + 0.5) * (height / rh) - 0.5
  src_x = (np.arange(s) + left + 0.5) * (width / rw) - 0.5
  np.testing.assert_allclose(out[..., 0], np.broadcast_to(2 * src_x + 20, (s, s)), atol=1.01)
  np.testing.assert_allclose(out[..., 1], np.broadcast_to((2 * src_y + 20)[:, None], (s, s)),
                             atol=1.01)


def test_reading_and_batches_import_no_tensorflow(small_dir):
  """Reading a prepared set, a training batch and an evaluation batch, in a fresh process:
  tensorflow-datasets is used, TensorFlow is installed but never imported."""
  code = textwrap.dedent(f"""
      import importlib.util, sys
      from circle_jax import data as cdata
      data = cdata.load_fine_grained("cub200", {small_dir!r})
      train = next(iter(cdata.tfds_train_batches(
          data.train, first_step=0, num_steps=1, sampler="pk", classes_per_batch=2,
          images_per_class=2, seed=0, image_size=8, crop_to_bbox=True)))
      test = next(iter(cdata.tfds_eval_images(data.test, image_size=8, batch_size=4)))
      print(train["image"].shape, test.shape)
      print("tensorflow_datasets" in sys.modules, importlib.util.find_spec("tensorflow") is not None)
      print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
  """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  shapes, used, modules = out.stdout.strip().splitlines()
  assert shapes == "(4, 8, 8, 3) (4, 8, 8, 3)"
  assert used.split()[0] == "True"          # read through tensorflow-datasets …
  assert modules == "[]"                    # … without importing TensorFlow
