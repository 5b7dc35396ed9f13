r"""Trains and evaluates a metric-learning model from an ml_collections config.

Run from the repository root:

  python -m experiments.main --config experiments/configs/default.py --workdir /tmp/circle_default

Any config field can be overridden: ``--config.loss.gamma=256``. Started again
with the same ``--workdir``, a run resumes from its newest checkpoint.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import absl_logging
from experiments import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.")
config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config()).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config.distributed:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.ConfigError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main)
