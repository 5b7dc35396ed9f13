"""Logging defaults shared by the absl entry points."""

from absl import flags
from absl import logging


def quiet_library_logs() -> None:
  """WARNING and above from libraries, unless ``--verbosity`` was given.

  Orbax reports every checkpoint save at INFO through absl (tens of lines per
  save), which would bury the progress lines of a run.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
