"""An 8-device mesh (the emulated CPU devices of tests/conftest.py) and helpers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

NUM_DEVICES = 8


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < NUM_DEVICES:
    pytest.skip(f"needs {NUM_DEVICES} devices, have {jax.device_count()}")
  return jax.make_mesh((NUM_DEVICES,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))


def assert_close(got, want, rtol):
  """|got − want| ≤ rtol·(|want| + max|want|) leaf by leaf: relative to each value
  and to the leaf's scale, so tiny gradient entries (sums of large cancelling
  terms) are held to the precision of the large ones."""
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    w = np.asarray(w)
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    chex.assert_trees_all_close(g, w, rtol=rtol, atol=rtol * scale)


def weighted_sum(loss):
  """A scalar whose gradient tests every example's loss with a distinct weight."""
  return jnp.sum(loss * (1.0 + jnp.arange(loss.shape[0], dtype=loss.dtype) / loss.shape[0]))
