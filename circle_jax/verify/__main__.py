"""python -m circle_jax.verify path/to/impl.py:fn --loss pairwise_circle --framework torch

Prints the verification report of ``fn`` (see :func:`circle_jax.verify.verify`)
and exits with 0 when a documented variant matches, 1 when none does, 2 on a
usage error. ``fn`` may also be given as ``package.module:fn``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from circle_jax.verify import _frameworks
from circle_jax.verify import _spec
from circle_jax.verify._verify import verify


def load_callable(target: str):
  """``path/to/file.py:name`` or ``package.module:name`` -> the object."""
  where, sep, name = target.rpartition(":")
  if not sep or not where or not name:
    raise ValueError(f"{target!r}: expected path/to/file.py:function or package.module:function")
  if where.endswith(".py") or os.sep in where:
    if not os.path.isfile(where):
      raise FileNotFoundError(f"{where}: no such file")
    module_name = "_verified_" + os.path.splitext(os.path.basename(where))[0]
    spec = importlib.util.spec_from_file_location(module_name, where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
  else:
    module = importlib.import_module(where)
  try:
    obj = module
    for part in name.split("."):
      obj = getattr(obj, part)
  except AttributeError:
    raise ValueError(f"{target!r}: {where} has no attribute {name!r}") from None
  if not callable(obj):
    raise ValueError(f"{target!r} is not callable")
  return obj


def _names(text: str) -> dict:
  out = {}
  for item in filter(None, text.split(",")):
    ours, sep, theirs = item.partition("=")
    if not sep:
      raise ValueError(f"--hyperparameter_names: {item!r} is not ours=theirs")
    out[ours.strip()] = None if theirs.strip() in ("", "none", "None") else theirs.strip()
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m circle_jax.verify",
      description="Checks another implementation of a loss against circle_jax and names the "
                  "variant it computes.")
  parser.add_argument("target", help="path/to/impl.py:fn or package.module:fn")
  parser.add_argument("--loss", default="pairwise_circle", help=f"one of {', '.join(_spec.names())}")
  parser.add_argument("--framework", default="jax", choices=_frameworks.FRAMEWORKS)
  parser.add_argument("--class_weights_layout", default="CD", choices=("CD", "DC"))
  parser.add_argument("--margin_unit", default="radians", choices=("radians", "degrees"))
  parser.add_argument("--hyperparameter_names", default="",
                      help="ours=theirs pairs, comma-separated (theirs 'none' drops it), e.g. margin=m")
  parser.add_argument("--save_dir", default=None, help="where the first failing problem is written")
  parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
  args = parser.parse_args(argv)
  try:
    fn = load_callable(args.target)
    report = verify(
        fn, args.loss, args.framework, class_weights_layout=args.class_weights_layout,
        margin_unit=args.margin_unit, hyperparameter_names=_names(args.hyperparameter_names),
        save_dir=args.save_dir)
  except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report)
  if args.json:
    with open(args.json, "w") as f:
      f.write(report.dumps())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
