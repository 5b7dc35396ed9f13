r"""Trains one setup with each loss, over several seeds, and prints one Recall@K table.

Command, from the repository root:

  python -m experiments.compare_losses --workdir /tmp/compare
  python -m experiments.compare_losses --workdir /tmp/compare_closed --protocol=closed_set
  python -m experiments.compare_losses --workdir /tmp/compare_omniglot --protocol=omniglot
  python -m experiments.compare_losses --workdir /tmp/compare_omniglot2 --protocol=omniglot_small2

Each loss config (``--configs``, modules under ``experiments/configs``) trains
once per seed of ``--seeds`` as one ablation program
(:mod:`experiments.grid`, the seed its only axis), so every row is mean ± std
over the seeds; raw pixels, the same for every seed, head the table (the work is
:mod:`experiments.loss_comparison`; this module is the command). The table
is also written to ``workdir/recall.md`` and the numbers to
``workdir/compare_losses.json``. ``--protocol=closed_set`` gives every loss the
split, batches, schedule and learning rate of
``experiments/configs/closed_set.py`` (``closed_set.apply``; the loss's own
hyper-parameters stay); ``--protocol=omniglot`` (``omniglot_small2``: the mirror
split) trains each loss in ``experiments/configs/omniglot.py``'s setup, and the
table adds Lake's one-shot error and the MHD baseline.
"""

import json
import os

from absl import app
from absl import flags

from experiments import absl_logging
from experiments import cli
from experiments import builder
from experiments import loss_comparison

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for recall.md and compare_losses.json.")
flags.DEFINE_list("configs", ["class_disjoint", "circle_class", "triplet", "multi_similarity",
                              "am_softmax", "arcface", "normface"],
                  "Config modules under experiments/configs.")
flags.DEFINE_enum("protocol", "class_disjoint", list(loss_comparison.PROTOCOLS),
                  "class_disjoint: the configs as they are (digits 0–4 train, 5–9 test); "
                  "closed_set: the setup of experiments/configs/closed_set.py; omniglot / "
                  "omniglot_small2: experiments/configs/omniglot.py (train on small1 / small2) "
                  "with each config's loss.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every loss (mean ± std over them).")
flags.mark_flag_as_required("workdir")

def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    seeds = tuple(int(s) for s in FLAGS.seeds)
    result = loss_comparison.compare(FLAGS.configs, seeds, protocol=FLAGS.protocol)
  except (builder.ConfigError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  table = loss_comparison.format_table(result)
  print(table)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "recall.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  with open(os.path.join(FLAGS.workdir, "compare_losses.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
