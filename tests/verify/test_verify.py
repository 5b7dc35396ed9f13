"""circle_jax.verify on Circle loss: references, real implementations, defects, the command.

The references must be the library (default variants equal the circle_jax
functions to float64 rounding); the verifier must name the conventions of
pytorch-metric-learning, Keras 3, fast-reid and TF-Similarity, and report
implementations with one deliberate defect each as not matching, naming the
defect's axis.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj
from circle_jax import verify as cv
from circle_jax.verify import _verify

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference_and_library(spec, variant, library):
  """Max normwise relative error between the spec's reference and the library, values and grads."""
  worst = 0.0
  index = cv.Switches.of(spec.axes, variant).index
  with jax.enable_x64(True):
    for p in spec.problems():
      x, w = jnp.asarray(p.embeddings, jnp.float64), jnp.asarray(p.class_weights, jnp.float64)
      y = jnp.asarray(spec.labels(p))
      params = {k: jnp.float64(v) for k, v in p.hyperparameters.items()}
      v = jnp.asarray(p.cotangent)
      ours = _verify._values_and_grads(x, y, w, params, v, index, spec=spec)
      lib_values, vjp = jax.vjp(lambda x, w: library(x, y, w, p.hyperparameters), x, w)
      lib = (lib_values,) + vjp(v)
      for a, b in zip(ours, lib):
        a, b = np.asarray(a), np.asarray(b)
        scale = max(np.abs(b).max(), 1e-300)
        worst = max(worst, np.abs(a - b).max() / scale)
  return worst


@pytest.mark.parametrize("loss, axis_values, library", [
    ("pairwise_circle", {}, lambda x, y, w, hp: cj.pairwise_circle_loss(x, y, **hp)),
    ("pairwise_circle", {"alpha": "differentiated"},
     lambda x, y, w, hp: cj.pairwise_circle_loss(x, y, grad_through_alpha=True, **hp)),
    ("class_circle", {}, lambda x, y, w, hp: cj.class_circle_loss(x, w, y, **hp)),
    ("class_circle", {"alpha": "differentiated"},
     lambda x, y, w, hp: cj.class_circle_loss(x, w, y, grad_through_alpha=True, **hp)),
])
def test_reference_is_the_library(loss, axis_values, library):
  spec = cv.spec(loss)
  assert _reference_and_library(spec, spec.default.replace(**axis_values), library) < 1e-12


# --------------------------------------------------------------------------- implementations in torch


def _torch_circle(*, clamp=True, keep_self=False, swap=False, gamma_twice=False, nan_empty=False,
                  normalise=True, reduce=None, fill=None):
  """A pair-wise Circle loss in torch (the paper's form), with one switchable defect.

  ``fill=None`` masks with -inf and guards empty rows; ``fill=-99999999.`` is
  fast-reid's additive mask. ``nan_empty`` is a hand-written log-sum-exp that
  subtracts the row max: a row with nothing valid computes −inf − (−inf) = NaN.
  """
  def fn(x, y, *, margin, gamma):
    import torch
    import torch.nn.functional as F

    e = F.normalize(x, dim=1) if normalise else x
    s = e @ e.t()
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    pos = same if keep_self else same & ~eye
    neg = ~same
    g = gamma * gamma if gamma_twice else gamma
    dp, dn = (margin, 1 - margin) if swap else (1 - margin, margin)
    ap, an = 1 + margin - s.detach(), s.detach() + margin
    if clamp:
      ap, an = ap.clamp_min(0), an.clamp_min(0)
    lp, ln = -g * ap * (s - dp), g * an * (s - dn)
    if fill is not None:  # fast-reid
      loss = F.softplus(torch.logsumexp(lp + fill * (~pos), 1) + torch.logsumexp(ln + fill * (~neg), 1))
    else:
      lse_p = torch.logsumexp(lp.masked_fill(~pos, -torch.inf), 1)
      lse_n = torch.logsumexp(ln.masked_fill(~neg, -torch.inf), 1)
      ok = pos.any(1) & neg.any(1)
      t = lse_p + lse_n
      if nan_empty:
        def lse(logits, mask):
          logits = logits.masked_fill(~mask, -torch.inf)
          top = logits.max(1, keepdim=True).values
          return top[:, 0] + torch.log(torch.exp(logits - top).sum(1))

        loss = F.softplus(lse(lp, pos) + lse(ln, neg))
      else:
        loss = torch.where(ok, F.softplus(torch.where(ok, t, torch.zeros_like(t))), torch.zeros_like(t))
    return loss.mean() if reduce == "mean" else loss

  return fn


def _example(name):
  from circle_jax.verify.__main__ import load_callable

  return load_callable(os.path.join(REPO, "docs", "verify_examples", f"{name}.py:circle_loss"))


def _guide_block(command_fragment):
  """The printed report that follows the guide's command containing the fragment.

  The guide is docs/guides/agreement.md ("Is *your* loss right?").
  """
  with open(os.path.join(REPO, "docs", "guides", "agreement.md")) as f:
    text = f.read()
  after = text[text.index(command_fragment):]
  return after.split("```")[2]


def _stable_lines(report_text):
  """The lines that must not drift: the verdict, conventions, undetermined axes, diagnosis."""
  keep = ("MATCH", "NO MATCH", "  the convention of", "  not told apart", "  diagnosis", "  closest")
  return [line for line in report_text.splitlines() if line.startswith(keep)]


@pytest.fixture(scope="module")
def pml_report():
  return cv.verify(_example("pml_circle"), "pairwise_circle", "torch")


def test_names_pytorch_metric_learning(pml_report):
  r = pml_report
  assert r.ok and r.output == "scalar"
  assert "pytorch-metric-learning CircleLoss" in r.conventions
  assert {v["alpha"] for v in r.matches} == {"detached"}
  assert {v["softplus"] for v in r.matches} == {"cutoff20"}
  assert {v["normalise"] for v in r.matches} == {"inside"}
  # Over non-zero losses; for Circle, only anchors without a positive or a
  # negative have loss 0, so the mean over valid anchors is the same thing.
  assert {v["reduction"] for v in r.matches} == {"mean_nonzero", "mean_valid"}
  assert "reduction" in r.undetermined
  assert r.value_error < 1e-4 and r.grad_error < 1e-4
  # PML normalises with x / max(‖x‖, 1e-12): a 1e12-scale gradient at zero.
  assert any("all-zero embedding" in n for n in r.notes)
  text = str(r)
  assert text.splitlines()[2].startswith("MATCH: alpha=detached")
  assert "the convention of: pytorch-metric-learning CircleLoss" in text
  assert _stable_lines(text) == _stable_lines(_guide_block("pml_circle.py:circle_loss"))


@pytest.mark.slow  # Keras conformance stays fast in tests/experiments/test_conformance.py
def test_names_keras(monkeypatch):
  monkeypatch.setenv("KERAS_BACKEND", "jax")
  import keras

  if keras.backend.backend() != "jax":
    pytest.skip("keras was imported earlier with another backend")

  r = cv.verify(_example("keras_circle"), "pairwise_circle", "jax")
  assert r.ok, str(r)
  assert _stable_lines(str(r)) == _stable_lines(_guide_block("keras_circle.py:circle_loss"))
  assert "Keras 3 keras.losses.Circle" in r.conventions
  assert {(v["alpha"], v["normalise"], v["clip"]) for v in r.matches} == {
      ("differentiated", "none", "s<=1")}


def test_names_fast_reid():
  r = cv.verify(_torch_circle(fill=-99999999.0, reduce="mean"), "pairwise_circle", "torch")
  assert r.ok, str(r)
  assert "fast-reid pairwise_circleloss" in r.conventions
  assert {v["reduction"] for v in r.matches} == {"mean"}


def test_names_fast_reid_circle_softmax():
  def fn(x, y, w, *, margin, gamma):
    import torch
    import torch.nn.functional as F

    cos = F.normalize(x, dim=1) @ F.normalize(w, dim=1).t()
    alpha_p = torch.relu(1 + margin - cos.detach())
    alpha_n = torch.relu(cos.detach() + margin)
    target = F.one_hot(y, w.shape[0]).bool()
    logits = torch.where(target, alpha_p * (cos - (1 - margin)), alpha_n * (cos - margin)) * gamma
    return F.cross_entropy(logits, y)

  r = cv.verify(fn, "class_circle", "torch")
  assert r.ok, str(r)
  assert "fast-reid CircleSoftmax" in r.conventions


@pytest.mark.slow  # imports TensorFlow
def test_names_tf_similarity_in_tensorflow():
  def fn(x, y, *, margin, gamma):
    import tensorflow as tf

    s = tf.minimum(tf.matmul(x, x, transpose_b=True), 1.0)
    same = tf.equal(y[:, None], y[None, :])
    pos = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(y)[0], dtype=tf.bool)))
    neg = tf.logical_not(same)
    lp = -gamma * tf.nn.relu(1 + margin - s) * (s - (1 - margin))
    ln = gamma * tf.nn.relu(s + margin) * (s - margin)
    # log(1 + Σ_valid e^l) for each set apart, as the log-sum-exp of [0, l]
    # (the "+1 offset"); masked entries are −inf.
    def log1p_sum_exp(logits, mask):
      zero = tf.zeros_like(logits[:, :1])
      return tf.reduce_logsumexp(tf.concat([zero, tf.where(mask, logits, -np.inf)], 1), 1)

    return tf.reduce_mean(log1p_sum_exp(lp, pos) + log1p_sum_exp(ln, neg))

  r = cv.verify(fn, "pairwise_circle", "tensorflow")
  assert r.ok, str(r)
  assert "TF-Similarity CircleLoss" in r.conventions


def test_numpy_values_only():
  def fn(x, y, *, margin, gamma):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    e = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    s = e @ e.T
    same = y[:, None] == y[None, :]
    pos, neg = same & ~np.eye(len(y), dtype=bool), ~same
    lp = -gamma * np.maximum(1 + margin - s, 0) * (s - 1 + margin)
    ln = gamma * np.maximum(s + margin, 0) * (s - margin)
    out = np.zeros(len(y), x.dtype)
    for a in range(len(y)):
      if pos[a].any() and neg[a].any():
        t = np.logaddexp.reduce(lp[a][pos[a]]) + np.logaddexp.reduce(ln[a][neg[a]])
        out[a] = np.logaddexp(0, t)
    return out

  r = cv.verify(fn, "pairwise_circle", "numpy")
  assert r.ok and not r.gradients_checked, str(r)
  assert "values only" in str(r)
  # Without gradients, torch's Softplus cut-off (off by e^−t ≤ 2e-9 at t > 20)
  # is below the float64 tolerance relative to these problems' loss values.
  assert "exact" in {v["softplus"] for v in r.matches}
  assert {(v["alpha"], v["normalise"], v["reduction"]) for v in r.matches} == {
      ("detached", "inside", "none"), ("differentiated", "inside", "none")}


# Fast tier: a value defect (α unclamped) and a mask defect (self-pairs kept);
# the other defects run in the slow tier.
@pytest.mark.parametrize("defect, axis", [
    (dict(clamp=False), "alpha_clamp"),
    (dict(keep_self=True), "self_pairs"),
    pytest.param(dict(swap=True), "margins", marks=pytest.mark.slow),
    pytest.param(dict(gamma_twice=True), "gamma_applied", marks=pytest.mark.slow),
    pytest.param(dict(nan_empty=True), "empty_rows", marks=pytest.mark.slow),
])
def test_defects_are_named(defect, axis, tmp_path):
  r = cv.verify(_torch_circle(**defect), "pairwise_circle", "torch", save_dir=tmp_path)
  assert not r.ok
  assert axis in [d.axis for d in r.diagnosis], str(r)
  assert f"diagnosis: {axis}=" in str(r)
  # The first failing problem is saved and reproduces the implementation's output.
  saved = np.load(r.saved)
  problem = cv.load_problem(r.saved)
  assert problem.name in r.failing
  import torch

  theirs = _torch_circle(**defect)(torch.tensor(problem.embeddings), torch.tensor(problem.labels),
                                   **problem.hyperparameters)
  np.testing.assert_array_equal(theirs.detach().numpy(), saved["theirs_values"])


def test_the_correct_template_matches():
  """The defect tests' template without a defect is pytorch-metric-learning's
  convention per anchor, so each defect is the only difference."""
  r = cv.verify(_torch_circle(), "pairwise_circle", "torch")
  assert r.ok, str(r)
  assert "pytorch-metric-learning CircleLoss (DoNothingReducer)" in r.conventions


def test_bad_output_shape_and_arguments():
  with pytest.raises(ValueError, match="returned shape"):
    cv.verify(lambda x, y, **hp: jnp.zeros((3, 2)), "pairwise_circle")
  with pytest.raises(ValueError, match="not known to circle_jax.verify"):
    cv.verify(lambda x, y, **hp: x, "circle")
  with pytest.raises(ValueError, match="framework="):
    cv.verify(lambda x, y, **hp: x, "pairwise_circle", "mxnet")
  with pytest.raises(ValueError, match="no angular hyper-parameter"):
    cv.verify(lambda x, y, **hp: x, "pairwise_circle", margin_unit="degrees")


def test_hyperparameter_names_and_fixed_settings():
  def fn(x, y, *, m):  # γ fixed at 80 inside
    return cj.pairwise_circle_loss(x, y, margin=m, gamma=80.0)

  r = cv.verify(fn, "pairwise_circle", hyperparameter_names={"margin": "m", "gamma": None},
                settings={"fixed": {"margin": 0.4, "gamma": 80.0}})
  assert r.ok and len(r.problems) == 5


# --------------------------------------------------------------------------- the command


def _write(path, text):
  path.write_text(textwrap.dedent(text))
  return str(path)


def test_command_exit_codes(tmp_path, capsys):
  from circle_jax.verify.__main__ import main

  good = _write(tmp_path / "good.py", """
      import circle_jax as cj

      def loss(x, y, *, margin, gamma):
        return cj.pairwise_circle_loss(x, y, margin=margin, gamma=gamma)
      """)
  assert main([f"{good}:loss", "--json", str(tmp_path / "r.json")]) == 0
  assert "MATCH: alpha=detached" in capsys.readouterr().out
  assert '"ok": true' in (tmp_path / "r.json").read_text()
  assert main([f"{good}:missing"]) == 2
  assert "has no attribute 'missing'" in capsys.readouterr().err
  assert main([f"{tmp_path}/nope.py:loss"]) == 2
  assert main(["no_colon"]) == 2


@pytest.mark.slow  # the command in a subprocess; test_command_exit_codes runs it in-process
def test_command_in_a_fresh_process(tmp_path):
  bad = os.path.join("docs", "verify_examples", "self_pair_kept.py")
  out = subprocess.run(
      [sys.executable, "-m", "circle_jax.verify", f"{bad}:circle_loss", "--framework", "torch",
       "--save_dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 1, out.stderr
  assert "NO MATCH" in out.stdout and "diagnosis: self_pairs=kept" in out.stdout
  assert os.path.exists(out.stdout.split("first failing problem: ")[1].split(" ")[0])
  assert _stable_lines(out.stdout) == _stable_lines(_guide_block("self_pair_kept.py:circle_loss"))


def test_import_pulls_no_framework():
  code = ("import sys, circle_jax.verify; "
          "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'flax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"
