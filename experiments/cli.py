"""What the experiments entry points share: flag parsing and progress bars.

Every entry point defines its flags at module level (``FLAGS = flags.FLAGS``),
runs as ``python -m experiments.<name>`` from the repository root and ends with

  if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

Progress bars go to stderr, so what a script prints on stdout (its tables) is the
same with or without them.
"""

import os
import sys

from absl import flags
import tqdm


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or ``--config.<field>`` override as one line.

  ml_collections reports an unknown field by raising from deep inside the flag
  parser (a 55-line trace whose last line has the "Did you mean"); say which
  argument it was and what the config has instead.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise SystemExit(f"error: {e}") from None
  except (AttributeError, KeyError) as e:
    detail = e
    while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError(msg))
      detail = detail.args[0]
    name, _, hint = str(detail).partition("\n")
    name = name.strip("'\"")
    culprit = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")
               and name in a.split("=", 1)[0].split(".")]
    arg = culprit[0] if culprit else "--config"
    raise SystemExit(f"error: {arg}: the config has no field {name!r}"
                     + (f"; {hint.strip()}" if hint.strip() else "")) from None


def progress(iterable=None, **kwargs) -> tqdm.tqdm:
  """A tqdm bar on stderr, drawn only when stderr is a terminal (tqdm's ``disable=None``).

  ``TQDM_DISABLE=1`` (tqdm's own environment setting) hides it on a terminal too;
  tqdm reads it as a default, which an explicit ``disable`` would override.
  """
  if "TQDM_DISABLE" not in os.environ:
    kwargs.setdefault("disable", None)
  return tqdm.tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
  """A line on stderr that leaves any progress bar intact (the log when there is no bar)."""
  tqdm.tqdm.write(message, file=sys.stderr)
