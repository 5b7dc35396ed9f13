r"""Scale benchmark (experiments/benchmark.py): shapes, repeats and which sections run.

Command, from the repository root (the full run: 10+ min on 2 CPU cores):

  python -m experiments.benchmark --config experiments/configs/benchmark.py \
      --out /tmp/circle_jax_benchmark/benchmark.json

``:quick`` is the smoke run, tiny shapes in about a minute (its verdicts are
about those shapes, not the targets'):

  python -m experiments.benchmark --config experiments/configs/benchmark.py:quick

Any field can be overridden, e.g. the timed sections only, with fewer repeats:

  python -m experiments.benchmark --config experiments/configs/benchmark.py \
      --config.skip=class_memory,pairwise_memory,sharded_class_level --config.seconds=5

The fields other than ``quick`` and ``skip`` are written to the JSON as its ``config``.
"""

import ml_collections

FULL = dict(
    pair_batches=(256, 1024, 4096), pair_dim=512, pair_chunk=256,
    class_time_counts=(65_536,), class_time_dense=True,
    class_counts=(65_536, 262_144, 1_048_576), class_batch=1024, class_dim=512,
    class_chunk=4096, pml_batches=(256, 1024), pml_blocks=2,
    pair_mem_batch=65_536, pair_mem_chunk=256,
    shard_counts=(65_536, 262_144, 1_048_576), shard_batch=1024,
    # Timed rounds per case: as many as fit `seconds`, within [repeats, max_rounds].
    repeats=7, max_rounds=50, seconds=10.0, pause_s=0.5,
    # Shapes at which the targets are stated (issue 14).
    target_batch=1024, target_big_batch=4096, target_classes=65_536,
)
QUICK = dict(
    pair_batches=(64, 128), pair_dim=32, pair_chunk=32,
    class_time_counts=(8192,), class_time_dense=True,
    class_counts=(1024, 8192), class_batch=32, class_dim=16,
    class_chunk=256, pml_batches=(128,), pml_blocks=2,
    pair_mem_batch=2048, pair_mem_chunk=128,
    shard_counts=(1024, 8192), shard_batch=64,
    repeats=2, max_rounds=5, seconds=0.2, pause_s=0.0,
    target_batch=128, target_big_batch=128, target_classes=8192,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "quick"):
    raise ValueError(f"benchmark.py takes no argument or ':quick', not {arg!r}")
  quick = arg == "quick"
  # Unsorted: the JSON lists the fields in the order above.
  config = ml_collections.ConfigDict(QUICK if quick else FULL, sort_keys=False)
  # Marks the report's verdicts as about the tiny shapes; set by ':quick'.
  config.quick = quick
  # Comma list of sections not to run (benchmark.SECTIONS names them).
  config.skip = ""
  return config
