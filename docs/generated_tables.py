"""The docs' tables, rendered from the JSON records the scripts wrote.

A table in the guides is never typed in: each entry of :data:`TABLES` names a
committed record (``docs/results/*.json``, or ``docs/figures/figures.json``) and
the script's own function that printed it, and :func:`generate` writes the
rendered Markdown into ``docs/_generated/`` (git-ignored), which the guides
include::

    ```{include} ../_generated/conformance.md
    ```

The docs build calls :func:`generate` first (``conf.py`` connects it to Sphinx's
``builder-inited``), so a page shows exactly what the script prints for the
committed record, and a record the function cannot render fails the build. To
refresh a table, rerun its script with the command of ``docs/results/README.md``.

Run alone (``python docs/generated_tables.py``) it writes the same files and
names them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
OUT = DOCS / "_generated"


@dataclasses.dataclass(frozen=True)
class Table:
  """One generated page fragment: ``render(record)`` of the JSON at ``source``."""
  name: str             # docs/_generated/<name>.md
  source: str           # the record, relative to docs/
  command: str          # the command that writes the record
  render: Callable[[Any], str]


def _conformance(rows):
  from experiments import conformance_lib  # pylint: disable=g-import-not-at-top
  return conformance_lib.markdown(rows)


def _benchmark(results):
  from experiments import benchmark_lib  # pylint: disable=g-import-not-at-top
  # The report's sections are level-2 headings: sections of the guide's page.
  return benchmark_lib.report(results)


def _compare(record):
  from experiments import loss_comparison  # pylint: disable=g-import-not-at-top
  return loss_comparison.format_table(record)


def _fig3_omniglot(record):
  from experiments import paper_figures  # pylint: disable=g-import-not-at-top
  return paper_figures.format_fig3(record["fig3_omniglot"])


def _ablation(record):
  from experiments import grid  # pylint: disable=g-import-not-at-top
  times = grid.report_times(record)
  return grid.report_tables(record) + (f"\n\n```\n{times}\n```" if times else "")


def _input_benchmark(results):
  from experiments import input_benchmark_lib  # pylint: disable=g-import-not-at-top
  return input_benchmark_lib.report(results).strip()


def _fig3(record):
  from experiments import paper_figures  # pylint: disable=g-import-not-at-top
  return paper_figures.format_fig3(record["fig3"])


def _fig45(record):
  from experiments import paper_figures  # pylint: disable=g-import-not-at-top
  return paper_figures.format_fig45(record["fig4_5"])


TABLES = (
    Table("conformance", "results/conformance.json",
          "python -m experiments.conformance --out conformance_results", _conformance),
    Table("benchmark", "results/benchmark.json",
          "python -m experiments.benchmark --config experiments/configs/benchmark.py", _benchmark),
    Table("compare_class_disjoint", "results/compare_losses_class_disjoint.json",
          "python -m experiments.compare_losses --workdir /tmp/compare", _compare),
    Table("compare_closed_set", "results/compare_losses_closed_set.json",
          "python -m experiments.compare_losses --workdir /tmp/compare_closed "
          "--protocol=closed_set", _compare),
    Table("compare_omniglot", "results/compare_losses_omniglot.json",
          "python -m experiments.compare_losses --workdir /tmp/compare_omniglot "
          "--protocol=omniglot", _compare),
    Table("compare_omniglot_small2", "results/compare_losses_omniglot_small2.json",
          "python -m experiments.compare_losses --workdir /tmp/compare_omniglot2 "
          "--protocol=omniglot_small2", _compare),
    Table("ablation", "results/ablation.json",
          "python -m experiments.ablate --config experiments/configs/ablate.py "
          "--workdir /tmp/ablate", _ablation),
    Table("input_benchmark", "results/input_benchmark.json",
          "python -m experiments.input_benchmark --workdir /tmp/input_bench", _input_benchmark),
    Table("fig3", "figures/figures.json", "python -m experiments.figures --out docs/figures",
          _fig3),
    Table("fig3_omniglot", "figures/figures.json",
          "python -m experiments.figures --out docs/figures --only fig3_omniglot --fig3_steps 150",
          _fig3_omniglot),
    Table("fig45", "figures/figures.json", "python -m experiments.figures --out docs/figures",
          _fig45),
)


def render(table: Table) -> str:
  """The Markdown of one table: the script's rendering of its record, and where it came from."""
  path = DOCS / table.source
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise RuntimeError(f"docs/{table.source} (the record of the table {table.name!r}, written "
                       f"by `{table.command}`): {e}") from e
  return (table.render(record).rstrip() + "\n\n"
          f"*Rendered from `docs/{table.source}`, written by `{table.command}`.*\n")


def generate(out: pathlib.Path = OUT) -> list[pathlib.Path]:
  """Writes every table of :data:`TABLES` to ``out/<name>.md``; returns the paths."""
  if str(ROOT) not in sys.path:   # the experiments package of this tree
    sys.path.insert(0, str(ROOT))
  out.mkdir(exist_ok=True)
  paths = []
  for table in TABLES:
    path = out / f"{table.name}.md"
    text = render(table)
    # Unchanged files keep their time stamp, so Sphinx does not rebuild the pages.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
      path.write_text(text, encoding="utf-8")
    paths.append(path)
  return paths


def on_builder_inited(app) -> None:
  del app
  generate()


if __name__ == "__main__":
  for p in generate():
    print(p.relative_to(ROOT))
