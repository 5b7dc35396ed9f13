r"""Cross-framework conformance: circle_jax against pytorch-metric-learning, PyTorch and Keras 3.

Runs every case of :mod:`experiments.conformance_cases` on the same random problems
(several batch sizes; label patterns with P×K groups, singletons and single-class
batches), prints one row per case with the worst value and gradient error seen,
and writes the table as JSON and Markdown.

Command, from the repository root after the README's install (about 2 minutes on
2 CPU cores, most of it compilation):

  python -m experiments.conformance --out conformance_results
  python -m experiments.conformance --problems=1 --only=keras   # a quick subset

Flags: ``--problems`` random problems per case (default 8), ``--only`` a substring
of the case names to run (e.g. ``keras``). A progress bar over the cases goes to
stderr when it is a terminal.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from experiments import absl_logging  # noqa: E402
from experiments import cli  # noqa: E402
from experiments import conformance_cases as cc  # noqa: E402
from experiments import conformance_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "conformance_results", "Folder for conformance.json and .md.")
flags.DEFINE_integer("problems", 8, "Random problems per case.", lower_bound=1)
flags.DEFINE_string("only", "", "Run only cases whose name contains this.")

def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cases = [c for c in cc.all_cases() if FLAGS.only in c.name]
  if not cases:
    raise app.UsageError(f"--only={FLAGS.only!r} matches no case")
  problems = cc.problems(FLAGS.problems)
  start = time.perf_counter()
  rows = conformance_lib.run(cases, problems)
  table = conformance_lib.markdown(rows)
  print(table)
  print(f"{len(rows)} cases × {len(problems)} problems in {time.perf_counter() - start:.0f} s")
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "conformance.json").write_text(json.dumps(rows, indent=1))
  (out / "conformance.md").write_text(table)
  print(f"wrote {out / 'conformance.json'} and {out / 'conformance.md'}")
  failed = [r["name"] for r in rows if r["verdict"] != "pass"]
  if failed:
    print("FAILED: " + ", ".join(failed), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
