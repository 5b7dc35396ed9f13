"""``train_and_evaluate(config, workdir)``: train a metric-learning model, then Recall@K.

The run is resumable: Orbax checkpoints every ``config.checkpoint_every`` steps
in ``workdir/checkpoints``, and a restarted run continues from the newest one.
Batches, augmentation and dropout are functions of (seed, step), so a resumed
run ends with the same parameters as an uninterrupted one.

Metrics go to ``workdir/metrics.jsonl``, one JSON object per line, flushed as
written; the file is only ever appended to. Lines logged after the last
checkpoint of a killed run are logged again (with the same values) by the
resumed run, after a ``{"event": "resume", "step": s}`` line: readers keep the
last record of each step.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from circle_jax import data as cdata
from circle_jax import training
from circle_jax.metrics import recall_at_k


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
    "data.split": str,
    "data.train_classes": (tuple, list),
    "data.test_classes": (tuple, list),
    "data.max_shift": int,
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
  for dotted, types in REQUIRED_FIELDS.items():
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
  try:
    spec, _ = training.make_loss(config.loss.name, _loss_hparams(config))
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from None
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
  num_train = len(config.data.train_classes)
  if spec.kind == "pair" and config.batch.classes_per_batch > num_train:
    raise ConfigError(f"config.batch.classes_per_batch: {config.batch.classes_per_batch} classes "
                      f"per batch but only {num_train} training classes")
  if config.data.split not in ("class_disjoint", "by_image"):
    raise ConfigError(f"config.data.split: unknown split {config.data.split!r}; "
                      "known: 'class_disjoint', 'by_image'")
  if config.data.split == "by_image" and (sorted(config.data.train_classes)
                                          != sorted(config.data.test_classes)):
    raise ConfigError("config.data.test_classes: split 'by_image' retrieves the training classes, "
                      f"so test_classes {tuple(config.data.test_classes)} must equal "
                      f"train_classes {tuple(config.data.train_classes)}")
  # The bundled MNIST digits have 500 images per class; 'by_image' tests on half of them.
  per_class = 500 if config.data.split == "class_disjoint" else 250
  n_test = per_class * len(config.data.test_classes) if config.data.name == "mnist_5k" else None
  for k in config.eval.ks:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
      raise ConfigError(f"config.eval.ks: every k must be a positive int, got {k!r}")
    if n_test is not None and k >= n_test:
      raise ConfigError(f"config.eval.ks: k = {k} ≥ the {n_test} test images")


def _loss_hparams(config) -> dict:
  return {k: v for k, v in config.loss.items() if k != "name"}


def _model_kwargs(config) -> dict:
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  if "features" in kwargs:
    kwargs["features"] = tuple(kwargs["features"])
  return kwargs


def _embed_all(embed, state, images: np.ndarray, batch_size: int, mesh) -> np.ndarray:
  """Embeddings of every image, in fixed-size batches (the last one zero-padded)."""
  n = len(images)
  multiple = mesh.size  # the batch is split over every device
  batch_size = -(-batch_size // multiple) * multiple
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    batch = training.shard_batch({"image": chunk}, mesh)["image"]
    out.append(np.asarray(embed(state, batch))[:batch_size - pad])
  return np.concatenate(out)


def _format_table(rows: dict[str, dict[int, float]], ks) -> str:
  header = f"{'Recall@K (%)':<16}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
  lines = [header, "-" * len(header)]
  for name, recall in rows.items():
    lines.append(f"{name:<16}" + "".join(f"{100 * recall[k]:>8.2f}" for k in ks))
  return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per ``config`` (resuming from ``workdir`` if it holds checkpoints), then evaluates.

  Args:
    config: see ``experiments/configs/default.py``.
    workdir: checkpoints, ``metrics.jsonl``.

  Returns:
    ``{"recall": {k: R@k}, "raw_pixels": {k: R@k}, "final_loss": float or
    None, "params": final params, "resumed_from": step or None}``.

  Raises:
    ConfigError: a bad config. FileNotFoundError: a missing data file.
  """
  validate_config(config)
  start_time = time.time()
  is_main = jax.process_index() == 0
  say = print if is_main else (lambda *a, **k: None)

  data = cdata.load_retrieval_data(config.data.name, config.data.path or None,
                                   train_classes=config.data.train_classes,
                                   test_classes=config.data.test_classes,
                                   split=config.data.split)
  # 'model' > 1 splits the class proxies (padded to a multiple of it) over devices.
  mesh = training.make_mesh(config.num_devices or None, model_axis_size=config.model_axis_size)
  is_class_level = training.get_loss_spec(config.loss.name).kind == "class"
  num_classes = data.num_train_classes if is_class_level else 0
  spec, loss_fn = training.make_mesh_loss(config.loss.name, _loss_hparams(config), mesh,
                                          num_classes=num_classes or None)
  backbone = training.make_backbone(config.model.name, _model_kwargs(config))
  model = training.MetricModel(backbone, num_classes=num_classes,
                               class_shards=config.model_axis_size)
  opt = config.optimizer
  schedule = training.make_schedule(opt.schedule, base_lr=opt.learning_rate,
                                    num_steps=config.num_steps, warmup_steps=opt.warmup_steps)
  tx = training.make_optimizer(opt.name, schedule, momentum=opt.momentum,
                               weight_decay=opt.weight_decay)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state = training.create_train_state(model, tx, init_rng, jnp.asarray(data.train_images[:1]))
  state = jax.device_put(state, training.state_shardings(state, mesh))

  os.makedirs(workdir, exist_ok=True)
  ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"),
                               every_steps=config.checkpoint_every,
                               max_to_keep=config.max_checkpoints)
  log = training.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
  resumed_from = ckpt.latest_step()
  if resumed_from is not None:
    state = ckpt.restore(state)
    say(f"Resumed from the checkpoint of step {resumed_from} in {workdir}", flush=True)
    if is_main:
      log.write({"event": "resume", "step": resumed_from})
  first_step = int(state.step)

  step_fn = training.jit_train_step(loss_fn, mesh, state)
  sampler = "pk" if spec.kind == "pair" else "shuffle"
  say(f"Training {config.model.name} with {config.loss.name} ({spec.kind}-level) for "
      f"{config.num_steps} steps on {mesh.size} device(s) (mesh {dict(mesh.shape)}), batches of "
      f"{config.batch.classes_per_batch * config.batch.images_per_class} ({sampler})", flush=True)

  metrics = None
  t_log = time.time()
  for step in range(first_step, config.num_steps):
    batch = cdata.train_batch(data, step, sampler=sampler,
                              classes_per_batch=config.batch.classes_per_batch,
                              images_per_class=config.batch.images_per_class,
                              seed=config.seed, max_shift=config.data.max_shift)
    state, metrics = step_fn(state, training.shard_batch(batch, mesh), step_rng)
    done = step + 1
    if done % config.log_every == 0 or done == config.num_steps:
      m = jax.device_get(metrics)
      rate = (done - max(first_step, done - config.log_every)) / max(time.time() - t_log, 1e-9)
      t_log = time.time()
      record = {"step": done, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                "learning_rate": float(schedule(done - 1)), "steps_per_second": rate}
      if not np.isfinite(record["loss"]):
        raise FloatingPointError(f"loss is {record['loss']} at step {done}; lower the learning "
                                 "rate or γ")
      if is_main:
        log.write(record)
      say(f"step {done:>5}/{config.num_steps}  loss {record['loss']:.4f}  "
          f"lr {record['learning_rate']:.2e}  {rate:.1f} steps/s", flush=True)
    # The metrics line goes first: a checkpoint never gets ahead of the log.
    ckpt.save(done, state, force=done == config.num_steps)
  ckpt.close()

  embed = training.jit_embed_step(mesh, state)
  test_emb = _embed_all(embed, state, data.test_images, config.eval.batch_size, mesh)
  ks = tuple(config.eval.ks)
  recall = recall_at_k(test_emb, data.test_labels, ks, block_size=config.eval.block_size)
  raw = recall_at_k(data.test_images.reshape(len(data.test_images), -1), data.test_labels, ks,
                    block_size=config.eval.block_size)
  if is_main:
    log.write({"step": config.num_steps, "event": "eval",
               **{f"recall@{k}": v for k, v in recall.items()},
               **{f"raw_pixels_recall@{k}": v for k, v in raw.items()}})
  seen = "unseen" if config.data.split == "class_disjoint" else "held-out images of the"
  say(f"\nRetrieval of the {seen} classes {tuple(config.data.test_classes)} "
      f"({len(data.test_labels)} test images, each query left out of its gallery):")
  say(_format_table({"raw pixels": raw, config.loss.name: recall}, ks))
  say(f"\nDone in {time.time() - start_time:.1f} s; metrics in "
      f"{os.path.join(workdir, 'metrics.jsonl')}", flush=True)
  return {"recall": recall, "raw_pixels": raw,
          "final_loss": None if metrics is None else float(metrics["loss"]),
          "params": jax.device_get(state.params), "resumed_from": resumed_from}
