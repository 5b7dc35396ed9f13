r"""Training-input benchmark: the per-process grain loader against the thread-pool loader before it.

Command, from the repository root (the full run: 7 minutes on 2 loaded CPU cores):

  python -m experiments.input_benchmark --workdir /tmp/input_bench   # --workers 0,1,2 --threads 1,2
  python -m experiments.input_benchmark --quick      # tiny sizes: a smoke test, under a minute

It writes a RecordIO face pack and a Market-1501-style folder into ``--workdir``,
prints the loaders' images/s side by side and the share of a short training
run's time spent waiting for input, and writes every figure to ``--out``. What
each table means: experiments/input_benchmark_lib.py. A progress bar over the
loaders' rounds and the training runs goes to stderr when it is a terminal.
"""

from absl import app
from absl import flags

from experiments import absl_logging
from experiments import cli
from experiments import input_benchmark_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Data and runs (default: a temp dir).")
flags.DEFINE_string("out", None, "JSON path (default <workdir>/input_benchmark.json).")
flags.DEFINE_bool("quick", False, "Tiny sizes and few batches (a smoke test).")
flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker-process counts.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts of the thread-pool loader.")
flags.DEFINE_integer("batches", None, "Batches per loader (default 40; quick 4).")
flags.DEFINE_integer("rounds", None, "Timings of each loader, interleaved; the median is "
                     "reported (default 3; quick 1).")
flags.DEFINE_integer("train_steps", None, "Steps of each training run (default 30; quick 6).")
flags.DEFINE_list("train_workers", None, "data.num_workers of the training runs "
                  "(default 0 and max(--workers)).")


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  input_benchmark_lib.run(
      FLAGS.workdir, quick=FLAGS.quick, workers=FLAGS.workers, threads=FLAGS.threads,
      batches=FLAGS.batches, rounds=FLAGS.rounds, train_steps=FLAGS.train_steps,
      train_workers=FLAGS.train_workers, out=FLAGS.out)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
