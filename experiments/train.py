"""``train_and_evaluate(config, workdir)``: train a metric-learning model, then evaluate it.

``config.data.name`` selects the data and the protocol (``experiments/input_pipeline.py``):
Recall@K for the digits and the fine-grained sets, CMC rank-k and mAP for
re-ID, 10-fold verification accuracy (and TAR@FAR on IJB-style templates) for faces.

The run is resumable: Orbax checkpoints every ``config.checkpoint_every`` steps
in ``workdir/checkpoints``, and a restarted run continues from the newest one.
Batches, augmentation and dropout are functions of (seed, step), so a resumed
run ends with the same parameters as an uninterrupted one; the input
pipeline's position is saved in each checkpoint beside the train state.

Several processes (``experiments/main.py``'s distributed flags) run the same
loop: each reads and decodes only its rows of every batch, training and
evaluation alike, and the batches are global arrays built from those rows; the
first process alone prints and writes ``metrics.jsonl``, every process takes
part in checkpoints.

Metrics go to ``workdir/metrics.jsonl``, one JSON object per line, flushed as
written; the file is only ever appended to. Lines logged after the last
checkpoint of a killed run are logged again (with the same values) by the
resumed run, after a ``{"event": "resume", "step": s}`` line: readers keep the
last record of each step. Their numbers also go to TensorBoard event files in
``workdir/tensorboard`` (``train/loss``, ``train/learning_rate``, …,
``eval/<metric>``; a new file per run, resumed ones included):
``tensorboard --logdir <workdir>/tensorboard``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from circle_jax import data as cdata
from circle_jax import training
from experiments import input_pipeline


class ConfigError(ValueError):
  """A config that is missing a field, has a field of the wrong type, or a bad value."""


_NUMBER = (int, float)
# Dotted field → accepted types. Every one must be present.
REQUIRED_FIELDS: dict[str, Any] = {
    "seed": int,
    "num_steps": int,
    "log_every": int,
    "checkpoint_every": int,
    "max_checkpoints": int,
    "num_devices": int,
    "model_axis_size": int,
    "distributed": bool,
    "data.name": str,
    "data.path": str,
    "batch.classes_per_batch": int,
    "batch.images_per_class": int,
    "model.name": str,
    "loss.name": str,
    "optimizer.name": str,
    "optimizer.learning_rate": _NUMBER,
    "optimizer.schedule": str,
    "optimizer.warmup_steps": int,
    "optimizer.momentum": _NUMBER,
    "optimizer.weight_decay": _NUMBER,
    "eval.ks": (tuple, list),
    "eval.batch_size": int,
    "eval.block_size": int,
}
# Further fields by protocol (input_pipeline.protocol_of(config.data.name)).
_IMAGE_FIELDS = {"data.image_size": (tuple, list), "data.mean": (tuple, list),
                 "data.std": (tuple, list)}
PROTOCOL_FIELDS: dict[str, dict[str, Any]] = {
    "digits": {"data.split": str, "data.train_classes": (tuple, list),
               "data.test_classes": (tuple, list), "data.max_shift": int},
    "fine_grained": {**_IMAGE_FIELDS, "data.download": bool, "data.crop_to_bbox": bool,
                     "data.min_crop_area": _NUMBER},
    "reid": {**_IMAGE_FIELDS, "data.max_shift": int, "data.num_workers": int},
    "face": {**_IMAGE_FIELDS, "data.max_shift": int, "data.num_workers": int,
             "data.val_path": str, "data.val_sets": (tuple, list), "data.ijb_path": str,
             "data.ijb_name": str, "data.ijb_image_dir": str, "eval.num_folds": int,
             "eval.fars": (tuple, list)},
}
_POSITIVE = ("num_steps", "log_every", "checkpoint_every", "max_checkpoints",
             "batch.classes_per_batch", "batch.images_per_class", "eval.batch_size",
             "eval.block_size")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise ConfigError(f"config.{dotted}: missing field")
    node = node[part]
  return node


def _type_name(types) -> str:
  types = types if isinstance(types, tuple) else (types,)
  return " or ".join(t.__name__ for t in types)


def validate_config(config) -> None:
  """Checks a training config before anything is built.

  Raises:
    ConfigError: naming the first bad field (``config.loss.name: unknown loss
      name 'circel' …``, ``config.num_steps: expected int, got str 'ten'``).
  """
  name = _get(config, "data.name")
  if not isinstance(name, str):
    raise ConfigError(f"config.data.name: expected str, got {type(name).__name__} {name!r}")
  try:
    protocol = input_pipeline.protocol_of(name)
  except ValueError as e:
    raise ConfigError(f"config.data.name: {e}") from None
  for dotted, types in {**REQUIRED_FIELDS, **PROTOCOL_FIELDS[protocol]}.items():
    value = _get(config, dotted)
    # bool is an int in Python; only accept it where bool is asked for.
    if (isinstance(value, bool) and types is not bool) or not isinstance(value, types):
      raise ConfigError(f"config.{dotted}: expected {_type_name(types)}, "
                        f"got {type(value).__name__} {value!r}")
  for dotted in _POSITIVE:
    if _get(config, dotted) < 1:
      raise ConfigError(f"config.{dotted}: must be ≥ 1, got {_get(config, dotted)!r}")
  if config.num_devices < 0:
    raise ConfigError(f"config.num_devices: must be ≥ 0 (0 = all), got {config.num_devices}")
  num_devices = config.num_devices or jax.device_count()
  if num_devices > jax.device_count():
    raise ConfigError(f"config.num_devices: {config.num_devices} but only {jax.device_count()} "
                      "devices are visible")
  if num_devices % jax.process_count():
    raise ConfigError(f"config.num_devices: {num_devices} devices do not split evenly over the "
                      f"{jax.process_count()} processes (every process holds an equal share of "
                      "the mesh); use a multiple of the process count, or 0 for all")
  for field, low in (("num_workers", 0), ("prefetch", 1)):
    value = config.data.get(field, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f"config.data.{field}: must be an int ≥ {low}, got {value!r}")
  try:
    spec, loss_fn = training.make_loss(config.loss.name, _loss_hparams(config))
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from None
  _probe_loss(config, spec, loss_fn)
  m = config.model_axis_size
  if m < 1 or num_devices % m:
    raise ConfigError(f"config.model_axis_size: must be ≥ 1 and divide the {num_devices} "
                      f"device(s) (config.num_devices), got {m}")
  try:
    training.check_model_axis(config.loss.name, m)
  except ValueError as e:
    raise ConfigError(f"config.model_axis_size: {e}") from None
  batch_size = config.batch.classes_per_batch * config.batch.images_per_class
  if batch_size % num_devices:
    raise ConfigError(f"config.batch: {config.batch.classes_per_batch} × "
                      f"{config.batch.images_per_class} = {batch_size} examples per batch, not "
                      f"divisible by the {num_devices} devices the batch is split over")
  try:
    training.make_backbone(config.model.name, _model_kwargs(config))
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from None
  if config.optimizer.name not in ("sgd", "adamw"):
    raise ConfigError(f"config.optimizer.name: unknown optimizer {config.optimizer.name!r}; "
                      "known: 'sgd', 'adamw'")
  if config.optimizer.schedule not in ("step", "cosine", "constant"):
    raise ConfigError(f"config.optimizer.schedule: unknown schedule {config.optimizer.schedule!r}; "
                      "known: 'step', 'cosine', 'constant'")
  if protocol != "digits":
    size = config.data.image_size
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
      raise ConfigError(f"config.data.image_size: expected (height, width) positive ints, got {size!r}")
    if protocol == "fine_grained" and size[0] != size[1]:
      raise ConfigError(f"config.data.image_size: the fine-grained crops are square, got {size!r}")
  n_test = None
  if protocol == "digits":
    num_train = len(config.data.train_classes)
    if spec.kind == "pair" and config.batch.classes_per_batch > num_train:
      raise ConfigError(f"config.batch.classes_per_batch: {config.batch.classes_per_batch} classes "
                        f"per batch but only {num_train} training classes")
    if config.data.split not in ("class_disjoint", "by_image"):
      raise ConfigError(f"config.data.split: unknown split {config.data.split!r}; "
                        "known: 'class_disjoint', 'by_image'")
    if config.data.split == "by_image" and (sorted(config.data.train_classes)
                                            != sorted(config.data.test_classes)):
      raise ConfigError("config.data.test_classes: split 'by_image' retrieves the training "
                        f"classes, so test_classes {tuple(config.data.test_classes)} must equal "
                        f"train_classes {tuple(config.data.train_classes)}")
    # The bundled MNIST digits have 500 images per class; 'by_image' tests on half of them.
    per_class = 500 if config.data.split == "class_disjoint" else 250
    n_test = per_class * len(config.data.test_classes) if config.data.name == "mnist_5k" else None
  for k in config.eval.ks:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
      raise ConfigError(f"config.eval.ks: every k must be a positive int, got {k!r}")
    if n_test is not None and k >= n_test:
      raise ConfigError(f"config.eval.ks: k = {k} ≥ the {n_test} test images")


def _probe_loss(config, spec, loss_fn) -> None:
  """Calls the loss once on a tiny batch, so that its own argument checks
  (γ > 0, a margin in range, …) reject a bad config.loss field now rather than
  at the first training step."""
  x = jnp.eye(4, 3) + 0.1
  weights = jnp.eye(2, 3) + 0.1 if spec.kind == "class" else None
  try:
    loss_fn(x, jnp.array([0, 0, 1, 1]), weights)
  except (ValueError, TypeError) as e:
    message = str(e).splitlines()[0]
    field = message.split(" ", 1)[0]
    where = f"config.loss.{field}" if field in config.loss else "config.loss"
    raise ConfigError(f"{where}: {message}") from None


def _loss_hparams(config) -> dict:
  return {k: v for k, v in config.loss.items() if k != "name"}


def _model_kwargs(config) -> dict:
  # "pretrained" is a weights file for the loader, not a module attribute.
  kwargs = {k: v for k, v in config.model.items() if k not in ("name", "pretrained")}
  if "features" in kwargs:
    kwargs["features"] = tuple(kwargs["features"])
  return kwargs


def embed_in_batches(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """``fn`` over fixed-size batches of ``images`` (the last one zero-padded), concatenated.

  One batch shape means one compilation. ``fn`` maps ``[batch_size, …]`` images
  to ``[…, batch_size, D]`` embeddings (the batch on axis −2, so a stack of
  ablation members ``[N, batch_size, D]`` works too); the padding rows are
  dropped.

  Example:
    >>> embed_in_batches(lambda x: x.reshape(len(x), -1) * 2, np.ones((5, 2)), 4).shape
    (5, 2)
  """
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(fn(chunk))[..., :batch_size - pad, :])
  return np.concatenate(out, axis=-2)


class MeshEmbed:
  """:class:`input_pipeline.Embed` on a mesh: each process decodes its rows of every batch.

  Evaluation batches have ``config.eval.batch_size`` rows, rounded up to a
  multiple of the device count; the embeddings come back replicated, so every
  process computes the metric on the whole set, and ``decoded`` counts the
  images this process read.
  """

  def __init__(self, state, mesh, batch_size: int, num_workers: int = 0, prefetch: int = 2):
    self.state, self.mesh = state, mesh
    self.batch_size = -(-batch_size // mesh.size) * mesh.size
    self.rows = training.process_rows(mesh, self.batch_size)
    self.num_workers, self.prefetch = num_workers, prefetch
    self._steps = {flip: training.jit_embed_step(mesh, state, flip=flip) for flip in (False, True)}
    self.decoded = 0

  def source(self, source, *, flip=False, mean=None, std=None):
    fn = cdata.EvalBatches(source, self.rows, self.batch_size, mean, std)
    batches = cdata.grain_batches(fn, fn.num_batches(), num_workers=self.num_workers)
    return self.local_batches(batches, len(source), flip=flip)

  def local_batches(self, batches, num_items, *, flip=False):
    step = self._steps[bool(flip)]
    it = training.MeshPrefetcher(batches, self.mesh, self.batch_size, size=self.prefetch)
    try:
      out = [np.asarray(step(self.state, batch["image"])) for _, batch, _ in it]
    finally:
      it.close()
      self.decoded += it.decoded
    if not out:
      raise ValueError("evaluation set is empty")
    return np.concatenate(out)[:num_items]


def make_schedule_and_optimizer(config):
  """``(schedule, tx)`` from ``config.optimizer`` and ``config.num_steps``."""
  opt = config.optimizer
  schedule = training.make_schedule(opt.schedule, base_lr=opt.learning_rate,
                                    num_steps=config.num_steps, warmup_steps=opt.warmup_steps)
  tx = training.make_optimizer(opt.name, schedule, momentum=opt.momentum,
                               weight_decay=opt.weight_decay)
  return schedule, tx


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per ``config`` (resuming from ``workdir`` if it holds checkpoints), then evaluates.

  Args:
    config: see ``experiments/configs/class_disjoint.py``, which defines every digits field.
    workdir: checkpoints, ``metrics.jsonl``.

  Returns:
    The protocol's results (digits: ``{"recall": {k: R@k}, "raw_pixels":
    {k: R@k}}``; fine-grained: ``{"recall"}``; re-ID: ``{"cmc": {k: …},
    "map", "num_queries"}``; face: ``{"verification": {set: {...}},
    "tar_at_far"?}``) plus ``"final_loss"`` (float or None), ``"params"``
    (the final params as global ``jax.Array``s: with several processes the
    class proxies may be split across them, so read them with
    ``jax.experimental.multihost_utils.process_allgather`` where needed),
    ``"resumed_from"`` (step or None) and ``"input"`` (this process's input
    statistics, also in ``workdir/input/process_<i>-of-<n>.json``: images
    decoded for training and evaluation, seconds the steps waited for input).

  Raises:
    ConfigError: a bad config. FileNotFoundError (``DatasetNotFoundError``):
      missing data, with where it was looked for and how to prepare it.
  """
  validate_config(config)
  # One run per workdir: a second one would interleave its metrics and
  # checkpoints with the first's. Process 0 holds the lock for all of them.
  lock = training.WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config, workdir: str) -> dict:
  start_time = time.time()
  process, num_processes = jax.process_index(), jax.process_count()
  is_main = process == 0
  say = print if is_main else (lambda *a, **k: None)

  try:  # every dataset the run will use, train and evaluation, is opened and checked here
    pipeline = input_pipeline.make_pipeline(config)
  except FileNotFoundError:  # DatasetNotFoundError included: already says where and how
    raise
  except (ValueError, OSError) as e:
    raise cdata.DatasetError(str(e)) from e
  # 'model' > 1 splits the class proxies (padded to a multiple of it) over devices.
  mesh = training.make_mesh(config.num_devices or None, model_axis_size=config.model_axis_size)
  is_class_level = training.get_loss_spec(config.loss.name).kind == "class"
  num_classes = pipeline.num_train_classes if is_class_level else 0
  spec, loss_fn = training.make_mesh_loss(config.loss.name, _loss_hparams(config), mesh,
                                          num_classes=num_classes or None)
  backbone = training.make_backbone(config.model.name, _model_kwargs(config))
  model = training.MetricModel(backbone, num_classes=num_classes,
                               class_shards=config.model_axis_size)
  schedule, tx = make_schedule_and_optimizer(config)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state = training.create_train_state(model, tx, init_rng, jnp.asarray(pipeline.init_images()))
  if config.model.get("pretrained", ""):
    state = _load_pretrained(state, config, say)
  state = jax.device_put(state, training.state_shardings(state, mesh))

  os.makedirs(workdir, exist_ok=True)
  ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"),
                               every_steps=config.checkpoint_every,
                               max_to_keep=config.max_checkpoints)
  log = training.MetricsLog(workdir) if is_main else None  # metrics.jsonl and tensorboard/
  # The newest checkpoint that restores whole; damaged newer ones are set aside.
  state, resumed_from, data_position = ckpt.restore_newest_good(state, say=say)
  if resumed_from is not None:
    say(f"Resumed from the checkpoint of step {resumed_from} in {workdir}", flush=True)
    if is_main:
      log.write({"event": "resume", "step": resumed_from})
  first_step = int(state.step)

  step_fn = training.jit_train_step(loss_fn, mesh, state)
  sampler = "pk" if spec.kind == "pair" else "shuffle"
  batch_size = config.batch.classes_per_batch * config.batch.images_per_class
  rows = training.process_rows(mesh, batch_size)
  hosts = f" in {num_processes} processes" if num_processes > 1 else ""
  say(f"Training {config.model.name} with {config.loss.name} ({spec.kind}-level) for "
      f"{config.num_steps} steps on {mesh.size} device(s){hosts} (mesh {dict(mesh.shape)}), "
      f"batches of {batch_size} ({sampler})", flush=True)

  train_input = pipeline.train_input(
      rows, num_steps=config.num_steps, first_step=first_step, sampler=sampler,
      classes_per_batch=config.batch.classes_per_batch,
      images_per_class=config.batch.images_per_class, seed=config.seed,
      resume_from=data_position)
  prefetch = int(config.data.get("prefetch", 2))
  batches = training.MeshPrefetcher(train_input, mesh, batch_size, size=prefetch,
                                    position=train_input.position)
  metrics = None
  t_train = t_log = time.time()
  wait_log = 0.0
  try:
    for step in range(first_step, config.num_steps):
      meta, batch, position = next(batches)
      if int(meta["step"]) != step:
        raise RuntimeError(f"the input pipeline is at step {int(meta['step'])}, training at "
                           f"step {step} (checkpoint {resumed_from} in {workdir})")
      state, metrics = step_fn(state, batch, step_rng)
      done = step + 1
      if done % config.log_every == 0 or done == config.num_steps:
        m = jax.device_get(metrics)
        elapsed = max(time.time() - t_log, 1e-9)
        rate = (done - max(first_step, done - config.log_every)) / elapsed
        t_log = time.time()
        record = {"step": done, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                  "learning_rate": float(schedule(done - 1)), "steps_per_second": rate,
                  "input_wait": (batches.wait_seconds - wait_log) / elapsed}
        wait_log = batches.wait_seconds
        if not np.isfinite(record["loss"]):
          raise FloatingPointError(f"loss is {record['loss']} at step {done}; lower the learning "
                                   "rate or γ")
        if is_main:
          log.write(record)
        say(f"step {done:>5}/{config.num_steps}  loss {record['loss']:.4f}  "
            f"lr {record['learning_rate']:.2e}  {rate:.1f} steps/s", flush=True)
      # The metrics line goes first: a checkpoint never gets ahead of the log.
      ckpt.save(done, state, force=done == config.num_steps, data=position)
  finally:
    batches.close()
  train_seconds = time.time() - t_train
  ckpt.close()

  embed = MeshEmbed(state, mesh, config.eval.batch_size,
                    num_workers=int(config.data.get("num_workers", 0)), prefetch=prefetch)
  result, flat, table = pipeline.evaluate(embed, config.loss.name)
  if is_main:
    log.write({"step": config.num_steps, "event": "eval", **flat})
    log.close()
  input_stats = {"process": process, "num_processes": num_processes,
                 "steps": config.num_steps - first_step, "rows_per_batch": len(rows),
                 "train_images_decoded": batches.decoded, "eval_images_decoded": embed.decoded,
                 "input_wait_seconds": batches.wait_seconds, "train_seconds": train_seconds}
  _write_input_stats(workdir, input_stats)
  say(f"\n{pipeline.description}:")
  say(table)
  say(f"\nDone in {time.time() - start_time:.1f} s; metrics in "
      f"{os.path.join(workdir, 'metrics.jsonl')}", flush=True)
  # Global arrays: with several processes, the class proxies may be split across them.
  return {**result,
          "final_loss": None if metrics is None else float(metrics["loss"]),
          "params": state.params, "resumed_from": resumed_from, "input": input_stats}


def _write_input_stats(workdir: str, stats: dict) -> None:
  """``workdir/input/process_<i>-of-<n>.json``: what this process's input pipeline did."""
  path = os.path.join(workdir, "input",
                      f"process_{stats['process']}-of-{stats['num_processes']}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=1)


def _load_pretrained(state, config, say=print):
  """Backbone weights from a torchvision ResNet state-dict file (``config.model.pretrained``)."""
  from circle_jax.models import torchvision_resnet_variables  # pylint: disable=g-import-not-at-top
  from experiments import weights  # pylint: disable=g-import-not-at-top
  state_dict = weights.load_state_dict(config.model.pretrained)
  params, batch_stats = torchvision_resnet_variables(
      state_dict, {"params": state.params["backbone"],
                   "batch_stats": state.batch_stats["backbone"]})
  say(f"Loaded pretrained backbone weights from {config.model.pretrained}", flush=True)
  return state.replace(params={**state.params, "backbone": params},
                       batch_stats={**state.batch_stats, "backbone": batch_stats})
