"""Shared fixtures: float64 scope, seeded numpy generators, hypothesis profile."""

import os

# Eight emulated CPU devices for the sharding tests; set before JAX starts its backend.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

# Importing TensorFlow (the TFRecord and conformance tests) imports keras too, which fixes
# its backend for the process; the conformance suite needs keras on JAX, so set
# it before any test module can import TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Every example compiles new shapes; deadlines would measure XLA, not the loss.
settings.register_profile("circle_jax", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("circle_jax")


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled (for tight gradient checks)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def labels_with_pattern(rng, batch, pattern):
  """Integer labels [batch] in one of the patterns that break implementations."""
  if pattern == "pk":  # P classes × K samples, shuffled
    k = 2 if batch % 2 == 0 else 1
    labels = np.repeat(np.arange(batch // k), k)[:batch]
  elif pattern == "singletons":  # every anchor alone: no positives anywhere
    labels = np.arange(batch)
  elif pattern == "single_class":  # no negatives anywhere
    labels = np.zeros(batch, int)
  elif pattern == "mixed":  # some singletons, some groups
    labels = rng.integers(0, max(1, batch // 2), size=batch)
  else:
    raise ValueError(pattern)
  return rng.permutation(labels).astype(np.int32)
