"""Regenerates the golden vectors: ``python -m circle_jax.verify.golden [--out DIR] [--loss NAME ...]``.

Without ``--out`` the shipped set (this directory) is rewritten; rerun it after
changing a loss or registering a new one, and commit the result.
"""

from __future__ import annotations

import argparse
import os

from circle_jax.verify import golden


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m circle_jax.verify.golden",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=golden.DIRECTORY,
                      help="directory to write manifest.json and the npz files into "
                           "(default: the shipped set)")
  parser.add_argument("--loss", action="append", default=None,
                      help="a registered loss (repeatable); default: every registered loss")
  args = parser.parse_args(argv)

  import circle_jax.verify  # noqa: F401  (registers the losses)
  from circle_jax.verify import _golden

  manifest = _golden.generate(args.out, losses=args.loss)
  files = sorted({c["file"] for c in manifest["cases"]}) + [golden.MANIFEST]
  size = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
  print(f"{len(manifest['cases'])} cases of {len(manifest['losses'])} losses in {len(files)} files "
        f"({size / 1024:.0f} KiB) in {args.out}")


if __name__ == "__main__":
  main()
