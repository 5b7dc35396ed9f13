r"""Scale benchmark: the Circle losses against their GEMM floors, memory and collectives.

Every time is a ratio to a *floor* measured in the same run, round-robin with the
loss (one of each per round, so background load hits both alike), on the same
inputs. The floors are the matrix products a fwd+bwd step cannot avoid (B×B×D or
B×C×D GEMMs; the elementwise work is O(B²) or O(B·C), D times less):

- pair-wise, 2 GEMMs: the similarities S = X̂X̂ᵀ [B, B] and the embedding gradient
  dX = HX̂ for a given [B, B] matrix H (S is symmetric, so the backward pass needs
  one GEMM: (G + Gᵀ)X̂); the chunked path recomputes S in its backward pass, so
  its *recompute floor* is 3 GEMMs (one more B×B×D GEMM);
- class-level, 3 GEMMs: the logits XWᵀ [B, C], dX = GW [B, D] and dW = GᵀX
  [C, D] for a given [B, C] matrix G; the chunked path's recompute floor is 4
  GEMMs (XWᵀ once more).

Sections (``--config.skip`` any of them by name; JSON keys are the same names):

1. ``pairwise_time``: circle_jax ``pairwise_circle_loss`` fwd+bwd, dense and
   chunked, against the 2- and 3-GEMM floors, B ∈ {256, 1024, 4096}, D = 512;
2. ``class_time``: ``class_circle_loss`` fwd+bwd w.r.t. (x, W), chunked (and
   dense), against the 3- and 4-GEMM floors at C = 65,536, B = 1024, D = 512;
3. ``pml``: pytorch-metric-learning ``CircleLoss(m=0.4, gamma=80)`` against
   circle_jax dense, fwd+bwd at B = 1024 (and 256);
4. ``class_memory``: class-level fwd+bwd compiled temporary memory, dense and
   chunked, C ∈ {65,536, 262,144, 1,048,576} (compile only:
   ``jit(value_and_grad).lower().compile().memory_analysis()``);
5. ``pairwise_memory``: pair-wise chunked temporary memory at B = 65,536;
6. ``sharded_class_level``: the collectives (parsed from the HLO) and their bytes
   of the class-sharded fwd+bwd program on 8 devices, for each C (compile only).

How the times are taken (the same rules for every section):

- warm-up: the first call compiles, then two untimed calls of every step;
- repeats: as many rounds as fit ``config.seconds`` per case, at least
  ``config.repeats`` and at most ``config.max_rounds``; each call blocks until done and is
  timed alone (wall: ``time.perf_counter``; CPU: ``time.process_time``, all
  threads of this process: CPU / wall is how many cores the step kept busy);
- reported: median and min wall time, median CPU time; a ratio is the median
  over rounds of the ratio within a round (the same load for both);
- pytorch-metric-learning runs with ``torch.set_num_threads`` = the available
  cores (XLA's CPU pool has as many), after the same warm-up, in blocks of its
  own: circle_jax block, PML block, and again, never a JAX call between two
  PML calls (JAX's threads idle between blocked calls, but separate blocks
  remove any doubt), with a short pause before each block so spinning OpenMP
  threads park; the ratio is of the medians.

Load. This VM shares its cores with other work, and its timings vary 1.5× under
noisy neighbours, so each section records the 1-min load average at its start
and end and, from ``/proc/stat`` deltas over the section, the share of the
machine's CPU time used by *other* processes (busy time minus this process's CPU
time) and the share stolen by the hypervisor (steal). A section is marked
**measured under load** (in the printed table and in the JSON, with the
reasons) when other processes used more than 10 % of the CPU time, or steal
exceeded 5 %, or the 1-min load average exceeded 0.5 × cores when the run
started (later load averages include this benchmark's own work, so only the
one taken before it started says whether the machine was quiet; a run that
starts under load is marked throughout). The JSON's ``under_load`` lists the
timed sections so marked; the compile-only ones record their load too, but
load cannot change a compiled program. A quiet run is one with no such mark.

Devices. Timing runs on the default devices, as users run: on a CPU, one device
that owns all cores. Emulating 8 CPU devices
(``--xla_force_host_platform_device_count=8``) changes how XLA's CPU client
threads a single-device program (the same GEMMs ran on 10 threads instead of 3
to 5 here), so section 6 compiles its programs in a child process that sets
that flag, unless 8 devices are already present (a GPU/TPU host with 8 chips,
or the test suite). On a GPU the same command times the accelerator (torch on
CUDA when available).

The command is experiments/benchmark.py's (this module defines no flags, so the
tests can import it beside other entry points); the shapes, repeats and
sections are the fields of experiments/configs/benchmark.py.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

import circle_jax as cj
from circle_jax import parallel
from experiments import cli

MIB = 2**20
SHARD_DEVICES = 8
# The load rule (see the module docstring).
OTHERS_SHARE_LIMIT = 0.10
STEAL_SHARE_LIMIT = 0.05
LOADAVG_PER_CORE_LIMIT = 0.5

PAIR_FLOOR = "2 GEMMs: S = X̂X̂ᵀ, dX = HX̂"
PAIR_RECOMPUTE = "3 GEMMs: S = X̂X̂ᵀ, S again (recompute), dX = HX̂"
CLASS_FLOOR = "3 GEMMs: XWᵀ, dX = GW, dW = GᵀX"
CLASS_RECOMPUTE = "4 GEMMs: XWᵀ, XWᵀ again (recompute), dX = GW, dW = GᵀX"


# ----------------------------------------------------------------------------- load


def cpu_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


def cpu_stat() -> dict | None:
  """The machine's CPU time by state since boot, in seconds (Linux), else None."""
  try:
    with open("/proc/stat") as f:
      fields = f.readline().split()
  except OSError:
    return None
  ticks = os.sysconf("SC_CLK_TCK")
  # guest time is already counted in user; the first 8 fields are what we need.
  return {name: int(v) / ticks for name, v in zip(_STAT_FIELDS, fields[1:9])}


def loadavg() -> list[float] | None:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def load_snapshot() -> dict:
  return dict(wall=time.perf_counter(), own_cpu=time.process_time(), stat=cpu_stat(),
              loadavg=loadavg())


def load_reasons(others_share, steal_share, run_start_loadavg, cores) -> list[str]:
  """Why a section counts as measured under load (empty: it does not).

  Args:
    others_share: share of the machine's CPU time used by other processes over
      the section, or None where unknown.
    steal_share: share of the CPU time stolen by the hypervisor, or None.
    run_start_loadavg: [1, 5, 15]-min load averages before the run, or None.
    cores: cores available to this process.
  """
  reasons = []
  if others_share is not None and others_share > OTHERS_SHARE_LIMIT:
    reasons.append(f"other processes used {100 * others_share:.0f} % of the CPU time "
                   f"(> {100 * OTHERS_SHARE_LIMIT:.0f} %)")
  if steal_share is not None and steal_share > STEAL_SHARE_LIMIT:
    reasons.append(f"steal {100 * steal_share:.1f} % (> {100 * STEAL_SHARE_LIMIT:.0f} %)")
  if run_start_loadavg and run_start_loadavg[0] > LOADAVG_PER_CORE_LIMIT * cores:
    reasons.append(f"1-min load average {run_start_loadavg[0]:.2f} at the start of the "
                   f"run (> {LOADAVG_PER_CORE_LIMIT} × {cores} cores)")
  return reasons


def load_summary(start: dict, end: dict, run_start_loadavg, cores: int) -> dict:
  """The load over a section, from two snapshots; `under_load` per the rule."""
  wall = end["wall"] - start["wall"]
  own = end["own_cpu"] - start["own_cpu"]
  others = steal = idle = None
  if start["stat"] and end["stat"]:
    delta = {k: end["stat"][k] - start["stat"][k] for k in _STAT_FIELDS}
    total = sum(delta.values())
    if total > 0:
      busy = sum(delta[k] for k in _BUSY_FIELDS)
      # /proc/stat is sampled per tick, process_time exactly: clip the noise at 0.
      others = max(0.0, busy - own) / total
      steal = delta["steal"] / total
      idle = (delta["idle"] + delta["iowait"]) / total
  reasons = load_reasons(others, steal, run_start_loadavg, cores)
  return dict(
      loadavg_start=start["loadavg"], loadavg_end=end["loadavg"], wall_s=wall,
      own_cpu_s=own, others_share=others, steal_share=steal, idle_share=idle,
      under_load=bool(reasons), reasons=reasons,
  )


def measured(section, run_start_loadavg, cores):
  """Runs `section()` and returns (its result, the load over it)."""
  start = load_snapshot()
  result = section()
  return result, load_summary(start, load_snapshot(), run_start_loadavg, cores)


# ----------------------------------------------------------------------------- timing


def timed_call(step) -> tuple[float, float]:
  """(wall, process CPU) seconds of one call of `step` (which blocks until done)."""
  wall, cpu = time.perf_counter(), time.process_time()
  step()
  return time.perf_counter() - wall, time.process_time() - cpu


def warm_up(steps: dict) -> dict:
  """Compiles (first call) and runs every step twice more; returns the last walls."""
  last = {}
  for name, step in steps.items():
    step()
  for _ in range(2):
    for name, step in steps.items():
      last[name] = timed_call(step)[0]
  return last


def rounds_for(seconds_per_round: float, cfg) -> int:
  """As many rounds as fit cfg['seconds'], within [repeats, max_rounds]."""
  fit = math.ceil(cfg["seconds"] / max(seconds_per_round, 1e-6))
  return int(min(max(fit, cfg["repeats"]), max(cfg["max_rounds"], cfg["repeats"])))


def summary(walls: list[float], cpus: list[float]) -> dict:
  return dict(wall_median_s=statistics.median(walls), wall_min_s=min(walls),
              cpu_median_s=statistics.median(cpus), repeats=len(walls), wall_s=walls)


def round_robin(steps: dict, cfg, desc: str = "") -> dict:
  """Times every step, one call of each per round; a summary per step.

  Round-robin exposes every step to the same background load (shared cores), so
  ratios between steps of one round are fair even when the load drifts.
  """
  rounds = rounds_for(sum(warm_up(steps).values()), cfg)
  walls = {name: [] for name in steps}
  cpus = {name: [] for name in steps}
  # The bar updates between timed calls, never inside one.
  for _ in cli.progress(range(rounds), desc=desc, unit="round", leave=False):
    for name, step in steps.items():
      wall, cpu = timed_call(step)
      walls[name].append(wall)
      cpus[name].append(cpu)
  return {name: summary(walls[name], cpus[name]) for name in steps}


def paired_ratio(times: dict, num: str, den: str) -> float:
  """Median over rounds of num's wall time / den's wall time in the same round."""
  return statistics.median(
      a / b for a, b in zip(times[num]["wall_s"], times[den]["wall_s"]))


def jax_step(fn, *args):
  return lambda: jax.block_until_ready(fn(*args))


def device_array(a: np.ndarray) -> jax.Array:
  return jax.block_until_ready(jnp.asarray(a))


# ----------------------------------------------------------------------------- floors


@jax.jit
def pair_floor(x, h):
  # Both results are returned so XLA can drop neither product.
  return x @ x.T, h @ x


@jax.jit
def pair_recompute_floor(x, x2, h):
  # x2 is a second [B, D] input: x2 @ x.T cannot be merged with x @ x.T by CSE.
  return x @ x.T, x2 @ x.T, h @ x


@jax.jit
def class_floor(x, w, g):
  return x @ w.T, g @ w, g.T @ x


@jax.jit
def class_recompute_floor(x, x2, w, g):
  return x @ w.T, x2 @ w.T, g @ w, g.T @ x


def unit_rows(a: np.ndarray) -> np.ndarray:
  return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def pk_labels(batch: int) -> np.ndarray:
  """P = B/4 classes × K = 4 samples (every anchor has positives and negatives)."""
  return (np.arange(batch) % max(2, batch // 4)).astype(np.int32)


# ----------------------------------------------------------------------------- sections


def pair_steps(batch: int, dim: int, chunk: int, rng) -> dict:
  x = rng.normal(size=(batch, dim)).astype(np.float32)
  xj, yj = device_array(x), device_array(pk_labels(batch))
  xhat = device_array(unit_rows(x))
  x2 = device_array(unit_rows(rng.normal(size=(batch, dim))))
  h = device_array(rng.normal(size=(batch, batch)).astype(np.float32))
  # Labels are an argument, not a closed-over constant XLA could fold the masks of.
  dense = jax.jit(jax.value_and_grad(lambda e, l: cj.pairwise_circle_loss(e, l).sum()))
  chunked = jax.jit(jax.value_and_grad(
      lambda e, l: cj.pairwise_circle_loss(e, l, chunk_size=chunk).sum()))
  return dict(
      floor=jax_step(pair_floor, xhat, h),
      recompute_floor=jax_step(pair_recompute_floor, xhat, x2, h),
      dense=jax_step(dense, xj, yj),
      chunked=jax_step(chunked, xj, yj),
  )


def pairwise_time(cfg, rng) -> list[dict]:
  rows = []
  dim, chunk = cfg["pair_dim"], cfg["pair_chunk"]
  for batch in cfg["pair_batches"]:
    times = round_robin(pair_steps(batch, dim, chunk, rng), cfg, desc=f"B={batch}")
    rows.append(dict(
        batch=batch, dim=dim, chunk_size=chunk, times=times,
        dense_over_floor=paired_ratio(times, "dense", "floor"),
        chunked_over_floor=paired_ratio(times, "chunked", "floor"),
        chunked_over_recompute_floor=paired_ratio(times, "chunked", "recompute_floor"),
        recompute_floor_over_floor=paired_ratio(times, "recompute_floor", "floor"),
    ))
    cli.note(f"  pair-wise time B={batch}: done")
  return rows


def class_time(cfg, rng) -> list[dict]:
  rows = []
  batch, dim, chunk = cfg["class_batch"], cfg["class_dim"], cfg["class_chunk"]
  x = device_array(unit_rows(rng.normal(size=(batch, dim))))
  x2 = device_array(unit_rows(rng.normal(size=(batch, dim))))
  for classes in cfg["class_time_counts"]:
    y = device_array(rng.integers(0, classes, size=batch).astype(np.int32))
    w = device_array(rng.normal(size=(classes, dim)).astype(np.float32))
    g = device_array(rng.normal(size=(batch, classes)).astype(np.float32))

    def loss_step(cs):
      fn = lambda e, p, l: cj.class_circle_loss(e, p, l, chunk_size=cs).sum()
      return jax_step(jax.jit(jax.value_and_grad(fn, argnums=(0, 1))), x, w, y)

    steps = dict(floor=jax_step(class_floor, x, w, g),
                 recompute_floor=jax_step(class_recompute_floor, x, x2, w, g),
                 chunked=loss_step(chunk))
    if cfg["class_time_dense"]:
      steps["dense"] = loss_step(None)
    times = round_robin(steps, cfg, desc=f"C={classes:,}")
    row = dict(
        classes=classes, batch=batch, dim=dim, chunk_size=chunk, times=times,
        chunked_over_floor=paired_ratio(times, "chunked", "floor"),
        chunked_over_recompute_floor=paired_ratio(times, "chunked", "recompute_floor"),
        recompute_floor_over_floor=paired_ratio(times, "recompute_floor", "floor"),
        dense_over_floor=None,
    )
    if "dense" in times:
      row["dense_over_floor"] = paired_ratio(times, "dense", "floor")
    rows.append(row)
    del w, g, steps
    cli.note(f"  class-level time C={classes}: done")
  return rows


def pml_step(x: np.ndarray, y: np.ndarray):
  """A pytorch-metric-learning CircleLoss(m=0.4, γ=80) fwd+bwd step, or None if absent."""
  try:
    import torch
    from pytorch_metric_learning import losses as pml_losses
  except ImportError:
    return None
  torch.set_num_threads(cpu_cores())
  device = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  loss_fn = pml_losses.CircleLoss(m=0.4, gamma=80)
  emb = torch.tensor(x, device=device, requires_grad=True)
  labels = torch.tensor(y, device=device)

  def step():
    emb.grad = None
    loss_fn(emb, labels).backward()
    sync()

  return step


def torch_threads():
  try:
    import torch
  except ImportError:
    return None
  return torch.get_num_threads()


def blocks(steps: dict, cfg, desc: str = "") -> dict:
  """Times each step in blocks of its own (never interleaved), alternating blocks.

  Blocks alternate (A, B, A, B, …) so slow drifts in the load hit both; a pause
  before each block lets the other library's worker threads go idle.
  """
  estimate = warm_up(steps)
  # cfg["seconds"] per step in all, split over its blocks.
  per_block_cfg = dict(cfg, seconds=cfg["seconds"] / cfg["pml_blocks"],
                       repeats=max(1, math.ceil(cfg["repeats"] / cfg["pml_blocks"])))
  per_block = {name: rounds_for(t, per_block_cfg) for name, t in estimate.items()}
  walls = {name: [] for name in steps}
  cpus = {name: [] for name in steps}
  bar = cli.progress(total=cfg["pml_blocks"] * sum(per_block.values()), desc=desc, unit="call",
                     leave=False)
  for _ in range(cfg["pml_blocks"]):
    for name, step in steps.items():
      time.sleep(cfg["pause_s"])
      for _ in range(per_block[name]):
        wall, cpu = timed_call(step)
        walls[name].append(wall)
        cpus[name].append(cpu)
        bar.update()
  bar.close()
  return {name: summary(walls[name], cpus[name]) for name in steps}


def pml_time(cfg, rng) -> list[dict]:
  rows = []
  for batch in cfg["pml_batches"]:
    x = rng.normal(size=(batch, cfg["pair_dim"])).astype(np.float32)
    y = pk_labels(batch)
    pml = pml_step(x, y)
    if pml is None:
      return []
    dense = jax.jit(jax.value_and_grad(lambda e, l: cj.pairwise_circle_loss(e, l).sum()))
    times = blocks(dict(circle_jax=jax_step(dense, device_array(x), device_array(y)),
                        pml=pml), cfg, desc=f"B={batch}")
    rows.append(dict(
        batch=batch, dim=cfg["pair_dim"], times=times, torch_threads=torch_threads(),
        pml_over_circle_jax=times["pml"]["wall_median_s"]
        / times["circle_jax"]["wall_median_s"],
    ))
    cli.note(f"  PML B={batch}: done")
  return rows


def temp_mib(fn, *args, argnums=(0,)) -> float:
  """Compiled fwd+bwd temporary memory of fn(*args).sum() (compile only)."""
  compiled = compile_grad(fn, *args, argnums=argnums)
  return compiled.memory_analysis().temp_size_in_bytes / MIB


def compile_grad(fn, *args, argnums=(0,)):
  shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
  grad = jax.value_and_grad(lambda *a: fn(*a).sum(), argnums=argnums)
  return jax.jit(grad).lower(*shapes).compile()


def class_memory(cfg) -> list[dict]:
  rows = []
  batch, dim, chunk = cfg["class_batch"], cfg["class_dim"], cfg["class_chunk"]
  x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  for classes in cli.progress(cfg["class_counts"], desc="compiling", unit="C", leave=False):
    w = jax.ShapeDtypeStruct((classes, dim), jnp.float32)
    row = dict(classes=classes, batch=batch, dim=dim, chunk_size=chunk,
               weights_mib=classes * dim * 4 / MIB)
    for name, cs in (("dense", None), ("chunked", chunk)):
      fn = lambda e, p, l, cs=cs: cj.class_circle_loss(e, p, l, chunk_size=cs)
      row[f"{name}_temp_mib"] = temp_mib(fn, x, w, y, argnums=(0, 1))
    rows.append(row)
    cli.note(f"  class-level memory C={classes}: done")
  return rows


def pairwise_memory(cfg) -> dict:
  batch, dim, chunk = cfg["pair_mem_batch"], cfg["pair_dim"], cfg["pair_mem_chunk"]
  x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  return dict(
      batch=batch, dim=dim, chunk_size=chunk,
      chunked_temp_mib=temp_mib(
          lambda e, l: cj.pairwise_circle_loss(e, l, chunk_size=chunk), x, y),
      dense_temp_mib=temp_mib(lambda e, l: cj.pairwise_circle_loss(e, l), x, y),
      embeddings_mib=batch * dim * 4 / MIB,
  )


_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\([^=]*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<op>all-reduce|all-gather|collective-permute|reduce-scatter|all-to-all)"
    r"(?P<start>-start)?\("
)
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2,
          "f16": 2, "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}


def collectives(hlo_text: str) -> list[dict]:
  """Every collective of a compiled HLO module: op, result shape(s) and bytes.

  Async pairs are counted once (at their ``-start``; the result of an
  all-gather-start is a tuple of (operand, result), of which the last is kept).
  """
  found = []
  for match in _COLLECTIVE.finditer(hlo_text):
    arrays = [(dt, tuple(int(d) for d in dims.split(",") if d))
              for dt, dims in _ARRAY.findall(match["shape"]) if dt in _BYTES]
    if match["start"] and match["op"] != "all-reduce" and len(arrays) > 1:
      arrays = arrays[-1:]
    found.append(dict(
        op=match["op"],
        shapes=[f"{dt}[{','.join(map(str, dims))}]" for dt, dims in arrays],
        bytes=sum(_BYTES[dt] * int(np.prod(dims)) for dt, dims in arrays),
    ))
  return found


def sharded_devices(count: int = SHARD_DEVICES):
  """`count` devices of one kind (accelerators first, then CPU), or None."""
  for devices in (jax.devices(), jax.devices("cpu")):
    if len(devices) >= count:
      return devices[:count]
  return None


def sharded_program(classes: int, batch: int, dim: int, chunk: int | None, devices):
  """The compiled fwd+bwd program of the class-sharded loss (compile only)."""
  mesh = jax.sharding.Mesh(np.array(devices), ("d",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  loss = jax.shard_map(
      functools.partial(parallel.class_circle_loss, axis_name="d", chunk_size=chunk),
      mesh=mesh, in_specs=(P("d"), P("d"), P("d")), out_specs=P("d"))
  shapes = (
      jax.ShapeDtypeStruct((batch, dim), jnp.float32),
      jax.ShapeDtypeStruct((classes, dim), jnp.float32),
      jax.ShapeDtypeStruct((batch,), jnp.int32),
  )
  grad = jax.value_and_grad(lambda e, p, l: loss(e, p, l).sum(), argnums=(0, 1))
  return jax.jit(grad).lower(*shapes).compile()


def sharded_rows(cfg, devices) -> list[dict]:
  rows = []
  batch, dim = cfg["shard_batch"], cfg["class_dim"]
  for classes in cli.progress(cfg["shard_counts"], desc="compiling", unit="C", leave=False):
    compiled = sharded_program(classes, batch, dim, cfg["class_chunk"], devices)
    found = collectives(compiled.as_text())
    rows.append(dict(
        classes=classes, batch=batch, dim=dim, devices=len(devices),
        chunk_size=cfg["class_chunk"],
        temp_mib_per_device=compiled.memory_analysis().temp_size_in_bytes / MIB,
        collectives=found, collective_bytes=sum(c["bytes"] for c in found),
    ))
    cli.note(f"  sharded C={classes}: done")
  return rows


def sharded_class_level(cfg) -> list[dict]:
  """Section 6, in this process if 8 devices exist, else in a child emulating them."""
  devices = sharded_devices()
  if devices is not None:
    return sharded_rows(cfg, devices)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                      f"{SHARD_DEVICES}").strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  child = subprocess.run(
      [sys.executable, "-c",
       "from experiments import benchmark_lib; benchmark_lib.sharded_child()"],
      input=json.dumps(cfg), env=env, cwd=root, capture_output=True, text=True, check=False)
  if child.stderr.strip():
    cli.note(child.stderr.rstrip("\n"))
  if child.returncode:
    raise RuntimeError(f"the sharded section's child process failed ({child.returncode})")
  return json.loads(child.stdout.strip().splitlines()[-1])


def sharded_child() -> None:
  """The child process of sharded_class_level: the sizes as JSON on stdin, its rows on stdout."""
  print(json.dumps(sharded_rows(json.loads(sys.stdin.read()), sharded_devices())))


# ----------------------------------------------------------------------------- report


def _fmt(v, digits=1, unit=""):
  if v is None:
    return "—"
  return f"{v:.{digits}f}{unit}"


def _ms(v):
  return _fmt(None if v is None else 1e3 * v, 1)


def _pct(v):
  return "—" if v is None else f"{100 * v:.1f} %"


def load_line(load: dict | None) -> str:
  if load is None:
    return "Load: not recorded."
  avg = lambda a: "—" if a is None else f"{a[0]:.2f}"
  verdict = ("**measured under load**: " + "; ".join(load["reasons"])
             if load["under_load"] else "quiet")
  return (f"Load: 1-min load average {avg(load['loadavg_start'])} → "
          f"{avg(load['loadavg_end'])} (start → end, includes this run); other processes "
          f"{_pct(load['others_share'])} of the CPU time, steal {_pct(load['steal_share'])}, "
          f"this process {load['own_cpu_s']:.1f} s CPU in {load['wall_s']:.1f} s: {verdict}.")


def _time_cells(t: dict) -> str:
  return (f"{_ms(t['wall_median_s'])} | {_ms(t['wall_min_s'])} | "
          f"{_ms(t['cpu_median_s'])} | {t['repeats']}")


def report(results: dict) -> str:
  out = []
  env = results["environment"]
  loads = results.get("load", {})
  out.append(
      f"device: {env['device']} ×{env['device_count']}, {env['cores']} CPU cores, "
      f"jax {env['jax']}, torch {env['torch']}; 1-min load average at the start "
      f"{_fmt((env['loadavg_at_start'] or [None])[0], 2)}. Times: wall median and min, "
      "CPU = process CPU time (all threads) median, over the repeats after a warm-up "
      "(compile + 2 calls); ratios: median over rounds of the within-round ratio. "
      f"Under load = other processes > {100 * OTHERS_SHARE_LIMIT:.0f} % of the CPU time or "
      f"steal > {100 * STEAL_SHARE_LIMIT:.0f} % over the section, or the 1-min load average "
      f"> {LOADAVG_PER_CORE_LIMIT} × cores when the run started.")
  if "pairwise_time" in results:
    out += ["", f"## Pair-wise Circle fwd+bwd against its GEMM floors (γ = 80, m = 0.4, "
            "P×K = B/4 × 4; steps timed round-robin)", "", load_line(loads.get("pairwise_time")),
            "", "| B | D | step | computes | wall median (ms) | wall min (ms) | CPU median (ms) "
            "| repeats | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["pairwise_time"]:
      t, pre = r["times"], f"| {r['batch']} | {r['dim']} "
      rows = (
          ("floor", PAIR_FLOOR, "1 (the floor)"),
          ("recompute_floor", PAIR_RECOMPUTE,
           f"{_fmt(r['recompute_floor_over_floor'], 2)}× the 2-GEMM floor"),
          ("dense", "circle_jax `pairwise_circle_loss(x, y)`",
           f"**{_fmt(r['dense_over_floor'], 2)}×** the 2-GEMM floor"),
          ("chunked", f"circle_jax `pairwise_circle_loss(x, y, chunk_size={r['chunk_size']})`",
           f"**{_fmt(r['chunked_over_floor'], 2)}×** the 2-GEMM floor, "
           f"{_fmt(r['chunked_over_recompute_floor'], 2)}× the 3-GEMM recompute floor"),
      )
      for name, what, ratio in rows:
        out.append(f"{pre}| {name.replace('_', ' ')} | {what} | {_time_cells(t[name])} | {ratio} |")
  if "class_time" in results:
    out += ["", "## Class-level Circle fwd+bwd w.r.t. (x, W) against its GEMM floors "
            "(steps timed round-robin)", "", load_line(loads.get("class_time")), "",
            "| C | B | D | step | computes | wall median (ms) | wall min (ms) "
            "| CPU median (ms) | repeats | ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["class_time"]:
      t, pre = r["times"], f"| {r['classes']:,} | {r['batch']} | {r['dim']} "
      rows = [
          ("floor", CLASS_FLOOR, "1 (the floor)"),
          ("recompute_floor", CLASS_RECOMPUTE,
           f"{_fmt(r['recompute_floor_over_floor'], 2)}× the 3-GEMM floor"),
          ("chunked", f"circle_jax `class_circle_loss(x, W, y, chunk_size={r['chunk_size']})`",
           f"**{_fmt(r['chunked_over_floor'], 2)}×** the 3-GEMM floor, "
           f"{_fmt(r['chunked_over_recompute_floor'], 2)}× the 4-GEMM recompute floor"),
      ]
      if "dense" in t:
        rows.append(("dense", "circle_jax `class_circle_loss(x, W, y)`",
                     f"{_fmt(r['dense_over_floor'], 2)}× the 3-GEMM floor"))
      for name, what, ratio in rows:
        out.append(f"{pre}| {name.replace('_', ' ')} | {what} | {_time_cells(t[name])} | {ratio} |")
  if "pml" in results:
    out += ["", "## pytorch-metric-learning `CircleLoss(m=0.4, gamma=80)` against circle_jax "
            "dense, pair-wise fwd+bwd (each timed in blocks of its own, alternating, never "
            "interleaved call by call)", "", load_line(loads.get("pml")), ""]
    if not results["pml"]:
      out.append("pytorch-metric-learning is not installed: section not run.")
    else:
      out += ["| B | D | torch threads | circle_jax wall median / min (ms) | circle_jax CPU "
              "(ms) | PML wall median / min (ms) | PML CPU (ms) | repeats (each) "
              "| PML / circle_jax |", "|---|---|---|---|---|---|---|---|---|"]
      for r in results["pml"]:
        j, p = r["times"]["circle_jax"], r["times"]["pml"]
        out.append(
            f"| {r['batch']} | {r['dim']} | {r['torch_threads']} | "
            f"{_ms(j['wall_median_s'])} / {_ms(j['wall_min_s'])} | {_ms(j['cpu_median_s'])} | "
            f"{_ms(p['wall_median_s'])} / {_ms(p['wall_min_s'])} | {_ms(p['cpu_median_s'])} | "
            f"{j['repeats']} / {p['repeats']} | **{_fmt(r['pml_over_circle_jax'], 1)}×** |")
  if "class_memory" in results:
    out += ["", "## Class-level fwd+bwd compiled temporary memory (MiB; compile only)", "",
            "| C | B | D | W (MiB) | dense temp | chunked temp |", "|---|---|---|---|---|---|"]
    for r in results["class_memory"]:
      out.append(
          f"| {r['classes']:,} | {r['batch']} | {r['dim']} | {_fmt(r['weights_mib'], 0)} | "
          f"{_fmt(r['dense_temp_mib'])} | {_fmt(r['chunked_temp_mib'])} (chunk "
          f"{r['chunk_size']}) |")
  if "pairwise_memory" in results:
    m = results["pairwise_memory"]
    out += ["", f"## Pair-wise fwd+bwd temporary memory at B = {m['batch']:,}, "
            f"D = {m['dim']} (compile only)", "",
            f"chunked (chunk {m['chunk_size']}) {_fmt(m['chunked_temp_mib'])} MiB; dense "
            f"{_fmt(m['dense_temp_mib'])} MiB; the embeddings themselves "
            f"{_fmt(m['embeddings_mib'])} MiB."]
  if "sharded_class_level" in results:
    rows = results["sharded_class_level"]
    out += ["", f"## Sharded class-level fwd+bwd on {rows[0]['devices']} devices, global "
            f"B = {rows[0]['batch']}, D = {rows[0]['dim']}, chunk {rows[0]['chunk_size']} "
            "(compile only)", "", "Collectives in the compiled program (the scalar f32[] is "
            "the benchmark's own sum of the per-example losses).", "",
            "| C | C per device | temp / device (MiB) | collectives (op: result shape) "
            "| total bytes |", "|---|---|---|---|---|"]
    for r in rows:
      ops = "; ".join(f"{c['op']}: {' '.join(c['shapes'])}" for c in r["collectives"])
      out.append(f"| {r['classes']:,} | {r['classes'] // r['devices']:,} | "
                 f"{_fmt(r['temp_mib_per_device'])} | {ops} | {r['collective_bytes']:,} |")
  out += ["", "Targets" + (" (quick shapes: the verdicts are about these tiny shapes, not "
                           "the targets' shapes)" if results["quick"] else "") + ":"]
  out += [f"- {line}" for line in results["targets"]]
  return "\n".join(out)


def _verdict(ok: bool) -> str:
  return "met" if ok else "NOT met"


def _loaded(results: dict, section: str) -> str:
  load = results.get("load", {}).get(section)
  return " (measured under load)" if load and load["under_load"] else ""


def targets(results: dict) -> list[str]:
  """One line per target of issue 14 whose section ran: the measured value and met / NOT met."""
  cfg, lines = results["config"], []
  if "pairwise_time" in results:
    pair = {r["batch"]: r for r in results["pairwise_time"]}
    note = _loaded(results, "pairwise_time")
    for batch in dict.fromkeys((cfg["target_batch"], cfg["target_big_batch"])):
      if batch in pair:
        ratio = pair[batch]["dense_over_floor"]
        lines.append(f"pair-wise dense B={batch}: {ratio:.2f}× the 2-GEMM floor "
                     f"(target ≤ 1.4×: {_verdict(ratio <= 1.4)}){note}")
    if cfg["target_batch"] in pair:
      r = pair[cfg["target_batch"]]
      lines.append(
          f"pair-wise chunked B={r['batch']}: {r['chunked_over_floor']:.2f}× the 2-GEMM floor "
          f"(target ≤ 1.7×: {_verdict(r['chunked_over_floor'] <= 1.7)}; "
          f"{r['chunked_over_recompute_floor']:.2f}× its 3-GEMM recompute floor){note}")
  if "class_time" in results:
    cls = {r["classes"]: r for r in results["class_time"]}
    if cfg["target_classes"] in cls:
      r = cls[cfg["target_classes"]]
      lines.append(
          f"class-level chunked C={r['classes']:,}: {r['chunked_over_floor']:.2f}× the 3-GEMM "
          f"floor (target ≤ 1.45×: {_verdict(r['chunked_over_floor'] <= 1.45)}; "
          f"{r['chunked_over_recompute_floor']:.2f}× its 4-GEMM recompute floor)"
          f"{_loaded(results, 'class_time')}")
  if results.get("pml"):
    pml = {r["batch"]: r for r in results["pml"]}
    if cfg["target_batch"] in pml:
      ratio = pml[cfg["target_batch"]]["pml_over_circle_jax"]
      lines.append(f"pair-wise B={cfg['target_batch']}: PML CircleLoss / circle_jax dense = "
                   f"{ratio:.1f}× (target ≥ 4×: {_verdict(ratio >= 4)}){_loaded(results, 'pml')}")
  if "class_memory" in results:
    temps = [r["chunked_temp_mib"] for r in results["class_memory"]]
    last = results["class_memory"][-1]["classes"]
    flat = max(temps) / min(temps)
    lines.append(
        f"class-level chunked temp at C={last:,}: {_fmt(temps[-1])} MiB (target ≤ 128: "
        f"{_verdict(temps[-1] <= 128)}); max/min over C = {flat:.3f} (target ≤ 1.10, flat "
        f"in C: {_verdict(flat <= 1.1)})")
  if "pairwise_memory" in results:
    m = results["pairwise_memory"]
    lines.append(f"pair-wise chunked temp at B={m['batch']:,}: {_fmt(m['chunked_temp_mib'])} MiB "
                 f"(target ≤ 512: {_verdict(m['chunked_temp_mib'] <= 512)})")
  if "sharded_class_level" in results:
    shard = results["sharded_class_level"]
    signature = lambda r: sorted((c["op"], tuple(c["shapes"])) for c in r["collectives"])
    same = all(signature(r) == signature(shard[0]) for r in shard)
    lines.append(
        f"sharded class-level: the collectives are {'identical' if same else 'DIFFERENT'} "
        f"for every C ({shard[0]['collective_bytes']:,} bytes in all, fwd+bwd): "
        f"{'no collective grows with C' if same else 'some collective depends on C'}")
  return lines


SECTIONS = ("pairwise_time", "class_time", "pml", "class_memory", "pairwise_memory",
            "sharded_class_level")
# Only these measure time; the others are properties of compiled programs, which
# load cannot change (their load is recorded all the same).
TIMED = ("pairwise_time", "class_time", "pml")


def sections_to_skip(config) -> set[str]:
  """The sections named by ``config.skip`` (a comma list); ValueError for a name not in SECTIONS."""
  skip = set(filter(None, config["skip"].split(",")))
  if skip - set(SECTIONS):
    raise ValueError(f"--config.skip: unknown sections {sorted(skip - set(SECTIONS))}; "
                     f"the sections are {','.join(SECTIONS)}")
  return skip


def run(config, out: str, command: str | None = None) -> dict:
  """Runs every section ``config`` does not skip, prints the report and writes the JSON to ``out``.

  Args:
    config: experiments/configs/benchmark.py's fields (a ConfigDict or a dict).
    out: path of the JSON results.
    command: the command line, recorded in the JSON.
  """
  skip = sections_to_skip(config)
  # The shapes and repeats: what the JSON records as its config.
  cfg = {k: v for k, v in config.items() if k not in ("quick", "skip")}
  cores = cpu_cores()
  # Taken before the benchmark does any work: later averages include its own.
  run_start_loadavg = loadavg()
  rng = np.random.default_rng(0)
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  results = dict(
      command=command,
      quick=bool(config["quick"]),
      environment=dict(
          device=jax.devices()[0].device_kind, device_count=jax.device_count(),
          platform=platform.platform(), cores=cores, jax=jax.__version__,
          torch=torch_version, loadavg_at_start=run_start_loadavg,
          load_rule=dict(others_share_limit=OTHERS_SHARE_LIMIT,
                         steal_share_limit=STEAL_SHARE_LIMIT,
                         loadavg_per_core_limit=LOADAVG_PER_CORE_LIMIT),
      ),
      config=cfg,
      load={},
  )
  sections = dict(
      pairwise_time=lambda: pairwise_time(cfg, rng),
      class_time=lambda: class_time(cfg, rng),
      pml=lambda: pml_time(cfg, rng),
      class_memory=lambda: class_memory(cfg),
      pairwise_memory=lambda: pairwise_memory(cfg),
      sharded_class_level=lambda: sharded_class_level(cfg),
  )
  bar = cli.progress([n for n in SECTIONS if n not in skip], desc="benchmark", unit="section")
  for name in bar:
    bar.set_postfix_str(name)
    results[name], results["load"][name] = measured(sections[name], run_start_loadavg, cores)
  results["under_load"] = [n for n in TIMED if n in results["load"]
                           and results["load"][n]["under_load"]]
  results["targets"] = targets(results)
  print(report(results))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=1, default=str)
  print(f"\nwrote {out}", file=sys.stderr)
  return results
