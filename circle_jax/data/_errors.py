"""The errors raised when a dataset is missing, or present but unusable."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is missing: the message says where it was looked for and how to prepare it.

  Example:
    >>> e = DatasetNotFoundError("market1501", "/data/Market-1501", "unpack Market-1501-v15.09.15.zip")
    >>> print(e)
    market1501: no data at /data/Market-1501. To prepare it: unpack Market-1501-v15.09.15.zip
  """

  def __init__(self, dataset: str, where: str, how: str, detail: str = ""):
    self.dataset, self.where, self.how = dataset, where, how
    detail = f" ({detail})" if detail else ""
    super().__init__(f"{dataset}: no data at {where}{detail}. To prepare it: {how}")


class DatasetError(ValueError):
  """A dataset is present but unusable (damaged, empty); the message names the file or folder.

  Raised by the experiments' pipelines when they open a run's datasets, before
  the first training step.

  Example:
    >>> print(DatasetError("/data/lfw.bin: no pairs"))
    /data/lfw.bin: no pairs
  """
