"""The losses compared on one setup over several seeds: the work of ``experiments.compare_losses``.

:func:`compare` trains each loss config once per seed as one ablation program
(:mod:`experiments.grid`, the seed its only axis) and returns the JSON record the
command writes (``compare_losses.json``); :func:`format_table` renders that record
as the Markdown table the command prints, and the docs render the committed
record with it too (``docs/generated_tables.py``).

Example (the table of a record):

>>> record = {"seeds": [0, 1], "raw_pixels": {"recall@1": 0.9},
...           "rows": {"Circle pair-wise": {"recall@1": [0.95, 0.01]}}}
>>> print(format_table(record))
| embedding (mean ± std over 2 seeds) | R@1 |
|---|---:|
| raw pixels | 90.00 |
| Circle pair-wise | 95.00 ± 1.00 |
"""

import importlib
import time

from experiments import grid
from experiments.configs import closed_set

NAMES = {"class_disjoint": "Circle pair-wise", "default": "Circle pair-wise",
         "circle_class": "Circle class-level", "triplet": "Triplet (batch-hard)",
         "multi_similarity": "Multi-similarity", "am_softmax": "AM-Softmax",
         "arcface": "ArcFace"}


def compare(config_names, seeds, *, protocol: str = "class_disjoint", say=print) -> dict:
  """Trains each of ``config_names`` (modules of ``experiments/configs``) over ``seeds``.

  Returns:
    ``{"rows": {label: {metric: (mean, sample std)}}, "per_seed": {label: {seed: {metric:
    value}}}, "raw_pixels": {metric: value}, "seconds": {config: s}, "seeds", "protocol"}``.
  """
  rows, per_seed, raw = {}, {}, None
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
    label = NAMES.get(name, name)
    rows[label] = label_stats
    per_seed[label] = {
        str(seed): {k: v for k, v in r.items() if not k.startswith("raw_pixels_")}
        for seed, r in zip(member_seeds, out["metrics"])}
    raw = raw or {k[len("raw_pixels_"):]: v for k, v in out["metrics"][0].items()
                  if k.startswith("raw_pixels_")}
    seconds[name] = time.time() - start
    r1 = label_stats["recall@1"]
    say(f"{name}: R@1 {100 * r1[0]:.2f} ± {100 * r1[1]:.2f} over seeds {tuple(seeds)} "
        f"({seconds[name]:.0f} s)", flush=True)
  return {"rows": rows, "per_seed": per_seed, "raw_pixels": raw, "seconds": seconds,
          "seeds": list(seeds), "protocol": protocol}


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
