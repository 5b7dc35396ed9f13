"""Cross-framework conformance: every loss against pytorch-metric-learning, PyTorch or Keras 3.

The cases live in experiments/conformance_cases.py so that the CLI
(experiments/conformance.py) prints exactly what these tests assert.
"""

import math
import os
import subprocess
import sys
import json

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402

import circle_jax as cj  # noqa: E402
from experiments import conformance_cases as cc  # noqa: E402

CASES = cc.all_cases()
# One problem per label pattern (P×K groups; mixed groups and singletons; no positive
# anywhere; no negative anywhere), all with B = 12 so that each case compiles once.
PROBLEMS = [cc.make_inputs(k, batch=12, pattern=p) for k, p in enumerate(cc.PATTERNS)]


def test_case_names_are_unique():
  names = [c.name for c in CASES]
  assert len(names) == len(set(names))


def test_every_loss_has_an_external_reference():
  covered = {name.strip() for c in CASES for name in c.loss.split("/")}
  assert covered >= set(cj.losses.__all__) - {
      "circle_exponents", "cosine_similarity_matrix", "masked_logsumexp", "pair_masks",
      "valid_anchor_mask", "circle_loss",  # building blocks, covered through the losses
  }
  # circle_loss itself is compared inside the closed-form case (values on the similarity matrix).
  assert any(c.name == "pml/CircleLoss/closed-form-grads" for c in CASES)


# Slow tier: the cases slowest to compile (Keras's float32 case: a dtype cross;
# pytorch-metric-learning's stays fast). Every framework keeps cases in the fast
# tier (pytorch-metric-learning's Circle loss and baselines, Keras 3's circle, the
# hand-written fast-reid and PyTorch cross_entropy references), and the
# NPairsLoss case runs fast in test_npair_full_batch_is_not_pmls_subset.
SLOW_CASES = ("pml/NPairsLoss", "pml/CosFaceLoss/unified", "keras/circle/class-level",
              "keras/circle/float32")


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c.name in SLOW_CASES else c for c in CASES],
    ids=lambda c: c.name)
def test_conforms(case):
  results = [cc.compare(case, problem) for problem in PROBLEMS]
  for r in results:
    assert r.passed, (r.inputs, r.value_rel, r.grad_rel, r.tolerance)
  # The problems exercise the loss: some values and gradients are not zero.
  assert max(r.value_scale for r in results) > 0
  assert max(r.grad_scale for r in results) > 0


def _case(name):
  return next(c for c in CASES if c.name == name)


def _replace(case, **changes):
  import dataclasses

  return dataclasses.replace(case, **changes)


def test_a_wrong_mapping_fails():
  """The comparison can fail: a margin off by 1e-3, or ArcFace's margin given in radians."""
  problem = PROBLEMS[0]
  off = _replace(_case("pml/CircleLoss/fine-grained"),
                 ours=cc._pairwise_ours(cj.pairwise_circle_loss, gamma=80.0, margin=0.401))
  assert not cc.compare(off, problem).passed

  def arcface_radians(x, y, w):
    module = pml_losses.ArcFaceLoss(num_classes=w.shape[0], embedding_size=w.shape[1], margin=0.5,
                                    scale=64, reducer=pml_reducers.DoNothingReducer())
    return cc._per_element(cc._with_pml_weights(module, w)(x, y), x.shape[0], x)

  wrong = _replace(_case("pml/ArcFaceLoss"),
                   theirs=lambda i, d: cc.run_torch(arcface_radians, i, d, class_level=True))
  assert not cc.compare(wrong, problem).passed


def test_keras_differentiates_through_alpha():
  """Same values; our default (stop-gradient α) gradient is not Keras's, by design."""
  keras_case = _case("keras/circle/fine-grained")
  default = _replace(keras_case, ours=cc._pairwise_ours(cj.pairwise_circle_loss))
  result = cc.compare(default, PROBLEMS[0])
  assert result.value_rel <= cc.TOLERANCE["float64"]
  assert result.grad_rel > 1e-2


def test_pml_softplus_linearises_above_20():
  """PML's raw values differ from softplus by log1p(e^−t) exactly where t > 20."""
  problem = PROBLEMS[1]  # mixed: losses on both sides of 20
  ours, _ = cc._pairwise_ours(cj.pairwise_circle_loss, gamma=256.0, margin=0.25)(problem, "float64")
  x = torch.tensor(problem.embeddings)
  raw = pml_losses.CircleLoss(m=0.25, gamma=256, reducer=pml_reducers.DoNothingReducer())(
      x, torch.tensor(problem.labels))
  raw = cc._per_element(raw, len(x), x).numpy()
  above = ours > 20
  assert above.any() and (~above & (ours > 0)).any()
  np.testing.assert_allclose(raw[~above], ours[~above], rtol=1e-13)
  # Above the cut-off PML returns t, ours t + log1p(e^−t): visible near 20, rounding beyond.
  np.testing.assert_allclose(ours[above] - raw[above], np.log1p(np.exp(-ours[above])), atol=1e-12)
  assert np.max(ours[above] - raw[above]) > 1e-10


def test_pml_default_reducer_is_avg_nonzero():
  problem = PROBLEMS[1]
  ours, _ = cc._pairwise_ours(cj.pairwise_circle_loss)(problem, "float64")
  reduced = pml_losses.CircleLoss()(torch.tensor(problem.embeddings), torch.tensor(problem.labels))
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(cc.avg_nonzero(jnp.asarray(ours))), reduced.item(), rtol=1e-12)


def test_multi_similarity_one_sided_terms_are_dropped():
  """A single-class batch: PML keeps the positive term, we give 0 (no negative)."""
  problem = cc.make_inputs(0, batch=6, pattern="single_class")
  ours, _ = cc._pairwise_ours(cj.multi_similarity_loss, epsilon=None)(problem, "float64")
  theirs = pml_losses.MultiSimilarityLoss(reducer=pml_reducers.DoNothingReducer())(
      torch.tensor(problem.embeddings), torch.tensor(problem.labels))
  assert np.all(ours == 0)
  assert np.all(cc._per_element(theirs, 6, torch.zeros(1, dtype=torch.float64)).numpy() > 0)


def test_npair_full_batch_is_not_pmls_subset():
  """With three samples per class our anchors see more negatives than PML's pairs."""
  problem = cc.make_inputs(0, batch=9, pattern="pk")
  case = _case("pml/NPairsLoss")
  full = _replace(case, ours=cc._pairwise_ours(cj.npair_loss, normalize=True))
  assert cc.compare(case, problem).passed
  assert not cc.compare(full, problem).passed


# Keras 3's own unit tests (keras/src/losses/losses_test.py, CircleTest) pin these.
KERAS_LABELS = np.array([1, 1, 2, 2, 3])
KERAS_EMBEDDINGS = np.array([
    [0.70014004, -0.42008403, 0.14002801, 0.56011203],
    [0.17609018, 0.70436073, -0.52827054, 0.44022545],
    [-0.34050261, 0.25537696, -0.68100522, 0.59587957],
    [0.32163376, -0.75047877, 0.53605627, -0.21442251],
    [0.51261459, -0.34174306, 0.17087153, 0.76892189],
])
KERAS_REF_LABELS = np.array([1, 1, 2, 2, 3, 4])
KERAS_REF_EMBEDDINGS = np.array([
    [0.40824829, -0.54433105, 0.27216553, 0.68041382],
    [0.76376261, 0.10910895, -0.54554473, 0.32732684],
    [-0.74420841, 0.24806947, 0.49613894, -0.3721042],
    [0.52981294, -0.13245324, 0.79471941, -0.26490647],
    [0.54554473, -0.32732684, 0.10910895, 0.76376261],
    [-0.27216553, 0.68041382, 0.40824829, -0.54433105],
])


@pytest.mark.parametrize("gamma, margin, expected", [(80.0, 0.4, 188.3883), (256.0, 0.25, 652.7617)])
def test_keras_pinned_reduced_values(gamma, margin, expected):
  ours = cj.pairwise_circle_loss(KERAS_EMBEDDINGS, KERAS_LABELS, gamma=gamma, margin=margin)
  assert float(cc.avg_nonzero(ours)) == pytest.approx(expected, abs=1e-4)
  keras = cc._keras()
  assert float(keras.losses.Circle(gamma=gamma, margin=margin)(KERAS_LABELS, KERAS_EMBEDDINGS)) == (
      pytest.approx(expected, abs=1e-3))


def test_keras_pinned_per_anchor_values():
  with_ref = cj.pairwise_circle_loss(KERAS_EMBEDDINGS, KERAS_LABELS, gamma=80.0, margin=0.4,
                                     ref_embeddings=KERAS_REF_EMBEDDINGS, ref_labels=KERAS_REF_LABELS)
  np.testing.assert_allclose(with_ref, [61.5844, 94.3465, 276.9344, 90.9873, 48.8963], atol=1e-4)
  no_reduction = cj.pairwise_circle_loss(KERAS_REF_EMBEDDINGS, KERAS_REF_LABELS, gamma=80.0, margin=0.4)
  np.testing.assert_allclose(no_reduction, [82.9116, 36.7942, 92.4590, 52.6798, 0.0, 0.0], atol=1e-4)


class TestConventions:
  """Reductions and combinations of other frameworks, on hand-computed cases.

  γ = 80, m = 0.4. Row 0: s_p = 0.8, s_n = 0.3, so α_p = 0.6, l_p = −80·0.6·0.2 = −9.6 and
  α_n = 0.7, l_n = 80·0.7·(−0.1) = −5.6. Row 1: s_p = 0.5, s_n = 0.6: l_p = 7.2, l_n = 16.
  Row 2: s_p = 0.9 and no negative: l_p = −80·0.5·0.3 = −12.
  """

  sp = np.array([[0.8], [0.5], [0.9]])
  sn = np.array([[0.3], [0.6], [0.0]])
  sn_mask = np.array([[True], [True], [False]])
  circle = [math.log1p(math.exp(-15.2)), 23.2 + math.log1p(math.exp(-23.2)), 0.0]

  def test_exponents(self):
    lp, ln = cj.circle_exponents(self.sp, self.sn, margin=0.4, gamma=80.0)
    np.testing.assert_allclose(np.ravel(lp), [-9.6, 7.2, -12.0], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(ln)[:2], [-5.6, 16.0], rtol=1e-6)

  def test_circle_and_reductions(self):
    with jax.enable_x64(True):
      losses = cj.circle_loss(self.sp, self.sn, margin=0.4, gamma=80.0, sn_mask=self.sn_mask)
      np.testing.assert_allclose(losses, self.circle, rtol=1e-12)
      # pytorch-metric-learning and Keras 3: mean over non-zero losses.
      assert float(cc.avg_nonzero(losses)) == pytest.approx((self.circle[0] + self.circle[1]) / 2)
      # fast-reid and TF-Similarity: mean over the whole batch.
      assert float(cc.mean_over_batch(losses)) == pytest.approx(sum(self.circle) / 3)

  def test_tf_similarity_combination(self):
    softplus = lambda t: math.log1p(math.exp(-abs(t))) + max(t, 0.0)  # noqa: E731
    expected = [softplus(-9.6) + softplus(-5.6), softplus(7.2) + softplus(16.0), softplus(-12.0)]
    with jax.enable_x64(True):
      got = cc.tf_similarity_circle(self.sp, self.sn, margin=0.4, gamma=80.0, sn_mask=self.sn_mask)
      np.testing.assert_allclose(got, expected, rtol=1e-12)
      # Not Circle loss: log1p + log1p ≥ softplus of the sum, with a gap where both are large.
      assert np.all(np.asarray(got)[:2] > np.asarray(self.circle)[:2])


@pytest.mark.slow  # runs the CLI in a subprocess; its cases run in test_conforms
def test_conformance_cli_writes_its_table(tmp_path):
  env = dict(os.environ, KERAS_BACKEND="jax")
  done = subprocess.run(
      [sys.executable, "-m", "experiments.conformance", "--problems=1", "--only=pml/Cos",
       f"--out={tmp_path}"],
      capture_output=True, text=True, env=env, timeout=600,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads((tmp_path / "conformance.json").read_text())
  assert [r["name"] for r in rows] == ["pml/CosFaceLoss", "pml/CosFaceLoss/unified"]
  assert all(r["verdict"] == "pass" for r in rows)
  table = (tmp_path / "conformance.md").read_text()
  assert table in done.stdout and "| pytorch-metric-learning CosFaceLoss |" in table


def test_module_example_runs():
  import doctest

  assert doctest.testmod(cc, raise_on_error=True).attempted > 0
