"""Fine-grained retrieval through TFDS and tf.data: CUB-200-2011, Cars196, Stanford Online Products.

TensorFlow and tensorflow-datasets are imported inside the functions that need
them, so ``import circle_jax.data`` stays free of TensorFlow.

Protocol (class-disjoint retrieval): CUB and Cars196 ship a per-image
train/test split; metric learning instead merges both and trains on the first
half of the classes (CUB 0–99: 5,864 images; Cars 0–97: 8,054) and tests on the
second half (CUB 100–199: 5,924; Cars 98–195: 8,131). SOP's TFDS split is
already class-disjoint (59,551 / 60,502 images).

Images are kept encoded in host memory (``tfds.decode.SkipDecoding``) and
decoded per batch in a tf.data pipeline; every random choice (P×K sampling,
crop, flip) is a pure function of (seed, step, position in batch), so a
resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._sampling import pk_batch_indices
from circle_jax.data._sampling import shuffled_batch_indices


@dataclasses.dataclass(frozen=True)
class FineGrainedSpec:
  """How one TFDS builder maps onto the retrieval protocol.

  Attributes:
    builder: TFDS builder name.
    label_key: the feature holding the class.
    num_classes: classes in the whole dataset.
    resplit: True: merge train+test, first half of the classes trains;
      False: keep TFDS's (already class-disjoint) train/test.
    bbox_key: the box feature, or None.
    ks: the Recall@K values the paper reports.
  """

  builder: str
  label_key: str
  num_classes: int
  resplit: bool
  bbox_key: str | None
  ks: tuple[int, ...]


FINE_GRAINED = {
    "cub200": FineGrainedSpec("caltech_birds2011", "label", 200, True, "bbox", (1, 2, 4, 8)),
    "cars196": FineGrainedSpec("cars196", "label", 196, True, "bbox", (1, 2, 4, 8)),
    "sop": FineGrainedSpec("stanford_online_products", "class_id", 22634, False, None,
                           (1, 10, 100, 1000)),
}


@dataclasses.dataclass(frozen=True)
class EncodedImages:
  """Encoded images in memory with their labels (and boxes, normalised [ymin, xmin, ymax, xmax])."""

  encoded: np.ndarray          # [N] object array of bytes
  labels: np.ndarray           # [N] int32
  bboxes: np.ndarray | None    # [N, 4] float32 or None

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, index: np.ndarray) -> "EncodedImages":
    return EncodedImages(self.encoded[index], self.labels[index],
                         None if self.bboxes is None else self.bboxes[index])


@dataclasses.dataclass(frozen=True)
class FineGrainedData:
  """Train and test sides of a class-disjoint split.

  ``train.labels`` are remapped to 0 … C_train − 1 (proxy rows for class-level
  losses); ``test.labels`` keep the dataset's class ids.
  """

  name: str
  train: EncodedImages
  test: EncodedImages

  @property
  def num_train_classes(self) -> int:
    return int(self.train.labels.max()) + 1 if len(self.train) else 0


def class_half_split(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices of items in the first / second half of the classes (``label < num_classes // 2``).

  Example:
    >>> class_half_split(np.array([0, 3, 1, 2, 2]), 4)
    (array([0, 2]), array([1, 3, 4]))
  """
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"class_half_split: labels must be in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")
  half = num_classes // 2
  return np.flatnonzero(labels < half), np.flatnonzero(labels >= half)


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the TFDS pipelines need tensorflow-datasets and tensorflow: "
                      "pip install tensorflow-datasets tensorflow-cpu") from e
  return tfds


def _read_split(tfds, spec: FineGrainedSpec, split: str, data_dir, download: bool) -> EncodedImages:
  try:
    ds = tfds.load(spec.builder, split=split, data_dir=data_dir or None, download=download,
                   decoders={"image": tfds.decode.SkipDecoding()})
  except AssertionError as e:  # TFDS's "could not find data in …"
    raise DatasetNotFoundError(
        spec.builder, data_dir or "the default TFDS data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)",
        f"run `tfds build {spec.builder} --data_dir=<dir>` once on a machine with the "
        "downloads (or copy a prepared TFDS directory there), then set config.data.path to "
        "<dir>; or set config.data.download=True", str(e).split(".")[0]) from None
  encoded, labels, boxes = [], [], []
  for ex in tfds.as_numpy(ds):
    encoded.append(bytes(ex["image"]))
    labels.append(int(ex[spec.label_key]))
    if spec.bbox_key:
      boxes.append(np.asarray(ex[spec.bbox_key], np.float32))
  enc = np.empty(len(encoded), object)
  enc[:] = encoded
  return EncodedImages(enc, np.asarray(labels, np.int32),
                       np.stack(boxes) if spec.bbox_key and boxes else
                       (np.zeros((0, 4), np.float32) if spec.bbox_key else None))


def load_fine_grained(name: str, data_dir: str | None = None, *,
                      download: bool = False) -> FineGrainedData:
  """Loads a fine-grained retrieval dataset from TFDS and splits it by class.

  Args:
    name: ``"cub200"``, ``"cars196"`` or ``"sop"`` (:data:`FINE_GRAINED`).
    data_dir: the TFDS data directory (None: TFDS's default).
    download: let TFDS download and prepare the data (off by default: never
      downloads unless asked).

  Returns:
    A :class:`FineGrainedData`; images stay encoded.

  Raises:
    DatasetNotFoundError: the data is not prepared in ``data_dir``.
  """
  if name not in FINE_GRAINED:
    raise ValueError(f"load_fine_grained: unknown dataset {name!r}; known: {sorted(FINE_GRAINED)}")
  spec = FINE_GRAINED[name]
  tfds = _tfds()
  if spec.resplit:
    train = _read_split(tfds, spec, "train", data_dir, download)
    test = _read_split(tfds, spec, "test", data_dir, download)
    both = EncodedImages(np.concatenate([train.encoded, test.encoded]),
                         np.concatenate([train.labels, test.labels]),
                         None if train.bboxes is None else np.concatenate([train.bboxes, test.bboxes]))
    train_idx, test_idx = class_half_split(both.labels, spec.num_classes)
    train, test = both.subset(train_idx), both.subset(test_idx)
  else:
    train = _read_split(tfds, spec, "train", data_dir, download)
    test = _read_split(tfds, spec, "test", data_dir, download)
    overlap = np.intersect1d(train.labels, test.labels)
    if overlap.size:
      raise ValueError(f"{spec.builder}: train and test share {overlap.size} classes; expected a "
                       "class-disjoint split")
  remapped = np.unique(train.labels, return_inverse=True)[1].astype(np.int32)
  train = EncodedImages(train.encoded, remapped, train.bboxes)
  return FineGrainedData(name, train, test)


def _preprocess_fn(image_size: int, train: bool, crop_to_bbox: bool, resize_ratio: float,
                   min_area: float):
  """A tf function (bytes, bbox, seed[2]) → uint8 [S, S, 3]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def fn(encoded, bbox, seed):
    img = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if crop_to_bbox:
      h = tf.cast(tf.shape(img)[0], tf.float32)
      w = tf.cast(tf.shape(img)[1], tf.float32)
      y0 = tf.cast(tf.floor(bbox[0] * h), tf.int32)
      x0 = tf.cast(tf.floor(bbox[1] * w), tf.int32)
      y1 = tf.maximum(tf.cast(tf.math.ceil(bbox[2] * h), tf.int32), y0 + 1)
      x1 = tf.maximum(tf.cast(tf.math.ceil(bbox[3] * w), tf.int32), x0 + 1)
      img = img[y0:y1, x0:x1]
    if train:
      # Random resized crop (area in [min_area, 1], aspect in [3/4, 4/3]) + flip.
      begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.shape(img), tf.zeros([1, 0, 4], tf.float32), seed=seed,
          area_range=(min_area, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
          max_attempts=10, use_image_if_no_bounding_boxes=True)
      img = tf.slice(img, begin, size)
      img = tf.image.resize(img, (image_size, image_size), method="bilinear")
      img = tf.image.stateless_random_flip_left_right(img, seed=seed + 1)
    else:
      # Shorter side to image_size·resize_ratio (256 for 224), then the centre square.
      short = tf.cast(tf.reduce_min(tf.shape(img)[:2]), tf.float32)
      scale = (image_size * resize_ratio) / short
      hw = tf.cast(tf.math.round(tf.cast(tf.shape(img)[:2], tf.float32) * scale), tf.int32)
      hw = tf.maximum(hw, image_size)
      img = tf.image.resize(img, hw, method="bilinear")
      img = tf.image.resize_with_crop_or_pad(img, image_size, image_size)
    return tf.cast(tf.clip_by_value(tf.math.round(img), 0, 255), tf.uint8)

  return fn


def _boxes(images: EncodedImages) -> np.ndarray:
  if images.bboxes is None:
    return np.tile(np.array([[0, 0, 1, 1]], np.float32), (len(images), 1))
  return images.bboxes


def train_batches(images: EncodedImages, *, first_step: int, num_steps: int, sampler: str,
                  classes_per_batch: int, images_per_class: int, seed: int, image_size: int,
                  crop_to_bbox: bool = False, min_area: float = 0.16,
                  rows: np.ndarray | None = None) -> Iterator[dict]:
  """Training batches of steps ``first_step … num_steps − 1`` from a tf.data pipeline.

  Batch s holds the images of ``pk_batch_indices(labels, P, K, seed, s)`` (or
  a shuffled batch of P·K for class-level losses), each decoded, optionally
  cropped to its box, randomly resized-cropped and flipped with stateless
  seeds (seed, s, position): the same step always gives the same batch,
  decoded in parallel. With ``rows`` (the rows of the batch this process holds,
  ``circle_jax.training.process_rows``) only those are read and decoded; each
  keeps the seeds of its position in the whole batch.

  Yields:
    ``{"image": uint8 [R, S, S, 3], "label": int32 [R], "step": int64}`` numpy
    batches, R = P·K or ``len(rows)``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batch_size = classes_per_batch * images_per_class
  rows = np.arange(batch_size) if rows is None else np.asarray(rows, np.int64)
  labels, encoded, boxes = images.labels, images.encoded, _boxes(images)

  def indices(step):
    if sampler == "pk":
      return pk_batch_indices(labels, classes_per_batch, images_per_class, seed=seed, step=int(step))
    if sampler == "shuffle":
      return shuffled_batch_indices(len(labels), batch_size, seed=seed, step=int(step))
    raise ValueError(f"train_batches: sampler must be 'pk' or 'shuffle', got {sampler!r}")

  def fetch(i):
    return encoded[int(i)], boxes[int(i)], labels[int(i)]

  preprocess = _preprocess_fn(image_size, True, crop_to_bbox, 1.0, min_area)

  def local_indices(step):
    return indices(step)[rows]

  def per_step(step):
    idx = tf.numpy_function(local_indices, [step], tf.int64, stateful=False)
    idx.set_shape([len(rows)])
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([len(rows)], step), tf.constant(rows), idx))

  def load(step, pos, i):
    enc, box, label = tf.numpy_function(fetch, [i], (tf.string, tf.float32, tf.int32),
                                        stateful=False)
    box.set_shape([4])
    # A distinct stateless seed per (step, position); the +1 stream flips.
    s = tf.stack([tf.cast(seed, tf.int64), step * batch_size + pos])
    return {"image": preprocess(enc, box, s), "label": tf.reshape(label, []), "step": step}

  ds = tf.data.Dataset.range(first_step, num_steps).flat_map(per_step)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(len(rows)).prefetch(2)
  for batch in ds.as_numpy_iterator():
    yield {**batch, "step": np.int64(batch["step"][0])}


def eval_images(images: EncodedImages, *, image_size: int, batch_size: int,
                crop_to_bbox: bool = False, resize_ratio: float = 256 / 224,
                indices: np.ndarray | None = None) -> Iterator[np.ndarray]:
  """Every image, in order, resized (shorter side image_size·resize_ratio) and centre-cropped.

  Args:
    images: the encoded images.
    image_size: S.
    batch_size: images per yielded batch.
    crop_to_bbox: crop to each image's box first.
    resize_ratio: the shorter side before the centre crop, as a multiple of S.
    indices: the images to read, in this order (default all); −1 yields a
      zero image (padding), which is not decoded.

  Yields:
    uint8 [≤ batch_size, S, S, 3] batches (the last may be short).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  preprocess = _preprocess_fn(image_size, False, crop_to_bbox, resize_ratio, 1.0)
  encoded, boxes = images.encoded, _boxes(images)
  zero_seed = tf.zeros([2], tf.int64)

  indices = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)

  def fetch(i):
    return encoded[int(i)], boxes[int(i)]

  def load(i):
    # Bytes are fetched by index: a tensor of every encoded image could exceed
    # the 2 GiB graph limit (SOP).
    enc, box = tf.numpy_function(fetch, [i], (tf.string, tf.float32), stateful=False)
    box.set_shape([4])
    return preprocess(enc, box, zero_seed)

  def load_or_pad(i):
    return tf.cond(i >= 0, lambda: load(tf.maximum(i, 0)),
                   lambda: tf.zeros([image_size, image_size, 3], tf.uint8))

  ds = tf.data.Dataset.from_tensor_slices(indices).map(
      load_or_pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  yield from ds.batch(batch_size).prefetch(2).as_numpy_iterator()
