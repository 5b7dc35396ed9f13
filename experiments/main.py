r"""Trains and evaluates a metric-learning model from an ml_collections config.

Run from the repository root:

  python -m experiments.main --config experiments/configs/default.py --workdir /tmp/circle_default

Any config field can be overridden: ``--config.loss.gamma=256``. Started again
with the same ``--workdir``, a run resumes from its newest checkpoint.

``--config.compilation_cache_dir=<dir>`` (or JAX's own ``JAX_COMPILATION_CACHE_DIR``)
keeps the compiled programs in ``<dir>``: a second run of the same config loads
them instead of compiling again (the README gives the time it saves).

On several hosts, run the same command once per host (one process each) with
JAX's distributed flags:

  python -m experiments.main --config ... --workdir <shared dir> \
      --coordinator_address=<host 0>:12355 --num_processes=N --process_id=<i>

On a TPU VM, a SLURM or an Open MPI cluster, ``--config.distributed=True``
without those flags lets JAX detect them. On CPUs a multi-process run uses
gloo collectives (several processes on one machine, each with its devices via
``XLA_FLAGS=--xla_force_host_platform_device_count=K``, is how the tests run it).
A process that dies makes the others stop with an error naming it within
``--heartbeat_timeout_seconds``; restarting every process resumes from the last
checkpoint.
"""

import os
import sys
import time
import traceback

from absl import app
from absl import flags
from ml_collections import config_flags

from circle_jax import data as cdata
from circle_jax import training
from experiments import absl_logging
from experiments import builder
from experiments import cli
from experiments import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.")
config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config()).",
                                lock_config=True)
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for a multi-process run (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 … num_processes − 1.")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                     "A peer silent this long counts as dead: every process stops.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(coordinator_address, num_processes, process_id, *,
                           heartbeat_timeout_seconds: int = 100) -> None:
  """``jax.distributed.initialize`` from the flags (or the cluster's own detection).

  On CPU the cross-process collectives are gloo's (XLA's CPU client has none
  by default).
  """
  import jax  # pylint: disable=g-import-not-at-top
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together "
                         "(or none of them, to let JAX detect a TPU/SLURM/Open MPI cluster)")
  if all(given) and not 0 <= process_id < num_processes:
    raise app.UsageError(f"--process_id={process_id} must be in [0, {num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             heartbeat_timeout_seconds=heartbeat_timeout_seconds)


def use_compilation_cache(directory: str) -> None:
  """Turns on JAX's persistent compilation cache in ``directory`` for this process.

  Must run before the first compilation: JAX decides once, at its first
  compile, whether the cache is used. Every program is cached, however quickly
  it compiled: JAX's default skips those under a second, which on a CPU are 74
  of the default job's 76 programs (README, Training).
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def name_lost_processes(timeout: float) -> None:
  """After a failure in a multi-process run: prints which processes stopped answering.

  A collective whose peer died fails with a transport error (gloo: "connection
  reset by peer", an address); the coordination service knows which process it
  was once its heartbeats stop, so ask it, for up to ``timeout`` seconds.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client, n = distributed.global_state.client, jax.process_count()
  if client is None:
    return
  deadline = time.time() + timeout
  while True:
    try:
      live = client.get_live_nodes(list(range(n)))
    except Exception:  # pylint: disable=broad-except  (the coordinator itself is gone)
      print(f"error: lost the coordinator, process 0 of {n}; process {jax.process_index()} "
            "stops too", file=sys.stderr, flush=True)
      return
    lost = sorted(set(range(n)) - set(live))
    if lost:
      print(f"error: lost process(es) {lost} of {n} (no heartbeat); process "
            f"{jax.process_index()} stops too", file=sys.stderr, flush=True)
      return
    if time.time() > deadline:
      return
    time.sleep(1)


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config.get("compilation_cache_dir"):
    use_compilation_cache(FLAGS.config.compilation_cache_dir)
  multi = bool(FLAGS.config.distributed or FLAGS.coordinator_address or FLAGS.num_processes)
  if multi:
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    return
  except (builder.ConfigError, FileNotFoundError, training.WorkdirInUseError,
          training.CheckpointRestoreError, cdata.DatasetError) as e:
    if not multi:
      raise SystemExit(f"error: {e}") from None
    print(f"error: {e}", file=sys.stderr)
  except BaseException as e:  # pylint: disable=broad-except
    if not multi:
      raise
    traceback.print_exc()
    import jax  # pylint: disable=g-import-not-at-top
    if isinstance(e, jax.errors.JaxRuntimeError):  # a collective failed: whose fault?
      name_lost_processes(timeout=FLAGS.heartbeat_timeout_seconds + 10)
  # A failed process that left through the normal exit would wait at JAX's
  # shutdown barrier (minutes) for peers that wait for it in a collective.
  # Leaving at once, they notice the missing heartbeats and stop too.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
