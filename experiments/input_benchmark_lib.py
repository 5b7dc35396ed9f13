r"""Training-input benchmark: the per-process grain loader against the thread-pool loader before it.

The command is experiments/input_benchmark.py's (this module defines no flags, so
the tests can import it beside other entry points); the flags are the arguments
of :func:`run`.

Writes into ``--workdir`` (default: a new temporary folder) a RecordIO pack of
112×112 JPEG faces and a Market-1501-style folder
(``bounding_box_train/<pid>_c<cam>s1_<frame>_00.jpg``) of 256×128 JPEGs, then prints:

1. the load average and core count (``(loaded machine)`` when the 1-minute load
   exceeds half the cores), again at the end with the total time;
2. per dataset, the training-input images/s of one process holding every row of
   a batch of 128 (faces: shuffled, flips; Market: P×K = 32×4, flips and
   shifts): grain (``TrainBatches`` + ``grain_batches``) with ``--workers``
   worker processes and, side by side in the same run, the earlier loader (the
   whole batch through ``source.images(idx, map_fn=pool.map)`` in a thread pool,
   augmented and normalised in the consumer) with ``--threads`` threads; start-up
   seconds (before the first image was decoded: grain's worker processes
   starting) apart; ratio to the thread pool with the same count (grain 0: 1
   thread); medians of ``--rounds`` interleaved rounds (their range in brackets);
3. grain's decoded images/s and global-batch-equivalent steps/s for a process
   holding half the rows (its share in a 2-process run) against every row;
4. the share of wall time a short training run (face_circle.py:local on the
   pack, small CNN, at 32×32 batch 16 and at 112×112 batch 64) waited for
   input, with ``data.num_workers`` 0 and ``max(--workers)``:
   ``input_wait_seconds / train_seconds`` (compile included) and the mean
   per-record ``input_wait`` of metrics.jsonl after the first log window.

Every figure also goes to ``--out`` (default ``<workdir>/input_benchmark.json``).
Loader rates are timed from stamps taken when each batch's decoding began, not
after warm-up batches: grain reads ahead (a thread, two batches ahead, also with
0 worker processes), so batches taken after a warm-up may have been decoded
during it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
from typing import Any

import numpy as np
from PIL import Image

from circle_jax import data as cdata
from experiments import cli
from experiments.configs import face_circle
from experiments.configs import paper

MAGIC = 0xCED7230A
FULL = dict(faces=2000, identities=200, market=1500, market_ids=100, P=32, K=4, batches=40,
            rounds=3, train_steps=30, log_every=5, train_sizes=((32, 32), (112, 112)))
QUICK = dict(faces=160, identities=16, market=96, market_ids=12, P=8, K=4, batches=4,
             rounds=1, train_steps=6, log_every=2, train_sizes=((32, 32),))


def load() -> dict:
  one, five, fifteen = os.getloadavg()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cores": cores}


def _jpeg(rng, h: int, w: int) -> bytes:
  """A smooth random photo-like image (upsampled colour blobs + noise) as JPEG."""
  small = Image.fromarray(rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), np.uint8))
  x = np.asarray(small.resize((w, h), Image.BILINEAR), np.float32) + rng.normal(0, 8, (h, w, 3))
  buf = io.BytesIO()
  Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def write_face_pack(root: str, n: int, identities: int, size: int = 112, seed: int = 0) -> None:
  """``root/train.rec`` + ``train.idx``: ``n`` JPEG records, identity ``i % identities``."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  offset, index = 0, []
  with open(os.path.join(root, "train.rec"), "wb") as rec:
    for key in range(n):
      payload = struct.pack("<IfQQ", 0, float(key % identities), key, 0) + _jpeg(rng, size, size)
      record = struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)
      rec.write(record)
      index.append(f"{key}\t{offset}\n")
      offset += len(record)
  with open(os.path.join(root, "train.idx"), "w") as f:
    f.writelines(index)


def write_market(root: str, n: int, identities: int, size=(256, 128), seed: int = 1) -> None:
  """``root/bounding_box_train/<pid>_c<cam>s1_<frame>_00.jpg``: ``n`` images, ``identities`` ids."""
  folder = os.path.join(root, "bounding_box_train")
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    name = f"{i % identities + 1:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg"
    with open(os.path.join(folder, name), "wb") as f:
      f.write(_jpeg(rng, *size))


def market_source(root: str, size=(256, 128)) -> cdata.ImageSource:
  folder = os.path.join(root, "bounding_box_train")
  names = sorted(os.listdir(folder))
  labels = np.unique([cdata.parse_market1501_name(n)[0] for n in names], return_inverse=True)[1]
  return cdata.FileImageSource([os.path.join(folder, n) for n in names], labels, size)


def thread_pool_batches(source, num_steps: int, *, threads: int, sampler: str, P: int, K: int,
                        seed: int, max_shift: int, mean, std):
  """The earlier loader: the whole batch decoded in a thread pool, augmented in the consumer."""
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for step in range(num_steps):
      t_start = time.time()
      idx = cdata.batch_indices(source.labels, step, sampler=sampler, classes_per_batch=P,
                                images_per_class=K, seed=seed)
      images = source.images(idx, map_fn=pool.map)
      rng = np.random.default_rng([seed, step, 1])
      images = cdata.random_flip(images, rng)
      if max_shift:
        images = cdata.random_shift(images, max_shift, rng)
      x = (images / np.float32(255) - np.float32(mean)) / np.float32(std)
      yield {"image": x, "label": source.labels[idx], "decoded": np.int64(len(idx)),
             "t_start": np.float64(t_start)}


@dataclasses.dataclass(frozen=True)
class Stamped:
  """``fn(step)`` plus ``"t_start"``: the wall-clock time its decoding began (in any process)."""

  fn: Any

  def __call__(self, step: int) -> dict:
    t_start = time.time()
    return {**self.fn(step), "t_start": np.float64(t_start)}


def grain_iter(source, num_steps: int, *, workers: int, rows, sampler: str, P: int, K: int,
               seed: int, max_shift: int, mean, std):
  fn = cdata.TrainBatches(source, np.asarray(rows), sampler, P, K, seed,
                          cdata.HostAugment(flip=True, max_shift=max_shift), mean, std)
  return cdata.grain_batches(Stamped(fn), num_steps, num_workers=workers)


def time_loader(make_iter, num_steps: int) -> dict:
  """Start-up: seconds before the first decode began; images/s from then to the last batch."""
  t0 = time.time()
  it = make_iter(num_steps)
  starts, decoded = [], 0
  for _ in range(num_steps):  # one batch at a time: a Market batch is 50 MB
    b = next(it)
    starts.append(float(b["t_start"]))
    decoded += int(b["decoded"])
  seconds = time.time() - min(starts)
  getattr(it, "close", lambda: None)()
  return {"startup_s": min(starts) - t0, "seconds": seconds, "batches": num_steps,
          "images_per_s": decoded / seconds, "steps_per_s": num_steps / seconds}


def input_rates(source, spec: dict, cfg: dict, workers, threads) -> dict:
  """Images/s of grain (every row, and half the rows) against the thread pool, side by side.

  ``cfg["rounds"]`` rounds, each timing every loader once in turn (all of them
  meet the same background load); the figures are the medians over the rounds.
  """
  n, batch = cfg["batches"], cfg["P"] * cfg["K"]
  kw = dict(sampler=spec["sampler"], P=cfg["P"], K=cfg["K"], seed=0,
            max_shift=spec["max_shift"], mean=spec["mean"], std=spec["std"])
  loaders = [(name, count, batch) for count in sorted(set(workers) | set(threads))
             for name, counts in (("thread pool", threads), ("grain", workers)) if count in counts]
  loaders.append(("grain", max(workers), batch // 2))
  timed = {key: [] for key in loaders}
  bar = cli.progress(total=cfg["rounds"] * len(loaders), desc=spec["title"], unit="loader",
                     leave=False)
  for _ in range(cfg["rounds"]):
    for name, count, rows in loaders:
      bar.set_postfix_str(f"{name}, {count} {'workers' if name == 'grain' else 'threads'}, "
                          f"{rows} rows")
      make = (lambda m: thread_pool_batches(source, m, threads=count, **kw)) if name != "grain" \
          else (lambda m: grain_iter(source, m, workers=count, rows=np.arange(rows), **kw))
      timed[(name, count, rows)].append(time_loader(make, n))
      bar.update()
  bar.close()
  out = []
  for (name, count, rows), runs in timed.items():
    r = {k: float(np.median([run[k] for run in runs])) for k in runs[0]}
    out.append({"loader": name, "workers": count, "rows": rows, **r,
                "images_per_s_rounds": [run["images_per_s"] for run in runs]})
  pool = {r["workers"]: r["images_per_s"] for r in out if r["loader"] == "thread pool"}
  for r in out:
    base = pool.get(max(r["workers"], 1)) if r["loader"] == "grain" else None
    r["ratio_to_thread_pool"] = r["images_per_s"] / base if base else None
  cli.note(f"  {spec['title']}: done")
  return {"title": spec["title"], "batch": batch, "sampler": spec["sampler"],
          "size": list(source.size), "images": len(source), "rates": out[:-1], "half_rows": out[-1]}


def train_wait(pack: str, size, workers: int, cfg: dict, workdir: str) -> dict:
  """A short face_circle.py:local run on the pack: how long its steps waited for input."""
  from experiments import train  # pylint: disable=g-import-not-at-top  (imports jax)
  config = face_circle.get_config("local")
  config.data.path, config.data.val_sets = pack, ()
  config.data.image_size, config.data.num_workers = tuple(size), workers
  config.num_steps, config.log_every = cfg["train_steps"], cfg["log_every"]
  config.checkpoint_every = 10 * cfg["train_steps"]   # the last step's checkpoint only
  if size[0] > 32:  # 112×112: a bigger batch (16×4) of the same small CNN
    config.batch.classes_per_batch = 16
  run_dir = os.path.join(workdir, f"train_{size[0]}x{size[1]}_w{workers}")
  shutil.rmtree(run_dir, ignore_errors=True)  # a leftover checkpoint would resume
  with contextlib.redirect_stdout(io.StringIO()):
    result = train.train_and_evaluate(config, run_dir)
  stats = result["input"]
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    records = [r for r in map(json.loads, f) if "input_wait" in r][1:]  # after the 1st window
  cli.note(f"  training {size[0]}×{size[1]}, {workers} workers: done")
  return {"image_size": list(size), "num_workers": workers, "steps": stats["steps"],
          "batch": config.batch.classes_per_batch * config.batch.images_per_class,
          "train_seconds": stats["train_seconds"],
          "input_wait_seconds": stats["input_wait_seconds"],
          "wait_fraction": stats["input_wait_seconds"] / stats["train_seconds"],
          "steps_per_s": stats["steps"] / stats["train_seconds"],
          "wait_fraction_after_first_window":
              float(np.mean([r["input_wait"] for r in records])) if records else None,
          "steps_per_s_after_first_window":
              float(np.mean([r["steps_per_second"] for r in records])) if records else None}


def _f(v, digits=1, scale=1.0):
  return "—" if v is None else f"{scale * v:.{digits}f}"


def report(results: dict) -> str:
  out = ["", "grain: one reading thread in the process (0 workers) or in each worker process, "
         "2 batches ahead."]
  for d in results["datasets"].values():
    out += ["", f"{d['title']}: {d['images']} images at {d['size'][0]}×{d['size'][1]}, batch "
            f"{d['batch']} ({d['sampler']}), one process holding every row", "",
            "| loader | workers | images/s | start-up s | ratio to thread pool |",
            "|---|---:|---:|---:|---:|"]
    for r in d["rates"]:
      spread = "–".join(_f(f(r["images_per_s_rounds"]), 0) for f in (min, max))
      out.append(f"| {r['loader']} | {r['workers']} | {_f(r['images_per_s'], 0)} ({spread}) | "
                 f"{_f(r['startup_s'], 2)} | {_f(r['ratio_to_thread_pool'], 2)} |")
    half = d["half_rows"]
    full = next(r for r in d["rates"] if r["loader"] == "grain" and r["workers"] == half["workers"])
    out += ["", f"| grain, {half['workers']} workers, per process | rows | decoded images/s "
            "| global steps/s |", "|---|---:|---:|---:|"]
    for label, r in (("every row (1 process)", full), ("half the rows (2 processes)", half)):
      out.append(f"| {label} | {r['rows']} | {_f(r['images_per_s'], 0)} | "
                 f"{_f(r['steps_per_s'], 2)} |")
  out += ["", "Training (face_circle.py:local on the pack, small CNN): share of wall time the "
          "steps waited for input", "",
          "| image | batch | workers | wait / train s (compile incl.) | steps/s | "
          "after 1st window: input_wait | steps/s |", "|---|---:|---:|---:|---:|---:|---:|"]
  for r in results["training"]:
    out.append(f"| {r['image_size'][0]}×{r['image_size'][1]} | {r['batch']} | "
               f"{r['num_workers']} | {_f(r['wait_fraction'], 1, 100)} % | "
               f"{_f(r['steps_per_s'], 2)} | "
               f"{_f(r['wait_fraction_after_first_window'], 1, 100)} % | "
               f"{_f(r['steps_per_s_after_first_window'], 2)} |")
  return "\n".join(out)


def _header(when: str, l: dict) -> str:
  loaded = " (loaded machine)" if l["load_1m"] > 0.5 * l["cores"] else ""
  return (f"{when}: load average {l['load_1m']:.2f} / {l['load_5m']:.2f} / {l['load_15m']:.2f} "
          f"on {l['cores']} cores{loaded}")


def run(workdir: str | None = None, *, quick: bool = False, workers=(0, 1, 2), threads=(1, 2),
        batches=None, rounds=None, train_steps=None, train_workers=None, out=None) -> dict:
  """Writes the data, measures, prints the tables; returns (and writes to ``out``) the figures."""
  t0 = time.time()
  cfg = dict(QUICK if quick else FULL)
  cfg["batches"], cfg["rounds"] = batches or cfg["batches"], rounds or cfg["rounds"]
  cfg["train_steps"] = train_steps or cfg["train_steps"]
  workers, threads = sorted({int(w) for w in workers}), sorted({int(t) for t in threads})
  workdir = workdir or tempfile.mkdtemp(prefix="input_bench_")
  start_load = load()
  print(_header("Start", start_load), flush=True)
  pack, market = os.path.join(workdir, "face_pack"), os.path.join(workdir, "market1501")
  for folder in (pack, market):
    shutil.rmtree(folder, ignore_errors=True)
  write_face_pack(pack, cfg["faces"], cfg["identities"])
  write_market(market, cfg["market"], cfg["market_ids"])
  reader = cdata.RecordIOReader(pack)
  faces = cdata.RecordIOImageSource(reader, *cdata.face_pack_index(reader), (112, 112))
  specs = {"faces": dict(title="Faces (RecordIO pack)", source=faces,
                         sampler="shuffle", max_shift=0, mean=paper.FACE_MEAN, std=paper.FACE_STD),
           "market": dict(title="Market-1501 style (JPEG files)", source=market_source(market),
                          sampler="pk", max_shift=10, mean=paper.IMAGENET_MEAN,
                          std=paper.IMAGENET_STD)}
  datasets = {k: input_rates(s["source"], s, cfg, workers, threads) for k, s in specs.items()}
  train_workers = sorted({int(w) for w in (train_workers or (0, max(workers)))})
  runs = [(size, w) for size in cfg["train_sizes"] for w in train_workers]
  training = [train_wait(pack, size, w, cfg, workdir)
              for size, w in cli.progress(runs, desc="training", unit="run", leave=False)]
  results = dict(
      # The command as typed from the repository root (no path of this machine).
      argv=["python", "-m", "experiments.input_benchmark", *sys.argv[1:]], quick=quick,
      environment=dict(platform=platform.platform(), python=platform.python_version(),
                       load_start=start_load),
      config={**cfg, "workers": workers, "threads": threads, "workdir": workdir},
      datasets=datasets, training=training)
  print(report(results))
  results["environment"]["load_end"] = load()
  results["total_seconds"] = time.time() - t0
  print("\n" + _header("End", results["environment"]["load_end"])
        + f"; total {results['total_seconds']:.0f} s", flush=True)
  out = out or os.path.join(workdir, "input_benchmark.json")
  with open(out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1, default=str)
  print(f"wrote {out}", file=sys.stderr)
  return results
