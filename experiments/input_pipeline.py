"""``config.data.name`` → the training batches and the evaluation protocol of that dataset.

| data.name | data | protocol (metric the paper reports) |
|---|---|---|
| ``mnist_5k``, ``sklearn_digits`` | bundled digits, class-disjoint | Recall@K (+ raw pixels) |
| ``cub200``, ``cars196``, ``sop`` | TFDS (tf.data), class-disjoint | Recall@K |
| ``market1501``, ``msmt17`` | the user's unpacked folders | CMC rank-k and mAP |
| ``face_folders``, ``face_recordio`` | identity folders / ``train.rec`` packs | 10-fold accuracy on ``.bin`` sets; TAR@FAR on IJB-style templates |

Every pipeline yields float32 batches ``{"image": [B, H, W, C], "label": [B]}``
that are a function of (seed, step), and evaluates through an
``embed(images) -> [n, D]`` callable.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, Iterator

import numpy as np

from circle_jax import data as cdata
from circle_jax import metrics

DIGITS = ("mnist_5k", "sklearn_digits")
FINE_GRAINED = tuple(cdata.FINE_GRAINED)
REID = ("market1501", "msmt17")
FACE = ("face_folders", "face_recordio")
KNOWN = DIGITS + FINE_GRAINED + REID + FACE

Embed = Callable[[np.ndarray], np.ndarray]


def protocol_of(name: str) -> str:
  """``"digits"``, ``"fine_grained"``, ``"reid"`` or ``"face"``."""
  for protocol, names in (("digits", DIGITS), ("fine_grained", FINE_GRAINED), ("reid", REID),
                          ("face", FACE)):
    if name in names:
      return protocol
  raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")


def _to_float(images: np.ndarray, mean, std) -> np.ndarray:
  # Mean/std in [0, 1] units, as torchvision's ImageNet constants are given.
  x = images.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _recall_table(rows: dict[str, dict[int, float]], ks) -> str:
  header = f"{'Recall@K (%)':<16}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
  lines = [header, "-" * len(header)]
  for name, recall in rows.items():
    lines.append(f"{name:<16}" + "".join(f"{100 * recall[k]:>8.2f}" for k in ks))
  return "\n".join(lines)


class Pipeline:
  """Training batches and evaluation of one dataset (see the module table)."""

  num_train_classes: int
  description: str

  def init_images(self) -> np.ndarray:
    """A [1, H, W, C] float32 batch to initialise the model with."""
    raise NotImplementedError

  def train_batches(self, first_step: int, num_steps: int, *, sampler: str,
                    classes_per_batch: int, images_per_class: int, seed: int) -> Iterator[dict]:
    raise NotImplementedError

  def evaluate(self, embed: Embed, label: str) -> tuple[dict, dict, str]:
    """Returns (result for the caller, flat metrics for metrics.jsonl, printable table)."""
    raise NotImplementedError


class DigitsPipeline(Pipeline):
  """The bundled digits (numpy), Recall@K of the unseen classes next to raw pixels."""

  def __init__(self, config):
    self.config = config
    self.data = cdata.load_retrieval_data(config.data.name, config.data.path or None,
                                          train_classes=config.data.train_classes,
                                          test_classes=config.data.test_classes,
                                          split=config.data.split)
    self.num_train_classes = self.data.num_train_classes
    seen = "unseen" if config.data.split == "class_disjoint" else "held-out images of the"
    self.description = (f"Retrieval of the {seen} classes {tuple(config.data.test_classes)} "
                        f"({len(self.data.test_labels)} test images, each query left out of its "
                        "gallery)")

  def init_images(self):
    return self.data.train_images[:1]

  def train_batches(self, first_step, num_steps, **kw):
    for step in range(first_step, num_steps):
      # Looked up on the module at every step (tests replace it to simulate a crash).
      yield cdata.train_batch(self.data, step, max_shift=self.config.data.max_shift, **kw)

  def evaluate(self, embed, label):
    ev = self.config.eval
    ks = tuple(ev.ks)
    test = self.data.test_images
    recall = metrics.recall_at_k(embed(test), self.data.test_labels, ks, block_size=ev.block_size)
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

  def train_batches(self, first_step, num_steps, *, sampler, classes_per_batch, images_per_class,
                    seed):
    d = self.config.data
    for batch in cdata.tfds_train_batches(
        self.data.train, first_step=first_step, num_steps=num_steps, sampler=sampler,
        classes_per_batch=classes_per_batch, images_per_class=images_per_class, seed=seed,
        image_size=self.size, crop_to_bbox=d.crop_to_bbox, min_area=d.min_crop_area):
      yield {"image": _to_float(batch["image"], d.mean, d.std), "label": batch["label"]}

  def evaluate(self, embed, label):
    d, ev = self.config.data, self.config.eval
    emb = np.concatenate([
        embed(_to_float(b, d.mean, d.std))
        for b in cdata.tfds_eval_images(self.data.test, image_size=self.size,
                                        batch_size=ev.batch_size, crop_to_bbox=d.crop_to_bbox)])
    ks = tuple(k for k in ev.ks if k < len(emb))
    recall = metrics.recall_at_k(emb, self.data.test.labels, ks, block_size=ev.block_size)
    flat = {f"recall@{k}": v for k, v in recall.items()}
    return {"recall": recall}, flat, _recall_table({label: recall}, ks)


class _HostImages(Pipeline):
  """Images decoded on the host from a :class:`circle_jax.data.ImageSource`, in a thread pool."""

  source: cdata.ImageSource

  def __init__(self, config):
    self.config = config
    self.size = tuple(int(v) for v in config.data.image_size)
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, config.data.num_workers))

  def init_images(self):
    return np.zeros((1, *self.size, 3), np.float32)

  def _load(self, source, indices):
    return source.images(indices, map_fn=self.pool.map)

  def train_batches(self, first_step, num_steps, *, sampler, classes_per_batch, images_per_class,
                    seed):
    d = self.config.data
    labels = self.source.labels
    for step in range(first_step, num_steps):
      if sampler == "pk":
        idx = cdata.pk_batch_indices(labels, classes_per_batch, images_per_class, seed=seed,
                                     step=step)
      else:
        idx = cdata.shuffled_batch_indices(len(labels), classes_per_batch * images_per_class,
                                           seed=seed, step=step)
      images = self._load(self.source, idx)
      # Stream 1 of (seed, step): augmentation never reuses the sampler's draws.
      rng = np.random.default_rng([seed, step, 1])
      images = cdata.random_flip(images, rng)
      if d.max_shift:
        images = cdata.random_shift(images, d.max_shift, rng)
      yield {"image": _to_float(images, d.mean, d.std), "label": labels[idx]}

  def _embed_source(self, embed: Embed, source, flip: bool = False) -> np.ndarray:
    d, bs = self.config.data, self.config.eval.batch_size
    out = []
    for start in range(0, len(source), bs):
      images = self._load(source, range(start, min(start + bs, len(source))))
      e = embed(_to_float(images, d.mean, d.std))
      if flip:  # the flip-fused embedding of face verification: f(x) + f(flip(x))
        e = e + embed(_to_float(images[:, :, ::-1], d.mean, d.std))
      out.append(e)
    return np.concatenate(out)


class ReidPipeline(_HostImages):
  """Market-1501 / MSMT17 folders; CMC rank-k and mAP of query against gallery."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    self.data = (cdata.load_market1501(d.path) if d.name == "market1501"
                 else cdata.load_msmt17(d.path))
    self.source = cdata.FileImageSource(self.data.train.paths, self.data.train_labels, self.size)
    self.num_train_classes = self.data.num_train_ids
    self.description = (f"Re-identification on {d.name}: {len(self.data.query)} queries against "
                        f"{len(self.data.gallery)} gallery images")

  def evaluate(self, embed, label):
    ranks = tuple(self.config.eval.ks)
    q, g = self.data.query, self.data.gallery
    qe = self._embed_source(embed, cdata.FileImageSource(q.paths, q.pids, self.size))
    ge = self._embed_source(embed, cdata.FileImageSource(g.paths, g.pids, self.size))
    r = metrics.cmc_map(qe, q.pids, q.cams, ge, g.pids, g.cams, ranks,
                        block_size=self.config.eval.block_size)
    flat = {**{f"cmc@{k}": v for k, v in r["cmc"].items()}, "map": r["map"],
            "num_queries": r["num_queries"]}
    header = f"{'Re-ID (%)':<16}" + "".join(f"{'R-' + str(k):>8}" for k in ranks) + f"{'mAP':>8}"
    table = "\n".join([header, "-" * len(header),
                       f"{label:<16}" + "".join(f"{100 * r['cmc'][k]:>8.2f}" for k in ranks)
                       + f"{100 * r['map']:>8.2f}"])
    return {"cmc": r["cmc"], "map": r["map"], "num_queries": r["num_queries"]}, flat, table


class FacePipeline(_HostImages):
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

  def evaluate(self, embed, label):
    d = self.config.data
    result, flat, lines = {"verification": {}}, {}, []
    header = f"{'Verification':<16}{'acc (%)':>10}{'± std':>8}{'pairs':>8}"
    for name in d.val_sets:
      path = os.path.join(d.val_path, f"{name}.bin")
      images, issame = cdata.load_verification_bin(path, self.size)
      emb = self._embed_source(embed, cdata.ArrayImageSource(images, np.zeros(len(images))),
                               flip=True)
      r = metrics.verification_accuracy(metrics.pair_scores(emb), issame,
                                        num_folds=self.config.eval.num_folds)
      result["verification"][name] = r
      flat[f"{name}_accuracy"], flat[f"{name}_std"] = r["accuracy"], r["std"]
      lines.append(f"{name:<16}{100 * r['accuracy']:>10.2f}{100 * r['std']:>8.2f}{len(issame):>8}")
    table = "\n".join([header, "-" * len(header), *lines]) if lines else "(no verification sets)"
    if d.ijb_path:
      ijb = cdata.load_ijb(d.ijb_path, d.ijb_name, d.ijb_image_dir)
      src = cdata.FileImageSource(ijb.image_paths, np.zeros(len(ijb.image_paths)), self.size)
      emb = self._embed_source(embed, src, flip=True)
      templates, feats = metrics.template_embeddings(emb, ijb.template_ids, ijb.media_ids)
      scores = metrics.template_pair_scores(templates, feats, ijb.pairs_a, ijb.pairs_b)
      tar = metrics.tar_at_far(scores, ijb.issame, fars=tuple(self.config.eval.fars))
      result["tar_at_far"] = {f: v["tar"] for f, v in tar.items()}
      flat.update({f"tar@far={f:g}": v["tar"] for f, v in tar.items()})
      table += "\n" + f"{d.ijb_name} 1:1 TAR@FAR: " + ", ".join(
          f"{100 * v['tar']:.2f} % at {f:g}" for f, v in tar.items())
    return result, flat, table


def make_pipeline(config) -> Pipeline:
  """The pipeline for ``config.data.name``."""
  protocol = protocol_of(config.data.name)
  return {"digits": DigitsPipeline, "fine_grained": FineGrainedPipeline, "reid": ReidPipeline,
          "face": FacePipeline}[protocol](config)
