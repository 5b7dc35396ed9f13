"""cmc_map against a brute-force per-query reference (Python sort, explicit junk removal)."""

import numpy as np
import pytest

from circle_jax.metrics import cmc_map


def brute_force_cmc_map(qx, qp, qc, gx, gp, gc, ranks):
  """Independent reference: one query at a time, lists and a Python sort."""
  def unit(x):
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0)

  qx, gx = unit(qx), unit(gx)
  cmc_total = {k: 0.0 for k in ranks}
  aps = []
  for i in range(len(qp)):
    kept = [j for j in range(len(gp))
            if gp[j] >= 0 and not (gp[j] == qp[i] and gc[j] == qc[i])]
    # Ties: negatives ranked before positives.
    kept.sort(key=lambda j: (-float(qx[i] @ gx[j]), gp[j] == qp[i]))
    raw = [gp[j] == qp[i] for j in kept]
    if not any(raw):
      continue
    first = raw.index(True) + 1
    for k in ranks:
      cmc_total[k] += first <= k
    hits, precisions = 0, []
    for rank, r in enumerate(raw, start=1):
      if r:
        hits += 1
        precisions.append(hits / rank)
    aps.append(np.mean(precisions))
  n = len(aps)
  return {k: v / n for k, v in cmc_total.items()}, float(np.mean(aps)), n


# Fast tier: blocks of 4 (do not divide Q = 23) and one block for all; blocks of 1
# run in the slow tier.
@pytest.mark.parametrize("block_size", [pytest.param(1, marks=pytest.mark.slow), 4, 256])
def test_matches_brute_force_on_random_data(rng, block_size):
  q, g, d = 23, 61, 6
  qx, gx = rng.normal(size=(q, d)), rng.normal(size=(g, d))
  qp, gp = rng.integers(0, 14, q), rng.integers(-1, 8, g)   # -1: junk, 0: distractor; qp ≥ 8: no positive
  qc, gc = rng.integers(0, 3, q), rng.integers(0, 3, g)
  ranks = (1, 2, 5, 10)
  got = cmc_map(qx, qp, qc, gx, gp, gc, ranks, block_size=block_size)
  cmc, m_ap, n = brute_force_cmc_map(qx, qp, qc, gx, gp, gc, ranks)
  assert got["num_queries"] == n and 0 < n < q
  for k in ranks:
    assert got["cmc"][k] == pytest.approx(cmc[k], abs=1e-12), k
  assert got["map"] == pytest.approx(m_ap, abs=1e-6)


def test_ties_and_quantised_embeddings_match_brute_force(rng):
  # Few distinct directions: many exact ties between positives and negatives.
  qx, gx = rng.integers(0, 2, (15, 3)).astype(float), rng.integers(0, 2, (40, 3)).astype(float)
  qp, gp = rng.integers(0, 4, 15), rng.integers(0, 4, 40)
  qc, gc = rng.integers(0, 2, 15), rng.integers(0, 2, 40)
  got = cmc_map(qx, qp, qc, gx, gp, gc, (1, 3, 50), block_size=4)
  cmc, m_ap, n = brute_force_cmc_map(qx, qp, qc, gx, gp, gc, (1, 3, 50))
  assert got["num_queries"] == n
  assert got["cmc"] == pytest.approx(cmc, abs=1e-12)
  assert got["map"] == pytest.approx(m_ap, abs=1e-6)


def test_hand_made_case():
  q = np.array([[1.0, 0.0], [0.0, 1.0]])
  g = np.array([[1.0, 0.0],     # pid 1 cam 0: junk for query 0 (same pid, same camera)
                [0.8, 0.6],     # pid 0: distractor, a negative
                [0.6, 0.8],     # pid 1 cam 1: positive for query 0
                [0.0, 1.0],     # pid 2 cam 1: the only pid-2 item, same camera as query 1
                [0.7, 0.7]])    # pid -1: junk
  r = cmc_map(q, [1, 2], [0, 1], g, [1, 0, 1, 2, -1], [0, 0, 1, 1, 1], ranks=(1, 2))
  # Query 1 has no positive left and is skipped; query 0 ranks [distractor, positive].
  assert r == {"cmc": {1: 0.0, 2: 1.0}, "map": 0.5, "num_queries": 1}


def test_perfect_ranking_gives_one():
  x = np.eye(4)
  r = cmc_map(x, [0, 1, 2, 3], [0] * 4, x, [0, 1, 2, 3], [1] * 4, ranks=(1,))
  assert r == {"cmc": {1: 1.0}, "map": 1.0, "num_queries": 4}


def test_rank_beyond_gallery_keeps_last_value():
  r = cmc_map([[1.0, 0]], [0], [0], [[0.0, 1], [1.0, 0]], [1, 0], [1, 1], ranks=(1, 2, 5))
  assert r["cmc"] == {1: 1.0, 2: 1.0, 5: 1.0}


def test_bad_input_names_the_argument():
  x = np.ones((3, 2))
  with pytest.raises(ValueError, match="query_pids"):
    cmc_map(x, [0, 1], [0, 0, 0], x, [0, 1, 2], [0, 0, 0])
  with pytest.raises(TypeError, match="gallery_cams"):
    cmc_map(x, [0, 1, 2], [0, 0, 0], x, [0, 1, 2], [0.5, 0, 0])
  with pytest.raises(ValueError, match="feature dimensions"):
    cmc_map(x, [0, 1, 2], [0, 0, 0], np.ones((3, 4)), [0, 1, 2], [0, 0, 0])
  with pytest.raises(ValueError, match="rank"):
    cmc_map(x, [0, 1, 2], [0, 0, 0], x, [0, 1, 2], [1, 1, 1], ranks=(0,))


@pytest.mark.parametrize("arg", ["query_embeddings", "gallery_embeddings"])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_embeddings_are_rejected(rng, arg, value):
  q, g = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
  (q if arg == "query_embeddings" else g)[2:4, 1] = value
  with pytest.raises(ValueError, match=rf"{arg} .*2 of {4 if arg[0] == 'q' else 6} rows.*first: row 2"):
    cmc_map(q, [0, 1, 2, 3], [0] * 4, g, [0, 1, 2, 3, 0, 1], [1] * 6)


def test_int64_ids_beyond_int32_are_not_merged():
  q, g = [[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]
  # Gallery item 0 (pid 0) is the nearest; truncation would make it a positive.
  r = cmc_map(q, np.array([2**32]), [0], g, np.array([0, 2**32]), [1, 1], ranks=(1, 2))
  assert r["cmc"] == {1: 0.0, 2: 1.0} and r["map"] == 0.5
  # Cameras too: 2**32 and 0 are different cameras, so gallery item 1 is no junk.
  r = cmc_map(q, [7], np.array([0]), g, [5, 7], np.array([2**32, 2**32]), ranks=(1, 2))
  assert r["cmc"] == {1: 0.0, 2: 1.0} and r["num_queries"] == 1
  # Negative (junk) pids stay junk after any remapping.
  r = cmc_map(q, np.array([2**40]), [0], g, np.array([-(2**40), 2**40]), [1, 1], ranks=(1,))
  assert r["cmc"] == {1: 1.0}
