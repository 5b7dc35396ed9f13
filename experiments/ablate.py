r"""Trains a hyper-parameter grid as one program, and (to compare) one run at a time.

Every member of the grid is a full training run of the setup in the config
(model, optimiser, data, steps): their train states are stacked and advanced by
one jit-compiled step over all members (:mod:`circle_jax.training`), then every
member is evaluated (Recall@K of the unseen classes). How that program runs the
members is ``config.ablation.members``: ``"auto"`` (``"unroll"`` on a CPU,
``"vmap"`` elsewhere), ``"vmap"``, ``"unroll"`` or ``"map"``
(:func:`circle_jax.training.resolve_member_strategy`). With ``--sequential``
(the default) the same members are also trained one after another with the
ordinary jitted step, in the same process, and both wall times are reported.

Command, from the repository root:

  python -m experiments.ablate --config experiments/configs/ablate.py --workdir /tmp/ablate

Writes ``ablation.json`` (members, Recall@K, final losses, wall times) and
``ablation.png`` (R@1 per member) to ``--workdir``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from circle_jax import data as cdata
from circle_jax import training
from circle_jax.metrics import recall_at_k
from experiments import input_pipeline
from experiments import train as train_lib


# --------------------------------------------------------------------- members


def members_from_config(config: ml_collections.ConfigDict) -> list[training.Member]:
  r"""The grid of ``config.ablation`` around the base loss ``config.loss``.

  ``mode = "sweep"`` varies one hyper-parameter at a time from the base values
  (each γ of ``gammas`` at the base m, then each m of ``margins`` at the base γ;
  duplicates dropped): the paper's Fig. 3. ``mode = "product"`` takes every
  combination. Every (γ, m) is repeated for each value of
  ``grad_through_alpha`` (Circle losses only) and for each loss of ``losses``
  (default: just ``config.loss.name``).

  Raises:
    train.ConfigError: an unknown mode, loss or option.

  Example:
    >>> from experiments.configs import ablate
    >>> c = ablate.get_config()
    >>> c.ablation.gammas, c.ablation.margins = (32.0, 64.0), (0.1,)
    >>> [(m.hparams["gamma"], m.hparams["margin"]) for m in members_from_config(c)]
    [(32.0, 0.25), (64.0, 0.25), (256.0, 0.1)]
  """
  ab = config.ablation
  losses = tuple(ab.losses) or (config.loss.name,)
  base = {k: v for k, v in config.loss.items() if k != "name"}
  members = []
  for loss in losses:
    try:
      spec = training.get_loss_spec(loss)
    except ValueError as e:
      raise train_lib.ConfigError(f"config.ablation.losses: {e}") from None
    hp = {k: float(v) for k, v in spec.hparams.items() if isinstance(v, float)}
    if loss == config.loss.name:
      hp.update({k: float(v) for k, v in base.items() if k in hp})
    if ab.mode == "sweep":
      points = [{**hp, "gamma": g} for g in ab.gammas] + [{**hp, "margin": m} for m in ab.margins]
    elif ab.mode == "product":
      points = [{**hp, "gamma": g, "margin": m} for g, m in itertools.product(ab.gammas, ab.margins)]
    else:
      raise train_lib.ConfigError(f"config.ablation.mode: {ab.mode!r}; known: 'sweep', 'product'")
    seen = []
    for p in points:
      p = {k: float(v) for k, v in p.items() if k in hp}
      if p not in seen:
        seen.append(p)
    alphas = tuple(ab.grad_through_alpha) if "grad_through_alpha" in spec.hparams else (False,)
    for p in seen:
      for alpha in alphas:
        options = {"grad_through_alpha": True} if alpha else {}
        members.append(training.Member(loss, p, options))
  try:
    training.make_ablation(members)
  except ValueError as e:
    raise train_lib.ConfigError(f"config.ablation: {e}") from None
  return members


def member_label(m: training.Member) -> str:
  """``circle_class γ=256 m=0.25 (α grad)``."""
  hp = " ".join(f"{'γ' if k == 'gamma' else 'm' if k == 'margin' else k}={v:g}"
                for k, v in m.hparams.items())
  opts = " (α grad)" if m.options.get("grad_through_alpha") else ""
  return f"{m.loss} {hp}{opts}"


# ------------------------------------------------------------------ the runs


@dataclasses.dataclass
class Setup:
  """What every member shares: data, model, optimiser, samplers, keys."""

  config: ml_collections.ConfigDict
  data: cdata.RetrievalData
  model: training.MetricModel
  tx: object
  samplers: tuple[str, ...]
  seeds: tuple[int, ...]
  init_rngs: jax.Array
  step_rngs: jax.Array


def make_setup(config, members: Sequence[training.Member],
               data: cdata.RetrievalData | None = None) -> Setup:
  """Data, model (with class proxies if any member needs them), optimiser and keys.

  Member i uses seed ``config.seed`` (``+ i`` with ``config.ablation.vary_seed``)
  and splits it like :func:`experiments.train.train_and_evaluate`: the same
  init and dropout keys, the same batches.
  """
  train_lib.validate_config(config)
  if data is None:
    data = input_pipeline.DigitsPipeline(config).data
  kinds = [training.get_loss_spec(m.loss).kind for m in members]
  backbone = training.make_backbone(config.model.name, train_lib._model_kwargs(config))  # pylint: disable=protected-access
  model = training.MetricModel(
      backbone, num_classes=data.num_train_classes if "class" in kinds else 0)
  _, tx = train_lib.make_schedule_and_optimizer(config)
  seeds = tuple(config.seed + (i if config.ablation.vary_seed else 0) for i in range(len(members)))
  keys = [jax.random.split(jax.random.key(s)) for s in seeds]
  return Setup(config, data, model, tx,
               tuple("pk" if k == "pair" else "shuffle" for k in kinds), seeds,
               jnp.stack([k[0] for k in keys]), jnp.stack([k[1] for k in keys]))


def _member_batch(setup: Setup, i: int, step: int) -> dict:
  c = setup.config
  return cdata.train_batch(setup.data, step, sampler=setup.samplers[i],
                           classes_per_batch=c.batch.classes_per_batch,
                           images_per_class=c.batch.images_per_class,
                           seed=setup.seeds[i], max_shift=c.data.max_shift)


def _stacked_batch(setup: Setup, step: int):
  """``(batch, batch_axis)``: one shared batch if all members draw the same, else [N, B, …]."""
  keys = list(zip(setup.samplers, setup.seeds))
  if len(set(keys)) == 1:
    return _member_batch(setup, 0, step), None
  cache = {}
  for i, key in enumerate(keys):
    if key not in cache:
      cache[key] = _member_batch(setup, i, step)
  per = [cache[k] for k in keys]
  return {name: np.stack([b[name] for b in per]) for name in per[0]}, 0


def member_strategy(config: ml_collections.ConfigDict) -> str:
  """``config.ablation.members`` resolved for this process's devices: ``vmap``, ``unroll`` or ``map``.

  Raises:
    train.ConfigError: an unknown value.

  Example:
    >>> from experiments.configs import ablate
    >>> c = ablate.get_config()
    >>> c.ablation.members = "vmap"
    >>> member_strategy(c)
    'vmap'
  """
  value = config.ablation.members
  try:
    return training.resolve_member_strategy(value, jax.devices()[0].platform)
  except ValueError:
    raise train_lib.ConfigError(
        f"config.ablation.members: {value!r}; known: "
        f"{', '.join(repr(m) for m in training.MEMBER_STRATEGIES)}") from None


def num_ablation_devices(n_members: int, wanted: int = 0) -> int:
  """Devices for the 'ablation' axis: ``wanted`` (0: the most that divide N evenly)."""
  if wanted:
    return wanted
  return max(d for d in range(1, jax.device_count() + 1) if n_members % d == 0)


def run_grid(setup: Setup, members: Sequence[training.Member], *,
             probe: Callable | None = None, say=print, nonfinite: str = "raise") -> dict:
  """Trains all members as one program; returns their Recall@K and losses.

  Args:
    setup: from :func:`make_setup`.
    members: the ablation.
    probe: optional ``probe(step, state)`` called after every step with the
      stacked state (e.g. to record similarity statistics); its time counts.
    say: progress printer.
    nonfinite: ``"raise"`` (FloatingPointError naming the members) or
      ``"mark"``: a member whose loss is not finite gets NaN recall (an
      unstable setting is a result of an ablation, e.g. ArcFace at large γ).

  Returns:
    ``{"recall": [N × {k: R@k}], "final_loss": [N], "state": stacked state,
    "seconds": wall time of training + evaluation, "cpu_seconds": the
    process's CPU time over the same span, "devices": d, "member_strategy":
    how the program ran the members}``.

  Raises:
    train.ConfigError: an unknown ``config.ablation.members``.
  """
  c = setup.config
  strategy = member_strategy(c)
  start, cpu_start = time.perf_counter(), time.process_time()
  ablation = training.make_ablation(members)
  d = num_ablation_devices(len(members), c.ablation.num_devices)
  mesh = training.ablation_mesh(d)
  state = training.create_stacked_states(setup.model, setup.tx, setup.init_rngs,
                                         jnp.asarray(setup.data.train_images[:1]))
  state = jax.device_put(state, training.member_sharding(mesh))
  rngs = jax.device_put(setup.step_rngs, training.member_sharding(mesh))
  _, batch_axis = _stacked_batch(setup, 0)
  step_fn = training.jit_ablation_step(ablation, mesh, batch_axis=batch_axis,
                                       member_strategy=strategy)
  metrics = None
  for step in range(c.num_steps):
    batch, _ = _stacked_batch(setup, step)
    state, metrics = step_fn(state, batch, rngs)
    if probe is not None:
      probe(step + 1, state)
    if (step + 1) % c.log_every == 0 or step + 1 == c.num_steps:
      losses = np.asarray(metrics["loss"])
      say(f"  grid ({strategy}): step {step + 1:>4}/{c.num_steps}  loss min {losses.min():.4f} "
          f"max {losses.max():.4f}", flush=True)
      if nonfinite == "raise" and not np.all(np.isfinite(losses)):
        bad = [member_label(members[i]) for i in np.flatnonzero(~np.isfinite(losses))]
        raise FloatingPointError(f"non-finite loss at step {step + 1} for {bad}")
  embed = jax.jit(functools.partial(training.ablation_embed_step, member_strategy=strategy))
  emb = train_lib.embed_in_batches(lambda x: embed(state, x), setup.data.test_images, c.eval.batch_size)
  final = [float(v) for v in np.asarray(metrics["loss"])]
  recall = [recall_at_k(e, setup.data.test_labels, tuple(c.eval.ks), block_size=c.eval.block_size)
            if np.isfinite(f) and np.all(np.isfinite(e)) else {k: float("nan") for k in c.eval.ks}
            for e, f in zip(emb, final)]
  return {"recall": recall, "final_loss": final,
          "state": state, "seconds": time.perf_counter() - start,
          "cpu_seconds": time.process_time() - cpu_start, "devices": d,
          "member_strategy": strategy}


def run_sequential(setup: Setup, members: Sequence[training.Member], *, say=print) -> dict:
  """Trains the members one after another, each with its own jitted ordinary step."""
  c = setup.config
  start, cpu_start = time.perf_counter(), time.process_time()
  mesh = training.make_mesh(1)
  recall, final = [], []
  for i, m in enumerate(members):
    _, loss_fn = training.make_loss(m.loss, {**m.hparams, **m.options})
    state = training.create_train_state(setup.model, setup.tx, setup.init_rngs[i],
                                        jnp.asarray(setup.data.train_images[:1]))
    step_fn = training.jit_train_step(loss_fn, mesh, state)
    state = jax.device_put(state, training.state_shardings(state, mesh))
    for step in range(c.num_steps):
      batch = training.shard_batch(_member_batch(setup, i, step), mesh)
      state, metrics = step_fn(state, batch, setup.step_rngs[i])
    embed = training.jit_embed_step(mesh, state)
    emb = train_lib.embed_in_batches(lambda x: embed(state, training.shard_batch({"image": x}, mesh)["image"]),
                         setup.data.test_images, c.eval.batch_size)
    recall.append(recall_at_k(emb, setup.data.test_labels, tuple(c.eval.ks),
                              block_size=c.eval.block_size))
    final.append(float(metrics["loss"]))
    say(f"  sequential: {i + 1}/{len(members)} {member_label(m)}: R@1 "
        f"{100 * recall[-1][1]:.2f}", flush=True)
  return {"recall": recall, "final_loss": final, "seconds": time.perf_counter() - start,
          "cpu_seconds": time.process_time() - cpu_start}


# ------------------------------------------------------------------- report


def format_table(members, grid: dict, sequential: dict | None, ks) -> str:
  """A Markdown table: one row per member, R@K of the grid run (and R@1 of the sequential)."""
  head = "| member | " + " | ".join(f"R@{k}" for k in ks) + " | final loss |"
  if sequential:
    head += " sequential R@1 | sequential final loss |"
  lines = [head, "|---|" + "---:|" * (len(ks) + 1 + (2 if sequential else 0))]
  for i, m in enumerate(members):
    row = (f"| {member_label(m)} | " + " | ".join(f"{100 * grid['recall'][i][k]:.2f}" for k in ks)
           + f" | {grid['final_loss'][i]:.4f} |")
    if sequential:
      row += (f" {100 * sequential['recall'][i][1]:.2f} | {sequential['final_loss'][i]:.4f} |")
    lines.append(row)
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, *, sequential: bool = True,
        say=print) -> dict:
  """The whole script: grid run, optional sequential run, table, JSON and PNG.

  Returns:
    The JSON record (also written to ``workdir/ablation.json``).
  """
  members = members_from_config(config)
  member_strategy(config)   # a bad value fails before any data is read
  setup = make_setup(config, members)
  n = len(members)
  say(f"Ablation of {n} members, {config.num_steps} steps each, {config.model.name}, on "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s)", flush=True)
  vm = run_grid(setup, members, say=say)
  grid = f"grid ({vm['member_strategy']})"
  say(f"{grid}: {n} members in {vm['seconds']:.1f} s on {vm['devices']} device(s) along "
      "'ablation' (compile + train + evaluate)", flush=True)
  seq = run_sequential(setup, members, say=say) if sequential else None
  ks = tuple(config.eval.ks)
  table = format_table(members, vm, seq, ks)
  say(table)
  record = {
      "members": [{"loss": m.loss, "hparams": dict(m.hparams), "options": dict(m.options),
                   "label": member_label(m)} for m in members],
      "recall": [{str(k): v for k, v in r.items()} for r in vm["recall"]],
      "final_loss": vm["final_loss"],
      "member_strategy": vm["member_strategy"],
      "grid_seconds": vm["seconds"],
      "grid_cpu_seconds": vm["cpu_seconds"],
      "ablation_devices": vm["devices"],
      "num_steps": config.num_steps,
      "platform": jax.devices()[0].platform,
  }
  if seq:
    ratio = seq["seconds"] / vm["seconds"]
    cpu_ratio = seq["cpu_seconds"] / vm["cpu_seconds"]
    say(f"\nWall time, compile + train + evaluate, {n} members: {grid} {vm['seconds']:.1f} s, "
        f"sequential {seq['seconds']:.1f} s: sequential / grid = {ratio:.2f}×")
    # On a shared machine the wall time depends on what else runs; CPU time much less.
    say(f"CPU time of this process, same spans: {grid} {vm['cpu_seconds']:.1f} s, sequential "
        f"{seq['cpu_seconds']:.1f} s: sequential / grid = {cpu_ratio:.2f}×")
    gap = max(abs(a[1] - b[1]) for a, b in zip(vm["recall"], seq["recall"]))
    say(f"Largest |R@1 grid − R@1 sequential| over the members: {100 * gap:.2f} points")
    record.update(sequential_seconds=seq["seconds"], ratio=ratio,
                  sequential_cpu_seconds=seq["cpu_seconds"], cpu_ratio=cpu_ratio,
                  sequential_recall=[{str(k): v for k, v in r.items()} for r in seq["recall"]],
                  sequential_final_loss=seq["final_loss"])
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "ablation.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  _plot(members, vm["recall"], os.path.join(workdir, "ablation.png"))
  say(f"Wrote {os.path.join(workdir, 'ablation.json')} and ablation.png", flush=True)
  return record


def _plot(members, recall, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 0.3 * len(members) + 1.2))
  y = np.arange(len(members))
  ax.barh(y, [100 * r[1] for r in recall], color="tab:blue")
  ax.set_yticks(y, [member_label(m) for m in members], fontsize=7)
  ax.invert_yaxis()
  lo = min(100 * r[1] for r in recall)
  ax.set_xlim(max(0.0, math.floor(lo - 2)), 100)
  ax.set_xlabel("Recall@1 (%) of the unseen classes")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f"Unexpected arguments: {argv[1:]}")
  try:
    run(flags.FLAGS.config, flags.FLAGS.workdir, sequential=flags.FLAGS.sequential)
  except (train_lib.ConfigError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("workdir", None, "Directory for ablation.json and ablation.png.")
  flags.DEFINE_bool("sequential", True, "Also train the members one after another, and time it.")
  config_flags.DEFINE_config_file("config", "experiments/configs/ablate.py",
                                  "Config file with an `ablation` section.", lock_config=True)
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
