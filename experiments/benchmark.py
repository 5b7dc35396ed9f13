r"""Scale benchmark: time and memory of the Circle losses against the physical limit.

Measures, side by side in one run, and prints as markdown tables (also written
as JSON to ``--out``, default ``<workdir>/benchmark.json``):

1. pair-wise fwd+bwd time, B ∈ {256, 1024, 4096}, D = 512: circle_jax dense and
   chunked, pytorch-metric-learning ``CircleLoss``, and the bare similarity
   matmul fwd+bwd (S = XXᵀ and its gradient: the limit);
2. class-level fwd+bwd compiled temporary memory
   (``jit(value_and_grad).lower().compile().memory_analysis()``; compile only)
   and time, C ∈ {65,536, 262,144, 1,048,576}, B = 1024, D = 512, dense vs
   chunked; timed only where W and the temporaries fit ``--time_budget_mib``
   and B·C·D ≤ ``--max_time_bcd`` (the table says which);
3. pair-wise chunked temporary memory at B = 65,536, D = 512 (compile only);
4. sharded class-level on 8 devices: the collectives of the compiled fwd+bwd
   program (parsed from its HLO) and their bytes, for each C.

On a CPU the script emulates 8 devices for section 4 (it sets ``XLA_FLAGS``
before importing jax); on a GPU/TPU the same script runs unchanged, timing on
the accelerator (torch on CUDA when available) and using the host CPU devices
for section 4 if fewer than 8 accelerators are present.

Usage::

  .venv/bin/python experiments/benchmark.py            # full run (~10–20 min on 2 CPU cores)
  .venv/bin/python experiments/benchmark.py --quick    # small shapes, < 1 min (smoke test)
"""

from __future__ import annotations

import os

_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICES_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
  # Must happen before jax is imported; only affects the host (CPU) platform.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICES_FLAG).strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import circle_jax as cj  # noqa: E402
from circle_jax import parallel  # noqa: E402

MIB = 2**20

FULL = dict(
    pair_batches=(256, 1024, 4096), pair_dim=512, pair_chunk=256,
    class_counts=(65_536, 262_144, 1_048_576), class_batch=1024, class_dim=512,
    class_chunk=4096, pair_mem_batch=65_536, pair_mem_chunk=256,
    shard_counts=(65_536, 262_144, 1_048_576), shard_batch=1024, repeats=5,
)
QUICK = dict(
    pair_batches=(64, 128), pair_dim=32, pair_chunk=32,
    class_counts=(1024, 8192), class_batch=32, class_dim=16,
    class_chunk=256, pair_mem_batch=2048, pair_mem_chunk=128,
    shard_counts=(1024, 8192), shard_batch=64, repeats=2,
)


# ----------------------------------------------------------------------------- timing


def median_seconds(step, repeats: int, warmup: int = 1) -> float:
  """Median wall time of `step()` (which must block until its work is done)."""
  for _ in range(warmup):
    step()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_jax(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  return median_seconds(jax_step(fn, *args), repeats)


def jax_step(fn, *args):
  return lambda: jax.block_until_ready(fn(*args))


def interleaved_medians(steps: dict, repeats: int) -> dict:
  """Median time of each step, timing them round-robin (one of each per round).

  Ratios between steps are what matters; round-robin exposes every step to the
  same background load (shared CPU cores), which back-to-back blocks would not.
  """
  for step in steps.values():  # compile and warm up
    step()
    step()
  times = {name: [] for name in steps}
  for _ in range(repeats):
    for name, step in steps.items():
      start = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def cpu_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


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


# ----------------------------------------------------------------------------- memory


def temp_mib(fn, *args, argnums=(0,)) -> float:
  """Compiled fwd+bwd temporary memory of fn(*args).sum() (compile only)."""
  compiled = compile_grad(fn, *args, argnums=argnums)
  return compiled.memory_analysis().temp_size_in_bytes / MIB


def compile_grad(fn, *args, argnums=(0,)):
  shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
  grad = jax.value_and_grad(lambda *a: fn(*a).sum(), argnums=argnums)
  return jax.jit(grad).lower(*shapes).compile()


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


# ----------------------------------------------------------------------------- sections


def pairwise_time(cfg, rng) -> list[dict]:
  rows = []
  dim, chunk, repeats = cfg["pair_dim"], cfg["pair_chunk"], cfg["repeats"]
  for batch in cfg["pair_batches"]:
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    y = (np.arange(batch) % max(2, batch // 4)).astype(np.int32)  # P = B/4 classes × K = 4
    cot = jnp.asarray(rng.normal(size=(batch, batch)).astype(np.float32))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    matmul = jax.jit(jax.value_and_grad(lambda e: jnp.sum((e @ e.T) * cot)))
    dense = jax.jit(jax.value_and_grad(lambda e: cj.pairwise_circle_loss(e, yj).sum()))
    chunked = jax.jit(jax.value_and_grad(
        lambda e: cj.pairwise_circle_loss(e, yj, chunk_size=chunk).sum()))
    steps = dict(matmul=jax_step(matmul, xj), dense=jax_step(dense, xj),
                 chunked=jax_step(chunked, xj))
    pml = pml_step(x, y)
    if pml is not None:
      steps["pml"] = pml
    medians = interleaved_medians(steps, repeats)
    row = dict(batch=batch, dim=dim, chunk_size=chunk, pml_s=None)
    row.update({f"{name}_s": t for name, t in medians.items()})
    row["dense_over_matmul"] = row["dense_s"] / row["matmul_s"]
    row["chunked_over_matmul"] = row["chunked_s"] / row["matmul_s"]
    row["pml_over_dense"] = None if row["pml_s"] is None else row["pml_s"] / row["dense_s"]
    rows.append(row)
    print(f"  pair-wise B={batch}: done", file=sys.stderr, flush=True)
  return rows


def class_level(cfg, rng, time_budget_mib: float, max_time_bcd: float) -> list[dict]:
  rows = []
  batch, dim, chunk = cfg["class_batch"], cfg["class_dim"], cfg["class_chunk"]
  x = jnp.asarray(rng.normal(size=(batch, dim)).astype(np.float32))
  for classes in cfg["class_counts"]:
    y = jnp.asarray(rng.integers(0, classes, size=batch).astype(np.int32))
    w_spec = jax.ShapeDtypeStruct((classes, dim), jnp.float32)
    w_mib = classes * dim * 4 / MIB
    row = dict(classes=classes, batch=batch, dim=dim, chunk_size=chunk, weights_mib=w_mib)
    for name, cs in (("dense", None), ("chunked", chunk)):
      fn = lambda e, p, cs=cs: cj.class_circle_loss(e, p, y, chunk_size=cs)
      row[f"{name}_temp_mib"] = temp_mib(fn, x, w_spec, argnums=(0, 1))
      fits = 2 * w_mib + row[f"{name}_temp_mib"] <= time_budget_mib  # W and dW
      small = batch * classes * dim <= max_time_bcd
      row[f"{name}_s"] = None
      if fits and small:
        w = jnp.asarray(rng.normal(size=(classes, dim)).astype(np.float32))
        step = jax.jit(jax.value_and_grad(lambda e, p, fn=fn: fn(e, p).sum(), argnums=(0, 1)))
        row[f"{name}_s"] = time_jax(step, x, w, repeats=max(1, cfg["repeats"] // 2))
        del w
    rows.append(row)
    print(f"  class-level C={classes}: done", file=sys.stderr, flush=True)
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


def sharded_devices(count: int = 8):
  devices = jax.devices()
  if len(devices) < count:
    devices = jax.devices("cpu")
  if len(devices) < count:
    raise RuntimeError(f"need {count} devices for the sharded section, have {len(devices)}")
  return devices[:count]


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


def sharded_class_level(cfg) -> list[dict]:
  devices = sharded_devices()
  rows = []
  batch, dim = cfg["shard_batch"], cfg["class_dim"]
  for classes in cfg["shard_counts"]:
    compiled = sharded_program(classes, batch, dim, cfg["class_chunk"], devices)
    found = collectives(compiled.as_text())
    rows.append(dict(
        classes=classes, batch=batch, dim=dim, devices=len(devices),
        chunk_size=cfg["class_chunk"],
        temp_mib_per_device=compiled.memory_analysis().temp_size_in_bytes / MIB,
        collectives=found, collective_bytes=sum(c["bytes"] for c in found),
    ))
    print(f"  sharded C={classes}: done", file=sys.stderr, flush=True)
  return rows


# ----------------------------------------------------------------------------- report


def _fmt(v, digits=1, unit=""):
  if v is None:
    return "—"
  return f"{v:.{digits}f}{unit}"


def _ms(v):
  return _fmt(None if v is None else 1e3 * v, 1)


def report(results: dict) -> str:
  out = []
  env = results["environment"]
  out.append(f"device: {env['device']} ×{env['device_count']}, {env['cores']} CPU cores, "
             f"jax {env['jax']}, torch {env['torch']}; median of {env['repeats']} "
             f"(class-level: {max(1, env['repeats'] // 2)}) after a warm-up; pair-wise "
             "steps timed round-robin")
  out.append("")
  out.append("Pair-wise Circle fwd+bwd (ms), γ=80, m=0.4, P×K=B/4×4:")
  out.append("")
  out.append("| B | D | matmul XXᵀ fwd+bwd | circle_jax dense | chunked | PML CircleLoss "
             "| dense / matmul | chunked / matmul | PML / dense |")
  out.append("|---|---|---|---|---|---|---|---|---|")
  for r in results["pairwise_time"]:
    out.append(
        f"| {r['batch']} | {r['dim']} | {_ms(r['matmul_s'])} | {_ms(r['dense_s'])} | "
        f"{_ms(r['chunked_s'])} (chunk {r['chunk_size']}) | {_ms(r['pml_s'])} | "
        f"{_fmt(r['dense_over_matmul'], 2)}× | {_fmt(r['chunked_over_matmul'], 2)}× | "
        f"{_fmt(r['pml_over_dense'], 1)}× |")
  out.append("")
  out.append("Class-level Circle fwd+bwd w.r.t. (x, W): compiled temporary memory (MiB) "
             "and time (ms; — = compiled only, not run):")
  out.append("")
  out.append("| C | B | D | W (MiB) | dense temp | chunked temp | dense time | chunked time |")
  out.append("|---|---|---|---|---|---|---|---|")
  for r in results["class_level"]:
    out.append(
        f"| {r['classes']:,} | {r['batch']} | {r['dim']} | {_fmt(r['weights_mib'], 0)} | "
        f"{_fmt(r['dense_temp_mib'])} | {_fmt(r['chunked_temp_mib'])} (chunk "
        f"{r['chunk_size']}) | {_ms(r['dense_s'])} | {_ms(r['chunked_s'])} |")
  m = results["pairwise_memory"]
  out.append("")
  out.append(f"Pair-wise fwd+bwd temporary memory at B = {m['batch']:,}, D = {m['dim']} "
             f"(compile only): chunked (chunk {m['chunk_size']}) "
             f"{_fmt(m['chunked_temp_mib'])} MiB; dense {_fmt(m['dense_temp_mib'])} MiB; "
             f"the embeddings themselves {_fmt(m['embeddings_mib'])} MiB.")
  out.append("")
  rows = results["sharded_class_level"]
  out.append(f"Sharded class-level fwd+bwd on {rows[0]['devices']} devices, global "
             f"B = {rows[0]['batch']}, D = {rows[0]['dim']}, chunk {rows[0]['chunk_size']} "
             "(compile only): collectives in the compiled program (the scalar f32[] is "
             "the benchmark's own sum of the per-example losses)")
  out.append("")
  out.append("| C | C per device | temp / device (MiB) | collectives (op: result shape) "
             "| total bytes |")
  out.append("|---|---|---|---|---|")
  for r in rows:
    ops = "; ".join(f"{c['op']}: {' '.join(c['shapes'])}" for c in r["collectives"])
    out.append(f"| {r['classes']:,} | {r['classes'] // r['devices']:,} | "
               f"{_fmt(r['temp_mib_per_device'])} | {ops} | {r['collective_bytes']:,} |")
  out.append("")
  out.append("Targets:")
  for line in results["targets"]:
    out.append(f"- {line}")
  return "\n".join(out)


def targets(results: dict) -> list[str]:
  lines = []
  pair = {r["batch"]: r for r in results["pairwise_time"]}
  if 1024 in pair:
    r = pair[1024]
    pml = r["pml_over_dense"]
    lines.append(
        f"pair-wise B=1024: PML / circle_jax dense = {_fmt(pml, 1)}× (target ≥ 4×: "
        f"{'met' if pml is not None and pml >= 4 else 'NOT met'}); dense / matmul = "
        f"{_fmt(r['dense_over_matmul'], 2)}× (target ≤ 1.3×: "
        f"{'met' if r['dense_over_matmul'] <= 1.3 else 'NOT met'})")
  cls = results["class_level"]
  temps = [r["chunked_temp_mib"] for r in cls]
  flat = max(temps) / min(temps)
  lines.append(
      f"class-level chunked temp at C={cls[-1]['classes']:,}: {_fmt(temps[-1])} MiB "
      f"(target ≤ 128: {'met' if temps[-1] <= 128 else 'NOT met'}); max/min over C = "
      f"{flat:.3f} (target ≤ 1.10: {'met' if flat <= 1.1 else 'NOT met'})")
  m = results["pairwise_memory"]
  lines.append(
      f"pair-wise chunked temp at B={m['batch']:,}: {_fmt(m['chunked_temp_mib'])} MiB "
      f"(target ≤ 512: {'met' if m['chunked_temp_mib'] <= 512 else 'NOT met'})")
  shard = results["sharded_class_level"]
  signature = lambda r: sorted((c["op"], tuple(c["shapes"])) for c in r["collectives"])
  same = all(signature(r) == signature(shard[0]) for r in shard)
  lines.append(
      f"sharded class-level: the collectives are {'identical' if same else 'DIFFERENT'} "
      f"for every C ({shard[0]['collective_bytes']:,} bytes in all, fwd+bwd): "
      f"{'no collective grows with C' if same else 'some collective depends on C'}")
  return lines


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="small shapes: a smoke test")
  parser.add_argument("--workdir", default="/tmp/circle_jax_benchmark",
                      help="directory for the JSON results")
  parser.add_argument("--out", default=None, help="JSON path (default <workdir>/benchmark.json)")
  parser.add_argument("--time_budget_mib", type=float, default=4096,
                      help="time a class-level case only if 2·W + temporaries fit this")
  parser.add_argument("--max_time_bcd", type=float, default=2.0**38,
                      help="time a class-level case only if B·C·D is at most this")
  parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
  parser.add_argument("--skip", default="", help="comma list of sections to skip: "
                      "pairwise_time,class_level,pairwise_memory,sharded_class_level")
  args = parser.parse_args(argv)
  cfg = dict(QUICK if args.quick else FULL)
  if args.repeats:
    cfg["repeats"] = args.repeats
  rng = np.random.default_rng(0)
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  results = dict(
      command=" ".join([os.path.basename(sys.executable), "experiments/benchmark.py"]
                       + list(argv if argv is not None else sys.argv[1:])),
      quick=args.quick,
      environment=dict(
          device=jax.devices()[0].device_kind, device_count=jax.device_count(),
          platform=platform.platform(), cores=cpu_cores(), jax=jax.__version__,
          torch=torch_version, repeats=cfg["repeats"],
      ),
      config=cfg,
  )
  skip = set(filter(None, args.skip.split(",")))
  sections = dict(
      pairwise_time=lambda: pairwise_time(cfg, rng),
      class_level=lambda: class_level(cfg, rng, args.time_budget_mib, args.max_time_bcd),
      pairwise_memory=lambda: pairwise_memory(cfg),
      sharded_class_level=lambda: sharded_class_level(cfg),
  )
  for name, run in sections.items():
    if name not in skip:
      results[name] = run()
  if not skip:
    results["targets"] = targets(results)
    print(report(results))
  out = args.out or os.path.join(args.workdir, "benchmark.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=1, default=str)
  print(f"\nwrote {out}", file=sys.stderr)
  return results


if __name__ == "__main__":
  main()
