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

from experiments import evaluators
from experiments import grid
from experiments.configs import closed_set
from experiments.configs import omniglot

#: ``--protocol``: the setup every loss trains in (the loss configs give only their loss there).
PROTOCOLS = ("class_disjoint", "closed_set", "omniglot", "omniglot_small2")

NAMES = {"class_disjoint": "Circle pair-wise", "default": "Circle pair-wise",
         "circle_class": "Circle class-level", "triplet": "Triplet (batch-hard)",
         "multi_similarity": "Multi-similarity", "am_softmax": "AM-Softmax",
         "arcface": "ArcFace", "normface": "NormFace (softmax)"}


def protocol_config(name: str, protocol: str):
  """The config that ``compare`` trains for loss config ``name`` under ``protocol``.

  ``class_disjoint``: the config as it is (digits 0–4 train, 5–9 test);
  ``closed_set``: with closed_set.py's split, batches and schedule;
  ``omniglot`` / ``omniglot_small2``: experiments/configs/omniglot.py (train on
  small1 / small2) with the loss config's ``loss`` section.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  if protocol == "closed_set":
    return closed_set.apply(config)
  if protocol.startswith("omniglot"):
    base = omniglot.get_config("small2" if protocol == "omniglot_small2" else "")
    base.loss = config.loss
    return base
  return config


def compare(config_names, seeds, *, protocol: str = "class_disjoint", say=print) -> dict:
  """Trains each of ``config_names`` (modules of ``experiments/configs``) over ``seeds``.

  Returns:
    ``{"rows": {label: {metric: (mean, sample std)}}, "per_seed": {label: {seed: {metric:
    value}}}, "raw_pixels": {metric: value}, "seconds": {config: s}, "seeds", "protocol"}``.
  """
  rows, per_seed, raw = {}, {}, None
  seconds = {}
  for name in config_names:
    config = protocol_config(name, protocol)
    config.ablation.seeds = tuple(seeds)
    start = time.time()
    members, member_seeds = grid.grid_from_config(config)
    out = grid.run_grid(grid.make_setup(config, members, member_seeds), say=lambda *a, **k: None)
    stats = grid.summarise_seeds(members, out["metrics"])
    (label_stats,) = stats.values()   # one member, several seeds
    label = NAMES.get(name, name)
    rows[label] = label_stats
    per_seed[label] = {
        str(seed): {k: v for k, v in r.items() if not k.startswith(evaluators.BASELINE_PREFIXES)}
        for seed, r in zip(member_seeds, out["metrics"])}
    # Baselines need no training: the same for every loss and seed.
    raw = raw or {prefix[:-1]: {k[len(prefix):]: v for k, v in out["metrics"][0].items()
                                if k.startswith(prefix)}
                  for prefix in evaluators.BASELINE_PREFIXES}
    seconds[name] = time.time() - start
    r1 = label_stats["recall@1"]
    say(f"{name}: R@1 {100 * r1[0]:.2f} ± {100 * r1[1]:.2f} over seeds {tuple(seeds)} "
        f"({seconds[name]:.0f} s)", flush=True)
  raw = {b: v for b, v in (raw or {}).items() if v}
  return {"rows": rows, "per_seed": per_seed, "raw_pixels": raw.get("raw_pixels"),
          "baselines": raw, "seconds": seconds, "seeds": list(seeds), "protocol": protocol}


def _column(name: str) -> str:
  return "one-shot error" if name == "one_shot_error" else name.replace("recall@", "R@")


def format_table(result: dict) -> str:
  """Markdown: the baselines, then mean ± std of each loss's R@K (and one-shot error, %)."""
  first = next(iter(result["rows"].values()))
  names = [k for k in first if k.startswith("recall@")] + [k for k in first if k == "one_shot_error"]
  lines = [f"| embedding (mean ± std over {len(result['seeds'])} seeds) | "
           + " | ".join(_column(n) for n in names) + " |",
           "|---|" + "---:|" * len(names)]
  baselines = result.get("baselines") or {"raw_pixels": result.get("raw_pixels")}
  for key, values in baselines.items():
    if values:
      lines.append(f"| {evaluators.BASELINES[key]} | " + " | ".join(
          f"{100 * values[n]:.2f}" if n in values else "—" for n in names) + " |")
  for label, stats in result["rows"].items():
    lines.append(f"| {label} | " + " | ".join(f"{100 * stats[n][0]:.2f} ± {100 * stats[n][1]:.2f}"
                                             for n in names) + " |")
  return "\n".join(lines)
