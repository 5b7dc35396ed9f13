"""Per-process batches on grain: each process reads and decodes only its own rows of a batch.

A training batch is a pure function of (seed, step): the sampler draws the
global index list of step ``s`` (:func:`batch_indices`), the augmentation draws
its global random numbers (:class:`HostAugment`), and a process keeps the rows
its devices hold (``circle_jax.training.process_rows``). Only those rows are
read and decoded, so the work of the input pipeline is divided over the hosts
while the batches stay independent of how many there are.

The per-step functions (:class:`TrainBatches`, :class:`EvalBatches`) are plain
picklable objects; :func:`grain_batches` runs them in a ``grain`` pipeline,
in ``num_workers`` worker processes that decode ahead of the training step,
through an iterator whose position (``get_state``) goes into the checkpoint.
``grain`` is imported when :func:`grain_batches` is first called, never by
``import circle_jax.data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from circle_jax.data._augment import affine_images
from circle_jax.data._augment import flip_images
from circle_jax.data._augment import random_resized_crop_box
from circle_jax.data._augment import shift_images
from circle_jax.data._images import resize_region
from circle_jax.data._sampling import pk_batch_indices
from circle_jax.data._sampling import shuffled_batch_indices
from circle_jax.data._sources import ImageSource

SAMPLERS = ("pk", "shuffle")


def batch_indices(labels: np.ndarray, step: int, *, sampler: str, classes_per_batch: int,
                  images_per_class: int, seed: int) -> np.ndarray:
  """The global index list of training batch ``step``: P×K or shuffled, a function of (seed, step).

  Args:
    labels: [N] labels of the training pool.
    step: the training step.
    sampler: ``"pk"`` (P classes × K images: pair-wise losses) or
      ``"shuffle"`` (epochs of permutations, batches of P·K: class-level losses).
    classes_per_batch: P.
    images_per_class: K.
    seed: the data seed.

  Returns:
    [P·K] int64 indices into ``labels``.

  Example:
    >>> y = np.repeat(np.arange(4), 5)
    >>> batch_indices(y, 0, sampler="shuffle", classes_per_batch=2, images_per_class=3, seed=0).shape
    (6,)
  """
  if sampler == "pk":
    return pk_batch_indices(labels, classes_per_batch, images_per_class, seed=seed, step=step)
  if sampler == "shuffle":
    return shuffled_batch_indices(len(labels), classes_per_batch * images_per_class, seed=seed,
                                  step=step)
  raise ValueError(f"batch_indices: sampler must be one of {SAMPLERS}, got {sampler!r}")


def normalise_images(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 images → float32 ``(x / 255 − mean) / std``; ``mean=None`` returns them unchanged.

  Example:
    >>> normalise_images(np.array([[255]], np.uint8), (0.5,), (0.5,)).tolist()
    [[1.0]]
  """
  if mean is None:
    return images
  # Mean/std in [0, 1] units, as torchvision's ImageNet constants are given.
  x = images.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


@dataclasses.dataclass(frozen=True)
class HostAugment:
  """Flips, small rotations and scalings, and translations, drawn for the whole batch.

  The random numbers of step ``s`` come from ``default_rng([seed, s, 1])``
  (stream 1: never the sampler's draws): flips, then the shifts, then the
  angles, then the scales, each for all ``batch_size`` rows and each only when
  enabled (so enabling one leaves the others' draws as they were). A process
  applies those of its own rows, so an image is augmented the same way
  whichever process decodes it. Applied in the order flip, rotate and scale
  about the centre, shift.

  Attributes:
    flip: left–right mirrors with probability ½ (not for characters).
    max_shift: translations of up to this many pixels in x and y.
    max_rotation: rotations uniform in ±this many degrees.
    max_scale: scale factors uniform in [1 − this, 1 + this].

  Example:
    >>> x = np.arange(8.0).reshape(2, 1, 4, 1)
    >>> aug = HostAugment(flip=True)
    >>> whole = aug(x, np.arange(2), 2, seed=0, step=3)
    >>> bool((aug(x[1:], np.array([1]), 2, seed=0, step=3) == whole[1:]).all())
    True
  """

  flip: bool = False
  max_shift: int = 0
  max_rotation: float = 0.0
  max_scale: float = 0.0

  def __call__(self, images: np.ndarray, rows: np.ndarray, batch_size: int, *, seed: int,
               step: int) -> np.ndarray:
    if not (self.flip or self.max_shift or self.max_rotation or self.max_scale):
      return images
    rng = np.random.default_rng([int(seed), int(step), 1])
    if self.flip:
      images = flip_images(images, (rng.random(batch_size) < 0.5)[rows])
    shifts = rng.integers(0, 2 * self.max_shift + 1, size=(2, batch_size)) if self.max_shift else None
    angles = np.zeros(batch_size)
    scales = np.ones(batch_size)
    if self.max_rotation:
      angles = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation, batch_size))
    if self.max_scale:
      scales = rng.uniform(1 - self.max_scale, 1 + self.max_scale, batch_size)
    if self.max_rotation or self.max_scale:
      images = affine_images(images, angles[rows], scales[rows])
    if shifts is not None:
      images = shift_images(images, self.max_shift, shifts[0][rows], shifts[1][rows])
    return images

  def images(self, source: ImageSource, idx: np.ndarray, rows: np.ndarray, batch_size: int, *,
             seed: int, step: int) -> np.ndarray:
    """Items ``idx`` of ``source`` (the images of ``rows``), decoded, then augmented as above."""
    return self(source.images(idx), rows, batch_size, seed=seed, step=step)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
  """Random resized crops and left–right flips of photos, chosen per image before decoding.

  For the image at row r of training batch s, a generator
  ``default_rng([seed, s, r, 2])`` (stream 2: never the sampler's or
  :class:`HostAugment`'s draws) draws the flip, then a box of the image's region
  (:func:`circle_jax.data.random_resized_crop_box`: area fraction in
  ``[min_area, 1]``, aspect ratio in ``aspect_range``, ``attempts`` tries,
  else the whole region), which is cropped and resized (bilinear) to
  ``source.size``. Each image's view is thus a function of (seed, step, row)
  alone: a process that decodes only its rows gets the crops the whole batch
  would have.

  The source must have ``region(i)``: ``(PIL image, (top, left, bottom,
  right))``, the region of item ``i`` to crop from (the whole image, or its
  object box): :class:`circle_jax.data.FineGrainedSource`.

  Example:
    >>> from circle_jax.data._images import encode_image
    >>> from circle_jax.data._tfds import EncodedImages, FineGrainedSource
    >>> png = encode_image(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3), "PNG")
    >>> src = FineGrainedSource(EncodedImages(np.array([png] * 4, object), np.arange(4), None), 8)
    >>> crop = RandomResizedCrop(min_area=0.25)
    >>> whole = crop.images(src, np.arange(4), np.arange(4), 4, seed=0, step=5)
    >>> whole.shape, whole.dtype
    ((4, 8, 8, 3), dtype('uint8'))
    >>> part = crop.images(src, np.array([2]), np.array([2]), 4, seed=0, step=5)
    >>> bool((part[0] == whole[2]).all())
    True
  """

  min_area: float = 0.16
  aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
  attempts: int = 10
  flip: bool = True

  def image(self, source: ImageSource, i: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3]: item ``i`` of ``source`` cropped, resized and flipped by draws of ``rng``."""
    region = getattr(source, "region", None)
    if region is None:
      raise TypeError(f"RandomResizedCrop: {type(source).__name__} has no region(i) to crop "
                      "from (use HostAugment for sources of fixed-size images)")
    flip = self.flip and rng.random() < 0.5
    img, (top, left, bottom, right) = region(int(i))
    y0, x0, y1, x1 = random_resized_crop_box(bottom - top, right - left, rng,
                                             area_range=(self.min_area, 1.0),
                                             aspect_range=self.aspect_range,
                                             attempts=self.attempts)
    out = resize_region(img, source.size, (top + y0, left + x0, top + y1, left + x1))
    return out[:, ::-1] if flip else out

  def images(self, source: ImageSource, idx: np.ndarray, rows: np.ndarray, batch_size: int, *,
             seed: int, step: int) -> np.ndarray:
    """uint8 [len(idx), H, W, 3]: item ``idx[j]`` as the image of row ``rows[j]`` of batch ``step``."""
    del batch_size  # each row's draws are its own: they do not depend on the others
    if len(idx) != len(rows):
      raise ValueError(f"RandomResizedCrop: {len(idx)} items for {len(rows)} rows")
    if not len(idx):
      return np.zeros((0, *source.size, 3), np.uint8)
    return np.stack([self.image(source, i, np.random.default_rng([int(seed), int(step), int(r), 2]))
                     for i, r in zip(idx, rows)])


@dataclasses.dataclass(frozen=True, eq=False)
class TrainBatches:
  """``step → {"image", "label", "step", "decoded"}``: this process's rows of training batch ``step``.

  Attributes:
    source: the training images (labels up front, pixels decoded on demand).
    rows: the rows of the global batch this process holds (sorted).
    sampler: see :func:`batch_indices`.
    classes_per_batch: see :func:`batch_indices`.
    images_per_class: see :func:`batch_indices`.
    seed: see :func:`batch_indices`.
    augment: the augmentation: :class:`HostAugment` (of decoded, fixed-size
      images) or :class:`RandomResizedCrop` (chosen before decoding, for
      sources with ``region``).
    mean: with ``std``, normalises uint8 images to float32
      ``(x / 255 − mean) / std``; ``None`` for sources that are float already.
    std: see ``mean``.

  Example:
    >>> from circle_jax.data._sources import ArrayImageSource
    >>> src = ArrayImageSource(np.zeros((6, 2, 2, 3), np.uint8), [0, 0, 0, 1, 1, 1])
    >>> fn = TrainBatches(src, np.array([2, 3]), "pk", 2, 2, seed=0, mean=(0.5,), std=(0.5,))
    >>> b = fn(7)
    >>> b["image"].shape, b["image"].dtype, int(b["step"]), int(b["decoded"])
    ((2, 2, 2, 3), dtype('float32'), 7, 2)
  """

  source: ImageSource
  rows: np.ndarray
  sampler: str
  classes_per_batch: int
  images_per_class: int
  seed: int
  augment: HostAugment | RandomResizedCrop = HostAugment()
  mean: Any = None
  std: Any = None

  @property
  def batch_size(self) -> int:
    return self.classes_per_batch * self.images_per_class

  def indices(self, step: int) -> np.ndarray:
    """This process's item indices of batch ``step``."""
    return batch_indices(self.source.labels, step, sampler=self.sampler,
                         classes_per_batch=self.classes_per_batch,
                         images_per_class=self.images_per_class, seed=self.seed)[self.rows]

  def __call__(self, step: int) -> dict:
    step = int(step)
    idx = self.indices(step)
    images = self.augment.images(self.source, idx, self.rows, self.batch_size, seed=self.seed,
                                 step=step)
    return {"image": normalise_images(images, self.mean, self.std),
            "label": self.source.labels[idx], "step": np.int64(step),
            "decoded": np.int64(len(idx))}


@dataclasses.dataclass(frozen=True, eq=False)
class EvalBatches:
  """``b → {"image", "decoded"}``: this process's rows of evaluation batch ``b``, in order.

  Batch ``b`` holds items ``b·batch_size … (b+1)·batch_size − 1`` (of ``order``
  where given); rows past the last item, and −1 entries of ``order``, are zero
  images (padding: decoded by no one, dropped after embedding).

  Attributes:
    source: the images.
    rows: the rows of each batch this process holds.
    batch_size: the global batch.
    mean: see :class:`TrainBatches`.
    std: see :class:`TrainBatches`.
    order: the items to read, in this order, −1 for padding (default: every
      item of ``source`` in turn).

  Example:
    >>> from circle_jax.data._sources import ArrayImageSource
    >>> src = ArrayImageSource(np.ones((5, 2, 2, 3), np.uint8), np.zeros(5))
    >>> b = EvalBatches(src, np.array([0, 1]), batch_size=4)(1)  # items 4 and 5 (padding)
    >>> b["image"][:, 0, 0, 0].tolist(), int(b["decoded"])
    ([1, 0], 1)
    >>> int(EvalBatches(src, np.arange(3), 3, order=np.array([4, -1, 0]))(0)["decoded"])
    2
  """

  source: ImageSource
  rows: np.ndarray
  batch_size: int
  mean: Any = None
  std: Any = None
  order: np.ndarray | None = None

  def num_items(self) -> int:
    return len(self.source) if self.order is None else len(self.order)

  def num_batches(self) -> int:
    return -(-self.num_items() // self.batch_size)

  def __call__(self, b: int) -> dict:
    pos = int(b) * self.batch_size + np.asarray(self.rows, np.int64)
    inside = pos < self.num_items()
    idx = np.full(len(pos), -1, np.int64)
    idx[inside] = pos[inside] if self.order is None else np.asarray(self.order)[pos[inside]]
    valid = idx >= 0
    decoded = self.source.images(idx[valid])
    images = np.zeros((len(idx),) + decoded.shape[1:], decoded.dtype)
    images[valid] = decoded
    return {"image": normalise_images(images, self.mean, self.std), "decoded": np.int64(valid.sum())}


def grain_batches(fn, num_items: int, *, num_workers: int = 0, state: dict | None = None,
                  buffer_size: int = 2, start: int = 0) -> Iterator[dict]:
  """``fn(start), fn(start + 1), …, fn(start + num_items − 1)`` from a grain pipeline, decoded ahead.

  Args:
    fn: a picklable ``int → dict of numpy arrays`` (:class:`TrainBatches`,
      :class:`EvalBatches`).
    num_items: the length of the sequence.
    num_workers: worker processes that call ``fn`` ahead of the consumer (0:
      a thread of this process does).
    state: an iterator state from ``get_state()`` of an earlier iterator over
      the same sequence (a checkpoint): continue where it stopped.
    buffer_size: items prepared ahead (by each worker, and by the reading thread).
    start: the argument of the first call (e.g. the first training step).

  Returns:
    A grain ``DatasetIterator`` (``get_state()`` / ``set_state()``).

  Example:
    >>> it = grain_batches(lambda i: {"i": np.int64(i)}, 5)
    >>> [int(next(it)["i"]) for _ in range(2)], it.get_state()
    ([0, 1], {'next_index': 2})
    >>> int(next(grain_batches(lambda i: {"i": np.int64(i)}, 5, state=it.get_state()))["i"])
    2
  """
  import grain  # pylint: disable=g-import-not-at-top
  if num_workers < 0:
    raise ValueError(f"grain_batches: num_workers must be ≥ 0, got {num_workers}")
  if num_items < 0:
    raise ValueError(f"grain_batches: num_items must be ≥ 0, got {num_items}")
  # One thread per process (or worker) calls ``fn``, ``buffer_size`` items
  # ahead: grain's defaults (16 threads, 500 items ahead) would hold hundreds
  # of whole batches in memory for a face config.
  read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer_size)
  ds = grain.MapDataset.range(start, start + num_items).map(fn).to_iter_dataset(read)
  if num_workers:
    # Grain's worker processes read absl flags; a library caller (a notebook,
    # a test) may not have parsed any.
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=buffer_size))
  it = iter(ds)
  if state is not None:
    it.set_state(state)
  return it
