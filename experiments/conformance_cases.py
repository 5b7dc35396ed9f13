"""Cross-framework conformance cases: each pairs a circle_jax loss with an external one.

A case names the reference implementation, our loss, the variant (hyper-parameters
and how they map between the two), and two functions that take the same numpy
inputs and return per-example values and gradients: ``ours`` runs circle_jax,
``theirs`` runs the reference (pytorch-metric-learning or plain PyTorch on the CPU,
Keras 3 on its JAX backend). Where a reference differs from us by design, the
difference is written out in ``theirs`` as an explicit, documented transform of the
reference's own per-pair or per-anchor output (``Case.difference`` says which), so
that the comparison stays exact instead of hiding behind a loose tolerance.

Gradients are those of ``Σ_b v_b · L_b`` for a random cotangent ``v`` (so every
example's gradient counts separately), with respect to the embeddings and, for
class-level losses, the class weights in our ``[C, D]`` layout.

Tolerance policy (``TOLERANCE``, on the normwise relative error max|a − b| / max|b|):
both sides evaluate the same formula in a different order, so the difference is
rounding only. A similarity carries an error of a few ε; the exponents γα(s − Δ)
multiply it by up to γ(1 + m) ≈ 320 at γ = 256, and the log-sum-exp passes it on
unamplified. That bounds the error by about 1e3·ε: 2e-13 in float64, 1e-4 in
float32. The float64 tolerance, 1e-11, keeps a 50× margin over that bound (the
errors seen are 1e-16 to 1e-14) and is still five orders of magnitude below the
smallest variant difference we know of (PML's Softplus cut-off, up to 2e-9 absolute
at loss values above 20; a margin of 28.6° instead of 0.5 rad, 1e-4). The float32
tolerance, 1e-4, is that bound at γ = 256; float32 rows run at γ = 80 (errors seen:
below 1e-5).

Example:

  >>> from experiments import conformance_cases as cc
  >>> case = next(c for c in cc.all_cases() if c.name == "pml/CircleLoss/fine-grained")
  >>> result = cc.compare(case, cc.make_inputs(0, batch=8, pattern="pk"))
  >>> bool(result.passed)
  True
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import circle_jax as cj

# The settings the paper uses for its three tasks (Sec. 4.2): (γ, m).
PAPER_SETTINGS = {"face": (256.0, 0.25), "re-id": (128.0, 0.25), "fine-grained": (80.0, 0.4)}
TOLERANCE = {"float64": 1e-11, "float32": 1e-4}
PATTERNS = ("pk", "mixed", "singletons", "single_class")
BATCH_SIZES = (16, 12, 6, 5, 33, 2, 24, 9)

Values = np.ndarray
Grads = dict  # argument name -> gradient in our layout, float64 numpy


@dataclasses.dataclass(frozen=True)
class Inputs:
  """One random problem: embeddings [B, D], labels [B], class weights [C, D], cotangent [B]."""

  embeddings: np.ndarray
  labels: np.ndarray
  class_weights: np.ndarray
  cotangent: np.ndarray
  description: str


@dataclasses.dataclass(frozen=True)
class Case:
  """A circle_jax loss against one external implementation."""

  reference: str  # package and class, e.g. "pytorch-metric-learning CircleLoss"
  loss: str  # the circle_jax function
  variant: str  # hyper-parameters and their mapping
  ours: Callable[[Inputs, str], tuple[Values, Grads]]
  theirs: Callable[[Inputs, str], tuple[Values, Grads]]
  name: str  # short unique id, used by tests and the CLI
  dtype: str = "float64"
  difference: str = ""  # the documented difference that ``theirs`` writes out


@dataclasses.dataclass(frozen=True)
class Result:
  case: Case
  inputs: str
  value_abs: float
  value_rel: float
  grad_abs: float
  grad_rel: float
  tolerance: float
  value_scale: float  # max |reference value|: 0 means the problem tested nothing
  grad_scale: float

  @property
  def passed(self) -> bool:
    return max(self.value_rel, self.grad_rel) <= self.tolerance


# --------------------------------------------------------------------------- inputs


def _labels(rng, batch, pattern):
  if pattern == "pk":  # P classes × K samples
    k = next(k for k in (4, 3, 2, 1) if batch % k == 0)
    labels = np.repeat(np.arange(batch // k), k)
  elif pattern == "mixed":  # groups and singletons
    labels = rng.integers(0, max(1, batch // 2), size=batch)
  elif pattern == "singletons":  # no positive pair anywhere
    labels = np.arange(batch)
  elif pattern == "single_class":  # no negative pair anywhere
    labels = np.zeros(batch, int)
  else:
    raise ValueError(f"unknown label pattern {pattern!r}; expected one of {PATTERNS}")
  return rng.permutation(labels)


def make_inputs(seed: int, *, batch: int, pattern: str, dim: int = 16, num_classes: int = 10):
  """Clustered embeddings (positives are similar, so every regime of α is visited).

  Embeddings are class centres plus noise with random norms in [0.5, 3]
  (SphereFace depends on the norm); two rows point away from their class weight
  (θ > π − 0.5) so ArcFace's fallback branch is exercised too.
  """
  rng = np.random.default_rng(seed)
  labels = _labels(rng, batch, pattern)
  centres = rng.normal(size=(max(num_classes, labels.max() + 1), dim))
  x = centres[labels] + 0.8 * rng.normal(size=(batch, dim))
  x *= rng.uniform(0.5, 3.0, size=(batch, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
  class_labels = labels % num_classes
  w = centres[:num_classes] + 0.3 * rng.normal(size=(num_classes, dim))
  for b in range(min(2, batch)):
    x[b] = -np.linalg.norm(x[b]) * w[class_labels[b]] / np.linalg.norm(w[class_labels[b]])
    x[b] += 0.05 * rng.normal(size=dim)
  return Inputs(
      embeddings=x,
      labels=labels.astype(np.int64),
      class_weights=w,
      cotangent=rng.uniform(0.5, 1.5, size=batch),
      description=f"seed={seed} B={batch} D={dim} C={num_classes} labels={pattern}",
  )


def problems(count: int, seed: int = 0) -> list[Inputs]:
  """The fixed sequence of random problems shared by the tests and the CLI."""
  return [
      make_inputs(seed + k, batch=BATCH_SIZES[k % len(BATCH_SIZES)], pattern=PATTERNS[k % len(PATTERNS)])
      for k in range(count)
  ]


def class_labels(inputs: Inputs) -> np.ndarray:
  return inputs.labels % inputs.class_weights.shape[0]


# --------------------------------------------------------------------------- runners


def run_jax(fn, inputs: Inputs, dtype: str, *, class_level: bool) -> tuple[Values, Grads]:
  """Values of fn and the vjp of the cotangent, w.r.t. embeddings (and class weights)."""
  with jax.enable_x64(dtype == "float64"):
    x = jnp.asarray(inputs.embeddings, dtype)
    if class_level:
      w = jnp.asarray(inputs.class_weights, dtype)
      labels = jnp.asarray(class_labels(inputs))
      values, vjp = jax.vjp(lambda x, w: fn(x, labels, w), x, w)
      gx, gw = vjp(jnp.asarray(inputs.cotangent, dtype))
      grads = {"embeddings": gx, "class_weights": gw}
    else:
      labels = jnp.asarray(inputs.labels)
      values, vjp = jax.vjp(lambda x: fn(x, labels), x)
      grads = {"embeddings": vjp(jnp.asarray(inputs.cotangent, dtype))[0]}
    return _numpy(values), {k: _numpy(v) for k, v in grads.items()}


def run_torch(fn, inputs: Inputs, dtype: str, *, class_level: bool) -> tuple[Values, Grads]:
  """fn(x, labels[, w]) -> per-example torch values; gradients by backward of Σ v·L."""
  import torch

  tdtype = getattr(torch, dtype)
  x = torch.tensor(inputs.embeddings, dtype=tdtype, requires_grad=True)
  leaves = {"embeddings": x}
  if class_level:
    w = torch.tensor(inputs.class_weights, dtype=tdtype, requires_grad=True)
    leaves["class_weights"] = w
    values = fn(x, torch.tensor(class_labels(inputs)), w)
  else:
    values = fn(x, torch.tensor(inputs.labels))
  if values.requires_grad:
    (values * torch.tensor(inputs.cotangent, dtype=tdtype)).sum().backward()
  grads = {
      k: np.zeros(v.shape) if v.grad is None else v.grad.double().numpy()
      for k, v in leaves.items()
  }
  return values.detach().double().numpy(), grads


def _numpy(a):
  return np.asarray(a, np.float64)


def _error(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
  """(max abs error, normwise relative error max|a − b| / max|b|)."""
  if ours.shape != theirs.shape:
    raise ValueError(f"shape mismatch: ours {ours.shape} vs reference {theirs.shape}")
  if not (np.isfinite(ours).all() and np.isfinite(theirs).all()):
    return math.inf, math.inf
  abs_err = float(np.max(np.abs(ours - theirs), initial=0.0))
  scale = float(np.max(np.abs(theirs), initial=0.0))
  return abs_err, abs_err / scale if scale > 0 else abs_err


def compare(case: Case, inputs: Inputs) -> Result:
  """Runs both sides on the same inputs and measures value and gradient errors."""
  ours_v, ours_g = case.ours(inputs, case.dtype)
  theirs_v, theirs_g = case.theirs(inputs, case.dtype)
  value_abs, value_rel = _error(ours_v, theirs_v)
  grad_abs = grad_rel = grad_scale = 0.0
  if set(ours_g) != set(theirs_g):
    raise ValueError(f"{case.name}: gradients of {sorted(ours_g)} vs {sorted(theirs_g)}")
  for k in ours_g:
    a, r = _error(ours_g[k], theirs_g[k])
    grad_abs, grad_rel = max(grad_abs, a), max(grad_rel, r)
    grad_scale = max(grad_scale, float(np.max(np.abs(theirs_g[k]), initial=0.0)))
  return Result(case, inputs.description, value_abs, value_rel, grad_abs, grad_rel,
                TOLERANCE[case.dtype], float(np.max(np.abs(theirs_v), initial=0.0)), grad_scale)


# --------------------------------------------------------------------------- helpers on the torch side


def _pml():
  import pytorch_metric_learning as pml  # noqa: F401  (imported for its submodules)
  from pytorch_metric_learning import distances, losses, miners, reducers

  return losses, miners, reducers, distances


def _pml_losses(loss_dict, key="loss"):
  """The reference's unreduced output: (losses, indices, reduction type)."""
  entry = loss_dict[key]
  return entry["losses"], entry["indices"], entry["reduction_type"]


def _per_element(loss_dict, batch, like):
  """PML's per-example output as a dense [B] tensor (its 'no pairs' case is 0)."""
  import torch

  losses, indices, kind = _pml_losses(loss_dict)
  if kind == "already_reduced":  # PML's zero_losses(): no usable pair in the batch
    return torch.zeros(batch, dtype=like.dtype) + 0.0 * like.sum()
  if kind != "element":
    raise ValueError(f"expected per-element losses, got {kind!r}")
  return torch.zeros(batch, dtype=like.dtype).index_put((indices,), losses.reshape(-1))


def _mean_by_anchor(values, anchors, batch, like):
  """Mean of per-pair (or per-triplet) values grouped by their anchor; 0 for none."""
  import torch

  total = torch.zeros(batch, dtype=like.dtype).index_add(0, anchors, values)
  count = torch.zeros(batch, dtype=like.dtype).index_add(0, anchors, torch.ones_like(values))
  return torch.where(count > 0, total / count.clamp(min=1), total)


SOFTPLUS_DIFFERENCE = (
    "torch.nn.Softplus (threshold 20) returns t itself for t > 20, off by log1p(e^−t) ≤ 2e-9; "
    "written out as v + log1p(e^−v) for v > 20, which is exactly softplus(t), gradient included.")


def _exact_softplus(values):
  """Undoes torch.nn.Softplus's linear branch (t > 20), value and gradient alike."""
  import torch

  return torch.where(values > 20, values + torch.log1p(torch.exp(-values)), values)


def _pair_mean_by_anchor(loss_dict, key, batch, like, power=1):
  """Per-anchor mean of a PML per-pair sub-loss raised to ``power`` (0 where it has none)."""
  import torch

  values, indices, kind = _pml_losses(loss_dict, key)
  if kind == "already_reduced" or not torch.is_tensor(values) or values.numel() == 0:
    return torch.zeros(batch, dtype=like.dtype)
  return _mean_by_anchor(values.reshape(-1) ** power, indices[0], batch, like)


def _valid_anchors(labels):
  """Anchors with at least one positive and one negative (the DESIGN contract)."""
  import torch

  same = labels[:, None] == labels[None, :]
  eye = torch.eye(len(labels), dtype=torch.bool)
  return (same & ~eye).any(1) & (~same).any(1)


def _with_pml_weights(module, w):
  """Makes a PML classifier use our [C, D] weights (its W is [D, C], a Parameter).

  The parameter is replaced by a transposed view of our leaf so that its gradient
  lands on ``w`` in our layout.
  """
  del module.W
  module.W = w.t()
  return module


# --------------------------------------------------------------------------- the cases


def _pairwise_ours(loss, **kw):
  return lambda inputs, dtype: run_jax(
      lambda x, y: loss(x, y, **kw), inputs, dtype, class_level=False)


def _class_ours(loss, **kw):
  return lambda inputs, dtype: run_jax(
      lambda x, y, w: loss(x, w, y, **kw), inputs, dtype, class_level=True)


def _pml_circle_cases():
  def theirs(gamma, margin, classes=False, reference_set=False):
    def fn(x, y, w=None):
      losses, _, reducers, _ = _pml()
      loss = losses.CircleLoss(m=margin, gamma=gamma, reducer=reducers.DoNothingReducer())
      if classes:  # class-level labels = pair-wise labels against the proxies
        out = loss(x, y, ref_emb=w, ref_labels=_torch_arange(w))
      elif reference_set:  # a separate reference set: the batch reversed
        out = loss(x, y, ref_emb=x.flip(0), ref_labels=y.flip(0))
      else:
        out = loss(x, y)
      return _exact_softplus(_per_element(out, x.shape[0], x))

    return fn

  for task, (gamma, margin) in PAPER_SETTINGS.items():
    yield Case(
        "pytorch-metric-learning CircleLoss", "pairwise_circle_loss", f"{task}: γ={gamma:g} m={margin}",
        _pairwise_ours(cj.pairwise_circle_loss, gamma=gamma, margin=margin),
        lambda i, d, g=gamma, m=margin: run_torch(theirs(g, m), i, d, class_level=False),
        name=f"pml/CircleLoss/{task}", difference=SOFTPLUS_DIFFERENCE)
  yield Case(
      "pytorch-metric-learning CircleLoss", "pairwise_circle_loss",
      "fine-grained, float32", _pairwise_ours(cj.pairwise_circle_loss),
      lambda i, d: run_torch(theirs(80.0, 0.4), i, d, class_level=False),
      name="pml/CircleLoss/float32", dtype="float32", difference=SOFTPLUS_DIFFERENCE)

  def ours_ref(x, y):
    return cj.pairwise_circle_loss(x, y, ref_embeddings=x[::-1], ref_labels=y[::-1])

  yield Case(
      "pytorch-metric-learning CircleLoss", "pairwise_circle_loss",
      "ref_emb = the batch reversed (a reference set keeps the self-pair, s = 1)", _pairwise_ours_fn(ours_ref),
      lambda i, d: run_torch(theirs(80.0, 0.4, reference_set=True), i, d, class_level=False),
      name="pml/CircleLoss/reference-set", difference=SOFTPLUS_DIFFERENCE)
  yield Case(
      "pytorch-metric-learning CircleLoss", "class_circle_loss",
      "face: γ=256 m=0.25; ref_emb = W, ref_labels = arange(C)",
      _class_ours(cj.class_circle_loss, gamma=256.0, margin=0.25),
      lambda i, d: run_torch(theirs(256.0, 0.25, classes=True), i, d, class_level=True),
      name="pml/CircleLoss/class-level", difference=SOFTPLUS_DIFFERENCE)
  yield Case(
      "pytorch-metric-learning CircleLoss", "circle_loss_grads",
      "Eq. 9–10 vs autograd, w.r.t. the similarity matrix", _closed_form_ours, _closed_form_theirs,
      name="pml/CircleLoss/closed-form-grads", difference=SOFTPLUS_DIFFERENCE)


def _pairwise_ours_fn(fn):
  return lambda inputs, dtype: run_jax(fn, inputs, dtype, class_level=False)


def _torch_arange(w):
  import torch

  return torch.arange(w.shape[0])


def _closed_form_ours(inputs: Inputs, dtype: str):
  """circle_loss on the dense similarity matrix with masks; dL/dS from Eq. 9–10."""
  gamma, margin = PAPER_SETTINGS["face"]
  with jax.enable_x64(dtype == "float64"):
    x = jnp.asarray(inputs.embeddings, dtype)
    s = cj.cosine_similarity_matrix(x, x)
    pos, neg = cj.pair_masks(jnp.asarray(inputs.labels))
    kw = dict(margin=margin, gamma=gamma, sp_mask=pos, sn_mask=neg)
    values = cj.circle_loss(s, s, **kw)
    dsp, dsn = cj.circle_loss_grads(s, s, **kw)
    v = jnp.asarray(inputs.cotangent, dtype)[:, None]
    ds = v * (jnp.where(pos, dsp, 0.0) + jnp.where(neg, dsn, 0.0))
    return _numpy(values), {"similarities": _numpy(ds)}


def _closed_form_theirs(inputs: Inputs, dtype: str):
  """PML's CircleLoss with a distance that keeps its similarity matrix for autograd."""
  import torch

  losses, _, reducers, distances = _pml()
  kept = {}

  class KeptCosine(distances.CosineSimilarity):
    def compute_mat(self, query_emb, ref_emb):
      mat = super().compute_mat(query_emb, ref_emb)
      mat.retain_grad()
      kept["mat"] = mat
      return mat

  gamma, margin = PAPER_SETTINGS["face"]
  tdtype = getattr(torch, dtype)
  x = torch.tensor(inputs.embeddings, dtype=tdtype)
  loss = losses.CircleLoss(m=margin, gamma=gamma, distance=KeptCosine(),
                           reducer=reducers.DoNothingReducer())
  values = _per_element(loss(x.requires_grad_(), torch.tensor(inputs.labels)), len(x), x)
  values = _exact_softplus(values)
  batch = len(x)
  if "mat" not in kept or not values.requires_grad:
    return values.detach().numpy(), {"similarities": np.zeros((batch, batch))}
  (values * torch.tensor(inputs.cotangent, dtype=tdtype)).sum().backward()
  return values.detach().double().numpy(), {"similarities": kept["mat"].grad.double().numpy()}


def _pml_classifier_cases():
  def classifier(make):
    def fn(x, y, w):
      _, _, reducers, _ = _pml()
      module = make(num_classes=w.shape[0], embedding_size=w.shape[1],
                    reducer=reducers.DoNothingReducer())
      return _per_element(_with_pml_weights(module, w)(x, y), x.shape[0], x)

    return lambda i, d: run_torch(fn, i, d, class_level=True)

  losses = lambda: _pml()[0]  # noqa: E731  (imported lazily: torch is a test dependency)
  yield Case(
      "pytorch-metric-learning CosFaceLoss", "cosface_loss / am_softmax_loss", "m=0.35, scale=γ=64",
      _class_ours(cj.cosface_loss, margin=0.35, gamma=64.0),
      classifier(lambda **k: losses().CosFaceLoss(margin=0.35, scale=64, **k)),
      name="pml/CosFaceLoss")
  yield Case(
      "pytorch-metric-learning CosFaceLoss", "unified_loss",
      "Eq. 1 with class-level labels (K = 1) is AM-Softmax: m=0.35, γ=64",
      _class_ours(_unified_class_level, margin=0.35, gamma=64.0),
      classifier(lambda **k: losses().CosFaceLoss(margin=0.35, scale=64, **k)),
      name="pml/CosFaceLoss/unified")
  degrees = math.degrees(0.5)
  yield Case(
      "pytorch-metric-learning ArcFaceLoss", "arcface_loss",
      f"m=0.5 rad = {degrees:.4f}° (PML takes degrees), scale=γ=64",
      _class_ours(cj.arcface_loss, margin=0.5, gamma=64.0),
      classifier(lambda **k: losses().ArcFaceLoss(margin=degrees, scale=64, **k)),
      name="pml/ArcFaceLoss")
  yield Case(
      "pytorch-metric-learning NormalizedSoftmaxLoss", "normface_loss", "temperature = 1/γ = 1/64",
      _class_ours(cj.normface_loss, gamma=64.0),
      classifier(lambda **k: losses().NormalizedSoftmaxLoss(temperature=1 / 64, **k)),
      name="pml/NormalizedSoftmaxLoss")
  yield Case(
      "pytorch-metric-learning SphereFaceLoss", "sphereface_loss", "margin=4, scale=1, λ=0",
      _class_ours(cj.sphereface_loss, margin=4),
      classifier(lambda **k: losses().SphereFaceLoss(margin=4, scale=1, **k)),
      name="pml/SphereFaceLoss")


def _unified_class_level(x, w, y, *, margin, gamma):
  """unified_loss with s_p the target cosine and s_n the other classes' cosines."""
  s = cj.cosine_similarity_matrix(x, w)
  target = jax.nn.one_hot(y, w.shape[0], dtype=bool)
  return cj.unified_loss(s, s, margin=margin, gamma=gamma, sp_mask=target, sn_mask=~target)


def _torch_softmax_case():
  def theirs(x, y, w):
    import torch

    bias = torch.linspace(-1.0, 1.0, w.shape[0], dtype=x.dtype)
    return torch.nn.functional.cross_entropy(x @ w.t() + bias, y, reduction="none")

  def ours(x, y, w):
    return cj.softmax_loss(x, w, y, bias=jnp.linspace(-1.0, 1.0, w.shape[0], dtype=x.dtype))

  yield Case("PyTorch cross_entropy", "softmax_loss", "logits x·Wᵀ + b",
             _class_ours_fn(ours), lambda i, d: run_torch(theirs, i, d, class_level=True),
             name="torch/cross_entropy")


def _class_ours_fn(fn):
  return lambda inputs, dtype: run_jax(fn, inputs, dtype, class_level=True)


def _pml_pair_baseline_cases():
  def pair_run(fn):
    return lambda i, d: run_torch(fn, i, d, class_level=False)

  def triplets(margin, miner):
    def fn(x, y):
      losses, miners, reducers, _ = _pml()
      loss = losses.TripletMarginLoss(margin=margin, reducer=reducers.DoNothingReducer())
      indices = miners.BatchHardMiner()(x, y) if miner else None
      return _pair_mean_by_anchor(loss(x, y, indices), "loss", x.shape[0], x)

    return fn

  yield Case(
      "pytorch-metric-learning TripletMarginLoss + BatchHardMiner", "batch_hard_triplet_loss",
      "margin=0.2, L2 distance of normalised embeddings", _pairwise_ours(cj.batch_hard_triplet_loss),
      pair_run(triplets(0.2, miner=True)), name="pml/TripletMarginLoss/batch-hard")
  yield Case(
      "pytorch-metric-learning TripletMarginLoss", "batch_all_triplet_loss",
      "margin=0.2, nonzero_only=False", _pairwise_ours(cj.batch_all_triplet_loss, nonzero_only=False),
      pair_run(triplets(0.2, miner=False)), name="pml/TripletMarginLoss/batch-all",
      difference="PML averages all triplets of the batch (non-zero ones by default); "
      "per anchor, our mean over its triplets equals the mean of PML's per-triplet values.")

  def contrastive(x, y):
    losses, _, reducers, _ = _pml()
    out = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=reducers.DoNothingReducer())(x, y)
    b = x.shape[0]
    pull, push = (_pair_mean_by_anchor(out, key, b, x, power=2) for key in ("pos_loss", "neg_loss"))
    return (0.5 * pull + 0.5 * push) * _valid_anchors(y)

  yield Case(
      "pytorch-metric-learning ContrastiveLoss", "contrastive_loss", "pos_margin=0, neg_margin=1",
      _pairwise_ours(cj.contrastive_loss), pair_run(contrastive), name="pml/ContrastiveLoss",
      difference="PML's per-pair terms are plain hinges [d − m_p]₊, [m_n − d]₊ averaged over the "
      "batch; ours (Hadsell et al.) squares them and halves them, averaged per anchor, and an "
      "anchor without a positive or a negative is 0: ours = ½·mean_p(PML_p²) + ½·mean_n(PML_n²).")

  def npairs(x, y):
    import torch

    losses, _, reducers, _ = _pml()
    values, anchors, _ = _pml_losses(losses.NPairsLoss(reducer=reducers.DoNothingReducer())(x, y))
    if isinstance(values, (int, float)):
      return torch_zeros_like(x, x.shape[0])
    return torch.zeros(x.shape[0], dtype=x.dtype).index_put((anchors,), values)

  def npair_ours(x, y):
    """Our loss on each PML sub-batch [anchor_i, positive_1 … positive_N], anchor's value."""
    anchors, positives = _npair_selection(np.asarray(y))
    if len(anchors) < 2:
      return jnp.zeros(x.shape[0], x.dtype)
    sub_labels = jnp.asarray(np.asarray(y)[positives])
    batch_of = lambda a: jnp.concatenate([x[a][None], x[jnp.asarray(positives)]])  # noqa: E731
    per = jnp.stack([
        cj.npair_loss(batch_of(a), jnp.concatenate([sub_labels[i : i + 1], sub_labels]),
                      normalize=True)[0]
        for i, a in enumerate(anchors)])
    return jnp.zeros(x.shape[0], x.dtype).at[jnp.asarray(anchors)].set(per)

  yield Case(
      "pytorch-metric-learning NPairsLoss", "npair_loss", "normalize=True (PML's default cosine)",
      _pairwise_ours_fn(npair_ours), pair_run(npairs), name="pml/NPairsLoss",
      difference="PML keeps one (anchor, positive) pair per class, the first in the batch, and "
      "uses the other classes' positives as negatives; ours uses every anchor and every "
      "other-class sample. On PML's sub-batch [anchor_i, positive_1 … positive_N] ours is PML.")

  def lifted(x, y):
    losses, _, reducers, _ = _pml()
    out = losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0,
                                     reducer=reducers.DoNothingReducer())(x, y)
    return _pair_mean_by_anchor(out, "loss", x.shape[0], x)

  yield Case(
      "pytorch-metric-learning LiftedStructureLoss", "lifted_structure_loss", "neg_margin=1, pos_margin=0",
      _pairwise_ours(cj.lifted_structure_loss), pair_run(lifted), name="pml/LiftedStructureLoss",
      difference="PML returns one value per positive pair; ours is their mean per anchor.")

  def multi_similarity(mine):
    def fn(x, y):
      import torch

      losses, miners, reducers, _ = _pml()
      loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, reducer=reducers.DoNothingReducer())
      if not mine:
        return _per_element(loss(x, y), x.shape[0], x) * _valid_anchors(y)
      a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.1)(x, y)
      b = x.shape[0]
      has = lambda a: torch.zeros(b, dtype=torch.bool).index_fill(0, a, True)  # noqa: E731
      values = _per_element(loss(x, y, (a1, p, a2, n)), b, x)
      return values * (has(a1) & has(a2))

    return fn

  ms_difference = ("An anchor whose (mined) positive or negative set is empty gets 0 in ours, as "
                   "in the MS authors' code; PML keeps the one-sided term. Written out: PML × "
                   "[anchor has both].")
  yield Case(
      "pytorch-metric-learning MultiSimilarityLoss", "multi_similarity_loss",
      "α=2 β=50 λ=0.5, epsilon=None (no mining)", _pairwise_ours(cj.multi_similarity_loss, epsilon=None),
      pair_run(multi_similarity(False)), name="pml/MultiSimilarityLoss", difference=ms_difference)
  yield Case(
      "pytorch-metric-learning MultiSimilarityLoss + MultiSimilarityMiner", "multi_similarity_loss",
      "α=2 β=50 λ=0.5, ε=0.1", _pairwise_ours(cj.multi_similarity_loss, epsilon=0.1),
      pair_run(multi_similarity(True)), name="pml/MultiSimilarityLoss/mined", difference=ms_difference)


def torch_zeros_like(x, batch):
  import torch

  return torch.zeros(batch, dtype=x.dtype)


def _npair_selection(labels: np.ndarray):
  """PML's N-pair selection, re-derived: per class (in label order) its first anchor and
  that anchor's first positive, for classes with at least two samples."""
  anchors, positives = [], []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) >= 2:
      anchors.append(int(members[0]))
      positives.append(int(members[1]))
  return anchors, positives


def _keras():
  """keras on its JAX backend (the backend is fixed when keras is first imported)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras

  if keras.backend.backend() != "jax":
    raise RuntimeError(
        f"keras was imported with the {keras.backend.backend()!r} backend; the conformance cases "
        "need KERAS_BACKEND=jax set before keras is first imported")
  return keras


def _keras_cases():
  def theirs(gamma, margin, classes=False):
    def fn(x, y, w=None):
      keras = _keras()
      unit = x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # Keras expects unit vectors
      if classes:
        ref = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
        return keras.losses.circle(y, unit, ref_labels=jnp.arange(w.shape[0]), ref_embeddings=ref,
                                   remove_diagonal=False, gamma=gamma, margin=margin)
      return keras.losses.circle(y, unit, gamma=gamma, margin=margin)

    return fn

  note = ("Keras differentiates through α (no stop-gradient): compared with "
          "grad_through_alpha=True. Keras takes unit vectors; both sides normalise here.")
  for task, (gamma, margin) in PAPER_SETTINGS.items():
    yield Case(
        "Keras 3 keras.losses.circle (JAX backend)", "pairwise_circle_loss",
        f"{task}: γ={gamma:g} m={margin}, grad_through_alpha=True",
        _pairwise_ours(cj.pairwise_circle_loss, gamma=gamma, margin=margin, grad_through_alpha=True),
        lambda i, d, g=gamma, m=margin: run_jax(theirs(g, m), i, d, class_level=False),
        name=f"keras/circle/{task}", difference=note)
  yield Case(
      "Keras 3 keras.losses.circle (JAX backend)", "pairwise_circle_loss",
      "fine-grained, float32, grad_through_alpha=True",
      _pairwise_ours(cj.pairwise_circle_loss, grad_through_alpha=True),
      lambda i, d: run_jax(theirs(80.0, 0.4), i, d, class_level=False),
      name="keras/circle/float32", dtype="float32", difference=note)
  yield Case(
      "Keras 3 keras.losses.circle (JAX backend)", "class_circle_loss",
      "face: γ=256 m=0.25; ref_embeddings = W, ref_labels = arange(C), remove_diagonal=False",
      _class_ours(cj.class_circle_loss, gamma=256.0, margin=0.25, grad_through_alpha=True),
      lambda i, d: run_jax(theirs(256.0, 0.25, classes=True), i, d, class_level=True),
      name="keras/circle/class-level", difference=note)


def _fastreid_case():
  def theirs(x, y, w):
    """fast-reid's CircleSoftmax convention, written in torch: CE on α·(cos − δ)·γ logits."""
    import torch

    gamma, margin = PAPER_SETTINGS["face"]
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).t()
    alpha_p = torch.relu(1 + margin - cos.detach())
    alpha_n = torch.relu(cos.detach() + margin)
    target = torch.nn.functional.one_hot(y, w.shape[0]).bool()
    logits = torch.where(target, alpha_p * (cos - (1 - margin)), alpha_n * (cos - margin)) * gamma
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")

  yield Case(
      "fast-reid CircleSoftmax convention (PyTorch cross_entropy)", "class_circle_loss",
      "face: γ=256 m=0.25", _class_ours(cj.class_circle_loss, gamma=256.0, margin=0.25),
      lambda i, d: run_torch(theirs, i, d, class_level=True), name="fastreid/CircleSoftmax")


# --------------------------------------------------------------------------- conventions
# How other frameworks reduce or combine, as one line on top of circle_jax's
# per-example output. Verified on hand-computed cases in the tests.


def avg_nonzero(losses):
  """pytorch-metric-learning's AvgNonZeroReducer and Keras 3's `Circle` (which masks
  loss > 0): the mean over examples whose loss is not exactly 0."""
  return jnp.sum(losses) / jnp.maximum(jnp.count_nonzero(losses), 1)


def mean_over_batch(losses):
  """fast-reid and TF-Similarity: the mean over all B examples, zeros included."""
  return jnp.mean(losses)


def tf_similarity_circle(sp, sn, *, margin, gamma, sp_mask=None, sn_mask=None):
  """TF-Similarity's combination log1p(Σe^{l_p}) + log1p(Σe^{l_n}), α differentiated."""
  lp, ln = cj.circle_exponents(sp, sn, margin=margin, gamma=gamma, grad_through_alpha=True)
  sp_mask = jnp.ones(lp.shape, bool) if sp_mask is None else sp_mask
  sn_mask = jnp.ones(ln.shape, bool) if sn_mask is None else sn_mask
  lse_p, has_p = cj.masked_logsumexp(lp, sp_mask)
  lse_n, has_n = cj.masked_logsumexp(ln, sn_mask)
  return jnp.where(has_p, jax.nn.softplus(lse_p), 0.0) + jnp.where(has_n, jax.nn.softplus(lse_n), 0.0)


def all_cases() -> list[Case]:
  """Every case, in table order."""
  return [
      *_pml_circle_cases(), *_keras_cases(), *_fastreid_case(), *_pml_classifier_cases(),
      *_torch_softmax_case(), *_pml_pair_baseline_cases(),
  ]
