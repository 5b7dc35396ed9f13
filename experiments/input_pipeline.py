"""``config.data.name`` → the training input and the evaluation protocol of that dataset.

| data.name | data | protocol (metric the paper reports) |
|---|---|---|
| ``mnist_5k``, ``sklearn_digits`` | bundled digits, class-disjoint | Recall@K (+ raw pixels) |
| ``cub200``, ``cars196``, ``sop`` | TFDS (tf.data), class-disjoint | Recall@K |
| ``market1501``, ``msmt17`` | the user's unpacked folders | CMC rank-k and mAP |
| ``face_folders``, ``face_recordio`` | identity folders / ``train.rec`` packs | 10-fold accuracy on ``.bin`` sets; TAR@FAR on IJB-style templates |

Per process, not per run: every pipeline reads and decodes only the rows of
each global batch that this process's devices hold (``rows``, from
``circle_jax.training.process_rows``), training and evaluation alike. The
digits, re-ID folders and face packs decode in grain worker processes
(``config.data.num_workers``; 0 decodes in the training process, ahead of the
step), the fine-grained sets in a tf.data pipeline over the same rows. Each
training batch is ``{"image": float32 [R, H, W, C], "label": [R], "step"}``, a
function of (seed, step) and of the rows alone; evaluation goes through an
:class:`Embed` that the training loop provides.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Protocol

import numpy as np

from circle_jax import data as cdata
from circle_jax import metrics

DIGITS = ("mnist_5k", "sklearn_digits")
FINE_GRAINED = tuple(cdata.FINE_GRAINED)
REID = ("market1501", "msmt17")
FACE = ("face_folders", "face_recordio")
KNOWN = DIGITS + FINE_GRAINED + REID + FACE


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
  """``"digits"``, ``"fine_grained"``, ``"reid"`` or ``"face"``."""
  for protocol, names in (("digits", DIGITS), ("fine_grained", FINE_GRAINED), ("reid", REID),
                          ("face", FACE)):
    if name in names:
      return protocol
  raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")


def _recall_table(rows: dict[str, dict[int, float]], ks) -> str:
  header = f"{'Recall@K (%)':<16}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
  lines = [header, "-" * len(header)]
  for name, recall in rows.items():
    lines.append(f"{name:<16}" + "".join(f"{100 * recall[k]:>8.2f}" for k in ks))
  return "\n".join(lines)


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

  def evaluate(self, embed: Embed, label: str) -> tuple[dict, dict, str]:
    """Returns (result for the caller, flat metrics for metrics.jsonl, printable table)."""
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
    self.data = cdata.load_retrieval_data(config.data.name, config.data.path or None,
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

  def evaluate(self, embed, label):
    ev = self.config.eval
    ks = tuple(ev.ks)
    test = self.data.test_images
    emb = embed.source(cdata.ArrayImageSource(test, self.data.test_labels))
    recall = metrics.recall_at_k(emb, self.data.test_labels, ks, block_size=ev.block_size)
    raw = metrics.recall_at_k(test.reshape(len(test), -1), self.data.test_labels, ks,
                              block_size=ev.block_size)
    flat = {**{f"recall@{k}": v for k, v in recall.items()},
            **{f"raw_pixels_recall@{k}": v for k, v in raw.items()}}
    table = _recall_table({"raw pixels": raw, label: recall}, ks)
    return {"recall": recall, "raw_pixels": raw}, flat, table


class FineGrainedPipeline(Pipeline):
  """CUB-200-2011 / Cars196 / SOP through TFDS; Recall@K over the test classes."""

  def __init__(self, config):
    self.config = config
    d = config.data
    self.data = cdata.load_fine_grained(d.name, d.path or None, download=d.download)
    self.num_train_classes = self.data.num_train_classes
    self.size = int(d.image_size[0])
    self.description = (f"Retrieval of the {d.name} test classes ({len(self.data.test)} images, "
                        "each query left out of its gallery)")

  def init_images(self):
    return np.zeros((1, self.size, self.size, 3), np.float32)

  def train_input(self, rows, *, num_steps, first_step, sampler, classes_per_batch,
                  images_per_class, seed, resume_from=None):
    d = self.config.data

    def make(start, state):
      del state  # tf.data restarts at a step: its batches are functions of the step
      for batch in cdata.tfds_train_batches(
          self.data.train, first_step=start, num_steps=num_steps, sampler=sampler,
          classes_per_batch=classes_per_batch, images_per_class=images_per_class, seed=seed,
          image_size=self.size, crop_to_bbox=d.crop_to_bbox, min_area=d.min_crop_area,
          rows=rows):
        yield {"image": cdata.normalise_images(batch["image"], d.mean, d.std), "label": batch["label"],
               "step": batch["step"], "decoded": np.int64(len(rows))}

    if resume_from is not None:  # the step is the whole position of a tf.data pipeline
      resume_from = {"next_step": resume_from.get("next_step"), "start": resume_from.get("next_step")}
    return TrainInput(make, first_step, resume_from)

  def evaluate(self, embed, label):
    d, ev = self.config.data, self.config.eval
    n = len(self.data.test)
    num_batches = -(-n // embed.batch_size)
    # This process's images of every evaluation batch, in order; −1 pads past the end.
    idx = (np.arange(num_batches)[:, None] * embed.batch_size + embed.rows[None, :]).reshape(-1)
    idx = np.where(idx < n, idx, -1)
    local = cdata.tfds_eval_images(self.data.test, image_size=self.size,
                                   batch_size=len(embed.rows), crop_to_bbox=d.crop_to_bbox,
                                   indices=idx)
    counts = (idx >= 0).reshape(num_batches, -1).sum(axis=1)
    emb = embed.local_batches(({"image": cdata.normalise_images(b, d.mean, d.std), "decoded": c}
                               for b, c in zip(local, counts)), n)
    ks = tuple(k for k in ev.ks if k < len(emb))
    recall = metrics.recall_at_k(emb, self.data.test.labels, ks, block_size=ev.block_size)
    flat = {f"recall@{k}": v for k, v in recall.items()}
    return {"recall": recall}, flat, _recall_table({label: recall}, ks)


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

  def _embed(self, embed: Embed, source, flip: bool = False) -> np.ndarray:
    return embed.source(source, flip=flip, mean=self.mean, std=self.std)


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

  def evaluate(self, embed, label):
    ranks = tuple(self.config.eval.ks)
    q, g = self.data.query, self.data.gallery
    qe = self._embed(embed, cdata.FileImageSource(q.paths, q.pids, self.size))
    ge = self._embed(embed, cdata.FileImageSource(g.paths, g.pids, self.size))
    r = metrics.cmc_map(qe, q.pids, q.cams, ge, g.pids, g.cams, ranks,
                        block_size=self.config.eval.block_size)
    flat = {**{f"cmc@{k}": v for k, v in r["cmc"].items()}, "map": r["map"],
            "num_queries": r["num_queries"]}
    header = f"{'Re-ID (%)':<16}" + "".join(f"{'R-' + str(k):>8}" for k in ranks) + f"{'mAP':>8}"
    table = "\n".join([header, "-" * len(header),
                       f"{label:<16}" + "".join(f"{100 * r['cmc'][k]:>8.2f}" for k in ranks)
                       + f"{100 * r['map']:>8.2f}"])
    return {"cmc": r["cmc"], "map": r["map"], "num_queries": r["num_queries"]}, flat, table


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

  def evaluate(self, embed, label):
    d = self.config.data
    result, flat, lines = {"verification": {}}, {}, []
    header = f"{'Verification':<16}{'acc (%)':>10}{'± std':>8}{'pairs':>8}"
    for name, (encoded, issame) in self.val_sets.items():
      source = cdata.EncodedImageSource(encoded, np.zeros(len(encoded)), self.size)
      emb = self._embed(embed, source, flip=True)
      r = metrics.verification_accuracy(metrics.pair_scores(emb), issame,
                                        num_folds=self.config.eval.num_folds)
      result["verification"][name] = r
      flat[f"{name}_accuracy"], flat[f"{name}_std"] = r["accuracy"], r["std"]
      lines.append(f"{name:<16}{100 * r['accuracy']:>10.2f}{100 * r['std']:>8.2f}{len(issame):>8}")
    table = "\n".join([header, "-" * len(header), *lines]) if lines else "(no verification sets)"
    if self.ijb is not None:
      ijb = self.ijb
      src = cdata.FileImageSource(ijb.image_paths, np.zeros(len(ijb.image_paths)), self.size)
      emb = self._embed(embed, src, flip=True)
      templates, feats = metrics.template_embeddings(emb, ijb.template_ids, ijb.media_ids)
      scores = metrics.template_pair_scores(templates, feats, ijb.pairs_a, ijb.pairs_b)
      tar = metrics.tar_at_far(scores, ijb.issame, fars=tuple(self.config.eval.fars))
      result["tar_at_far"] = {f: v["tar"] for f, v in tar.items()}
      flat.update({f"tar@far={f:g}": v["tar"] for f, v in tar.items()})
      table += "\n" + f"{d.ijb_name} 1:1 TAR@FAR: " + ", ".join(
          f"{100 * v['tar']:.2f} % at {f:g}" for f, v in tar.items())
    return result, flat, table


def _check_first_image(source, role: str) -> None:
  """Decodes one image of ``source`` now, so an unreadable set fails before training."""
  try:
    source.image(0)
  except (ValueError, OSError) as e:
    raise ValueError(f"the first {role} image does not decode: {e}") from None


def make_pipeline(config) -> Pipeline:
  """The pipeline for ``config.data.name``."""
  protocol = protocol_of(config.data.name)
  return {"digits": DigitsPipeline, "fine_grained": FineGrainedPipeline, "reid": ReidPipeline,
          "face": FacePipeline}[protocol](config)
