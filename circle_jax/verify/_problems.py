"""The standard problems a loss is verified on: small, seeded, numpy only.

Every problem is a batch of B = 12 embeddings in D = 16 dimensions with C = 10
class proxies, so that one compiled reference serves them all. The label
patterns visit every regime an implementation can get wrong:

* ``pk``: P × K = 4 × 3, the sampler the paper trains with;
* ``mixed``: groups of 2–4 and singletons (anchors without a positive in an
  otherwise ordinary batch);
* ``no_positive``: every label distinct, so no anchor has a positive;
* ``no_negative``: one label, so no anchor has a negative;
* ``zero_vector``: ``pk`` with one embedding set to exactly 0.

Embeddings are class centres plus noise with norms drawn from [0.5, 3], so an
implementation that does not normalise is told apart from one that does; two
rows point away from their class proxy (an angle above π − 0.5) so ArcFace's
θ + m > π branch is visited. Problems in float32 carry inputs rounded to
float32; circle_jax evaluates every problem in float64 on exactly the inputs
the implementation under test received.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

BATCH, DIM, NUM_CLASSES = 12, 16, 10
PATTERNS = ("pk", "mixed", "no_positive", "no_negative", "zero_vector")


@dataclasses.dataclass(frozen=True)
class Problem:
  """One input to verify on.

  Attributes:
    name: unique within a run, e.g. ``"pk/face/float64"``.
    pattern: the label pattern (one of ``PATTERNS``).
    embeddings: [B, D] in ``dtype``.
    labels: [B] int64.
    class_weights: [C, D] in ``dtype`` (the proxies of class-level losses).
    cotangent: [B] float64 weights v of Σ_b v_b·L_b, so that every
      example's gradient counts separately when the output is per example.
    hyperparameters: the loss's hyper-parameters for this problem.
    dtype: ``"float64"`` or ``"float32"``.
    setting: the name of the hyper-parameter setting (``"face"``, ...).
  """

  name: str
  pattern: str
  embeddings: np.ndarray
  labels: np.ndarray
  class_weights: np.ndarray
  cotangent: np.ndarray
  hyperparameters: Mapping[str, float]
  dtype: str
  setting: str

  @property
  def class_labels(self) -> np.ndarray:
    """The ``[B]`` int64 labels in ``[0, C)`` that class-level losses receive."""
    return self.labels % self.class_weights.shape[0]

  @property
  def zero_rows(self) -> np.ndarray:
    """``[B]`` bool, true for embeddings that are exactly zero (no direction to normalise)."""
    return ~np.any(self.embeddings != 0, axis=1)

  @property
  def zero_class_rows(self) -> np.ndarray:
    """``[C]`` bool, true for class proxies that are exactly zero."""
    return ~np.any(self.class_weights != 0, axis=1)


def labels_for(pattern: str, rng: np.random.Generator, batch: int = BATCH) -> np.ndarray:
  """The [B] int64 labels of a pattern (classes below NUM_CLASSES)."""
  if pattern in ("pk", "zero_vector"):
    labels = np.repeat(np.arange(batch // 3), 3)
  elif pattern == "mixed":
    sizes = [4, 3, 2, 1, 1, 1]
    labels = np.repeat(np.arange(len(sizes)), sizes)[:batch]
  elif pattern == "no_positive":
    labels = np.arange(batch)
  elif pattern == "no_negative":
    labels = np.zeros(batch, np.int64)
  else:
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
  return rng.permutation(labels).astype(np.int64)


def make_problem(
    pattern: str,
    hyperparameters: Mapping[str, float],
    *,
    dtype: str = "float64",
    setting: str = "",
    seed: int = 0,
) -> Problem:
  """A seeded problem of the given pattern (see the module docstring).

  Example:
    >>> from circle_jax.verify import make_problem
    >>> p = make_problem("mixed", {"margin": 0.4, "gamma": 80.0}, setting="fine-grained")
    >>> p.embeddings.shape, p.labels.shape, p.class_weights.shape, p.name
    ((12, 16), (12,), (10, 16), 'mixed/fine-grained/float64')
  """
  if dtype not in ("float64", "float32"):
    raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
  rng = np.random.default_rng([seed, PATTERNS.index(pattern) if pattern in PATTERNS else 99])
  labels = labels_for(pattern, rng)
  # Labels of no_positive may reach B - 1 >= C; classes for proxies wrap around.
  class_of = labels % NUM_CLASSES
  centres = rng.normal(size=(max(NUM_CLASSES, int(labels.max()) + 1), DIM))
  x = centres[labels] + 0.8 * rng.normal(size=(BATCH, DIM))
  x *= rng.uniform(0.5, 3.0, size=(BATCH, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
  w = centres[:NUM_CLASSES] + 0.3 * rng.normal(size=(NUM_CLASSES, DIM))
  w *= rng.uniform(0.5, 2.0, size=(NUM_CLASSES, 1)) / np.linalg.norm(w, axis=1, keepdims=True)
  for b in range(2):  # θ(x_b, w_y) > π − 0.5: ArcFace's fallback branch
    target = w[class_of[b]] / np.linalg.norm(w[class_of[b]])
    x[b] = np.linalg.norm(x[b]) * (-target + 0.05 * rng.normal(size=DIM))
  if pattern == "zero_vector":
    x[rng.integers(BATCH)] = 0.0
  cast = lambda a: a.astype(dtype)  # noqa: E731
  return Problem(
      name=f"{pattern}/{setting or 'custom'}/{dtype}",
      pattern=pattern,
      embeddings=cast(x),
      labels=labels,
      class_weights=cast(w),
      cotangent=rng.uniform(0.5, 1.5, size=BATCH),
      hyperparameters=dict(hyperparameters),
      dtype=dtype,
      setting=setting or "custom",
  )


def standard_problems(
    settings: Mapping[str, Mapping[str, float]],
    *,
    patterns: Sequence[str] = PATTERNS,
    float32_settings: Sequence[str] = (),
    seed: int = 0,
) -> list[Problem]:
  """Every pattern under every setting in float64, plus ``pk`` and ``mixed`` in
  float32 under the settings named in ``float32_settings``."""
  out = []
  for setting, params in settings.items():
    for pattern in patterns:
      out.append(make_problem(pattern, params, setting=setting, seed=seed))
  for setting in float32_settings:
    for pattern in ("pk", "mixed"):
      out.append(make_problem(pattern, settings[setting], dtype="float32", setting=setting, seed=seed))
  return out


def save_problem(path, problem: Problem, **arrays) -> None:
  """Writes a problem (and any extra arrays, e.g. both sides' outputs) as one npz."""
  np.savez(
      path,
      name=problem.name,
      pattern=problem.pattern,
      embeddings=problem.embeddings,
      labels=problem.labels,
      class_weights=problem.class_weights,
      cotangent=problem.cotangent,
      hyperparameter_names=np.array(list(problem.hyperparameters)),
      hyperparameter_values=np.array(list(problem.hyperparameters.values()), np.float64),
      # Integers stay integers (SphereFace's margin is a Chebyshev degree).
      hyperparameter_is_int=np.array([isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                      for v in problem.hyperparameters.values()], bool),
      dtype=problem.dtype,
      setting=problem.setting,
      **arrays,
  )


def load_problem(path) -> Problem:
  """Reads a problem written by :func:`save_problem` (numpy only).

  Example:
    >>> import os, tempfile
    >>> from circle_jax.verify import load_problem, make_problem, save_problem
    >>> p = make_problem("pk", {"margin": 0.25, "gamma": 256.0}, setting="face")
    >>> path = os.path.join(tempfile.mkdtemp(), "p.npz")
    >>> save_problem(path, p)
    >>> q = load_problem(path)
    >>> q.name, bool((q.embeddings == p.embeddings).all()), dict(q.hyperparameters)
    ('pk/face/float64', True, {'margin': 0.25, 'gamma': 256.0})
  """
  with np.load(path, allow_pickle=False) as f:
    is_int = (f["hyperparameter_is_int"] if "hyperparameter_is_int" in f.files
              else np.zeros(len(f["hyperparameter_values"]), bool))
    params = {str(n): int(v) if i else float(v) for n, v, i in
              zip(f["hyperparameter_names"], f["hyperparameter_values"], is_int)}
    return Problem(
        name=str(f["name"]), pattern=str(f["pattern"]), embeddings=f["embeddings"],
        labels=f["labels"], class_weights=f["class_weights"], cotangent=f["cotangent"],
        hyperparameters=params, dtype=str(f["dtype"]), setting=str(f["setting"]))
