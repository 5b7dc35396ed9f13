r"""Trains one setup with each loss, over several seeds, and prints one Recall@K table.

Command, from the repository root:

  python -m experiments.compare_losses --workdir /tmp/compare
  python -m experiments.compare_losses --workdir /tmp/compare_closed --protocol=closed_set

Each loss config (``--configs``, modules under ``experiments/configs``) trains
once per seed of ``--seeds`` as one ablation program
(:mod:`experiments.grid`, the seed its only axis), so every row is mean ± std
over the seeds; raw pixels, the same for every seed, head the table. The table
is also written to ``workdir/recall.md`` and the numbers to
``workdir/compare_losses.json``. ``--protocol=closed_set`` gives every loss the
split, batches, schedule and learning rate of
``experiments/configs/closed_set.py`` (``closed_set.apply``; the loss's own
hyper-parameters stay).
"""

import importlib
import json
import os
import time

from absl import app
from absl import flags

from experiments import absl_logging
from experiments import cli
from experiments import builder
from experiments import grid
from experiments.configs import closed_set

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for recall.md and compare_losses.json.")
flags.DEFINE_list("configs", ["class_disjoint", "circle_class", "triplet", "multi_similarity",
                              "am_softmax", "arcface"],
                  "Config modules under experiments/configs.")
flags.DEFINE_enum("protocol", "class_disjoint", ["class_disjoint", "closed_set"],
                  "class_disjoint: the configs as they are (digits 0–4 train, 5–9 test); "
                  "closed_set: the setup of experiments/configs/closed_set.py.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every loss (mean ± std over them).")
flags.mark_flag_as_required("workdir")

_NAMES = {"class_disjoint": "Circle pair-wise", "default": "Circle pair-wise",
          "circle_class": "Circle class-level", "triplet": "Triplet (batch-hard)",
          "multi_similarity": "Multi-similarity", "am_softmax": "AM-Softmax",
          "arcface": "ArcFace"}


def compare(config_names, seeds, *, protocol: str = "class_disjoint", say=print) -> dict:
  """``{"rows": {label: {metric: (mean, std)}}, "raw_pixels": {metric: value}, "seconds"}``."""
  rows, raw = {}, None
  seconds = {}
  for name in config_names:
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    if protocol == "closed_set":
      config = closed_set.apply(config)
    config.ablation.seeds = tuple(seeds)
    start = time.time()
    members, member_seeds = grid.grid_from_config(config)
    out = grid.run_grid(grid.make_setup(config, members, member_seeds), say=lambda *a, **k: None)
    stats = grid.summarise_seeds(members, out["metrics"])
    (label_stats,) = stats.values()   # one member, several seeds
    rows[_NAMES.get(name, name)] = label_stats
    raw = raw or {k[len("raw_pixels_"):]: v for k, v in out["metrics"][0].items()
                  if k.startswith("raw_pixels_")}
    seconds[name] = time.time() - start
    r1 = label_stats["recall@1"]
    say(f"{name}: R@1 {100 * r1[0]:.2f} ± {100 * r1[1]:.2f} over seeds {tuple(seeds)} "
        f"({seconds[name]:.0f} s)", flush=True)
  return {"rows": rows, "raw_pixels": raw, "seconds": seconds, "seeds": list(seeds),
          "protocol": protocol}


def format_table(result: dict) -> str:
  """Markdown: raw pixels, then mean ± std of each loss's R@K."""
  names = [k for k in next(iter(result["rows"].values())) if k.startswith("recall@")]
  lines = [f"| embedding (mean ± std over {len(result['seeds'])} seeds) | "
           + " | ".join(n.replace("recall@", "R@") for n in names) + " |",
           "|---|" + "---:|" * len(names)]
  if result["raw_pixels"]:
    lines.append("| raw pixels | " + " | ".join(f"{100 * result['raw_pixels'][n]:.2f}"
                                                for n in names) + " |")
  for label, stats in result["rows"].items():
    lines.append(f"| {label} | " + " | ".join(f"{100 * stats[n][0]:.2f} ± {100 * stats[n][1]:.2f}"
                                             for n in names) + " |")
  return "\n".join(lines)


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    seeds = tuple(int(s) for s in FLAGS.seeds)
    result = compare(FLAGS.configs, seeds, protocol=FLAGS.protocol)
  except (builder.ConfigError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  table = format_table(result)
  print(table)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "recall.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  with open(os.path.join(FLAGS.workdir, "compare_losses.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
