"""Regenerates the golden vectors: ``python -m circle_jax.verify.golden [--out DIR]``.

Without ``--out`` the shipped set (this directory) is rewritten; rerun it after
changing a loss or registering a new one, and commit the result.
"""

from __future__ import annotations

import argparse
import os

from circle_jax.verify import golden


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m circle_jax.verify.golden",
                                   description="Regenerates the golden vectors of every "
                                               "loss registered with circle_jax.verify.")
  parser.add_argument("--out", default=golden.DIRECTORY,
                      help="directory to write manifest.json and the npz files into "
                           "(default: the shipped set)")
  args = parser.parse_args(argv)

  # Imported here, not at the top: the package's __init__ (run first) registers the losses.
  from circle_jax.verify import _golden

  manifest = _golden.generate(args.out)
  files = sorted({c["file"] for c in manifest["cases"]}) + [golden.MANIFEST]
  if os.path.abspath(args.out) == golden.DIRECTORY:
    # A loss no longer registered leaves no stale npz in the shipped set.
    for f in sorted(os.listdir(args.out)):
      if f.endswith(".npz") and f not in files:
        os.remove(os.path.join(args.out, f))
        print(f"removed {f}")
  size = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
  print(f"{len(manifest['cases'])} cases of {len(manifest['losses'])} losses in {len(files)} files "
        f"({size / 1024:.0f} KiB) in {args.out}")


if __name__ == "__main__":
  main()
