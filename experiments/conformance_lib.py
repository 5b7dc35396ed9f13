"""Running the conformance cases and their table: the work of ``experiments.conformance``.

:func:`run` compares every case of :mod:`experiments.conformance_cases` on the same
problems and returns one row per case (the JSON the command writes,
``conformance.json``); :func:`markdown` renders those rows as the table the command
prints. The docs render the committed rows with it too (``docs/generated_tables.py``).
"""

from __future__ import annotations

from experiments import cli
from experiments import conformance_cases as cc

COLUMNS = ("reference", "loss", "variant", "dtype", "value abs", "value rel", "grad abs",
           "grad rel", "tolerance", "verdict")


def run(cases, problems) -> list[dict]:
  """Worst errors of each case over the problems, as table rows."""
  rows = []
  bar = cli.progress(cases, desc="conformance", unit="case")
  for case in bar:
    bar.set_postfix_str(case.name)
    results = [cc.compare(case, p) for p in problems]
    rows.append({
        "name": case.name,
        "reference": case.reference,
        "loss": case.loss,
        "variant": case.variant,
        "dtype": case.dtype,
        "value abs": max(r.value_abs for r in results),
        "value rel": max(r.value_rel for r in results),
        "grad abs": max(r.grad_abs for r in results),
        "grad rel": max(r.grad_rel for r in results),
        "tolerance": cc.TOLERANCE[case.dtype],
        "verdict": "pass" if all(r.passed for r in results) else "FAIL",
        "problems": [r.inputs for r in results],
        "difference": case.difference,
    })
  return rows


def _cell(value) -> str:
  return f"{value:.1e}" if isinstance(value, float) else str(value)


def markdown(rows) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
  notes = sorted({(r["reference"], r["difference"]) for r in rows if r["difference"]})
  if notes:
    lines += ["", "Documented differences, written out in the comparison:", ""]
    lines += [f"- {ref}: {text}" for ref, text in notes]
  return "\n".join(lines) + "\n"
