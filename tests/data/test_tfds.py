"""TFDS fine-grained pipelines under tfds.testing.mock_data (no data, no download)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from circle_jax import data as cdata  # noqa: E402
from circle_jax.data._images import encode_image  # noqa: E402
from tests.data.fake_datasets import tfds_as_dataset_fn as _mock  # noqa: E402

# Per-split sizes of the real datasets and the class-half counts of the protocol.
REAL = {
    "cub200": {"train": 5994, "test": 5794, "classes": 200, "first_half": 5864, "second_half": 5924},
    "cars196": {"train": 8144, "test": 8041, "classes": 196, "first_half": 8054, "second_half": 8131},
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
def test_class_disjoint_resplit_counts(rng, name):
  spec = REAL[name]
  labels = _labels_with_half_counts(rng, spec)
  with tfds.testing.mock_data(as_dataset_fn=_mock(labels)):
    data = cdata.load_fine_grained(name, data_dir="/nonexistent")
  assert len(data.train) == spec["first_half"]
  assert len(data.test) == spec["second_half"]
  half = spec["classes"] // 2
  assert data.num_train_classes == half
  assert data.test.labels.min() == half and data.test.labels.max() == spec["classes"] - 1
  assert data.train.bboxes.shape == (spec["first_half"], 4)


def test_class_half_split_on_label_arrays():
  labels = np.array([0, 199, 99, 100, 5, 150])
  train, test = cdata.class_half_split(labels, 200)
  assert train.tolist() == [0, 2, 4] and test.tolist() == [1, 3, 5]
  with pytest.raises(ValueError, match="labels"):
    cdata.class_half_split(np.array([200]), 200)


def test_sop_keeps_the_tfds_split_and_checks_disjointness():
  labels = {"train": np.repeat(np.arange(0, 6), 3), "test": np.repeat(np.arange(6, 10), 2)}
  with tfds.testing.mock_data(as_dataset_fn=_mock(labels, "class_id", bbox=False)):
    data = cdata.load_fine_grained("sop")
  assert len(data.train) == 18 and len(data.test) == 8 and data.train.bboxes is None
  assert data.train.labels.tolist() == np.repeat(np.arange(6), 3).tolist()
  bad = {"train": np.array([0, 1]), "test": np.array([1, 2])}
  with tfds.testing.mock_data(as_dataset_fn=_mock(bad, "class_id", bbox=False)):
    with pytest.raises(ValueError, match="class-disjoint"):
      cdata.load_fine_grained("sop")


def test_missing_tfds_data_says_where_and_how(tmp_path):
  with pytest.raises(cdata.DatasetNotFoundError, match=r"tfds build caltech_birds2011"):
    cdata.load_fine_grained("cub200", data_dir=str(tmp_path))


def _small_data(classes=6, per_class=7):
  # A mocked CUB: classes 0… train, 100… test (after the merge and re-split).
  labels = {"train": np.repeat(np.arange(classes), per_class), "test": np.repeat(
      np.arange(100, 100 + classes), per_class)}
  with tfds.testing.mock_data(as_dataset_fn=_mock(labels, sizes=(20, 12))):
    return cdata.load_fine_grained("cub200")


def test_pk_batches_from_tfds_are_deterministic_and_have_positives():
  data = _small_data()
  kw = dict(sampler="pk", classes_per_batch=3, images_per_class=4, seed=1, image_size=8)
  first = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=3, **kw))
  assert len(first) == 3
  for b in first:
    assert b["image"].shape == (12, 8, 8, 3) and b["image"].dtype == np.uint8
    counts = np.unique(b["label"], return_counts=True)[1]
    assert counts.tolist() == [4, 4, 4]
  # Resuming at step 2 gives the same batch 2; the labels follow pk_batch_indices.
  again = next(cdata.tfds_train_batches(data.train, first_step=2, num_steps=3, **kw))
  np.testing.assert_array_equal(again["image"], first[2]["image"])
  idx = cdata.pk_batch_indices(data.train.labels, 3, 4, seed=1, step=2)
  np.testing.assert_array_equal(again["label"], data.train.labels[idx])
  # Each mock image is filled with its class id: crops and flips keep the value,
  # so every image sits beside its own label.
  for b in first:
    np.testing.assert_array_equal(b["image"].reshape(12, -1).min(axis=1), b["label"])
    np.testing.assert_array_equal(b["image"].reshape(12, -1).max(axis=1), b["label"])


def test_eval_images_resize_and_centre_crop_with_bbox():
  data = _small_data()
  batches = list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=5))
  assert len(data.test) == 42 and [len(b) for b in batches] == [5] * 8 + [2]
  images = np.concatenate(batches)
  assert images.shape == (42, 8, 8, 3)
  # Mock images are constant (value = original label): centre crops keep the value.
  np.testing.assert_array_equal(images[:, 0, 0, 0], data.test.labels % 256)
  cropped = np.concatenate(list(cdata.tfds_eval_images(data.test, image_size=8, batch_size=50,
                                                       crop_to_bbox=True)))
  assert cropped.shape == images.shape


def test_a_process_reads_only_its_rows_of_each_tfds_batch():
  data = _small_data()
  kw = dict(sampler="pk", classes_per_batch=3, images_per_class=4, seed=1, image_size=8)
  whole = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=2, **kw))
  rows = np.array([1, 2, 7, 11])     # crops and flips keep each row's seed
  part = list(cdata.tfds_train_batches(data.train, first_step=0, num_steps=2, rows=rows, **kw))
  for w, p in zip(whole, part):
    np.testing.assert_array_equal(p["image"], w["image"][rows])
    np.testing.assert_array_equal(p["label"], w["label"][rows])
    assert p["step"] == w["step"]
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
