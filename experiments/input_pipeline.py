"""``config.data.name`` → the training input and the evaluation sets of that dataset.

| data.name | data | evaluation sets (what ``config.evals`` reads) |
|---|---|---|
| ``mnist_5k``, ``sklearn_digits`` | bundled digits, by class or by image | ``test`` (with its pixels) |
| ``omniglot`` | bundled Omniglot: one background split | ``test`` (the other split's unseen alphabets), ``one_shot`` (Lake's 20 runs); both with pixels and ink |
| ``cub200``, ``cars196``, ``sop`` | a prepared TFDS directory (ArrayRecord), class-disjoint | ``test`` |
| ``market1501``, ``msmt17`` | the user's unpacked folders | ``query``, ``gallery`` (ids, cameras) |
| ``face_folders``, ``face_recordio`` | identity folders / ``train.rec`` packs | one pair set per ``.bin`` file; ``templates`` (IJB-style) |

What is measured on those sets is up to the evaluators
(``experiments/evaluators.py``), chosen by ``config.evals``.

Per process, not per run: every pipeline reads and decodes only the rows of
each global batch that this process's devices hold (``rows``, from
``circle_jax.training.process_rows``), training and evaluation alike. Every
dataset (digits, fine-grained sets, re-ID folders, face packs) decodes in grain
worker processes (``config.data.num_workers``; 0 decodes in the training
process, ahead of the step); none needs TensorFlow. Each
training batch is ``{"image": float32 [R, H, W, C], "label": [R], "step"}``, a
function of (seed, step) and of the rows alone; an :class:`EvalSet` is embedded
through an :class:`Embed` that the training loop provides.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from circle_jax import data as cdata
from experiments.config_error import ConfigError

DIGITS = ("mnist_5k", "sklearn_digits")
OMNIGLOT = ("omniglot",)
FINE_GRAINED = tuple(cdata.FINE_GRAINED)
REID = ("market1501", "msmt17")
FACE = ("face_folders", "face_recordio")
KNOWN = DIGITS + OMNIGLOT + FINE_GRAINED + REID + FACE


class Embed(Protocol):
  """Embeddings of a whole evaluation set, each process decoding only its rows of every batch."""

  batch_size: int   # the global evaluation batch
  rows: np.ndarray  # the rows of each evaluation batch this process holds

  def source(self, source: cdata.ImageSource, *, flip: bool = False, mean=None,
             std=None) -> np.ndarray:
    """[N, D] embeddings of every image of ``source`` (uint8 images normalised by mean/std);
    ``flip``: the flip-fused embedding f(x) + f(mirror(x))."""

  def local_batches(self, batches: Iterator[dict], num_items: int, *,
                    flip: bool = False) -> np.ndarray:
    """[N, D] embeddings from this process's rows of each batch, as ``batches`` yields them
    (``{"image": [len(rows), …], "decoded": images read for it}``)."""


def protocol_of(name: str) -> str:
  """``"digits"``, ``"omniglot"``, ``"fine_grained"``, ``"reid"`` or ``"face"``."""
  for protocol, names in (("digits", DIGITS), ("omniglot", OMNIGLOT),
                          ("fine_grained", FINE_GRAINED), ("reid", REID), ("face", FACE)):
    if name in names:
      return protocol
  raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """One evaluation set: how to embed it, and what the evaluators compare.

  Attributes:
    name: ``"test"``, ``"query"``, ``"gallery"``, a ``.bin`` set's name, ``"templates"``.
    size: number of images.
    embed: ``embed(Embed, flip=False) -> [size, D]`` embeddings, in the set's order.
    labels: [size] class / identity ids (None for pair and template sets).
    cams: [size] camera ids (re-ID).
    issame: [size // 2] bool: pair ``i`` is images ``2i, 2i + 1`` (face ``.bin`` sets).
    pixels: [size, …] the images themselves, where they are in memory (digits, Omniglot).
    templates: IJB-style template metadata (``circle_jax.data.IJBProtocol``).
    ink: ``ink(native) -> bool [size, h, w]``, the drawings' ink pixels
      (Omniglot's Modified Hausdorff baseline), read when called: at the
      files' own size (``native=True``), or of the images as evaluated.
    runs: [size] the one-shot run of each image (Lake's runs).
    support: [size] bool: the run's support (training) images.
  """

  name: str
  size: int
  embed: Callable[..., np.ndarray]
  labels: np.ndarray | None = None
  cams: np.ndarray | None = None
  issame: np.ndarray | None = None
  pixels: np.ndarray | None = None
  templates: Any = None
  ink: Callable[[bool], np.ndarray] | None = None
  runs: np.ndarray | None = None
  support: np.ndarray | None = None


class TrainInput:
  """This process's rows of training batches ``start …``, with a position to checkpoint.

  ``position()`` is a JSON-able dict: the first step of the underlying
  iterator and that iterator's own state (grain's ``get_state()``); passed back
  as ``resume_from``, the input continues exactly after the last batch taken.
  """

  def __init__(self, make: Callable[[int, dict | None], Iterator[dict]], start: int,
               resume_from: dict | None = None):
    state = None
    if resume_from is not None and resume_from.get("start") is not None:
      start, state = int(resume_from["start"]), resume_from.get("iterator")
      if state is None and resume_from.get("next_step") is not None:
        # Saved without an iterator state (the fine-grained sets' earlier
        # tf.data input): batches are functions of the step, so go on from it.
        start = int(resume_from["next_step"])
    self.start = start
    try:
      self._it = make(start, state)
    except Exception:  # pylint: disable=broad-except
      # A state the iterator cannot take (e.g. saved with another worker count):
      # the batches are functions of the step, so start afresh at the step.
      if resume_from is None or resume_from.get("next_step") is None:
        raise
      self.start = int(resume_from["next_step"])
      self._it = make(self.start, None)
    self._next_step = self.start

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self._next_step = int(batch["step"]) + 1
    return batch

  def position(self) -> dict:
    get_state = getattr(self._it, "get_state", None)
    return {"start": self.start, "next_step": self._next_step,
            "iterator": get_state() if get_state else None}


class Pipeline:
  """Training input and evaluation of one dataset (see the module table)."""

  num_train_classes: int
  description: str

  def init_images(self) -> np.ndarray:
    """A [1, H, W, C] float32 batch to initialise the model with."""
    raise NotImplementedError

  def train_input(self, rows: np.ndarray, *, num_steps: int, first_step: int, sampler: str,
                  classes_per_batch: int, images_per_class: int, seed: int,
                  resume_from: dict | None = None) -> TrainInput:
    """Batches ``first_step … num_steps − 1`` (or from ``resume_from``), ``rows`` of each."""
    raise NotImplementedError

  def eval_sets(self) -> dict[str, EvalSet]:
    """The sets the evaluators may read, by name (opened and checked already)."""
    raise NotImplementedError


class _HostDecoded(Pipeline):
  """Training images from an :class:`circle_jax.data.ImageSource`, decoded in grain workers."""

  source: cdata.ImageSource
  augment: cdata.HostAugment
  mean = std = None

  def train_input(self, rows, *, num_steps, first_step, sampler, classes_per_batch,
                  images_per_class, seed, resume_from=None):
    fn = cdata.TrainBatches(self.source, rows, sampler, classes_per_batch, images_per_class,
                            seed, self.augment, self.mean, self.std)
    workers = int(self.config.data.get("num_workers", 0))

    def make(start, state):
      sub = _Shifted(fn, start)
      return cdata.grain_batches(sub, num_steps - start, num_workers=workers, state=state)

    return TrainInput(make, first_step, resume_from)


class _Shifted:
  """``i → fn(start + i)`` (picklable), so a resumed pipeline begins at its first step."""

  def __init__(self, fn, start: int):
    self.fn, self.start = fn, start

  def __call__(self, i):
    return self.fn(self.start + int(i))


class DigitsPipeline(_HostDecoded):
  """The bundled digits (numpy), Recall@K of the unseen classes next to raw pixels."""

  def __init__(self, config):
    self.config = config
    d = config.data
    if d.split not in ("class_disjoint", "by_image"):
      raise ConfigError(f"config.data.split: unknown split {d.split!r}; "
                        "known: 'class_disjoint', 'by_image'")
    if d.split == "by_image" and sorted(d.train_classes) != sorted(d.test_classes):
      raise ConfigError("config.data.test_classes: split 'by_image' retrieves the training "
                        f"classes, so test_classes {tuple(d.test_classes)} must equal "
                        f"train_classes {tuple(d.train_classes)}")
    self.data = cdata.load_digits_split(config.data.name, config.data.path or None,
                                        train_classes=config.data.train_classes,
                                        test_classes=config.data.test_classes,
                                        split=config.data.split)
    self.num_train_classes = self.data.num_train_classes
    self.source = cdata.ArrayImageSource(self.data.train_images, self.data.train_labels)
    self.augment = cdata.HostAugment(max_shift=config.data.max_shift)
    seen = "unseen" if config.data.split == "class_disjoint" else "held-out images of the"
    self.description = (f"Retrieval of the {seen} classes {tuple(config.data.test_classes)} "
                        f"({len(self.data.test_labels)} test images, each query left out of its "
                        "gallery)")

  def init_images(self):
    return self.data.train_images[:1]

  def eval_sets(self):
    test, labels = self.data.test_images, self.data.test_labels
    source = cdata.ArrayImageSource(test, labels)
    return {"test": EvalSet("test", len(test), lambda embed, flip=False: embed.source(source, flip=flip),
                            labels=labels, pixels=test)}


class OmniglotPipeline(_HostDecoded):
  """Bundled Omniglot: train on one background split, evaluate on alphabets it never saw.

  ``config.data.background`` (``"small1"`` or ``"small2"``) is the training
  split; the ``test`` set is the other split's alphabets that it lacks
  (class-disjoint retrieval by alphabet), and ``one_shot`` is Lake et al.'s 20
  within-alphabet runs. Images are ``config.data.image_size``, ink bright on
  black, augmented by small rotations, scalings and shifts.
  """

  def __init__(self, config):
    self.config = config
    d = config.data
    if d.background not in ("small1", "small2"):
      raise ConfigError(f"config.data.background: {d.background!r}; 'small1' or 'small2'")
    for name in ("max_rotation", "max_scale"):
      value = d.get(name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"config.data.{name}: expected a number ≥ 0, got {value!r}")
    if d.max_scale >= 1:
      raise ConfigError(f"config.data.max_scale: scales are drawn in [1 − s, 1 + s]; s must be "
                        f"< 1, got {d.max_scale!r}")
    size = tuple(int(v) for v in d.image_size)
    folder = d.path or None
    self.train = cdata.load_omniglot_background(d.background, folder, size=size)
    other = "small2" if d.background == "small1" else "small1"
    self.unseen = cdata.unseen_alphabets(d.background)
    self.test = cdata.load_omniglot_background(other, folder, size=size, alphabets=self.unseen)
    self.runs = cdata.load_one_shot_runs(folder, size=size)
    self.source = self.train.source
    self.num_train_classes = self.train.num_classes
    self.augment = cdata.HostAugment(max_shift=d.max_shift, max_rotation=float(d.max_rotation),
                                     max_scale=float(d.max_scale))
    self.mean, self.std = (0.0,), (1.0,)
    self.size = size
    self.description = (
        f"Omniglot, trained on background_{d.background} ({len(self.train)} images, "
        f"{self.train.num_classes} characters of {', '.join(self.train.alphabet_names)}); "
        f"retrieval of the unseen alphabets {', '.join(self.unseen)} ({len(self.test)} images, "
        f"{self.test.num_classes} characters, each query left out of its gallery); one-shot "
        f"classification on Lake's {self.runs.num_runs} runs")

  def init_images(self):
    return np.zeros((1, *self.size, 1), np.float32)

  def eval_sets(self):
    def eval_set(name, source, **fields):
      def embed_source(embed: Embed, flip: bool = False) -> np.ndarray:
        return embed.source(source, flip=flip, mean=self.mean, std=self.std)
      pixels = source.images(np.arange(len(source))).astype(np.float32) / 255.0
      return EvalSet(name, len(source), embed_source, labels=source.labels, pixels=pixels,
                     ink=source.all_ink, **fields)
    return {"test": eval_set("test", self.test.source),
            "one_shot": eval_set("one_shot", self.runs.source, runs=self.runs.runs,
                                 support=self.runs.support)}


class FineGrainedPipeline(_HostDecoded):
  """CUB-200-2011 / Cars196 / SOP from a prepared TFDS directory; Recall@K over the test classes.

  Read and decoded without TensorFlow (``circle_jax.data.load_fine_grained``):
  random resized crops and flips for training, the centre view for evaluation,
  both decoded in grain workers like the other photo sources.
  """

  def __init__(self, config):
    self.config = config
    d = config.data
    if d.image_size[0] != d.image_size[1]:
      raise ConfigError(f"config.data.image_size: the fine-grained crops are square, "
                        f"got {tuple(d.image_size)!r}")
    self.data = cdata.load_fine_grained(d.name, d.path or None, download=d.download)
    self.num_train_classes = self.data.num_train_classes
    self.size = int(d.image_size[0])
    self.source = cdata.FineGrainedSource(self.data.train, self.size, crop_to_bbox=d.crop_to_bbox)
    self.test_source = cdata.FineGrainedSource(self.data.test, self.size,
                                               crop_to_bbox=d.crop_to_bbox)
    self.augment = cdata.RandomResizedCrop(min_area=d.min_crop_area)
    self.mean, self.std = tuple(d.mean), tuple(d.std)
    for source, role in ((self.source, "training"), (self.test_source, "test")):
      if len(source):
        _check_first_image(source, role)
    self.description = (f"Retrieval of the {d.name} test classes ({len(self.data.test)} images, "
                        "each query left out of its gallery)")

  def init_images(self):
    return np.zeros((1, self.size, self.size, 3), np.float32)

  def eval_sets(self):
    def embed_test(embed: Embed, flip: bool = False) -> np.ndarray:
      return embed.source(self.test_source, flip=flip, mean=self.mean, std=self.std)
    return {"test": EvalSet("test", len(self.data.test), embed_test, labels=self.data.test.labels)}


class _Photos(_HostDecoded):
  """uint8 photos (people, faces): flips and shifts, normalised by the config's mean/std."""

  def __init__(self, config):
    self.config = config
    d = config.data
    self.size = tuple(int(v) for v in d.image_size)
    self.augment = cdata.HostAugment(flip=True, max_shift=d.max_shift)
    self.mean, self.std = tuple(d.mean), tuple(d.std)

  def init_images(self):
    return np.zeros((1, *self.size, 3), np.float32)

  def _eval_set(self, name: str, source, **fields) -> EvalSet:
    def embed_source(embed: Embed, flip: bool = False) -> np.ndarray:
      return embed.source(source, flip=flip, mean=self.mean, std=self.std)
    return EvalSet(name, len(source), embed_source, **fields)


class ReidPipeline(_Photos):
  """Market-1501 / MSMT17 folders; CMC rank-k and mAP of query against gallery."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    self.data = (cdata.load_market1501(d.path) if d.name == "market1501"
                 else cdata.load_msmt17(d.path))
    self.source = cdata.FileImageSource(self.data.train.paths, self.data.train_labels, self.size)
    self.num_train_classes = self.data.num_train_ids
    _check_first_image(self.source, "training")
    for role, split in (("query", self.data.query), ("gallery", self.data.gallery)):
      _check_first_image(cdata.FileImageSource(split.paths[:1], split.pids[:1], self.size), role)
    self.description = (f"Re-identification on {d.name}: {len(self.data.query)} queries against "
                        f"{len(self.data.gallery)} gallery images")

  def eval_sets(self):
    out = {}
    for role, split in (("query", self.data.query), ("gallery", self.data.gallery)):
      source = cdata.FileImageSource(split.paths, split.pids, self.size)
      out[role] = self._eval_set(role, source, labels=split.pids, cams=split.cams)
    return out


class FacePipeline(_Photos):
  """Face training from identity folders or a RecordIO pack; verification on ``.bin`` sets."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.name == "face_folders":
      paths, labels, _ = cdata.load_identity_folders(d.path)
      self.source = cdata.FileImageSource(paths, labels, self.size)
    else:
      reader = cdata.RecordIOReader(d.path)
      keys, labels = cdata.face_pack_index(reader)
      self.source = cdata.RecordIOImageSource(reader, keys, labels, self.size)
    self.num_train_classes = int(self.source.labels.max()) + 1
    self.description = (f"Face verification after {d.name} ({len(self.source)} training images of "
                        f"{self.num_train_classes} identities); verification sets "
                        f"{tuple(d.val_sets)}")
    # Every set the evaluation will use is opened now, not after the last step.
    self.val_sets = {}
    for name in d.val_sets:
      path = os.path.join(d.val_path, f"{name}.bin")
      encoded, issame = cdata.read_verification_bin(path)
      try:
        cdata.EncodedImageSource(encoded[:1], [0], self.size).image(0)
      except ValueError as e:
        raise ValueError(f"{path}: image 0: {e}") from None
      self.val_sets[name] = (encoded, issame)
    self.ijb = cdata.load_ijb(d.ijb_path, d.ijb_name, d.ijb_image_dir) if d.ijb_path else None
    _check_first_image(self.source, "training")

  def eval_sets(self):
    out = {}
    for name, (encoded, issame) in self.val_sets.items():
      source = cdata.EncodedImageSource(encoded, np.zeros(len(encoded)), self.size)
      out[name] = self._eval_set(name, source, issame=issame)
    if self.ijb is not None:
      ijb = self.ijb
      source = cdata.FileImageSource(ijb.image_paths, np.zeros(len(ijb.image_paths)), self.size)
      out["templates"] = self._eval_set("templates", source, templates=ijb)
    return out


def _check_first_image(source, role: str) -> None:
  """Decodes one image of ``source`` now, so an unreadable set fails before training."""
  try:
    source.image(0)
  except (ValueError, OSError) as e:
    raise ValueError(f"the first {role} image does not decode: {e}") from None


def make_pipeline(config) -> Pipeline:
  """The pipeline for ``config.data.name``."""
  protocol = protocol_of(config.data.name)
  return {"digits": DigitsPipeline, "omniglot": OmniglotPipeline,
          "fine_grained": FineGrainedPipeline, "reid": ReidPipeline,
          "face": FacePipeline}[protocol](config)
