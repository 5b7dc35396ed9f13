r"""Scale benchmark: the Circle losses against their GEMM floors, memory and collectives.

Command, from the repository root (the full run: 10+ min on 2 CPU cores):

  python -m experiments.benchmark --config experiments/configs/benchmark.py \
      --out /tmp/circle_jax_benchmark/benchmark.json
  python -m experiments.benchmark --config experiments/configs/benchmark.py:quick   # ~1 min
  python -m experiments.benchmark --config experiments/configs/benchmark.py \
      --config.skip=class_memory,pairwise_memory,sharded_class_level   # the timed sections

The config's fields are the shapes, the repeats and the sections to skip; any of
them can be overridden (``--config.seconds=5``). The timed sections alone took
7.7 min on the 2 shared cores of the development VM with other processes using
60 % of them. The tables go to stdout, the JSON to ``--out`` (default
``<workdir>/benchmark.json``); a progress bar over the sections and each case's
rounds goes to stderr when it is a terminal.

What each section measures, how the times are taken and when a section counts
as measured under load: experiments/benchmark_lib.py.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import absl_logging
from experiments import benchmark_lib
from experiments import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "experiments/configs/benchmark.py, or benchmark.py:quick (the smoke run).",
    lock_config=True)
flags.DEFINE_string("workdir", "/tmp/circle_jax_benchmark", "Directory for the JSON results.")
flags.DEFINE_string("out", None, "JSON path (default <workdir>/benchmark.json).")
flags.mark_flags_as_required(["config"])


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    benchmark_lib.sections_to_skip(FLAGS.config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  command = " ".join([os.path.basename(sys.executable), "-m", "experiments.benchmark"]
                     + sys.argv[1:])
  benchmark_lib.run(FLAGS.config, FLAGS.out or os.path.join(FLAGS.workdir, "benchmark.json"),
                    command=command)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
