"""recall_at_k against a brute-force numpy reference (full N × N, full sort)."""

import numpy as np
import pytest

from circle_jax.metrics import recall_at_k


def brute_force_recall(x, y, ks):
  """Independent reference: sort each query's gallery; ties put negatives first."""
  x = np.asarray(x, np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  x = np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0)
  s = x @ x.T
  n = len(y)
  out = {}
  for k in ks:
    hits = 0
    for q in range(n):
      gallery = [g for g in range(n) if g != q]
      # Sort by (-score, is_positive): among equal scores negatives come first.
      order = sorted(gallery, key=lambda g: (-s[q, g], y[g] == y[q]))
      hits += any(y[g] == y[q] for g in order[:k])
    out[k] = hits / n
  return out


# Fast tier: blocks of 7 (do not divide N = 37) and one block for all; blocks of
# 1 and 3 run in the slow tier.
@pytest.mark.parametrize("block_size", [
    pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow), 7, 64])
def test_matches_brute_force_on_random_data(rng, block_size):
  x = rng.normal(size=(37, 5)).astype(np.float32)
  y = rng.integers(0, 6, size=37).astype(np.int32)
  ks = (1, 2, 4, 8)
  got = recall_at_k(x, y, ks, block_size=block_size)
  want = brute_force_recall(x, y, ks)
  assert got.keys() == want.keys()
  for k in ks:
    assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_ties_are_pessimistic():
  # Query 0 sees item 1 (positive) and item 2 (negative) at exactly the same cosine.
  x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
  y = np.array([0, 0, 1, 2], np.int32)
  got = recall_at_k(x, y, ks=(1, 2))
  want = brute_force_recall(x, y, (1, 2))
  assert got == want
  # Query 0: positive tied with a negative, so a miss at K = 1, a hit at K = 2.
  # Query 1: its duplicate (item 2) is a negative ranked first, and its positive
  # (item 0) ties with the negative item 3: two negatives ahead, a miss at K ≤ 2.
  # Queries 2 and 3 have no other item of their class: misses at every K.
  assert got == {1: 0.0, 2: 0.25}


def test_scale_invariant_and_zero_vectors(rng):
  x = rng.normal(size=(20, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=20).astype(np.int32)
  scaled = x * rng.uniform(0.1, 10.0, size=(20, 1)).astype(np.float32)
  assert recall_at_k(x, y, (1, 3)) == recall_at_k(scaled, y, (1, 3))
  x[0] = 0.0
  got = recall_at_k(x, y, (1, 3))
  assert got == brute_force_recall(x, y, (1, 3))
  assert all(np.isfinite(v) for v in got.values())


def test_singleton_query_counts_as_miss():
  x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]], np.float32)
  y = np.array([0, 0, 7], np.int32)
  assert recall_at_k(x, y, ks=(1, 2)) == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}


def test_perfect_and_worst_retrieval():
  y = np.repeat(np.arange(4), 3).astype(np.int32)
  x = np.eye(4, dtype=np.float32)[y] + 0.01 * np.arange(12)[:, None]
  assert recall_at_k(x, y, (1,)) == {1: 1.0}
  # Each pair of same-class items is antipodal: the positive is the least
  # similar of the 11 gallery items, found only at K = 11.
  anti = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)])
  y_far = np.array([0, 1, 2, 3, 4, 5] * 2, np.int32)
  got = recall_at_k(anti, y_far, (1, 10, 11))
  assert got == brute_force_recall(anti, y_far, (1, 10, 11))
  assert got == {1: 0.0, 10: 0.0, 11: 1.0}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(embeddings=np.ones((4,)), labels=np.zeros(4, int)), ValueError, "embeddings must be"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(3, int)), ValueError, "labels must be"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4)), TypeError, "integers"),
        (dict(embeddings=np.ones((1, 2)), labels=np.zeros(1, int)), ValueError, "N ≥ 2"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4, int), ks=(0,)), ValueError, "k = 0"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4, int), ks=(4,)), ValueError, "k = 4"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4, int), ks=(1.5,)), TypeError, "int"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4, int), ks=()), ValueError, "empty"),
        (dict(embeddings=np.ones((4, 2)), labels=np.zeros(4, int), ks=(1,), block_size=0), ValueError,
         "block_size"),
    ],
)
def test_bad_input(kwargs, error, match):
  with pytest.raises(error, match=match):
    recall_at_k(**kwargs)


def _with_nonfinite(rng, rows, value):
  x = rng.normal(size=(20, 8)).astype(np.float32)
  for r in rows:
    x[r, 2] = value
  return x


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("as_jax", [False, True])
def test_non_finite_embeddings_are_rejected(rng, value, as_jax):
  # One inf entry used to lift R@1 of random embeddings from 0.05 to 0.15; a
  # NaN row was scored as a zero vector. Both must fail before any scoring.
  import jax.numpy as jnp
  x = _with_nonfinite(rng, [7, 12], value)
  y = np.repeat(np.arange(10), 2)
  with pytest.raises(ValueError, match=r"embeddings .*2 of 20 rows.*first: row 7"):
    recall_at_k(jnp.asarray(x) if as_jax else x, y, (1,))


def test_nan_row_is_rejected(rng):
  x = rng.normal(size=(6, 3))
  x[4] = np.nan
  with pytest.raises(ValueError, match=r"embeddings .*1 of 6 rows.*first: row 4"):
    recall_at_k(x, np.array([0, 0, 1, 1, 2, 2]), (1,))


def test_int64_ids_beyond_int32_are_not_merged():
  # Truncated to int32, ids 0 and 2**32 merge: items 0 and 1 would find each other.
  x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)
  big = np.array([0, 2**32, 1, 1], np.int64)
  assert recall_at_k(x, big, (1,)) == {1: 0.5}
  assert recall_at_k(x, big, (1,)) == recall_at_k(x, np.array([0, 5, 1, 1]), (1,))
  huge = np.array([2**62, 2**62, -(2**40), -(2**40)], np.int64)
  assert recall_at_k(x, huge, (1,)) == {1: 1.0}
