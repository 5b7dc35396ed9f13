r"""One-shot classification error: each query takes the class of its closest support item.

Lake et al.'s protocol for Omniglot (Science 2015): in each run, one support
image of each of 20 classes and 20 query images; a query is classified as the
class of its nearest support image, and the error is the share of queries
classified wrongly.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike


def one_shot_error(scores: ArrayLike, query_labels: ArrayLike, support_labels: ArrayLike) -> float:
  r"""The share of queries whose best-scoring support item is of another class.

  .. math::  \text{error} = \frac1{N_q}\sum_q \mathbb 1\big[\exists\,s:\ y_s \ne y_q,\
             S_{qs} \ge \max_{s': y_{s'} = y_q} S_{qs'}\big]

  Ties count as errors: a query is right only when a support item of its class
  scores strictly above every support item of another class, so the error is
  never understated.

  Args:
    scores: [Nq, Ns] finite floats, larger = closer (a cosine similarity, or minus
      a distance).
    query_labels: [Nq] integer classes.
    support_labels: [Ns] integer classes; every query's class must be among them.

  Returns:
    The error in [0, 1], a Python float.

  Example:
    >>> s = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> one_shot_error(s, np.array([0, 1, 1]), np.array([0, 1]))
    0.3333333333333333
  """
  s = np.asarray(scores, np.float64)
  yq, ys = np.asarray(query_labels), np.asarray(support_labels)
  if s.ndim != 2 or s.shape != (len(yq), len(ys)) or yq.ndim != 1 or ys.ndim != 1:
    raise ValueError(f"one_shot_error: scores must be [Nq, Ns] for labels [Nq], [Ns]; got "
                     f"{s.shape}, {yq.shape}, {ys.shape}")
  if not len(yq):
    raise ValueError("one_shot_error: no query")
  if not (np.issubdtype(yq.dtype, np.integer) and np.issubdtype(ys.dtype, np.integer)):
    raise TypeError(f"one_shot_error: labels must be integers, got {yq.dtype} and {ys.dtype}")
  if not np.isfinite(s).all():
    raise ValueError(f"one_shot_error: {int((~np.isfinite(s)).sum())} scores are NaN or inf")
  missing = sorted(set(yq.tolist()) - set(ys.tolist()))
  if missing:
    raise ValueError(f"one_shot_error: query classes {missing[:5]} have no support item")
  same = yq[:, None] == ys[None, :]
  best_right = np.where(same, s, -np.inf).max(1)
  best_wrong = np.where(same, -np.inf, s).max(1)
  return float(np.mean(best_wrong >= best_right))
