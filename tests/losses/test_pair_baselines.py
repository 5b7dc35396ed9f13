"""Pair-level baselines: batch-hard / batch-all triplet, contrastive, N-pair,
lifted structure and multi-similarity losses, against loop-based numpy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from circle_jax import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    contrastive_loss,
    lifted_structure_loss,
    multi_similarity_loss,
    npair_loss,
    valid_anchor_mask,
)
from tests.conftest import labels_with_pattern

# ----------------------------------------------------------------------------
# Independent numpy references: the docstring formulas, one anchor / pair /
# triplet at a time, in float64.
# ----------------------------------------------------------------------------


def np_unit(x):
  """Rows divided by max(‖x‖, 1e-12) (zero rows stay zero)."""
  x = np.asarray(x, np.float64)
  out = np.zeros_like(x)
  for i in range(x.shape[0]):
    out[i] = x[i] / max(math.sqrt(float(np.sum(x[i] ** 2))), 1e-12)
  return out


def np_partition(labels, a):
  """(positives, negatives) of anchor a: same label but not a / other label."""
  labels = np.asarray(labels)
  pos = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
  neg = [j for j in range(len(labels)) if labels[j] != labels[a]]
  return pos, neg


def np_valid(labels):
  out = np.zeros(len(labels), bool)
  for a in range(len(labels)):
    pos, neg = np_partition(labels, a)
    out[a] = bool(pos) and bool(neg)
  return out


def np_dist(u, v, metric):
  """Distance between two unit vectors."""
  if metric == "cosine":
    return 1.0 - float(np.dot(u, v))
  squared = float(np.sum((u - v) ** 2))
  if metric == "squared_euclidean":
    return squared
  assert metric == "euclidean"
  return math.sqrt(squared)


def per_anchor(labels, anchor_loss):
  """anchor_loss(a, positives, negatives) for anchors that have both; exactly 0 elsewhere."""
  out = np.zeros(len(labels))
  for a in range(len(labels)):
    pos, neg = np_partition(labels, a)
    if pos and neg:
      out[a] = anchor_loss(a, pos, neg)
  return out


def ref_batch_hard(x, labels, margin=0.2, metric="euclidean"):
  u = np_unit(x)

  def anchor(a, pos, neg):
    hardest_pos = max(np_dist(u[a], u[p], metric) for p in pos)
    hardest_neg = min(np_dist(u[a], u[n], metric) for n in neg)
    return max(hardest_pos - hardest_neg + margin, 0.0)

  return per_anchor(labels, anchor)


def ref_batch_all(x, labels, margin=0.2, metric="euclidean", nonzero_only=True):
  u = np_unit(x)

  def anchor(a, pos, neg):
    hinges = []
    for p in pos:
      for n in neg:
        h = max(np_dist(u[a], u[p], metric) - np_dist(u[a], u[n], metric) + margin, 0.0)
        if h > 0 or not nonzero_only:
          hinges.append(h)
    return sum(hinges) / len(hinges) if hinges else 0.0

  return per_anchor(labels, anchor)


def ref_contrastive(x, labels, pos_margin=0.0, neg_margin=1.0):
  u = np_unit(x)

  def anchor(a, pos, neg):
    pull = sum(max(np_dist(u[a], u[p], "euclidean") - pos_margin, 0.0) ** 2 for p in pos)
    push = sum(max(neg_margin - np_dist(u[a], u[n], "euclidean"), 0.0) ** 2 for n in neg)
    return 0.5 * pull / len(pos) + 0.5 * push / len(neg)

  return per_anchor(labels, anchor)


def ref_npair(x, labels, normalize=False, scale=1.0):
  f = np_unit(x) if normalize else np.asarray(x, np.float64)

  def anchor(a, pos, neg):
    total = 0.0
    for p in pos:
      inner = sum(
          math.exp(scale * (float(f[a] @ f[n]) - float(f[a] @ f[p]))) for n in neg
      )
      total += math.log(1.0 + inner)
    return total / len(pos)

  return per_anchor(labels, anchor)


def ref_lifted(x, labels, margin=1.0):
  u = np_unit(x)
  big_d = lambda i, j: np_dist(u[i], u[j], "euclidean")

  def anchor(i, pos, neg):
    total = 0.0
    for j in pos:
      _, neg_j = np_partition(labels, j)
      inner = sum(math.exp(margin - big_d(i, k)) for k in neg)
      inner += sum(math.exp(margin - big_d(j, l)) for l in neg_j)
      j_ij = math.log(inner) + big_d(i, j)
      total += max(j_ij, 0.0) ** 2
    return total / (2 * len(pos))

  return per_anchor(labels, anchor)


def ref_multi_similarity(x, labels, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
  u = np_unit(x)

  def anchor(a, pos, neg):
    s = lambda j: float(u[a] @ u[j])
    if epsilon is not None:
      min_pos = min(s(p) for p in pos)
      max_neg = max(s(n) for n in neg)
      pos, neg = (
          [p for p in pos if s(p) - epsilon < max_neg],
          [n for n in neg if s(n) + epsilon > min_pos],
      )
    if not pos or not neg:
      return 0.0
    return (
        math.log(1.0 + sum(math.exp(-alpha * (s(p) - base)) for p in pos)) / alpha
        + math.log(1.0 + sum(math.exp(beta * (s(n) - base)) for n in neg)) / beta
    )

  return per_anchor(labels, anchor)


LOSSES = {
    "batch_hard": (batch_hard_triplet_loss, ref_batch_hard),
    "batch_all": (batch_all_triplet_loss, ref_batch_all),
    "contrastive": (contrastive_loss, ref_contrastive),
    "npair": (npair_loss, ref_npair),
    "lifted": (lifted_structure_loss, ref_lifted),
    "multi_similarity": (multi_similarity_loss, ref_multi_similarity),
}

CONFIGS = [  # (loss name, keyword arguments); {} exercises the documented defaults
    ("batch_hard", {}),
    ("batch_hard", dict(margin=0.5, metric="squared_euclidean")),
    ("batch_hard", dict(margin=0.1, metric="cosine")),
    ("batch_all", {}),
    ("batch_all", dict(margin=0.5, metric="squared_euclidean", nonzero_only=False)),
    ("batch_all", dict(margin=0.3, metric="cosine", nonzero_only=True)),
    ("batch_all", dict(margin=1.0, metric="euclidean", nonzero_only=False)),
    ("contrastive", {}),
    ("contrastive", dict(pos_margin=0.3, neg_margin=1.2)),
    ("npair", {}),
    ("npair", dict(normalize=True, scale=16.0)),
    ("npair", dict(scale=0.5)),
    ("lifted", {}),
    ("lifted", dict(margin=0.3)),
    ("multi_similarity", {}),
    ("multi_similarity", dict(epsilon=None)),
    ("multi_similarity", dict(alpha=1.0, beta=20.0, base=0.3, epsilon=0.05)),
]


def slow(param):
  """The same parametrisation, run in the slow tier only."""
  return pytest.param(*param.values, id=param.id, marks=[*param.marks, pytest.mark.slow])


def config_id(name, kw):
  return name + ("" if not kw else "-" + ",".join(f"{k}={v}" for k, v in kw.items()))


CONFIG_PARAMS = [pytest.param(n, kw, id=config_id(n, kw)) for n, kw in CONFIGS]
DEFAULT_PARAMS = [pytest.param(n, {}, id=n) for n in LOSSES]
# One non-default configuration per loss.
OTHER_PARAMS = [CONFIG_PARAMS[i] for i in (1, 5, 8, 10, 13, 16)]
# Fast tier: every loss at its documented defaults; the other configurations
# run in the slow tier (the value tests keep every configuration fast).
DEFAULTS_FAST = DEFAULT_PARAMS + [slow(p) for p in OTHER_PARAMS]
CONFIGS_DEFAULTS_FAST = [p if not p.values[1] else slow(p) for p in CONFIG_PARAMS]
# jit / vmap: the batch-hard (hard-example max/min) and batch-all (hinge
# averaging) configurations stay fast, the other losses' run in the slow tier.
TRANSFORM_PARAMS = OTHER_PARAMS[:2] + [slow(p) for p in OTHER_PARAMS[2:]]


def random_batch(rng, batch, pattern, dim=4, dtype=np.float64):
  x = rng.normal(size=(batch, dim)).astype(dtype)
  return x, labels_with_pattern(rng, batch, pattern)


def call(name, x, labels, **kw):
  return LOSSES[name][0](x, labels, **kw)


# ----------------------------------------------------------------------------
# Values against the references.
# ----------------------------------------------------------------------------

SHAPE_CASES = [
    pytest.param(b, p, id=f"B{b}-{p}")
    for b, p in [
        (5, "mixed"),
        (5, "pk"),  # K = 1: singletons, shuffled
        (5, "single_class"),
        (8, "pk"),
        (8, "mixed"),
        (8, "singletons"),
        (12, "pk"),
        (12, "mixed"),
        (12, "single_class"),
    ]
]
# Fast tier: one no-negative (B5 single class), one mixed (B8) and one P×K (B12)
# batch for every configuration; the sweep's other shapes run in the slow tier.
FAST_SHAPES = ("B5-single_class", "B8-mixed", "B12-pk")
SHAPE_CASES = [p if p.id in FAST_SHAPES else slow(p) for p in SHAPE_CASES]


def check_against_reference(name, kw, x, labels):
  got = call(name, jnp.asarray(x), jnp.asarray(labels), **kw)
  assert got.shape == labels.shape and got.dtype == jnp.float64
  want = LOSSES[name][1](x, labels, **kw)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
  # Anchors without a positive or a negative get exactly 0, and those are
  # exactly the anchors valid_anchor_mask rules out.
  valid = np_valid(labels)
  np.testing.assert_array_equal(np.asarray(valid_anchor_mask(labels)), valid)
  assert np.all(np.asarray(got)[~valid] == 0.0)


@pytest.mark.parametrize("batch,pattern", SHAPE_CASES)
@pytest.mark.parametrize("name,kw", CONFIG_PARAMS)
def test_matches_reference_float64(x64, rng, name, kw, batch, pattern):
  check_against_reference(name, kw, *random_batch(rng, batch, pattern))


@pytest.mark.parametrize("name,kw", DEFAULTS_FAST)
def test_tiny_batches(x64, rng, name, kw):
  # One row, two singletons, one pair of a class: no anchor is ever valid.
  for batch, pattern in [(1, "mixed"), (2, "singletons"), (2, "pk")]:
    x, labels = random_batch(rng, batch, pattern)
    assert not np.any(np_valid(labels))
    check_against_reference(name, kw, x, labels)


@pytest.mark.parametrize("name,kw", DEFAULT_PARAMS)
def test_matches_reference_float32(rng, name, kw):
  x, labels = random_batch(rng, 8, "mixed", dtype=np.float32)
  labels[:4] = [7, 7, 8, 8]  # make sure some anchors are valid
  got = call(name, jnp.asarray(x), jnp.asarray(labels), **kw)
  assert got.dtype == jnp.float32
  want = LOSSES[name][1](x.astype(np.float64), labels, **kw)
  assert np.any(want > 0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_nonzero_only_differs_from_all_triplets(x64, rng):
  # Sanity check that the parametrised cases above exercise inactive triplets:
  # averaging over active triplets only gives a larger value than over all.
  x, labels = random_batch(rng, 8, "pk")
  active = np.asarray(batch_all_triplet_loss(x, labels, nonzero_only=True))
  every = np.asarray(batch_all_triplet_loss(x, labels, nonzero_only=False))
  assert np.all(active >= every - 1e-15)
  assert np.any(active > every + 1e-6)


# ----------------------------------------------------------------------------
# Hand-made cases.
#
# Unit vectors built from 3-4-5 triangles (rows are rescaled to show that the
# losses normalise them):
#   u0 = (1, 0)   u1 = (0.8, 0.6)   u2 = (0, 1)   u3 = (-0.6, 0.8)   u4 = (0.6, -0.8)
# cosines:  s01 = 0.8, s02 = 0, s03 = -0.6, s04 = 0.6, s12 = 0.6, s13 = 0,
#           s14 = 0, s23 = 0.8, s24 = -0.8, s34 = -1
# squared distances 2 − 2s:
#           d01² = 0.4, d02² = 2, d03² = 3.2, d04² = 0.8, d12² = 0.8, d13² = 2,
#           d14² = 2, d23² = 0.4, d24² = 3.6, d34² = 4
# Labels [0, 1, 1, 0, 2]: positive pairs (0, 3) and (1, 2); u4 is a singleton.
# ----------------------------------------------------------------------------

HAND_X = np.array([[2.0, 0.0], [4.0, 3.0], [0.0, 0.5], [-3.0, 4.0], [0.3, -0.4]])
HAND_Y = np.array([0, 1, 1, 0, 2], np.int32)
R = math.sqrt  # for readability of the expected values


def test_batch_hard_by_hand(x64):
  # squared euclidean, m = 0.2:
  #   a0: max_p {d03² = 3.2} − min_n {d01² = 0.4, d02² = 2, d04² = 0.8} + 0.2 = 3.0
  #   a1: max_p {d12² = 0.8} − min_n {d01² = 0.4, d13² = 2, d14² = 2} + 0.2 = 0.6
  #   a2: max_p {d12² = 0.8} − min_n {d02² = 2, d23² = 0.4, d24² = 3.6} + 0.2 = 0.6
  #   a3: max_p {d03² = 3.2} − min_n {d13² = 2, d23² = 0.4, d34² = 4} + 0.2 = 3.0
  #   a4: no positive → 0
  got = batch_hard_triplet_loss(HAND_X, HAND_Y, margin=0.2, metric="squared_euclidean")
  np.testing.assert_allclose(got, [3.0, 0.6, 0.6, 3.0, 0.0], rtol=1e-12, atol=1e-12)
  # euclidean: the same hardest pairs, on the square roots.
  got = batch_hard_triplet_loss(HAND_X, HAND_Y)  # m = 0.2
  far, near = R(3.2) - R(0.4) + 0.2, R(0.8) - R(0.4) + 0.2  # ≈ 1.357, 0.262
  np.testing.assert_allclose(got, [far, near, near, far, 0.0], rtol=1e-12, atol=1e-12)
  # cosine (d = 1 − s = d²/2), m = 0.1: 1.6 − 0.2 + 0.1 = 1.5, 0.4 − 0.2 + 0.1 = 0.3
  got = batch_hard_triplet_loss(HAND_X, HAND_Y, margin=0.1, metric="cosine")
  np.testing.assert_allclose(got, [1.5, 0.3, 0.3, 1.5, 0.0], rtol=1e-12, atol=1e-12)
  # Labels [0, 0, 1, 1] on u0..u3, squared euclidean, m = 0.5: only a1 and a2 are active
  #   a0: 0.4 − min(2, 3.2) + 0.5 < 0    a1: 0.4 − min(0.8, 2) + 0.5 = 0.1
  #   a2: 0.4 − min(2, 0.8) + 0.5 = 0.1  a3: 0.4 − min(3.2, 2) + 0.5 < 0
  got = batch_hard_triplet_loss(
      HAND_X[:4], jnp.array([0, 0, 1, 1]), margin=0.5, metric="squared_euclidean"
  )
  np.testing.assert_allclose(got, [0.0, 0.1, 0.1, 0.0], rtol=1e-12, atol=1e-12)


def test_batch_all_by_hand(x64):
  # squared euclidean, m = 0.2; hinges d_ap² − d_an² + 0.2 per (p, n):
  #   a0: p = 3 (3.2); n = 1, 2, 4 (0.4, 2, 0.8) → 3.0, 1.4, 2.6   active 3/3
  #   a1: p = 2 (0.8); n = 0, 3, 4 (0.4, 2, 2)   → 0.6, 0, 0       active 1/3
  #   a2: p = 1 (0.8); n = 0, 3, 4 (2, 0.4, 3.6) → 0, 0.6, 0       active 1/3
  #   a3: p = 0 (3.2); n = 1, 2, 4 (2, 0.4, 4)   → 1.4, 3.0, 0     active 2/3
  kw = dict(margin=0.2, metric="squared_euclidean")
  got = batch_all_triplet_loss(HAND_X, HAND_Y, nonzero_only=True, **kw)
  np.testing.assert_allclose(got, [7 / 3, 0.6, 0.6, 2.2, 0.0], rtol=1e-12, atol=1e-12)
  got = batch_all_triplet_loss(HAND_X, HAND_Y, nonzero_only=False, **kw)
  np.testing.assert_allclose(
      got, [7 / 3, 0.2, 0.2, 4.4 / 3, 0.0], rtol=1e-12, atol=1e-12
  )


def test_contrastive_by_hand(x64):
  # pos_margin 0, neg_margin 1: ½ mean_p d_ap² + ½ mean_n [1 − d_an]²₊
  #   a0: ½·3.2 + ½·((1 − √0.4)² + 0 + (1 − √0.8)²)/3   (d02 = √2 > 1)
  #   a1: ½·0.8 + ½·(1 − √0.4)²/3                       (d13 = d14 = √2)
  #   a2: ½·0.8 + ½·(1 − √0.4)²/3                       (d02 = √2, d24 = √3.6)
  #   a3: ½·3.2 + ½·(1 − √0.4)²/3                       (d13 = √2, d34 = 2)
  #   a4: no positive → 0
  near = (1 - R(0.4)) ** 2
  want = [
      1.6 + 0.5 * (near + (1 - R(0.8)) ** 2) / 3,
      0.4 + 0.5 * near / 3,
      0.4 + 0.5 * near / 3,
      1.6 + 0.5 * near / 3,
      0.0,
  ]
  got = contrastive_loss(HAND_X, HAND_Y)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  # pos_margin 1, neg_margin 1.5: a1/a2's positive (√0.8 < 1) is not pulled.
  #   a0: ½(√3.2 − 1)² + ½((1.5 − √0.4)² + (1.5 − √2)² + (1.5 − √0.8)²)/3
  #   a1: 0 + ½((1.5 − √0.4)² + 2(1.5 − √2)²)/3
  #   a2: 0 + ½((1.5 − √2)² + (1.5 − √0.4)² + 0)/3
  #   a3: ½(√3.2 − 1)² + ½((1.5 − √2)² + (1.5 − √0.4)² + 0)/3
  g = lambda d: (1.5 - d) ** 2
  want = [
      0.5 * (R(3.2) - 1) ** 2 + 0.5 * (g(R(0.4)) + g(R(2)) + g(R(0.8))) / 3,
      0.5 * (g(R(0.4)) + 2 * g(R(2))) / 3,
      0.5 * (g(R(2)) + g(R(0.4))) / 3,
      0.5 * (R(3.2) - 1) ** 2 + 0.5 * (g(R(2)) + g(R(0.4))) / 3,
      0.0,
  ]
  got = contrastive_loss(HAND_X, HAND_Y, pos_margin=1.0, neg_margin=1.5)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_npair_by_hand(x64):
  # f0 = (1, 0), f1 = (2, 0), f2 = (0, 1), labels [0, 0, 1]; raw inner products
  # f0·f1 = 2, f0·f2 = f1·f2 = 0:
  #   a0, a1: log(1 + e^{γ(0 − 2)});  a2: no positive → 0.
  # Normalised: cos01 = 1, so log(1 + e^{γ(0 − 1)}).
  x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
  y = np.array([0, 0, 1], np.int32)
  v = math.log1p(math.exp(-2.0))
  np.testing.assert_allclose(npair_loss(x, y), [v, v, 0.0], rtol=1e-12)
  v = math.log1p(math.exp(-3.0 * 2.0))
  np.testing.assert_allclose(npair_loss(x, y, scale=3.0), [v, v, 0.0], rtol=1e-12)
  v = math.log1p(math.exp(-1.0))
  np.testing.assert_allclose(npair_loss(x, y, normalize=True), [v, v, 0.0], rtol=1e-12)


def test_multi_similarity_mining_by_hand(x64):
  # On u0..u4 with labels [0, 1, 1, 0, 2] and ε = 0.1, λ = 0.5:
  #   a0: s_p = {s03 = −0.6}; s_n = {s01 = 0.8, s02 = 0, s04 = 0.6}
  #       negatives kept if s + 0.1 > −0.6: all; the positive kept (−0.7 < 0.8).
  #   a1: s_p = {s12 = 0.6};  s_n = {s01 = 0.8, s13 = 0, s14 = 0}
  #       negatives kept if s + 0.1 > 0.6: only u0 (0.8); the positive (0.5 < 0.8) kept.
  #   a4: no positive → 0.
  a, b = 2.0, 50.0
  pos_term = lambda s: math.log1p(math.exp(-a * (s - 0.5))) / a
  neg_term = lambda *ss: math.log1p(sum(math.exp(b * (s - 0.5)) for s in ss)) / b
  got = np.asarray(multi_similarity_loss(HAND_X, HAND_Y))
  np.testing.assert_allclose(got[0], pos_term(-0.6) + neg_term(0.8, 0.0, 0.6), rtol=1e-12)
  np.testing.assert_allclose(got[1], pos_term(0.6) + neg_term(0.8), rtol=1e-12)
  assert got[4] == 0.0
  # Labels [0, 0, 1] on u0, u1, u2: a0's positive s01 = 0.8, its only negative
  # s02 = 0 has 0 + 0.1 < 0.8, so it is mined away and the anchor gets 0.
  got = np.asarray(multi_similarity_loss(HAND_X[:3], jnp.array([0, 0, 1])))
  assert got[0] == 0.0
  # Without mining every pair counts.
  got = np.asarray(multi_similarity_loss(HAND_X[:3], jnp.array([0, 0, 1]), epsilon=None))
  np.testing.assert_allclose(got[0], pos_term(0.8) + neg_term(0.0), rtol=1e-12)


def test_lifted_by_hand(x64):
  # Labels [0, 0, 1] on u0, u1, u2, m = 1: the one positive pair (0, 1) has
  # D01 = √0.4; N_0 = N_1 = {2} with D02 = √2, D12 = √0.8:
  #   J01 = log(e^{1 − √2} + e^{1 − √0.8}) + √0.4;  L0 = L1 = ½ J01²;  L2 = 0.
  j01 = math.log(math.exp(1 - R(2)) + math.exp(1 - R(0.8))) + R(0.4)
  got = lifted_structure_loss(HAND_X[:3], jnp.array([0, 0, 1]))
  np.testing.assert_allclose(got, [0.5 * j01**2, 0.5 * j01**2, 0.0], rtol=1e-12)


def test_lifted_mean_is_song_average_on_pk_batches(x64, rng):
  # Song et al.: 1/(2|P|) Σ over unordered positive pairs of [J_ij]₊².
  labels = rng.permutation(np.repeat(np.arange(2), 4)).astype(np.int32)  # P = 2, K = 4
  x = rng.normal(size=(8, 4))
  u = np_unit(x)
  big_d = lambda i, j: float(np.linalg.norm(u[i] - u[j]))
  pairs = [(i, j) for i in range(8) for j in range(i + 1, 8) if labels[i] == labels[j]]
  total = 0.0
  for i, j in pairs:
    inner = sum(math.exp(1.0 - big_d(i, k)) for k in range(8) if labels[k] != labels[i])
    inner += sum(math.exp(1.0 - big_d(j, l)) for l in range(8) if labels[l] != labels[j])
    total += max(math.log(inner) + big_d(i, j), 0.0) ** 2
  song = total / (2 * len(pairs))
  got = float(jnp.mean(lifted_structure_loss(x, labels)))
  np.testing.assert_allclose(got, song, rtol=1e-12)


def test_batch_hard_ties_share_gradient(x64):
  # Anchor u0 = (1, 0) with positive (0.6, 0.8) and two negatives mirrored in
  # the x axis, (0.8, ±0.6): both are hardest (d² = 0.4 exactly). Sharing the
  # gradient equally makes their gradients mirror images of each other.
  x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.8, -0.6]])
  y = jnp.array([0, 0, 1, 1])
  # a0: √0.8 − √0.4 + 0.2 > 0, so the hinge is active.
  np.testing.assert_allclose(batch_hard_triplet_loss(x, y)[0], R(0.8) - R(0.4) + 0.2)
  g = np.asarray(jax.grad(lambda x: batch_hard_triplet_loss(x, y)[0])(x))
  assert np.all(np.abs(g[2]) > 1e-3)
  np.testing.assert_allclose(g[3], g[2] * np.array([1.0, -1.0]), rtol=1e-12)


# ----------------------------------------------------------------------------
# Gradients.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", CONFIGS_DEFAULTS_FAST)
def test_check_grads(x64, name, kw):
  rng = np.random.default_rng(1)
  x, labels = random_batch(rng, 8, "mixed")
  assert 0 < np.sum(np_valid(labels)) < 8  # groups and singletons
  # A generic point: all pairwise similarities distinct (no ties, so the
  # batch-hard max/min, the hinges and the mining are locally constant).
  s = np_unit(x) @ np_unit(x).T
  off = s[np.triu_indices(8, 1)]
  assert np.min(np.diff(np.sort(off))) > 1e-4
  f = lambda x: call(name, x, labels, **kw)
  check_grads(f, (jnp.asarray(x),), order=1, modes=("rev",), eps=1e-6)


@pytest.mark.parametrize("name,kw", CONFIGS_DEFAULTS_FAST)
def test_no_valid_anchor_gives_zero_loss_and_gradient(x64, rng, name, kw):
  for pattern in ("singletons", "single_class"):
    x, labels = random_batch(rng, 8, pattern)
    f = lambda x: jnp.sum(call(name, x, labels, **kw))
    value, grad = jax.value_and_grad(f)(jnp.asarray(x))
    assert value == 0.0, pattern
    np.testing.assert_array_equal(np.asarray(grad), np.zeros_like(x), err_msg=pattern)


@pytest.mark.parametrize("name,kw", DEFAULTS_FAST)
def test_invalid_anchors_have_zero_jacobian_rows(x64, name, kw):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(8, 4))
  labels = np.array([0, 0, 1, 1, 1, 4, 2, 3], np.int32)  # anchors 5, 6, 7: singletons
  jac = np.asarray(jax.jacrev(lambda x: call(name, x, labels, **kw))(jnp.asarray(x)))
  assert np.all(np.isfinite(jac))
  np.testing.assert_array_equal(jac[5:], 0.0)
  assert np.any(jac[:5] != 0.0)
  if name in ("npair", "lifted"):  # smooth in every negative: the singletons count
    assert np.all(np.any(jac[:5, 5:] != 0.0, axis=(0, 2)))


# ----------------------------------------------------------------------------
# Degenerate embeddings: duplicates and a zero row.
# ----------------------------------------------------------------------------


def degenerate_batch(rng, dtype):
  x = rng.normal(size=(8, 4))
  x[1] = x[0]  # duplicate positives (distance 0)
  x[3] = x[2]  # duplicate negatives (distance 0)
  x[4] = 3.0 * x[5]  # same direction, different norm, different label
  labels = np.array([0, 0, 1, 2, 1, 2, 0, 3], np.int32)
  with_zero = x.copy()
  with_zero[6] = 0.0  # a zero vector
  return x.astype(dtype), with_zero.astype(dtype), labels


@pytest.mark.parametrize(
    "name,kw,dtype",
    # Fast tier: the defaults in float32 (where a zero distance's rounding shows);
    # the other configurations and float64 run in the slow tier.
    [pytest.param(*p.values, np.float32, id=p.id + "-f32", marks=p.marks)
     for p in DEFAULTS_FAST]
    + [pytest.param(*p.values, np.float64, id=p.id + "-f64", marks=pytest.mark.slow)
       for p in DEFAULT_PARAMS],
)
def test_degenerate_embeddings_are_finite(name, kw, dtype):
  with jax.enable_x64(dtype == np.float64):
    x, with_zero, labels = degenerate_batch(np.random.default_rng(3), dtype)
    f = lambda x: call(name, x, labels, **kw)
    for batch in (x, with_zero):
      value, grad = jax.value_and_grad(lambda x: jnp.sum(f(x)))(jnp.asarray(batch))
      assert np.isfinite(value) and np.all(np.isfinite(np.asarray(grad)))
      assert np.all(np.isfinite(np.asarray(f(jnp.asarray(batch)))))
    # Without the zero row (whose distances are a convention) the values still
    # match the reference, up to the √(rounding) of a zero distance: distances
    # come from 2 − 2s, so identical rows can be √(2 eps) apart.
    want = LOSSES[name][1](x.astype(np.float64), labels, **kw)
    tol = 2e-3 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), want, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------
# Transformations.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", TRANSFORM_PARAMS)
def test_jit_matches_eager(x64, rng, name, kw):
  x, labels = random_batch(rng, 8, "mixed")
  f = functools.partial(LOSSES[name][0], **kw)
  np.testing.assert_allclose(
      np.asarray(jax.jit(f)(x, labels)), np.asarray(f(x, labels)), rtol=1e-12, atol=1e-14
  )
  g = jax.grad(lambda x: jnp.sum(f(x, labels)))
  np.testing.assert_allclose(
      np.asarray(jax.jit(g)(x)), np.asarray(g(x)), rtol=1e-10, atol=1e-12
  )


@pytest.mark.parametrize("name,kw", TRANSFORM_PARAMS)
def test_vmap_matches_loop(x64, rng, name, kw):
  batches = [random_batch(rng, 8, p) for p in ("pk", "mixed", "singletons", "mixed")]
  xs = np.stack([b[0] for b in batches])
  ys = np.stack([b[1] for b in batches])
  f = functools.partial(LOSSES[name][0], **kw)
  got = np.asarray(jax.vmap(f)(xs, ys))
  want = np.stack([np.asarray(f(x, y)) for x, y in zip(xs, ys)])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
  # Also under jit, with the embeddings batched but one shared label vector.
  got = np.asarray(jax.jit(jax.vmap(f, in_axes=(0, None)))(xs, ys[0]))
  want = np.stack([np.asarray(f(x, ys[0])) for x in xs])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------

ALL_NAMES = list(LOSSES)
GOOD_X = np.ones((4, 3), np.float32) + np.eye(4, 3, dtype=np.float32)
GOOD_Y = np.array([0, 0, 1, 1], np.int32)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_embeddings_and_labels(name):
  f = LOSSES[name][0]
  f(GOOD_X, GOOD_Y)  # the good inputs themselves are accepted
  with pytest.raises(TypeError):
    f(GOOD_X, GOOD_Y.astype(np.float32))  # float labels
  with pytest.raises(TypeError):
    f(GOOD_X.astype(np.int32), GOOD_Y)  # integer embeddings
  with pytest.raises(ValueError):
    f(GOOD_X[0], GOOD_Y)  # rank-1 embeddings
  with pytest.raises(ValueError):
    f(GOOD_X[None], GOOD_Y)  # rank-3 embeddings
  with pytest.raises(ValueError):
    f(GOOD_X, GOOD_Y[:3])  # labels shorter than the batch
  with pytest.raises(ValueError):
    f(GOOD_X, GOOD_Y[:, None])  # labels [B, 1]
  with pytest.raises(ValueError):
    f(GOOD_X[:0], GOOD_Y[:0])  # empty batch


@pytest.mark.parametrize("name", ["batch_hard", "batch_all"])
def test_bad_metric_and_margin(name):
  f = LOSSES[name][0]
  for metric in ("l2", "Euclidean", "cos", ""):
    with pytest.raises(ValueError, match="metric"):
      f(GOOD_X, GOOD_Y, metric=metric)
  for margin in (math.nan, math.inf):
    with pytest.raises(ValueError, match="margin"):
      f(GOOD_X, GOOD_Y, margin=margin)


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("batch_hard", dict(margin=-0.1), "margin must be >= 0"),
        ("batch_all", dict(margin=-0.1), "margin must be >= 0"),
        ("contrastive", dict(pos_margin=-0.1), "pos_margin"),
        ("contrastive", dict(neg_margin=math.nan), "neg_margin"),
        ("npair", dict(scale=-1.0), "scale"),
        ("npair", dict(scale=0.0), "scale"),
        ("lifted", dict(margin=math.inf), "margin"),
        ("multi_similarity", dict(alpha=-2.0), "alpha"),
        ("multi_similarity", dict(alpha=0.0), "alpha"),
        ("multi_similarity", dict(beta=-50.0), "beta"),
        ("multi_similarity", dict(beta=math.nan), "beta"),
        ("multi_similarity", dict(base=math.inf), "base"),
        ("multi_similarity", dict(epsilon=math.nan), "epsilon"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_hyperparameters(name, kw, match):
  with pytest.raises(ValueError, match=match):
    LOSSES[name][0](GOOD_X, GOOD_Y, **kw)
