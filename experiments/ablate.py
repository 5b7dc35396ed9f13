r"""Trains a hyper-parameter grid as one program, and (to compare) one run at a time.

Command, from the repository root:

  python -m experiments.ablate --config experiments/configs/ablate.py --workdir /tmp/ablate

Any training config with an ``ablation`` section works, on any dataset; e.g. the
re-ID runlocal setup over two margins and three seeds:

  python -m experiments.ablate --config experiments/configs/reid_circle.py:market1501,local \
      --config.data.path=<Market-1501 folder> --workdir /tmp/ablate_reid --sequential=false

(every training config has an ``ablation`` section, by default one member at
``config.seed``; ``--config.ablation.…`` makes it a grid).
Writes ``ablation.json`` and ``ablation.png`` to ``--workdir``
(``experiments/grid.py`` has the details).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import absl_logging
from experiments import cli
from experiments import builder
from experiments import grid

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for ablation.json and ablation.png.")
flags.DEFINE_bool("sequential", True, "Also train the members one after another, and time it.")
config_flags.DEFINE_config_file("config", "experiments/configs/ablate.py",
                                "Training config; its `ablation` section is the grid.",
                                lock_config=True)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    grid.run(FLAGS.config, FLAGS.workdir,
             sequential=FLAGS.sequential)
  except (builder.ConfigError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
