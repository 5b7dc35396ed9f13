"""Verification accuracy, TAR@FAR and template features against brute-force references."""

import numpy as np
import pytest

from circle_jax.metrics import best_threshold
from circle_jax.metrics import pair_scores
from circle_jax.metrics import tar_at_far
from circle_jax.metrics import template_embeddings
from circle_jax.metrics import template_pair_scores
from circle_jax.metrics import verification_accuracy


def brute_best_accuracy(s, y):
  """Best accuracy of 'same iff s > t' over every t in {-inf} ∪ scores, by enumeration."""
  return max(np.mean((s > t) == y) for t in [-np.inf, *s])


def brute_kfold(s, y, k):
  """Contiguous folds; per fold, enumerate every threshold of the stated candidate set
  (−inf, midpoints between consecutive distinct train scores, the largest train score)
  and take the first that is best on the train folds."""
  folds = np.array_split(np.arange(len(s)), k)
  accs = []
  for test in folds:
    train = np.array([i for i in range(len(s)) if i not in set(test.tolist())])
    u = sorted(set(s[train].tolist()))
    candidates = [-np.inf] + [(a + b) / 2 for a, b in zip(u, u[1:])] + [u[-1]]
    accs_train = [np.mean((s[train] > t) == y[train]) for t in candidates]
    t = candidates[accs_train.index(max(accs_train))]
    accs.append(np.mean((s[test] > t) == y[test]))
  return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("n", [1, 2, 7, 60])
def test_best_threshold_is_the_best_over_all_thresholds(rng, n):
  s = rng.normal(size=n)
  y = rng.random(n) < 0.5
  t, acc = best_threshold(s, y)
  assert acc == pytest.approx(brute_best_accuracy(s, y))
  assert np.mean((s > t) == y) == pytest.approx(acc)


def test_best_threshold_with_ties(rng):
  s = rng.integers(0, 4, size=50).astype(float)
  y = rng.random(50) < s / 4
  t, acc = best_threshold(s, y)
  assert acc == pytest.approx(brute_best_accuracy(s, y))
  assert np.mean((s > t) == y) == pytest.approx(acc)


@pytest.mark.parametrize("n, k", [(60, 10), (63, 10), (40, 4)])
def test_kfold_accuracy_matches_brute_force(rng, n, k):
  y = rng.random(n) < 0.5
  s = rng.normal(size=n) + 1.2 * y       # overlapping score distributions
  got = verification_accuracy(s, y, num_folds=k)
  mean, std = brute_kfold(s, y, k)
  assert got["accuracy"] == pytest.approx(mean, abs=1e-12)
  assert got["std"] == pytest.approx(std, abs=1e-12)
  assert len(got["fold_accuracies"]) == k


def test_kfold_hand_made():
  # Fold 1 holds the one pair that no threshold learnt elsewhere gets right.
  s = np.array([0.9, 0.1, 0.2, 0.8, 0.95, 0.05])
  y = np.array([True, False, True, True, True, False])
  r = verification_accuracy(s, y, num_folds=3)
  assert r["fold_accuracies"] == [1.0, 0.5, 1.0]
  assert r["accuracy"] == pytest.approx(2.5 / 3)


def test_pair_scores_and_flip_fusion_layout(rng):
  x = rng.normal(size=(10, 4))
  got = pair_scores(x)
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(got, np.sum(u[0::2] * u[1::2], axis=1), atol=1e-6)
  with pytest.raises(ValueError, match="even"):
    pair_scores(x[:3])


def brute_tar_at_far(s, y, far):
  best = 0.0
  for t in [-np.inf, *s]:
    if np.mean(s[~y] > t) <= far + 1e-12:
      best = max(best, np.mean(s[y] > t))
  return best


@pytest.mark.parametrize("far", [0.0, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0])
def test_tar_at_far_matches_brute_force(rng, far):
  y = rng.random(400) < 0.3
  s = np.round(rng.normal(size=400) + 2 * y, 1)   # rounded: ties
  r = tar_at_far(s, y, fars=(far,))[far]
  assert r["tar"] == pytest.approx(brute_tar_at_far(s, y, far))
  assert r["far"] <= far + 1e-12


def test_tar_at_far_bad_input():
  with pytest.raises(ValueError, match="positive and negative"):
    tar_at_far([0.1, 0.2], [True, True])
  with pytest.raises(ValueError, match="far"):
    tar_at_far([0.1, 0.2], [True, False], fars=(2.0,))
  with pytest.raises(TypeError, match="issame"):
    tar_at_far([0.1, 0.2], [0.5, 1.0])


def test_template_features_against_loops(rng):
  x = rng.normal(size=(30, 5))
  tid = rng.integers(10, 14, 30)
  mid = rng.integers(0, 3, 30)
  templates, feats = template_embeddings(x, tid, mid)
  assert templates.tolist() == sorted(set(tid.tolist()))
  for t, f in zip(templates, np.asarray(feats)):
    total = sum(x[(tid == t) & (mid == m)].mean(axis=0) for m in set(mid[tid == t].tolist()))
    np.testing.assert_allclose(f, total / np.linalg.norm(total), atol=1e-5)
  scores = template_pair_scores(templates, feats, [10, 11], [12, 11])
  f = dict(zip(templates.tolist(), np.asarray(feats)))
  np.testing.assert_allclose(scores, [f[10] @ f[12], 1.0], atol=1e-5)
  with pytest.raises(ValueError, match="no images"):
    template_pair_scores(templates, feats, [99], [10])


def test_pair_scores_rejects_non_finite_rows(rng):
  x = rng.normal(size=(8, 3))
  x[5] = np.nan
  x[6, 0] = np.inf
  with pytest.raises(ValueError, match=r"pair_scores: embeddings .*2 of 8 rows.*first: row 5"):
    pair_scores(x)


@pytest.mark.parametrize("fn", [best_threshold, verification_accuracy, tar_at_far])
def test_score_functions_reject_non_finite_scores(fn):
  s = np.array([0.9, 0.8, np.nan, 0.2, 0.1, np.inf])
  with pytest.raises(ValueError, match=rf"{fn.__name__}: scores .*2 of 6 entries.*first: index 2"):
    fn(s, [1, 1, 0, 0, 1, 0])


def test_template_functions_reject_non_finite_features(rng):
  x = rng.normal(size=(6, 3))
  x[3, 2] = -np.inf
  with pytest.raises(ValueError, match=r"template_embeddings: embeddings .*1 of 6 rows.*row 3"):
    template_embeddings(x, [0, 0, 1, 1, 2, 2], [0] * 6)
  with pytest.raises(ValueError, match=r"template_pair_scores: features .*1 of 6 rows.*row 3"):
    template_pair_scores(np.arange(6), x, [0], [1])


def test_template_ids_beyond_int32_are_not_merged():
  # Media 0 and 2**33 of template 2**32 are averaged separately, then summed.
  x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
  templates, feats = template_embeddings(x, np.array([0, 2**32, 2**32, 2**32]),
                                         np.array([0, 0, 0, 2**33]))
  assert templates.tolist() == [0, 2**32]
  np.testing.assert_allclose(np.asarray(feats)[1], np.array([0.6, 1.8]) / np.hypot(0.6, 1.8),
                             atol=1e-6)
  scores = template_pair_scores(templates, feats, np.array([2**32]), np.array([0]))
  np.testing.assert_allclose(scores, [0.6 / np.hypot(0.6, 1.8)], atol=1e-6)
