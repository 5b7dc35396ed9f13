"""The error raised when a dataset is not where a config says it is."""

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
