"""The pair-based baselines in circle_jax.verify: references, pytorch-metric-learning's
conventions, and one deliberate defect per loss.

The references are compiled once per loss (the first test) and reused by every
verify() call after it; each verify() call runs once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj
from circle_jax.verify import REDUCTION
from circle_jax.verify import Variant
from circle_jax.verify import _verify
from circle_jax.verify import spec
from circle_jax.verify import verify

FUNCTIONS = {
    "batch_hard_triplet": cj.batch_hard_triplet_loss,
    "batch_all_triplet": cj.batch_all_triplet_loss,
    "contrastive": cj.contrastive_loss,
    "npair": cj.npair_loss,
    "lifted_structure": cj.lifted_structure_loss,
    "multi_similarity": cj.multi_similarity_loss,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_default_variant_is_the_circle_jax_function(name):
  loss = spec(name)
  assert loss.function == f"circle_jax.{FUNCTIONS[name].__name__}"
  problems = loss.problems()
  # The verifier's own compiled reference (reused by the verify() calls below).
  ours = _verify._Ours(loss, problems)

  @jax.jit
  def library(x, labels, cotangent, params):
    values, vjp = jax.vjp(lambda x: FUNCTIONS[name](x, labels, **params), x)
    return values, vjp(cotangent)[0]

  with jax.enable_x64(True):
    for k, p in enumerate(problems):
      values, grads = ours(k, loss.default, "none")
      params = {n: jnp.float64(v) for n, v in p.hyperparameters.items()}
      expected, grad = library(jnp.asarray(p.embeddings, jnp.float64), jnp.asarray(p.labels),
                               jnp.asarray(p.cotangent), params)
      np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-14, err_msg=p.name)
      np.testing.assert_allclose(grads["embeddings"], grad, rtol=1e-12, atol=1e-14, err_msg=p.name)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_conventions_name_sound_values_of_real_axes(name):
  loss = spec(name)
  sound = {a.name: a.values for a in loss.axes} | {"reduction": REDUCTION.values}
  variants = loss.sound_variants()
  for convention, choices in loss.conventions.items():
    for axis, value in choices.items():
      assert value in sound[axis], (convention, axis, value)
    # Not left out as moot: the verifier can name it.
    assert any(all(v.get(a, value) == value for a, value in choices.items()
                   if a != "reduction") and not any(
                       f(Variant(v.items + (("reduction", choices["reduction"]),)))
                       for f in loss.moot)
               for v in variants), convention


# --------------------------------------------------------------------------- PML


@pytest.fixture(scope="module")
def pml():
  pytest.importorskip("torch")
  pml = pytest.importorskip("pytorch_metric_learning")
  from pytorch_metric_learning import losses, miners  # noqa: F401

  return pml


def _triplet_batch_hard(pml, x, y, margin):
  return pml.losses.TripletMarginLoss(margin=margin)(x, y, pml.miners.BatchHardMiner()(x, y))


def _multi_similarity_mined(pml, x, y, alpha, beta, base, epsilon):
  miner = pml.miners.MultiSimilarityMiner(epsilon=epsilon)
  return pml.losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)(x, y, miner(x, y))


# (loss, convention, implementation, verify() keywords): out of the box, default
# reducer and distance, the hyper-parameters passed through.
PML_CASES = [
    ("batch_hard_triplet", "pytorch-metric-learning TripletMarginLoss + BatchHardMiner",
     _triplet_batch_hard, {}),
    ("batch_all_triplet", "pytorch-metric-learning TripletMarginLoss",
     lambda pml, x, y, margin: pml.losses.TripletMarginLoss(margin=margin)(x, y), {}),
    ("contrastive", "pytorch-metric-learning ContrastiveLoss",
     lambda pml, x, y, pos_margin, neg_margin: pml.losses.ContrastiveLoss(
         pos_margin=pos_margin, neg_margin=neg_margin)(x, y), {}),
    # NPairsLoss has no scale: verified at scale 1.
    ("npair", "pytorch-metric-learning NPairsLoss",
     lambda pml, x, y: pml.losses.NPairsLoss()(x, y),
     dict(hyperparameter_names={"scale": None}, settings={"pml": {"scale": 1.0}})),
    ("lifted_structure", "pytorch-metric-learning LiftedStructureLoss",
     lambda pml, x, y, margin: pml.losses.LiftedStructureLoss(neg_margin=margin)(x, y), {}),
    ("multi_similarity", "pytorch-metric-learning MultiSimilarityLoss",
     lambda pml, x, y, alpha, beta, base: pml.losses.MultiSimilarityLoss(
         alpha=alpha, beta=beta, base=base)(x, y),
     dict(hyperparameter_names={"epsilon": None})),
    ("multi_similarity", "pytorch-metric-learning MultiSimilarityLoss + MultiSimilarityMiner",
     _multi_similarity_mined, {}),
]


@pytest.mark.parametrize("loss, convention, impl, kwargs", PML_CASES, ids=[
    "TripletMarginLoss+BatchHardMiner", "TripletMarginLoss", "ContrastiveLoss", "NPairsLoss",
    "LiftedStructureLoss", "MultiSimilarityLoss", "MultiSimilarityLoss+MultiSimilarityMiner"])
def test_pml_out_of_the_box_is_its_convention(pml, tmp_path, loss, convention, impl, kwargs):
  assert convention in spec(loss).conventions
  report = verify(lambda *a, **hp: impl(pml, *a, **hp), loss, "torch", save_dir=tmp_path, **kwargs)
  assert report.ok, str(report)
  assert report.output == "scalar"
  assert convention in report.conventions, str(report)


# --------------------------------------------------------------------------- defects
# Per-example implementations in torch, each with one mistake.


def _torch():
  import torch

  return torch


def _unit(x):
  return _torch().nn.functional.normalize(x, dim=1)


def _masks(y):
  torch = _torch()
  same = y[:, None] == y[None, :]
  eye = torch.eye(len(y), dtype=torch.bool)
  pos, neg = same & ~eye, ~same
  return same, pos, neg, pos.any(1) & neg.any(1)


def _masked_mean(t, mask, dim):
  torch = _torch()
  count = mask.sum(dim)
  return torch.where(mask, t, torch.zeros_like(t)).sum(dim) / count.clamp(min=1)


def batch_hard_margin_subtracted(x, y, margin):
  torch = _torch()
  d = torch.cdist(_unit(x), _unit(x))
  _, pos, neg, valid = _masks(y)
  hardest_pos = torch.where(pos, d, -torch.inf).amax(1)
  hardest_neg = torch.where(neg, d, torch.inf).amin(1)
  gap = torch.where(valid, hardest_pos - hardest_neg, torch.zeros_like(hardest_pos))
  return torch.where(valid, torch.relu(gap - margin), torch.zeros_like(gap))  # should be + margin


def batch_all_self_positive(x, y, margin):
  torch = _torch()
  d = torch.cdist(_unit(x), _unit(x))
  same, _, neg, _ = _masks(y)
  hinge = torch.relu(d[:, :, None] - d[:, None, :] + margin)
  # same: the anchor is its own positive. Averaged over all triplets, since the
  # extra (a, a, n) ones are mostly 0 and a mean over non-zero ones would hide them.
  triplets = same[:, :, None] & neg[:, None, :]
  return _masked_mean(hinge.flatten(1), triplets.flatten(1), 1)


def contrastive_flipped_push(x, y, pos_margin, neg_margin):
  torch = _torch()
  d = torch.cdist(_unit(x), _unit(x))
  _, pos, neg, valid = _masks(y)
  pull = 0.5 * torch.relu(d - pos_margin) ** 2
  push = 0.5 * torch.relu(d - neg_margin) ** 2  # should be neg_margin - d
  loss = _masked_mean(pull, pos, 1) + _masked_mean(push, neg, 1)
  return torch.where(valid, loss, torch.zeros_like(loss))


def npair_softmax_over_batch(x, y, scale):
  torch = _torch()
  s = scale * (x @ x.T)
  _, pos, _, valid = _masks(y)
  eye = torch.eye(len(y), dtype=torch.bool)
  # Every other sample in the denominator, the anchor's other positives too.
  lse = torch.logsumexp(s.masked_fill(eye, -torch.inf), dim=1, keepdim=True)
  loss = _masked_mean(lse - s, pos, 1)
  return torch.where(valid, loss, torch.zeros_like(loss))


def lifted_margin_subtracted(x, y, margin):
  torch = _torch()
  d = torch.cdist(_unit(x), _unit(x))
  _, pos, neg, valid = _masks(y)
  lse = torch.logsumexp((-margin - d).masked_fill(~neg, -torch.inf), dim=1)  # should be margin - d
  j = torch.logaddexp(lse[:, None], lse[None, :]) + d
  per_pair = 0.5 * torch.relu(torch.where(pos & valid[:, None], j, torch.zeros_like(j))) ** 2
  loss = _masked_mean(per_pair, pos, 1)
  return torch.where(valid, loss, torch.zeros_like(loss))


def multi_similarity_scales_swapped(x, y, alpha, beta, base, epsilon):
  torch = _torch()
  del epsilon  # no mining
  s = _unit(x) @ _unit(x).T
  _, pos, neg, valid = _masks(y)
  alpha, beta = beta, alpha  # the mistake

  def side(logits, mask, scale):
    lse = torch.logsumexp(torch.cat([logits.masked_fill(~mask, -torch.inf),
                                     torch.zeros(len(y), 1, dtype=s.dtype)], 1), dim=1)
    return torch.where(mask.any(1), lse, torch.zeros_like(lse)) / scale

  loss = side(-alpha * (s - base), pos, alpha) + side(beta * (s - base), neg, beta)
  return torch.where(valid, loss, torch.zeros_like(loss))


DEFECT_CASES = [
    ("batch_hard_triplet", batch_hard_margin_subtracted, "margin_sign"),
    ("batch_all_triplet", batch_all_self_positive, "self_pairs"),
    ("contrastive", contrastive_flipped_push, "neg_hinge"),
    ("npair", npair_softmax_over_batch, "negatives"),
    ("lifted_structure", lifted_margin_subtracted, "margin_sign"),
    ("multi_similarity", multi_similarity_scales_swapped, "scales"),
]


@pytest.mark.parametrize("loss, impl, axis", DEFECT_CASES, ids=[c[0] for c in DEFECT_CASES])
def test_a_defect_is_diagnosed(pml, tmp_path, loss, impl, axis):
  report = verify(impl, loss, "torch", save_dir=tmp_path)
  assert not report.ok
  assert axis in [d.axis for d in report.diagnosis], str(report)
