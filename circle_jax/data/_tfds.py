"""Fine-grained retrieval from prepared TFDS directories: CUB-200-2011, Cars196, Stanford Online Products.

Which step needs TensorFlow:

- **Preparing a set: TensorFlow needed, once.** TFDS's builders download and
  convert the original archives with TensorFlow. Prepare in the ArrayRecord
  format, which can be read by random access::

    pip install tensorflow-cpu tensorflow-datasets
    tfds build caltech_birds2011 --data_dir=<dir> --file_format=array_record

  (``cars196``, ``stanford_online_products`` likewise), or call
  :func:`load_fine_grained` with ``download=True`` on such a machine. A
  directory prepared in TFDS's default TFRecord format has no random access and
  is refused with the command above.
- **Reading, decoding, augmenting: no TensorFlow.** :func:`load_fine_grained`
  opens the prepared directory with ``tfds.data_source`` (ArrayRecord files;
  TFDS parses the records with its own protobuf messages and numpy, and imports
  TensorFlow only lazily, which this path never triggers), keeps the images
  encoded (``tfds.decode.SkipDecoding``) and reads each record's label and box
  once. Image bytes are read per batch by record index (:class:`TfdsRecords`),
  so host memory holds the labels, not the images, and grain worker processes
  reopen the files themselves. :class:`FineGrainedSource` decodes and crops
  with Pillow and numpy; training and evaluation batches come from the same
  grain path as the other photo sources (:class:`circle_jax.data.TrainBatches`
  with :class:`circle_jax.data.RandomResizedCrop`,
  :class:`circle_jax.data.EvalBatches`).

tensorflow-datasets itself is imported inside the functions that read, so
``import circle_jax.data`` imports neither it nor TensorFlow.

Protocol (class-disjoint retrieval): CUB and Cars196 ship a per-image
train/test split; metric learning instead merges both and trains on the first
half of the classes (CUB 0–99: 5,864 images; Cars 0–97: 8,054) and tests on the
second half (CUB 100–199: 5,924; Cars 98–195: 8,131). SOP's TFDS split is
already class-disjoint (59,551 / 60,502 images).

Every random choice (P×K sampling, crop, flip) is a pure function of (seed,
step, position in the batch), so a resumed run sees the same batches, and a
process that decodes only its rows of a batch gets the images the whole batch
has at those rows.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from circle_jax.data._augment import bbox_pixels
from circle_jax.data._augment import centre_crop_geometry
from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._images import open_image
from circle_jax.data._images import resize_region
from circle_jax.data._loader import EvalBatches
from circle_jax.data._loader import RandomResizedCrop
from circle_jax.data._loader import TrainBatches
from circle_jax.data._loader import grain_batches
from circle_jax.data._sources import ImageSource


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
    encoded_keys: the image features of the builder, all kept encoded when
      read (only ``"image"`` is ever decoded, per batch).
  """

  builder: str
  label_key: str
  num_classes: int
  resplit: bool
  bbox_key: str | None
  ks: tuple[int, ...]
  encoded_keys: tuple[str, ...] = ("image",)


FINE_GRAINED = {
    "cub200": FineGrainedSpec("caltech_birds2011", "label", 200, True, "bbox", (1, 2, 4, 8),
                              ("image", "segmentation_mask")),
    "cars196": FineGrainedSpec("cars196", "label", 196, True, "bbox", (1, 2, 4, 8)),
    "sop": FineGrainedSpec("stanford_online_products", "class_id", 22634, False, None,
                           (1, 10, 100, 1000)),
}


class TfdsRecords:
  """The encoded images of TFDS records, read when indexed: a lazy ``Sequence[bytes]``.

  Item ``j`` is feature ``key`` of record ``record[j]`` of ``sources[split[j]]``
  (TFDS data sources, random access over ArrayRecord files). An integer index
  reads one record; an index array or slice gives another view, reading
  nothing. Pickling carries the data sources' file lists, not the images (grain
  workers reopen the files).

  Attributes:
    sources: the data sources, e.g. ``(train, test)``.
    split: [N] int, which source each item is in.
    record: [N] int64, its record index there.
    names: a name per source for messages, e.g. ``("caltech_birds2011 train", …)``.
    key: the feature holding the encoded image.
  """

  def __init__(self, sources: Sequence, split, record, names: Sequence[str], key: str = "image"):
    self.sources, self.names, self.key = tuple(sources), tuple(names), key
    self.split = np.asarray(split, np.int64)
    self.record = np.asarray(record, np.int64)
    if self.split.shape != self.record.shape or self.split.ndim != 1:
      raise ValueError(f"TfdsRecords: split {self.split.shape} and record {self.record.shape} must "
                       "be equal-length vectors")

  def __len__(self) -> int:
    return len(self.record)

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      example = self.sources[self.split[index]][int(self.record[index])]
      return bytes(example[self.key])
    return TfdsRecords(self.sources, self.split[index], self.record[index], self.names, self.key)

  def where(self, j: int) -> str:
    """Where item ``j`` is read from, for messages: ``"<builder> <split> record <r>"``."""
    return f"{self.names[self.split[j]]} record {int(self.record[j])}"


@dataclasses.dataclass(frozen=True)
class EncodedImages:
  """Encoded images with their labels (and boxes, normalised [ymin, xmin, ymax, xmax]).

  Attributes:
    encoded: [N] random-access sequence of encoded images (bytes): an object
      array in memory, or the records of a prepared TFDS set, read on demand
      (:class:`TfdsRecords`, what :func:`load_fine_grained` gives).
    labels: [N] int32.
    bboxes: [N, 4] float32, or None.
  """

  encoded: Sequence[bytes]
  labels: np.ndarray
  bboxes: np.ndarray | None

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, index: np.ndarray) -> "EncodedImages":
    index = np.asarray(index, np.int64)
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
    raise ImportError("reading the fine-grained sets needs tensorflow-datasets (not TensorFlow): "
                      "pip install tensorflow-datasets") from e
  return tfds


def prepare_command(builder: str) -> str:
  """How to prepare ``builder``'s data for :func:`load_fine_grained` (the text of the error).

  Example:
    >>> "`tfds build cars196 --data_dir=<dir> --file_format=array_record`" in prepare_command("cars196")
    True
  """
  return (f"on a machine with TensorFlow (pip install tensorflow-cpu tensorflow-datasets) and "
          f"the downloads, run `tfds build {builder} --data_dir=<dir> "
          "--file_format=array_record` once (or copy a directory prepared so), then set "
          "config.data.path to <dir>; or set config.data.download=True there. Training and "
          "evaluation then read <dir> without TensorFlow")


def _open_splits(spec: FineGrainedSpec, data_dir: str | None, download: bool) -> list:
  """The train and test data sources of a prepared (ArrayRecord) directory."""
  tfds = _tfds()
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(spec.builder, data_dir=data_dir or None)
  where = str(builder.data_path)
  builder_kwargs = None
  if builder.is_prepared():
    formats = builder.info.available_file_formats()
    if not formats & file_adapters.FileFormat.with_random_access():
      raise DatasetNotFoundError(
          spec.builder, where, prepare_command(spec.builder),
          f"prepared as {', '.join(sorted(f.value for f in formats))}, which has no random "
          "access; prepare it again with --file_format=array_record")
  elif download:
    builder_kwargs = {"file_format": file_adapters.FileFormat.ARRAY_RECORD.value}
  else:
    raise DatasetNotFoundError(spec.builder, where, prepare_command(spec.builder), "not prepared")
  return tfds.data_source(
      spec.builder, split=["train", "test"], data_dir=data_dir or None, download=download,
      decoders={k: tfds.decode.SkipDecoding() for k in spec.encoded_keys},
      builder_kwargs=builder_kwargs)


def _labels_and_boxes(source, spec: FineGrainedSpec, chunk: int = 1024):
  """Every record's label [N] int32 and box [N, 4] float32 (or None), read in chunks."""
  n = len(source)
  labels = np.empty(n, np.int32)
  boxes = np.empty((n, 4), np.float32) if spec.bbox_key else None
  for start in range(0, n, chunk):
    # __getitems__ reads a chunk of records in one call to the ArrayRecord reader.
    for j, ex in enumerate(source.__getitems__(list(range(start, min(start + chunk, n)))),
                           start=start):
      labels[j] = int(ex[spec.label_key])
      if boxes is not None:
        boxes[j] = np.asarray(ex[spec.bbox_key], np.float32)
  return labels, boxes


def load_fine_grained(name: str, data_dir: str | None = None, *,
                      download: bool = False) -> FineGrainedData:
  """Opens a fine-grained retrieval set prepared by TFDS and splits it by class.

  Reads every record's label (and box) once; the images stay in the files and
  are read per batch (no TensorFlow needed; see the module docstring).

  Args:
    name: ``"cub200"``, ``"cars196"`` or ``"sop"`` (:data:`FINE_GRAINED`).
    data_dir: the TFDS data directory (None: TFDS's default,
      ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data, in the ArrayRecord
      format (needs TensorFlow; off by default: never downloads unless asked).

  Returns:
    A :class:`FineGrainedData`; its images are :class:`TfdsRecords`.

  Raises:
    DatasetNotFoundError: the data is not prepared in ``data_dir``, or only
      in a format without random access (the message gives the command).
    ValueError: SOP's train and test classes overlap.

  Example (a set prepared by ``tfds build``)::

    data = load_fine_grained("cub200", "/data/tensorflow_datasets")
    len(data.train), len(data.test)   # (5864, 5924)
  """
  if name not in FINE_GRAINED:
    raise ValueError(f"load_fine_grained: unknown dataset {name!r}; known: {sorted(FINE_GRAINED)}")
  spec = FINE_GRAINED[name]
  sources = _open_splits(spec, data_dir, download)
  read = [_labels_and_boxes(src, spec) for src in sources]
  labels = np.concatenate([y for y, _ in read])
  both = EncodedImages(
      TfdsRecords(sources, np.repeat(np.arange(len(sources)), [len(y) for y, _ in read]),
                  np.concatenate([np.arange(len(y)) for y, _ in read]),
                  [f"{spec.builder} {s}" for s in ("train", "test")]),
      labels, np.concatenate([b for _, b in read]) if spec.bbox_key else None)
  if spec.resplit:
    train_idx, test_idx = class_half_split(labels, spec.num_classes)
  else:
    train_idx = np.arange(len(read[0][0]))
    test_idx = np.arange(len(read[0][0]), len(labels))
    overlap = np.intersect1d(labels[train_idx], labels[test_idx])
    if overlap.size:
      raise ValueError(f"{spec.builder}: train and test share {overlap.size} classes; expected a "
                       "class-disjoint split")
  train, test = both.subset(train_idx), both.subset(test_idx)
  remapped = np.unique(train.labels, return_inverse=True)[1].astype(np.int32)
  return FineGrainedData(name, EncodedImages(train.encoded, remapped, train.bboxes), test)


class FineGrainedSource(ImageSource):
  """Encoded photos of any size as S×S views: the evaluation view, and regions to crop from.

  ``image(i)`` is the evaluation view: the image (or its box, with
  ``crop_to_bbox``) with its shorter side resized (bilinear) to
  ``S · resize_ratio``, then the centre S×S square. ``region(i)`` is what
  :class:`circle_jax.data.RandomResizedCrop` crops from for training. Decoded
  with Pillow; a grain pipeline (:class:`circle_jax.data.TrainBatches`,
  :class:`circle_jax.data.EvalBatches`) or ``images(idx, map_fn=pool.map)``
  decodes in parallel.

  Args:
    images: the encoded images, labels and boxes.
    image_size: S.
    crop_to_bbox: crop each image to its box first (no effect without boxes).
    resize_ratio: the shorter side before the centre crop, as a multiple of S.

  Example:
    >>> from circle_jax.data._images import encode_image
    >>> png = encode_image(np.zeros((30, 40, 3), np.uint8), "PNG")
    >>> src = FineGrainedSource(EncodedImages(np.array([png], object), np.array([0]), None), 16)
    >>> src.images([0]).shape, src.region(0)[1]
    ((1, 16, 16, 3), (0, 0, 30, 40))
  """

  def __init__(self, images: EncodedImages, image_size: int, *, crop_to_bbox: bool = False,
               resize_ratio: float = 256 / 224):
    if image_size < 1:
      raise ValueError(f"FineGrainedSource: image_size must be ≥ 1, got {image_size}")
    if resize_ratio < 1:
      raise ValueError(f"FineGrainedSource: resize_ratio must be ≥ 1 (the crop lies inside the "
                       f"resized image), got {resize_ratio}")
    self.encoded = images.encoded
    self.labels = np.asarray(images.labels, np.int32)
    self.bboxes = images.bboxes if crop_to_bbox else None
    self.size = (int(image_size), int(image_size))
    self.resize_ratio = float(resize_ratio)

  def region(self, i: int):
    """``(PIL image, (top, left, bottom, right))``: item ``i``, and its box (or all of it) in pixels."""
    try:
      img = open_image(self.encoded[i])
    except ValueError as e:
      where = getattr(self.encoded, "where", None)
      raise ValueError(f"{where(i) if where else f'image {i}'}: {e}") from None
    if self.bboxes is None:
      return img, (0, 0, img.height, img.width)
    return img, bbox_pixels(self.bboxes[i], img.height, img.width)

  def image(self, i: int) -> np.ndarray:
    img, (top, left, bottom, right) = self.region(i)
    s = self.size[0]
    resized, (y, x) = centre_crop_geometry(bottom - top, right - left, s, self.resize_ratio)
    return resize_region(img, resized, (top, left, bottom, right))[y:y + s, x:x + s]


def train_batches(images: EncodedImages, *, first_step: int, num_steps: int, sampler: str,
                  classes_per_batch: int, images_per_class: int, seed: int, image_size: int,
                  crop_to_bbox: bool = False, min_area: float = 0.16,
                  rows: np.ndarray | None = None, num_workers: int = 0) -> Iterator[dict]:
  """Training batches of steps ``first_step … num_steps − 1``, decoded ahead in a grain pipeline.

  Batch s holds the images of ``pk_batch_indices(labels, P, K, seed, s)`` (or
  a shuffled batch of P·K for class-level losses), each decoded, optionally
  cropped to its box, randomly resized-cropped and flipped
  (:class:`circle_jax.data.RandomResizedCrop`: draws of (seed, s, position)):
  the same step always gives the same batch. With ``rows`` (the rows of the
  batch this process holds, ``circle_jax.training.process_rows``) only those
  are read and decoded; each keeps the draws of its position in the whole batch.

  Args:
    images: the training images (``load_fine_grained(…).train``).
    first_step, num_steps: the steps to yield.
    sampler: ``"pk"`` or ``"shuffle"`` (:func:`circle_jax.data.batch_indices`).
    classes_per_batch, images_per_class: P, K.
    seed: the data seed.
    image_size: S.
    crop_to_bbox: crop to each image's box before the random crop.
    min_area: the smallest crop, as a fraction of the image (or box) area.
    rows: this process's rows (default: all P·K).
    num_workers: grain worker processes that decode (0: a thread of this one).

  Yields:
    ``{"image": uint8 [R, S, S, 3], "label": int32 [R], "step": int64,
    "decoded": int64}`` numpy batches, R = P·K or ``len(rows)``; the iterator
    has grain's ``get_state()``.
  """
  batch_size = classes_per_batch * images_per_class
  rows = np.arange(batch_size) if rows is None else np.asarray(rows, np.int64)
  fn = TrainBatches(FineGrainedSource(images, image_size, crop_to_bbox=crop_to_bbox), rows,
                    sampler, classes_per_batch, images_per_class, seed,
                    RandomResizedCrop(min_area=min_area))
  return grain_batches(fn, max(num_steps - first_step, 0), num_workers=num_workers,
                       start=first_step)


def eval_images(images: EncodedImages, *, image_size: int, batch_size: int,
                crop_to_bbox: bool = False, resize_ratio: float = 256 / 224,
                indices: np.ndarray | None = None, num_workers: int = 0) -> Iterator[np.ndarray]:
  """Every image, in order, resized (shorter side image_size·resize_ratio) and centre-cropped.

  Args:
    images: the encoded images.
    image_size: S.
    batch_size: images per yielded batch.
    crop_to_bbox: crop to each image's box first.
    resize_ratio: the shorter side before the centre crop, as a multiple of S.
    indices: the images to read, in this order (default all); −1 yields a
      zero image (padding), which is not decoded.
    num_workers: grain worker processes that decode (0: a thread of this one).

  Yields:
    uint8 [≤ batch_size, S, S, 3] batches (the last may be short).
  """
  source = FineGrainedSource(images, image_size, crop_to_bbox=crop_to_bbox,
                             resize_ratio=resize_ratio)
  fn = EvalBatches(source, np.arange(batch_size), batch_size,
                   order=None if indices is None else np.asarray(indices, np.int64))
  for b, batch in enumerate(grain_batches(fn, fn.num_batches(), num_workers=num_workers)):
    yield batch["image"][:fn.num_items() - b * batch_size]
