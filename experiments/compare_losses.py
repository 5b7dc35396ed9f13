r"""Trains the class-disjoint digits setup with each loss and prints one Recall@K table.

Command, from the repository root:

  python -m experiments.compare_losses --workdir /tmp/compare
  python -m experiments.compare_losses --workdir /tmp/compare_closed --protocol=closed_set

Each config runs in ``workdir/<config name>`` (resumable like main.py); the
table is also written to ``workdir/recall.md``. ``--protocol=closed_set``
gives every loss the split, batches, schedule and learning rate of
``experiments/configs/closed_set.py`` (``closed_set.apply``; the loss's own
hyper-parameters stay).
"""

import contextlib
import importlib
import io
import os
import time

from absl import app
from absl import flags

from experiments import absl_logging
from experiments import train
from experiments.configs import closed_set

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Parent directory of the per-loss runs.")
flags.DEFINE_list("configs", ["class_disjoint", "circle_class", "triplet", "multi_similarity",
                              "am_softmax", "arcface"],
                  "Config modules under experiments/configs.")
flags.DEFINE_enum("protocol", "class_disjoint", ["class_disjoint", "closed_set"],
                  "class_disjoint: the configs as they are (digits 0–4 train, 5–9 test); "
                  "closed_set: the setup of experiments/configs/closed_set.py.")
flags.mark_flag_as_required("workdir")

_NAMES = {"class_disjoint": "Circle pair-wise", "circle_class": "Circle class-level",
          "triplet": "Triplet (batch-hard)", "multi_similarity": "Multi-similarity",
          "am_softmax": "AM-Softmax", "arcface": "ArcFace"}


def main(argv):
  absl_logging.quiet_library_logs()
  del argv
  rows, raw, ks = {}, None, None
  for name in FLAGS.configs:
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    if FLAGS.protocol == "closed_set":
      config = closed_set.apply(config)
    ks = tuple(config.eval.ks)
    start = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
      result = train.train_and_evaluate(config, os.path.join(FLAGS.workdir, name))
    raw = result["raw_pixels"]
    rows[_NAMES.get(name, name)] = result["recall"]
    print(f"{name}: R@1 {100 * result['recall'][1]:.2f} ({time.time() - start:.0f} s)", flush=True)
  lines = ["| embedding | " + " | ".join(f"R@{k}" for k in ks) + " |",
           "|---|" + "---:|" * len(ks)]
  for label, recall in {"raw pixels": raw, **rows}.items():
    lines.append(f"| {label} | " + " | ".join(f"{100 * recall[k]:.2f}" for k in ks) + " |")
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(FLAGS.workdir, "recall.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
