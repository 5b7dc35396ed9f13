"""``train_and_evaluate(config, workdir)``: train a metric-learning model, then evaluate it.

One direction, data to loss to metric: :func:`experiments.builder.build` makes
the parts from the config (dataset, mesh, loss, model, optimiser,
evaluators); this loop feeds the dataset's batches to the train step, then
hands the trained embedding to the evaluators of ``config.evals``
(``experiments/evaluators.py``: Recall@K for the digits and the fine-grained
sets, CMC rank-k and mAP for re-ID, 10-fold verification accuracy and TAR@FAR
on IJB-style templates for faces).

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
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from circle_jax import data as cdata
from circle_jax import training
from experiments import builder
from experiments import cli
from experiments import evaluators as evaluators_lib


class MeshEmbed:
  """:class:`experiments.input_pipeline.Embed` on a mesh: each process decodes its rows of every batch.

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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains per ``config`` (resuming from ``workdir`` if it holds checkpoints), then evaluates.

  Args:
    config: see ``experiments/configs/class_disjoint.py`` (every field) and ``omniglot.py``.
    workdir: checkpoints, ``metrics.jsonl``.

  Returns:
    The evaluators' results (``experiments/evaluators.py``: ``"recall"`` {k:
    R@k} and ``"raw_pixels"``; ``"cmc"``, ``"map"``, ``"num_queries"``;
    ``"verification"`` {set: {...}}; ``"tar_at_far"``) plus ``"final_loss"``
    (float or None), ``"params"`` (the final params as global ``jax.Array``s:
    with several processes the class proxies may be split across them, so
    read them with ``jax.experimental.multihost_utils.process_allgather``
    where needed), ``"resumed_from"`` (step or None) and ``"input"`` (this
    process's input statistics, also in
    ``workdir/input/process_<i>-of-<n>.json``: images decoded for training
    and evaluation, seconds the steps waited for input).

  Raises:
    ConfigError: a bad config. FileNotFoundError (``DatasetNotFoundError``):
      missing data, with where it was looked for and how to prepare it.
  """
  setup = builder.build(config)  # every field checked, every dataset opened, nothing written
  # One run per workdir: a second one would interleave its metrics and
  # checkpoints with the first's. Process 0 holds the lock for all of them.
  lock = training.WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
  try:
    return _train_and_evaluate(setup, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(setup: builder.Setup, workdir: str) -> dict:
  config, mesh, dataset = setup.config, setup.mesh, setup.dataset
  start_time = time.time()
  process, num_processes = jax.process_index(), jax.process_count()
  is_main = process == 0
  say = _say if is_main else (lambda *a, **k: None)

  state = training.create_train_state(setup.model, setup.tx, setup.init_rng,
                                      jnp.asarray(dataset.init_images()))
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
    say(f"Resumed from the checkpoint of step {resumed_from} in {workdir}")
    if is_main:
      log.write({"event": "resume", "step": resumed_from})
  first_step = int(state.step)

  step_fn = training.jit_train_step(setup.loss_fn, mesh, state)
  rows = training.process_rows(mesh, setup.batch_size)
  hosts = f" in {num_processes} processes" if num_processes > 1 else ""
  say(f"Training {config.model.name} with {config.loss.name} ({setup.spec.kind}-level) for "
      f"{config.num_steps} steps on {mesh.size} device(s){hosts} (mesh {dict(mesh.shape)}), "
      f"batches of {setup.batch_size} ({setup.sampler})")

  train_input = dataset.train_input(
      rows, num_steps=config.num_steps, first_step=first_step, sampler=setup.sampler,
      classes_per_batch=config.batch.classes_per_batch,
      images_per_class=config.batch.images_per_class, seed=config.seed,
      resume_from=data_position)
  prefetch = int(config.data.get("prefetch", 2))
  batches = training.MeshPrefetcher(train_input, mesh, setup.batch_size, size=prefetch,
                                    position=train_input.position)
  metrics = None
  t_train = t_log = time.time()
  wait_log = 0.0
  # On a terminal only (disable=None), and on the first process.
  bar = cli.progress(total=config.num_steps, initial=first_step, unit="step", desc="train",
                     **({} if is_main else {"disable": True}))
  try:
    for step in range(first_step, config.num_steps):
      meta, batch, position = next(batches)
      if int(meta["step"]) != step:
        raise RuntimeError(f"the input pipeline is at step {int(meta['step'])}, training at "
                           f"step {step} (checkpoint {resumed_from} in {workdir})")
      state, metrics = step_fn(state, batch, setup.step_rng)
      done = step + 1
      bar.update()
      if done % config.log_every == 0 or done == config.num_steps:
        m = jax.device_get(metrics)
        elapsed = max(time.time() - t_log, 1e-9)
        rate = (done - max(first_step, done - config.log_every)) / elapsed
        t_log = time.time()
        record = {"step": done, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                  "learning_rate": float(setup.schedule(done - 1)), "steps_per_second": rate,
                  "input_wait": (batches.wait_seconds - wait_log) / elapsed}
        wait_log = batches.wait_seconds
        if not np.isfinite(record["loss"]):
          raise FloatingPointError(f"loss is {record['loss']} at step {done}; lower the learning "
                                   "rate or γ")
        if is_main:
          log.write(record)
        say(f"step {done:>5}/{config.num_steps}  loss {record['loss']:.4f}  "
            f"lr {record['learning_rate']:.2e}  {rate:.1f} steps/s")
      # The metrics line goes first: a checkpoint never gets ahead of the log.
      ckpt.save(done, state, force=done == config.num_steps, data=position)
  finally:
    bar.close()
    batches.close()
  train_seconds = time.time() - t_train
  ckpt.close()

  embed = MeshEmbed(state, mesh, config.eval.batch_size,
                    num_workers=int(config.data.get("num_workers", 0)), prefetch=prefetch)
  results = evaluators_lib.evaluate(setup.evaluators, embed)
  if is_main:
    log.write({"step": config.num_steps, "event": "eval", **evaluators_lib.flatten(results, setup.evaluators)})
    log.close()
  input_stats = {"process": process, "num_processes": num_processes,
                 "steps": config.num_steps - first_step, "rows_per_batch": len(rows),
                 "train_images_decoded": batches.decoded, "eval_images_decoded": embed.decoded,
                 "input_wait_seconds": batches.wait_seconds, "train_seconds": train_seconds}
  _write_input_stats(workdir, input_stats)
  say(f"\n{dataset.description}:")
  say(evaluators_lib.tables(results, config.loss.name, setup.evaluators))
  say(f"\nDone in {time.time() - start_time:.1f} s; metrics in "
      f"{os.path.join(workdir, 'metrics.jsonl')}")
  # Global arrays: with several processes, the class proxies may be split across them.
  return {**results,
          "final_loss": None if metrics is None else float(metrics["loss"]),
          "params": state.params, "resumed_from": resumed_from, "input": input_stats}


def _say(*parts, **_) -> None:
  """``print`` that keeps a progress bar intact, flushed (other processes read the lines)."""
  tqdm.tqdm.write(" ".join(str(p) for p in parts))
  sys.stdout.flush()


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
  say(f"Loaded pretrained backbone weights from {config.model.pretrained}")
  return state.replace(params={**state.params, "backbone": params},
                       batch_stats={**state.batch_stats, "backbone": batch_stats})
