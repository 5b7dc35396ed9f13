"""Omniglot's one-shot metrics: the Modified Hausdorff Distance against a brute-force double
loop, one_shot_error on hand-built runs, and recall_at_k_of_scores against recall_at_k."""

import numpy as np
import pytest

from circle_jax.metrics import modified_hausdorff_distances
from circle_jax.metrics import one_shot_error
from circle_jax.metrics import recall_at_k
from circle_jax.metrics import recall_at_k_of_scores
from tests.metrics.test_recall import brute_force_recall


def brute_force_mhd(a, b, centre=True):
  """Independent reference: d(A, B) = max of the two directed mean nearest-point distances."""

  def points(mask):
    p = [(r, c) for r in range(mask.shape[0]) for c in range(mask.shape[1]) if mask[r, c]]
    p = np.array(p, np.float64)
    return p - p.mean(0) if centre else p

  def directed(p, q):   # each point of p: its distance to every point of q, the least
    return np.mean([np.sqrt(((q - x) ** 2).sum(1)).min() for x in p])

  out = np.zeros((len(a), len(b)))
  for i, ma in enumerate(a):
    for j, mb in enumerate(b):
      pa, pb = points(ma), points(mb)
      out[i, j] = max(directed(pa, pb), directed(pb, pa))
  return out


def random_masks(rng, n, h, w, densities=(0.05, 0.2, 0.5, 0.9)):
  """n bool masks [h, w] of various densities, each with at least one True pixel."""
  masks = rng.random((n, h, w)) < np.resize(np.asarray(densities), n)[:, None, None]
  for m in masks:
    if not m.any():
      m[rng.integers(h), rng.integers(w)] = True
  masks[0] = False
  masks[0, h // 2, w // 3] = True   # one drawing of a single pixel
  return masks


@pytest.mark.parametrize("centre", [True, False])
def test_mhd_self_matches_brute_force(rng, centre):
  a = random_masks(rng, 6, 7, 9)
  got = modified_hausdorff_distances(a, centre=centre)
  assert got.shape == (6, 6) and got.dtype == np.float64
  np.testing.assert_allclose(got, brute_force_mhd(a, a, centre), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got, got.T)
  np.testing.assert_array_equal(np.diag(got), 0.0)


@pytest.mark.parametrize("centre", [True, False])
def test_mhd_a_against_b_of_another_size_matches_brute_force(rng, centre):
  a = random_masks(rng, 5, 7, 9)
  b = random_masks(rng, 3, 11, 6, densities=(0.1, 0.4, 0.7))
  got = modified_hausdorff_distances(a, b, centre=centre)
  assert got.shape == (5, 3)
  np.testing.assert_allclose(got, brute_force_mhd(a, b, centre), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(modified_hausdorff_distances(b, a, centre=centre), got.T,
                             rtol=1e-6, atol=1e-6)


def test_mhd_blocks_do_not_change_the_result(rng):
  # Masks of 12×12 reach more than 64 ink pixels, so blocks are padded to two
  # point counts; a small max_elements splits the pairs into many blocks.
  a = random_masks(rng, 9, 12, 12, densities=(0.02, 0.3, 0.6, 0.95))
  b = random_masks(rng, 5, 7, 9)
  whole = modified_hausdorff_distances(a, b)
  want = brute_force_mhd(a, b)
  np.testing.assert_allclose(whole, want, rtol=1e-5, atol=1e-5)
  for max_elements in (1, 2 * 64 * 64, 4 * 128 * 128):
    np.testing.assert_allclose(modified_hausdorff_distances(a, b, max_elements=max_elements),
                               whole, rtol=1e-6, atol=1e-6)
  self_whole = modified_hausdorff_distances(a)
  np.testing.assert_allclose(self_whole, brute_force_mhd(a, a), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(modified_hausdorff_distances(a, max_elements=1), self_whole,
                             rtol=1e-6, atol=1e-6)


def test_mhd_centred_ignores_translation(rng):
  drawing = random_masks(rng, 2, 6, 6, densities=(0.4,))[1]
  frames = np.zeros((3, 14, 14), bool)
  for k, (dy, dx) in enumerate([(0, 0), (8, 3), (2, 8)]):
    frames[k, dy:dy + 6, dx:dx + 6] = drawing
  got = modified_hausdorff_distances(drawing[None], frames)
  np.testing.assert_allclose(got, 0.0, atol=1e-5)
  np.testing.assert_allclose(modified_hausdorff_distances(frames), 0.0, atol=1e-5)
  # Uncentred, the shift costs distance.
  moved = modified_hausdorff_distances(frames[:1], frames[1:], centre=False)
  assert (moved > 1).all()
  np.testing.assert_allclose(moved, brute_force_mhd(frames[:1], frames[1:], centre=False),
                             rtol=1e-5)


def test_mhd_refuses_a_drawing_without_ink():
  a = np.zeros((2, 4, 4), bool)
  a[0, 1, 1] = True
  with pytest.raises(ValueError, match="drawing 1 has no ink"):
    modified_hausdorff_distances(a)


# ------------------------------------------------------------ one_shot_error


def brute_force_one_shot_error(s, yq, ys):
  """Independent reference: a query is right only when its class strictly wins."""
  wrong = 0
  for q in range(len(yq)):
    right = max(s[q, j] for j in range(len(ys)) if ys[j] == yq[q])
    other = [s[q, j] for j in range(len(ys)) if ys[j] != yq[q]]
    wrong += bool(other) and max(other) >= right
  return wrong / len(yq)


def test_one_shot_error_on_a_hand_built_run():
  support = np.array([0, 1, 2, 3])
  queries = np.array([0, 1, 2, 3, 0])
  s = np.array([[0.9, 0.1, 0.2, 0.3],    # right
                [0.1, 0.8, 0.7, 0.0],    # right
                [0.5, 0.1, 0.4, 0.2],    # wrong: class 0 beats class 2
                [0.0, 0.0, 0.0, 0.6],    # right
                [0.3, 0.9, 0.1, 0.1]])   # wrong
  assert one_shot_error(s, queries, support) == pytest.approx(0.4)
  assert one_shot_error(-s, queries, support) == pytest.approx(
      brute_force_one_shot_error(-s, queries, support))


def test_one_shot_ties_are_errors():
  support = np.array([0, 1, 2])
  s = np.array([[0.5, 0.5, 0.1],    # tie between the right and a wrong class
                [0.2, 0.7, 0.7],    # likewise
                [0.1, 0.2, 0.3]])   # right
  assert one_shot_error(s, np.array([0, 1, 2]), support) == pytest.approx(2 / 3)
  assert one_shot_error(np.zeros((3, 3)), np.array([0, 1, 2]), support) == 1.0


def test_one_shot_error_matches_brute_force(rng):
  # Several support items per class, and coarse scores so that ties happen.
  ys = np.repeat(np.arange(5), 3)
  yq = rng.integers(0, 5, size=40)
  s = rng.integers(0, 6, size=(40, 15)).astype(np.float64)
  assert one_shot_error(s, yq, ys) == pytest.approx(brute_force_one_shot_error(s, yq, ys))


def test_one_shot_error_refuses_bad_input():
  s = np.array([[0.9, 0.1], [0.2, 0.8]])
  with pytest.raises(ValueError, match="NaN"):
    one_shot_error(np.array([[np.nan, 0.1], [0.2, 0.8]]), np.array([0, 1]), np.array([0, 1]))
  with pytest.raises(ValueError, match=r"\[2\] have no support"):
    one_shot_error(s, np.array([0, 2]), np.array([0, 1]))
  with pytest.raises(ValueError):
    one_shot_error(s, np.array([0, 1, 1]), np.array([0, 1]))
  with pytest.raises(TypeError):
    one_shot_error(s, np.array([0.0, 1.0]), np.array([0, 1]))


# --------------------------------------------------------- recall from scores


def test_recall_of_cosine_scores_equals_recall_at_k(rng):
  # Classes of 2 to 5 items, and singleton classes (always a miss).
  labels = np.concatenate([np.repeat([3, 7, 8, 11], [2, 5, 3, 4]), [20, 21, 22]])
  labels = rng.permutation(labels).astype(np.int32)
  x = rng.normal(size=(len(labels), 6))
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  ks = (1, 2, 4, 8, 16)
  got = recall_at_k_of_scores(unit @ unit.T, labels, ks)
  want = recall_at_k(x.astype(np.float32), labels, ks)
  assert list(got) == list(ks)
  for k in ks:
    assert got[k] == pytest.approx(want[k], abs=1e-12), k
  assert got[1] < 1.0 and got[16] == pytest.approx(1 - 3 / len(labels))


def brute_force_recall_of_scores(s, y, ks):
  """Independent reference: sort each query's gallery by score; ties put negatives first."""
  n = len(y)
  out = {}
  for k in ks:
    hits = 0
    for q in range(n):
      order = sorted((g for g in range(n) if g != q), key=lambda g: (-s[q, g], y[g] == y[q]))
      hits += any(y[g] == y[q] for g in order[:k])
    out[k] = hits / n
  return out


def test_recall_of_tied_scores_matches_brute_force(rng):
  # Coarse, asymmetric scores: many ties, and a query's row is not its column.
  y = rng.integers(0, 6, size=25)
  s = rng.integers(0, 4, size=(25, 25)).astype(np.float64)
  np.fill_diagonal(s, 100.0)   # the diagonal is ignored, however high
  ks = (1, 3, 10)
  assert recall_at_k_of_scores(s, y, ks) == brute_force_recall_of_scores(s, y, ks)


def test_recall_of_minus_mhd_matches_brute_force(rng):
  ink = random_masks(rng, 10, 7, 7)
  y = np.array([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])
  ks = (1, 2, 5)
  # Rounded: equal distances must tie in both (float32 in JAX, float64 here).
  got = recall_at_k_of_scores(-np.round(modified_hausdorff_distances(ink), 4), y, ks)
  want = brute_force_recall_of_scores(-np.round(brute_force_mhd(ink, ink), 4), y, ks)
  assert got == pytest.approx(want)


def test_the_cosine_reference_agrees(rng):
  # brute_force_recall (tests/metrics/test_recall.py) on the same data: the two references agree.
  x = rng.normal(size=(15, 4))
  y = rng.integers(0, 4, size=15)
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  assert brute_force_recall_of_scores(unit @ unit.T, y, (1, 3)) == pytest.approx(
      brute_force_recall(x, y, (1, 3)))
