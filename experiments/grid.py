r"""A hyper-parameter grid trained as one program, and (to compare) one run at a time.

Every member of the grid is a full training run of the setup in the config
(dataset, model, optimiser, steps: :func:`experiments.builder.build`, so any
dataset the training loop takes, the digits, CUB/Cars/SOP, Market-1501/MSMT17
or a face pack): their train states are stacked and advanced by one
jit-compiled step over all members (:mod:`circle_jax.training`), then every
member is evaluated by the config's evaluators (``config.evals``). The grid's
axes are γ, m, the loss, α's gradient and the seed (``config.ablation.seeds``:
each member is trained once per seed, and the report gives mean ± std over
them). How that program runs the
members is ``config.ablation.members``: ``"auto"`` (``"unroll"`` on a CPU,
``"vmap"`` elsewhere), ``"vmap"``, ``"unroll"`` or ``"map"``
(:func:`circle_jax.training.resolve_member_strategy`). With ``--sequential``
(the default) the same members are also trained one after another with the
ordinary jitted step, in the same process, and both wall times are reported.

The command is ``experiments/ablate.py``; it writes ``ablation.json``
(members, seeds, metrics, final losses, wall times) and ``ablation.png``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from circle_jax import training
from experiments import builder
from experiments import cli
from experiments import evaluators as evaluators_lib
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
    ConfigError: an unknown mode, loss or option.

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
      raise builder.ConfigError(f"config.ablation.losses: {e}") from None
    hp = {k: float(v) for k, v in spec.hparams.items() if isinstance(v, float)}
    if loss == config.loss.name:
      hp.update({k: float(v) for k, v in base.items() if k in hp})
    if not ab.gammas and not ab.margins:
      points = [hp]
    elif ab.mode == "sweep":
      points = [{**hp, "gamma": g} for g in ab.gammas] + [{**hp, "margin": m} for m in ab.margins]
    elif ab.mode == "product":
      points = [{**hp, "gamma": g, "margin": m} for g, m in itertools.product(ab.gammas, ab.margins)]
    else:
      raise builder.ConfigError(f"config.ablation.mode: {ab.mode!r}; known: 'sweep', 'product'")
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
    raise builder.ConfigError(f"config.ablation: {e}") from None
  return members


def member_label(m: training.Member) -> str:
  """``circle_class γ=256 m=0.25 (α grad)``."""
  hp = " ".join(f"{'γ' if k == 'gamma' else 'm' if k == 'margin' else k}={v:g}"
                for k, v in m.hparams.items())
  opts = " (α grad)" if m.options.get("grad_through_alpha") else ""
  return f"{m.loss} {hp}{opts}"


# ------------------------------------------------------------------ the runs


@dataclasses.dataclass
class AblationSetup:
  """What the members share (``base``: :func:`experiments.builder.build` of the config, with
  class proxies when any member needs them), and what each has of its own."""

  base: builder.Setup
  members: tuple[training.Member, ...]
  seeds: tuple[int, ...]
  samplers: tuple[str, ...]
  init_rngs: jax.Array
  step_rngs: jax.Array

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.base.config


def make_setup(config, members: Sequence[training.Member],
               seeds: Sequence[int] | None = None) -> AblationSetup:
  """The dataset, model, optimiser and evaluators of ``config``, and each member's keys.

  Member i trains with seed ``seeds[i]`` (default: ``config.seed`` for all),
  split like :func:`experiments.train.train_and_evaluate` splits it: the same
  initialisation and dropout keys, the same batches as a run of that seed.
  Its sampler is its loss's (:attr:`circle_jax.training.LossSpec.sampler`).
  """
  seeds = tuple(seeds) if seeds is not None else (config.seed,) * len(members)
  if len(seeds) != len(members):
    raise ValueError(f"make_setup: {len(seeds)} seeds for {len(members)} members")
  base = builder.build(config, losses=[m.loss for m in members])
  keys = [jax.random.split(jax.random.key(s)) for s in seeds]
  return AblationSetup(base, tuple(members), seeds,
                       tuple(training.get_loss_spec(m.loss).sampler for m in members),
                       jnp.stack([k[0] for k in keys]), jnp.stack([k[1] for k in keys]))


class _MemberBatches:
  """Each step's batch of every member: one input per distinct (sampler, seed), stacked
  ``[N, B, …]`` when they differ (``batch_axis`` 0), shared when they do not (None)."""

  def __init__(self, setup: AblationSetup):
    self.setup = setup
    self.keys = list(zip(setup.samplers, setup.seeds))
    self.batch_axis = None if len(set(self.keys)) == 1 else 0
    self.inputs = None  # opened at the first step (a sequential run opens one per member)

  def _input(self, key):
    c = self.setup.config
    return self.setup.base.dataset.train_input(
        np.arange(self.setup.base.batch_size), num_steps=c.num_steps, first_step=0,
        sampler=key[0], classes_per_batch=c.batch.classes_per_batch,
        images_per_class=c.batch.images_per_class, seed=key[1])

  def member(self, i: int):
    """Member ``i``'s batches alone, from a fresh input of its own."""
    return ({"image": b["image"], "label": b["label"]} for b in self._input(self.keys[i]))

  def __next__(self) -> dict:
    if self.inputs is None:
      self.inputs = {key: self._input(key) for key in dict.fromkeys(self.keys)}
    step = {key: next(it) for key, it in self.inputs.items()}
    if self.batch_axis is None:
      b = step[self.keys[0]]
      return {"image": b["image"], "label": b["label"]}
    return {name: np.stack([step[k][name] for k in self.keys]) for name in ("image", "label")}


def evaluate_members(setup: AblationSetup, states: Sequence, final_losses: Sequence[float],
                     *, nonfinite: str = "raise") -> list[dict]:
  """The evaluators of ``config.evals`` on each member's trained state: flat metrics per member.

  A member whose final loss is not finite gets NaN metrics with ``nonfinite="mark"``.
  """
  c = setup.config
  mesh = training.make_mesh(1)
  embed = None
  out = []
  for state, loss in zip(states, final_losses):
    if not np.isfinite(loss):
      if nonfinite == "raise":
        raise FloatingPointError(f"non-finite final loss {loss}")
      out.append(evaluators_lib.nan_results(setup.base.evaluators))
      continue
    state = jax.device_put(state, training.state_shardings(state, mesh))
    if embed is None:
      embed = train_lib.MeshEmbed(state, mesh, c.eval.batch_size,
                                  num_workers=int(c.data.get("num_workers", 0)))
    embed.state = state
    try:
      results = evaluators_lib.evaluate(setup.base.evaluators, embed)
    except ValueError as e:  # embeddings the metrics refuse (NaN/inf) are a diverged run
      if nonfinite == "raise":
        raise
      del e
      out.append(evaluators_lib.nan_results(setup.base.evaluators))
      continue
    out.append(evaluators_lib.flatten(results, setup.base.evaluators))
  return out


def member_strategy(config: ml_collections.ConfigDict) -> str:
  """``config.ablation.members`` resolved for this process's devices: ``vmap``, ``unroll`` or ``map``.

  Raises:
    ConfigError: an unknown value.

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
    raise builder.ConfigError(
        f"config.ablation.members: {value!r}; known: "
        f"{', '.join(repr(m) for m in training.MEMBER_STRATEGIES)}") from None


def num_ablation_devices(n_members: int, wanted: int = 0) -> int:
  """Devices for the 'ablation' axis: ``wanted`` (0: the most that divide N evenly)."""
  if wanted:
    return wanted
  return max(d for d in range(1, jax.device_count() + 1) if n_members % d == 0)


def run_grid(setup: AblationSetup, *, probe: Callable | None = None, say=print,
             nonfinite: str = "raise") -> dict:
  """Trains all members as one program, then evaluates each.

  Args:
    setup: from :func:`make_setup`.
    probe: optional ``probe(step, state)`` called after every step with the
      stacked state (e.g. to record similarity statistics); its time counts.
    say: printer of the log lines (a progress bar runs on a terminal).
    nonfinite: ``"raise"`` (FloatingPointError naming the members) or
      ``"mark"``: a member whose loss is not finite gets NaN metrics (an
      unstable setting is a result of an ablation, e.g. ArcFace at large γ).

  Returns:
    ``{"metrics": [N × {name: value}] (the evaluators' flat metrics),
    "final_loss": [N], "state": stacked state, "seconds": wall time of
    training + evaluation, "cpu_seconds": the process's CPU time over the same
    span, "devices": d, "member_strategy": how the program ran the members}``.

  Raises:
    ConfigError: an unknown ``config.ablation.members``.
  """
  c, members = setup.config, setup.members
  strategy = member_strategy(c)
  start, cpu_start = time.perf_counter(), time.process_time()
  ablation = training.make_ablation(members)
  d = num_ablation_devices(len(members), c.ablation.num_devices)
  mesh = training.ablation_mesh(d)
  state = training.create_stacked_states(setup.base.model, setup.base.tx, setup.init_rngs,
                                         jnp.asarray(setup.base.dataset.init_images()))
  state = jax.device_put(state, training.member_sharding(mesh))
  rngs = jax.device_put(setup.step_rngs, training.member_sharding(mesh))
  batches = _MemberBatches(setup)
  step_fn = training.jit_ablation_step(ablation, mesh, batch_axis=batches.batch_axis,
                                       member_strategy=strategy)
  metrics = None
  for step in cli.progress(range(c.num_steps), desc=f"grid ({strategy})", unit="step"):
    state, metrics = step_fn(state, next(batches), rngs)
    if probe is not None:
      probe(step + 1, state)
    if (step + 1) % c.log_every == 0 or step + 1 == c.num_steps:
      losses = np.asarray(metrics["loss"])
      say(f"  grid ({strategy}): step {step + 1:>4}/{c.num_steps}  loss min {losses.min():.4f} "
          f"max {losses.max():.4f}", flush=True)
      if nonfinite == "raise" and not np.all(np.isfinite(losses)):
        bad = [member_label(members[i]) for i in np.flatnonzero(~np.isfinite(losses))]
        raise FloatingPointError(f"non-finite loss at step {step + 1} for {bad}")
  final = [float(v) for v in np.asarray(metrics["loss"])]
  results = evaluate_members(setup, [training.unstack_state(state, i) for i in range(len(members))],
                             final, nonfinite=nonfinite)
  return {"metrics": results, "final_loss": final,
          "state": state, "seconds": time.perf_counter() - start,
          "cpu_seconds": time.process_time() - cpu_start, "devices": d,
          "member_strategy": strategy}


def run_sequential(setup: AblationSetup, *, say=print) -> dict:
  """Trains the members one after another, each with its own jitted ordinary step."""
  c = setup.config
  start, cpu_start = time.perf_counter(), time.process_time()
  mesh = training.make_mesh(1)
  batches = _MemberBatches(setup)
  states, final = [], []
  for i, m in enumerate(cli.progress(setup.members, desc="sequential", unit="member")):
    _, loss_fn = training.make_loss(m.loss, {**m.hparams, **m.options})
    state = training.create_train_state(setup.base.model, setup.base.tx, setup.init_rngs[i],
                                        jnp.asarray(setup.base.dataset.init_images()))
    step_fn = training.jit_train_step(loss_fn, mesh, state)
    state = jax.device_put(state, training.state_shardings(state, mesh))
    for batch in itertools.islice(batches.member(i), c.num_steps):
      state, metrics = step_fn(state, training.shard_batch(batch, mesh), setup.step_rngs[i])
    states.append(state)
    final.append(float(metrics["loss"]))
  results = evaluate_members(setup, states, final)
  for m, r in zip(setup.members, results):
    say(f"  sequential: {member_label(m)}: {_headline(r)}", flush=True)
  return {"metrics": results, "final_loss": final, "seconds": time.perf_counter() - start,
          "cpu_seconds": time.process_time() - cpu_start}


# ------------------------------------------------------------------- report


def metric_names(results: Sequence[Mapping[str, float]]) -> list[str]:
  """The per-member metric columns (raw pixels are the same for every member: left out)."""
  return [k for k in results[0] if not k.startswith(evaluators_lib.BASELINE_PREFIXES)
          and k != "num_queries"]


def _headline(r: Mapping[str, float]) -> str:
  name = metric_names([r])[0]
  return f"{name} {100 * r[name]:.2f}"


def format_table(labels: Sequence[str], grid: dict, sequential: dict | None,
                 seeds=None) -> str:
  """A Markdown table: one row per member (``labels``), its metrics of the grid run (and the
  first metric and final loss of the sequential run)."""
  names = metric_names(grid["metrics"])
  seed_col = seeds is not None and len(set(seeds)) > 1
  head = "| member | " + ("seed | " if seed_col else "") + " | ".join(names) + " | final loss |"
  if sequential:
    head += f" sequential {names[0]} | sequential final loss |"
  cols = len(names) + 1 + (2 if sequential else 0) + (1 if seed_col else 0)
  lines = [head, "|---|" + "---:|" * cols]
  for i, label in enumerate(labels):
    row = (f"| {label} | " + (f"{seeds[i]} | " if seed_col else "")
           + " | ".join(f"{100 * grid['metrics'][i][k]:.2f}" for k in names)
           + f" | {grid['final_loss'][i]:.4f} |")
    if sequential:
      row += f" {100 * sequential['metrics'][i][names[0]]:.2f} | {sequential['final_loss'][i]:.4f} |"
    lines.append(row)
  return "\n".join(lines)


def summarise_seeds(members, metrics: Sequence[Mapping[str, float]]) -> dict[str, dict]:
  """``{member label: {metric: (mean, std)}}`` over the seeds each member ran with."""
  groups: dict[str, list] = {}
  for m, r in zip(members, metrics):
    groups.setdefault(member_label(m), []).append(r)
  return {label: evaluators_lib.mean_and_std(runs) for label, runs in groups.items()}


def format_seed_table(summary: Mapping[str, Mapping[str, tuple[float, float]]],
                      num_seeds: int) -> str:
  """Mean ± std over the seeds, one row per member, in percent."""
  names = [k for k in next(iter(summary.values()))
           if not k.startswith(evaluators_lib.BASELINE_PREFIXES) and k != "num_queries"]
  lines = [f"| member (mean ± std over {num_seeds} seeds) | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
  for label, stats in summary.items():
    lines.append(f"| {label} | " + " | ".join(f"{100 * stats[k][0]:.2f} ± {100 * stats[k][1]:.2f}"
                                              for k in names) + " |")
  return "\n".join(lines)


def report_tables(record: Mapping) -> str:
  """The member table of a JSON record (``ablation.json``), and the mean ± std table when there
  are several seeds."""
  labels = [m["label"] for m in record["members"]]
  seeds = [m["seed"] for m in record["members"]]
  sequential = None
  if "sequential_metrics" in record:
    sequential = {"metrics": record["sequential_metrics"],
                  "final_loss": record["sequential_final_loss"]}
  parts = [format_table(labels, record, sequential, seeds)]
  if record.get("over_seeds"):
    summary = {label: {k: tuple(v) for k, v in stats.items()}
               for label, stats in record["over_seeds"].items()}
    parts.append("\n" + format_seed_table(summary, len(set(seeds))))
  return "\n".join(parts)


def report_times(record: Mapping) -> str:
  """The grid's and the sequential run's wall and CPU times and their largest metric gap, from
  a JSON record; empty when the record has no sequential run."""
  if "sequential_metrics" not in record:
    return ""
  grid = f"grid ({record['member_strategy']})"
  first = metric_names(record["metrics"])[0]
  gap = max(abs(a[first] - b[first])
            for a, b in zip(record["metrics"], record["sequential_metrics"]))
  # On a shared machine the wall time depends on what else runs; CPU time much less.
  return (f"Wall time, compile + train + evaluate, {len(record['members'])} members: {grid} "
          f"{record['grid_seconds']:.1f} s, sequential {record['sequential_seconds']:.1f} s: "
          f"sequential / grid = {record['ratio']:.2f}×\n"
          f"CPU time of this process, same spans: {grid} {record['grid_cpu_seconds']:.1f} s, "
          f"sequential {record['sequential_cpu_seconds']:.1f} s: sequential / grid = "
          f"{record['cpu_ratio']:.2f}×\n"
          f"Largest |{first} grid − {first} sequential| over the members: {100 * gap:.2f} points")


def report(record: Mapping) -> str:
  """What :func:`run` prints after training, rendered from its JSON record alone
  (``ablation.json``): :func:`report_tables`, then :func:`report_times`. The docs render the
  committed record with these same functions (``docs/generated_tables.py``)."""
  times = report_times(record)
  return report_tables(record) + ("\n\n" + times if times else "")


def grid_from_config(config) -> tuple[list[training.Member], list[int]]:
  """The members of :func:`members_from_config`, each repeated for every seed of
  ``config.ablation.seeds`` (empty: just ``config.seed``): the runs of the grid."""
  members = members_from_config(config)
  seeds = tuple(config.ablation.get("seeds", ())) or (config.seed,)
  if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
    raise builder.ConfigError(f"config.ablation.seeds: ints ≥ 0, got {seeds!r}")
  return [m for m in members for _ in seeds], [s for _ in members for s in seeds]


def run(config: ml_collections.ConfigDict, workdir: str, *, sequential: bool = True,
        say=print) -> dict:
  """The whole script: grid run, optional sequential run, table, JSON and PNG.

  Returns:
    The JSON record (also written to ``workdir/ablation.json``).
  """
  members, seeds = grid_from_config(config)
  member_strategy(config)   # a bad value fails before any data is read
  setup = make_setup(config, members, seeds)
  n = len(members)
  say(f"Ablation of {n} members, {config.num_steps} steps each, {config.model.name}, on "
      f"{config.data.name}, {jax.device_count()} {jax.devices()[0].platform} device(s)", flush=True)
  vm = run_grid(setup, say=say)
  grid = f"grid ({vm['member_strategy']})"
  say(f"{grid}: {n} members in {vm['seconds']:.1f} s on {vm['devices']} device(s) along "
      "'ablation' (compile + train + evaluate)", flush=True)
  seq = run_sequential(setup, say=say) if sequential else None
  record = {
      "members": [{"loss": m.loss, "hparams": dict(m.hparams), "options": dict(m.options),
                   "label": member_label(m), "seed": s} for m, s in zip(members, seeds)],
      "metrics": vm["metrics"],
      "final_loss": vm["final_loss"],
      "member_strategy": vm["member_strategy"],
      "grid_seconds": vm["seconds"],
      "grid_cpu_seconds": vm["cpu_seconds"],
      "ablation_devices": vm["devices"],
      "num_steps": config.num_steps,
      "data": config.data.name,
      "platform": jax.devices()[0].platform,
  }
  if len(set(seeds)) > 1:
    summary = summarise_seeds(members, vm["metrics"])
    record["over_seeds"] = {label: {k: list(v) for k, v in stats.items()}
                            for label, stats in summary.items()}
  if seq:
    record.update(sequential_seconds=seq["seconds"], ratio=seq["seconds"] / vm["seconds"],
                  sequential_cpu_seconds=seq["cpu_seconds"],
                  cpu_ratio=seq["cpu_seconds"] / vm["cpu_seconds"],
                  sequential_metrics=seq["metrics"], sequential_final_loss=seq["final_loss"])
  say(report(record))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "ablation.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  _plot([f"{member_label(m)}" + (f" seed {s}" if len(set(seeds)) > 1 else "")
         for m, s in zip(members, seeds)], vm["metrics"], os.path.join(workdir, "ablation.png"))
  say(f"Wrote {os.path.join(workdir, 'ablation.json')} and ablation.png", flush=True)
  return record


def _plot(labels, metrics, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  name = metric_names(metrics)[0]
  values = [100 * r[name] for r in metrics]
  fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
  y = np.arange(len(labels))
  ax.barh(y, values, color="tab:blue")
  ax.set_yticks(y, labels, fontsize=7)
  ax.invert_yaxis()
  finite = [v for v in values if np.isfinite(v)]
  ax.set_xlim(max(0.0, math.floor(min(finite, default=0.0) - 2)), 100)
  ax.set_xlabel(f"{name} (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
