"""Shared fixtures: float64 scope, seeded numpy generators, hypothesis profile; the test tiers."""

import os
import pathlib

# Eight emulated CPU devices for the sharding tests; set before JAX starts its backend.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

# One persistent compilation cache for the whole run: the xdist workers and every
# process they start (experiments.main runs, notebook kernels) inherit these
# variables, so a program compiled once, by any of them, in this run or an
# earlier one, is loaded instead of compiled again. Every program is kept: small
# programs compile in under JAX's default threshold of one second (74 of the
# default job's 76 do; README, Training).
REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

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


# Every collected test with its module and tier, before ``-m`` deselects any:
# tests/test_tiers.py checks the tiers on it.
COLLECTED = pytest.StashKey[list]()


# Doctests whose examples compile whole training programs (3–6 s each on 2 cores): they run in
# the slow tier; the fast one keeps the same code's unit tests.
SLOW_DOCTEST_MODULES = ("circle_jax/training/_ablation.py::",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.nodeid.startswith(SLOW_DOCTEST_MODULES):
      item.add_marker(pytest.mark.slow)
  config.stash[COLLECTED] = [
      (item.nodeid, item.path, item.get_closest_marker("slow") is not None, _module_is_slow(item))
      for item in items]


def _module_is_slow(item) -> bool:
  module = item.getparent(pytest.Module)
  return module is not None and any(m.name == "slow" for m in module.own_markers)


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled (for tight gradient checks)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def slow(*values, **kwargs):
  """A parametrisation (``pytest.param``'s arguments) that runs in the slow tier only:
  a sweep keeps a few representative cases fast and the rest here."""
  return pytest.param(*values, marks=pytest.mark.slow, **kwargs)


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
