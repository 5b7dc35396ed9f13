"""Class-level baselines (softmax, NormFace, CosFace, ArcFace, SphereFace).

Every loss is checked against an independent float64 numpy reference written
from the published formulas (explicit per-example loop, logits per class, then
−log softmax at the target), against the paper's reductions of the unified loss
(Eq. 1–2), and for gradients, transformations, input validation and bf16.
"""

import functools
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from circle_jax.losses import am_softmax_loss
from circle_jax.losses import arcface_loss
from circle_jax.losses import cosface_loss
from circle_jax.losses import normface_loss
from circle_jax.losses import softmax_loss
from circle_jax.losses import sphereface_loss
from circle_jax.losses import unified_loss

from tests.conftest import slow

ARC_MARGINS = (0.1, 0.5, 1.0)
SHAPES = ((1, 2), (3, 7), (8, 50))  # (batch B, classes C)
DIM = 6


# ---------------------------------------------------------------------------
# Independent numpy references (float64, explicit per-example loop).
# ---------------------------------------------------------------------------


def _nll(logits, target):
  """−log softmax(logits)[target], with the log-sum-exp written out."""
  logits = np.asarray(logits, np.float64)
  top = np.max(logits)
  lse = top + np.log(np.sum(np.exp(logits - top)))
  return lse - logits[target]


def _cos(a, b):
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _reference(x, w, y, target_and_others):
  """Loops over examples; target_and_others(x_b, cosines_b, y_b) → logits [C]."""
  x = np.asarray(x, np.float64)
  w = np.asarray(w, np.float64)
  out = np.empty(x.shape[0])
  for b in range(x.shape[0]):
    cosines = np.array([_cos(x[b], w[j]) for j in range(w.shape[0])])
    out[b] = _nll(target_and_others(x[b], cosines, int(y[b])), int(y[b]))
  return out


def ref_softmax(x, w, y, bias=None):
  x = np.asarray(x, np.float64)
  w = np.asarray(w, np.float64)
  out = np.empty(x.shape[0])
  for b in range(x.shape[0]):
    logits = np.array([x[b] @ w[j] for j in range(w.shape[0])])
    if bias is not None:
      logits = logits + np.asarray(bias, np.float64)
    out[b] = _nll(logits, int(y[b]))
  return out


def ref_normface(x, w, y, gamma):
  return _reference(x, w, y, lambda xb, c, t: gamma * c)


def ref_cosface(x, w, y, margin, gamma):
  def logits(xb, c, t):
    z = gamma * c
    z[t] = gamma * (c[t] - margin)
    return z

  return _reference(x, w, y, logits)


def arcface_psi(c, margin, easy_margin=False):
  """insightface's target cosine: cos(θ + m), with its fallbacks."""
  theta = np.arccos(np.clip(c, -1.0, 1.0))
  shifted = np.cos(theta + margin)
  if easy_margin:
    return shifted if c > 0 else c
  return shifted if c > np.cos(np.pi - margin) else c - margin * np.sin(margin)


def ref_arcface(x, w, y, margin, gamma, easy_margin=False):
  def logits(xb, c, t):
    z = gamma * c
    z[t] = gamma * arcface_psi(c[t], margin, easy_margin)
    return z

  return _reference(x, w, y, logits)


def sphereface_psi(c, margin):
  """ψ(θ) = (−1)^k cos(mθ) − 2k, k = floor(mθ/π), θ from np.arccos."""
  theta = np.arccos(np.clip(c, -1.0, 1.0))
  k = min(math.floor(margin * theta / np.pi), margin - 1)  # θ = π: same value
  return (-1.0) ** k * np.cos(margin * theta) - 2.0 * k


def ref_sphereface(x, w, y, margin, annealing_lambda):
  def logits(xb, c, t):
    norm = np.linalg.norm(xb)
    z = norm * c
    psi = sphereface_psi(c[t], margin)
    z[t] = norm * (annealing_lambda * c[t] + psi) / (1.0 + annealing_lambda)
    return z

  return _reference(x, w, y, logits)


# ---------------------------------------------------------------------------
# Random cases with controlled target angles.
# ---------------------------------------------------------------------------

# Angles where a branch switches (ArcFace π − m, easy margin π/2): random cases
# keep clear of them so float32 rounding cannot pick the other branch.
_KINKS = tuple(np.pi - m for m in ARC_MARGINS) + (np.pi / 2,)


def _generic_angle(rng, avoid=_KINKS, gap=2e-2):
  while True:
    t = rng.uniform(0.05, np.pi - 0.05)
    if all(abs(t - a) > gap for a in avoid):
      return t


def make_case(rng, batch, classes, dim=DIM):
  """(x, w, y, θ_y) in float64; even examples are nearly opposite their proxy.

  The nearly-opposite angles θ ∈ [π − 0.08, π − 0.005] are beyond π − m for
  every ArcFace margin tested (fallback branch) and in SphereFace's last
  interval (k = m − 1); the others are spread over (0, π).
  """
  w = rng.normal(size=(classes, dim)) * rng.uniform(0.5, 3.0, size=(classes, 1))
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  theta = np.array([
      rng.uniform(np.pi - 0.08, np.pi - 0.005) if b % 2 == 0 else _generic_angle(rng)
      for b in range(batch)
  ])
  norms = rng.uniform(0.5, 3.0, size=batch)
  x = np.empty((batch, dim))
  for b in range(batch):
    wy = w[y[b]] / np.linalg.norm(w[y[b]])
    u = rng.normal(size=dim)
    u -= (u @ wy) * wy
    u /= np.linalg.norm(u)
    x[b] = norms[b] * (np.cos(theta[b]) * wy + np.sin(theta[b]) * u)
  return x, w, y, theta


def _enter_dtype(request, dtype):
  if dtype == np.float64:
    request.getfixturevalue("x64")


def _tolerances(dtype, scale):
  """(rtol, atol): scale is the largest |logit| per unit cosine (γ or ‖x‖)."""
  if dtype == np.float64:
    return 1e-10, 1e-12 * scale
  return 1e-5, 2e-6 * scale


LOSS_CONFIGS = (
    [("softmax", dict(bias=b)) for b in (False, True)]
    + [("normface", dict(gamma=g)) for g in (16.0, 64.0)]
    + [
        ("cosface", dict(margin=m, gamma=g))
        for m, g in ((0.35, 64.0), (0.1, 16.0), (-0.2, 30.0))
    ]
    + [
        ("arcface", dict(margin=m, gamma=64.0, easy_margin=e))
        for m in ARC_MARGINS
        for e in (False, True)
    ]
    + [
        ("sphereface", dict(margin=m, annealing_lambda=lam))
        for m in (1, 2, 3, 4)
        for lam in (0.0, 5.0)
    ]
)


def _config_id(config):
  name, kw = config
  return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


# Fast tier: one configuration of each loss in float64 (ArcFace with and without
# the easy margin: two branches) and ArcFace in float32; every other
# configuration × dtype of the sweep runs in the slow tier.
FAST_REFERENCE_CASES = {
    "softmax-bias=True-float64",
    "normface-gamma=64.0-float64",
    "cosface-margin=0.35-gamma=64.0-float64",
    "arcface-margin=0.5-gamma=64.0-easy_margin=False-float64",
    "arcface-margin=0.5-gamma=64.0-easy_margin=True-float64",
    "arcface-margin=0.5-gamma=64.0-easy_margin=False-float32",
    "sphereface-margin=4-annealing_lambda=0.0-float64",
}


def _reference_case(config, dtype):
  case_id = f"{_config_id(config)}-{dtype.__name__}"
  marks = () if case_id in FAST_REFERENCE_CASES else pytest.mark.slow
  return pytest.param(config, dtype, id=case_id, marks=marks)


REFERENCE_CASES = [_reference_case(c, d) for c in LOSS_CONFIGS for d in (np.float64, np.float32)]


LOSSES = {
    "softmax": softmax_loss,
    "normface": normface_loss,
    "cosface": cosface_loss,
    "arcface": arcface_loss,
    "sphereface": sphereface_loss,
}
_REFERENCES = {
    "normface": ref_normface,
    "cosface": ref_cosface,
    "arcface": ref_arcface,
    "sphereface": ref_sphereface,
}


def _library_and_reference(name, kw, x, w, y, rng):
  """Returns (library value, reference value, logit scale) for one case."""
  loss = LOSSES[name]
  if name == "softmax":
    bias = rng.normal(size=w.shape[0]).astype(x.dtype) if kw["bias"] else None
    lib = loss(x, w, y, bias=bias)
    scale = float(np.max(np.abs(np.asarray(x, np.float64) @ np.asarray(w, np.float64).T)))
    return lib, ref_softmax(x, w, y, bias), max(scale, 1.0)
  lib = loss(x, w, y, **kw)
  ref = _REFERENCES[name](x, w, y, **kw)
  if name == "sphereface":  # |logit| ≤ ‖x‖·(2m − 1)
    return lib, ref, 8.0 * float(np.max(np.linalg.norm(np.asarray(x, np.float64), axis=1)))
  return lib, ref, kw["gamma"]


@pytest.mark.parametrize("config,dtype", REFERENCE_CASES)
def test_matches_numpy_reference(request, config, dtype):
  _enter_dtype(request, dtype)
  name, kw = config
  rng = np.random.default_rng(zlib.crc32(_config_id(config).encode()))
  # float64 on every shape; float32 on the largest.
  shapes = SHAPES if dtype == np.float64 else SHAPES[-1:]
  for batch, classes in shapes:
    x, w, y, theta = make_case(rng, batch, classes)
    assert theta[0] > np.pi - 0.1  # the ArcFace fallback / SphereFace k = m − 1
    x, w = x.astype(dtype), w.astype(dtype)
    lib, ref, scale = _library_and_reference(name, kw, x, w, y, rng)
    assert lib.shape == (batch,)
    assert lib.dtype == dtype
    rtol, atol = _tolerances(dtype, scale)
    np.testing.assert_allclose(
        np.asarray(lib, np.float64), ref, rtol=rtol, atol=atol,
        err_msg=f"{name} {kw} B={batch} C={classes}",
    )


def test_reference_cases_cover_every_branch():
  """The random cases really reach each ArcFace / SphereFace branch."""
  rng = np.random.default_rng(1)
  thetas = np.concatenate([make_case(rng, b, c)[3] for b, c in SHAPES])
  for m in ARC_MARGINS:
    assert np.any(thetas > np.pi - m) and np.any(thetas < np.pi - m)
  assert np.any(thetas < np.pi / 2) and np.any(thetas > np.pi / 2)
  ks = np.floor(4 * thetas / np.pi)
  assert set(ks.tolist()) >= {1.0, 2.0, 3.0}


@pytest.mark.usefixtures("x64")
def test_sphereface_reference_psi_is_the_published_piecewise_function():
  """Sanity of the reference itself: ψ(0) = 1, ψ(π) = 1 − 2m, decreasing."""
  for m in (1, 2, 3, 4):
    assert sphereface_psi(1.0, m) == pytest.approx(1.0)
    assert sphereface_psi(-1.0, m) == pytest.approx(1.0 - 2.0 * m)
    values = [sphereface_psi(np.cos(t), m) for t in np.linspace(0, np.pi, 401)]
    assert np.all(np.diff(values) < 0)


# ---------------------------------------------------------------------------
# The paper's reductions (Eq. 1–2).
# ---------------------------------------------------------------------------


def _cosine_matrix(x, w):
  return np.array([[_cos(xb, wj) for wj in w] for xb in x])


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("batch,classes", SHAPES)
@pytest.mark.parametrize("margin,gamma", [(0.35, 64.0), (0.1, 16.0), (0.0, 64.0)])
def test_unified_loss_with_class_proxies_is_cosface(batch, classes, margin, gamma):
  rng = np.random.default_rng(batch * 100 + classes)
  x, w, y, _ = make_case(rng, batch, classes)
  s = _cosine_matrix(x, w)
  sp = s[np.arange(batch), y][:, None]
  sn = np.stack([np.delete(s[b], y[b]) for b in range(batch)])
  uni = unified_loss(sp, sn, margin=margin, gamma=gamma)
  cos = cosface_loss(x, w, y, margin=margin, gamma=gamma)
  assert uni.shape == cos.shape == (batch,)
  np.testing.assert_allclose(uni, cos, rtol=1e-10, atol=1e-12)
  if margin == 0.0:
    np.testing.assert_allclose(
        normface_loss(x, w, y, gamma=gamma), uni, rtol=1e-10, atol=1e-12
    )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("batch,classes", SHAPES)
def test_softmax_is_log_softmax_of_affine_logits(batch, classes):
  rng = np.random.default_rng(7 + batch)
  x = rng.normal(size=(batch, DIM))
  w = rng.normal(size=(classes, DIM))
  bias = rng.normal(size=classes)
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  logits = x @ w.T + bias
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  expected = -log_probs[np.arange(batch), y]
  np.testing.assert_allclose(
      softmax_loss(x, w, y, bias=bias), expected, rtol=1e-10, atol=1e-12
  )
  logits = x @ w.T
  shifted = logits - logits.max(axis=1, keepdims=True)
  no_bias = -(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(batch), y]
  np.testing.assert_allclose(
      softmax_loss(x, w, y), no_bias, rtol=1e-10, atol=1e-12
  )


@pytest.mark.usefixtures("x64")
def test_am_softmax_is_cosface():
  assert am_softmax_loss is cosface_loss
  rng = np.random.default_rng(3)
  x, w, y, _ = make_case(rng, 3, 7)
  np.testing.assert_array_equal(
      am_softmax_loss(x, w, y, margin=0.2, gamma=30.0),
      cosface_loss(x, w, y, margin=0.2, gamma=30.0),
  )


@pytest.mark.usefixtures("x64")
def test_defaults_are_the_papers_baselines():
  rng = np.random.default_rng(4)
  x, w, y, _ = make_case(rng, 3, 7)
  np.testing.assert_allclose(normface_loss(x, w, y), ref_normface(x, w, y, 64.0), rtol=1e-10)
  np.testing.assert_allclose(
      cosface_loss(x, w, y), ref_cosface(x, w, y, 0.35, 64.0), rtol=1e-10
  )
  np.testing.assert_allclose(
      arcface_loss(x, w, y), ref_arcface(x, w, y, 0.5, 64.0), rtol=1e-10
  )
  np.testing.assert_allclose(
      sphereface_loss(x, w, y), ref_sphereface(x, w, y, 4, 0.0), rtol=1e-10
  )


# ---------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------

# Per loss, the hyper-parameter settings whose gradients are checked together
# (one jitted function returning every setting's per-example losses).
GRAD_CONFIGS = {
    "softmax": [{}],
    "normface": [dict(gamma=8.0)],
    "cosface": [dict(margin=0.35, gamma=8.0), dict(margin=-0.1, gamma=3.0)],
    "arcface": [
        dict(margin=0.5, gamma=8.0),
        dict(margin=1.0, gamma=8.0),
        dict(margin=0.5, gamma=8.0, easy_margin=True),
    ],
    # annealing_lambda is traced, so both settings share one compiled program.
    "sphereface": [dict(margin=4), dict(margin=4, annealing_lambda=5.0)],
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", list(GRAD_CONFIGS))
def test_gradients_match_finite_differences(name):
  rng = np.random.default_rng(11)
  # Generic points: every target angle, including the nearly-opposite ones, is
  # far from the ArcFace branch switch, the easy-margin switch and |cos| = 1.
  x, w, y, theta = make_case(rng, 3, 7)
  for kw in GRAD_CONFIGS[name]:
    if name == "arcface":
      assert np.all(np.abs(theta - (np.pi - kw["margin"])) > 1e-2)
      assert np.all(np.abs(theta - np.pi / 2) > 1e-2)
  loss = LOSSES[name]

  def f(x, w):
    return jnp.concatenate([loss(x, w, y, **kw) for kw in GRAD_CONFIGS[name]])

  check_grads(f, (jnp.asarray(x), jnp.asarray(w)), order=1, modes=("rev",))
  if name == "softmax":
    bias = jnp.asarray(rng.normal(size=7))
    check_grads(
        lambda x, w, c: softmax_loss(x, w, y, bias=c),
        (jnp.asarray(x), jnp.asarray(w), bias),
        order=1,
        modes=("rev",),
    )


def _grads_for_configs(loss, configs, x, w, y):
  """[(∂/∂x, ∂/∂W) of Σ_b loss] for each hyper-parameter dict."""
  return [
      jax.grad(lambda x, w: loss(x, w, y, **kw).sum(), argnums=(0, 1))(x, w)
      for kw in configs
  ]


ARC_FINITE_CONFIGS = [
    dict(margin=m, gamma=64.0, easy_margin=e) for m in ARC_MARGINS for e in (False, True)
]


# Fast tier: float32 (the training dtype, where cos = ±1 is reached by rounding);
# float64 runs in the slow tier. The same for SphereFace below.
@pytest.mark.parametrize("dtype", [np.float32, slow(np.float64)])
def test_arcface_gradient_finite_at_parallel_and_zero_embeddings(request, dtype):
  _enter_dtype(request, dtype)
  rng = np.random.default_rng(5)
  w = rng.normal(size=(7, DIM))
  w[0] = 0.0
  w[0, 0] = 3.0
  x = np.stack([
      2.0 * np.eye(DIM)[0],  # exactly parallel to proxy 0: cos = 1 exactly
      1.7 * w[2],  # parallel to a random proxy (cos ≈ 1 up to rounding)
      np.zeros(DIM),  # zero embedding
  ])
  y = np.array([0, 2, 1], np.int32)
  x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
  grads = _grads_for_configs(arcface_loss, ARC_FINITE_CONFIGS, x, w, y)
  for kw, (gx, gw) in zip(ARC_FINITE_CONFIGS, grads):
    assert np.all(np.isfinite(gx)), kw
    assert np.all(np.isfinite(gw)), kw
    value = arcface_loss(x, w, y, **kw)
    assert np.all(np.isfinite(value)), kw
    # At cos = 1 exactly the value is the formula's (target logit γ·cos m).
    expected = ref_arcface(x[:1], w, y[:1], **kw)
    np.testing.assert_allclose(value[0], expected[0], rtol=1e-4, atol=1e-6, err_msg=str(kw))


SPHERE_FINITE_CONFIGS = [
    dict(margin=m, annealing_lambda=lam) for m in (3, 4) for lam in (0.0, 5.0)
]


def _sphereface_at_plus_minus_one():
  rng = np.random.default_rng(6)
  w = rng.normal(size=(7, DIM))
  # cos = 1, cos = −1 and cos = 1 with ‖x‖ < 1.
  x = np.stack([2.0 * w[0], -1.5 * w[1], 0.5 * w[2] / np.linalg.norm(w[2])])
  return x, w, np.array([0, 1, 2], np.int32)


@pytest.mark.parametrize("dtype", [np.float32, slow(np.float64)])
def test_sphereface_gradient_finite_at_cos_plus_minus_one(request, dtype):
  _enter_dtype(request, dtype)
  x, w, y = _sphereface_at_plus_minus_one()
  xd, wd = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
  grads = _grads_for_configs(sphereface_loss, SPHERE_FINITE_CONFIGS, xd, wd, y)
  for kw, (gx, gw) in zip(SPHERE_FINITE_CONFIGS, grads):
    assert np.all(np.isfinite(gx)), kw
    assert np.all(np.isfinite(gw)), kw
    np.testing.assert_allclose(
        sphereface_loss(xd, wd, y, **kw), ref_sphereface(x, w, y, **kw),
        rtol=1e-5, err_msg=str(kw),
    )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("margin", [2, 4])
def test_sphereface_gradient_correct_at_cos_plus_minus_one(margin):
  """ψ is a polynomial in cos θ near θ = 0 and θ = π, so the loss is smooth there."""
  x, w, y = _sphereface_at_plus_minus_one()
  f = lambda x, w: sphereface_loss(x, w, y, margin=margin, annealing_lambda=5.0)
  check_grads(f, (jnp.asarray(x), jnp.asarray(w)), order=1, modes=("rev",))


# ---------------------------------------------------------------------------
# ArcFace's target function ψ(θ) on a 2-class setup.
# ---------------------------------------------------------------------------


def _two_class_arcface(thetas, **kw):
  """Loss for x at angle θ from proxy 0 and orthogonal to proxy 1 (cos θ_1 = 0).

  Then L = softplus(−γψ(θ)), so ψ(θ) = −log(expm1(L))/γ.
  """
  w = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  x = jnp.stack([jnp.cos(thetas), jnp.sin(thetas), jnp.zeros_like(thetas)], axis=1)
  y = jnp.zeros(thetas.shape, jnp.int32)
  return arcface_loss(x, w, y, **kw)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("margin", ARC_MARGINS)
def test_arcface_psi_one_sided_values_at_pi_minus_margin(margin):
  """The documented jump of insightface's rule at θ = π − m.

  Left of the switch ψ = cos(θ + m) → cos π = −1; right of it
  ψ = cos θ − m·sin m → −cos m − m·sin m (lower, so ψ keeps decreasing).
  """
  gamma, delta = 1.0, 1e-7
  thetas = jnp.full(1001, np.pi - margin).at[0].add(-delta).at[1].add(delta)
  loss = np.asarray(_two_class_arcface(thetas, margin=margin, gamma=gamma))[:2]
  psi = -np.log(np.expm1(loss)) / gamma
  assert psi[0] == pytest.approx(-1.0, abs=1e-6)  # cos(θ + m) → cos π
  assert psi[1] == pytest.approx(-np.cos(margin) - margin * np.sin(margin), abs=1e-5)
  assert psi[1] < psi[0]


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("margin", ARC_MARGINS)
@pytest.mark.parametrize("gamma", [4.0, 64.0])
def test_arcface_loss_increases_with_target_angle(margin, gamma):
  thetas = jnp.linspace(0.0, np.pi, 1001)
  loss = np.asarray(_two_class_arcface(thetas, margin=margin, gamma=gamma))
  assert np.all(np.isfinite(loss))
  assert np.all(np.diff(loss) > 0)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("margin", [1, 2, 3, 4])
@pytest.mark.parametrize("annealing_lambda", [0.0, 5.0])
def test_sphereface_loss_increases_with_target_angle(margin, annealing_lambda):
  thetas = jnp.linspace(0.0, np.pi, 1001)
  w = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  x = 2.0 * jnp.stack([jnp.cos(thetas), jnp.sin(thetas), jnp.zeros_like(thetas)], 1)
  y = jnp.zeros(thetas.shape, jnp.int32)
  loss = np.asarray(
      sphereface_loss(x, w, y, margin=margin, annealing_lambda=annealing_lambda)
  )
  assert np.all(np.diff(loss) > 0)


# ---------------------------------------------------------------------------
# jit and vmap.
# ---------------------------------------------------------------------------

TRANSFORM_CONFIGS = [
    ("softmax", softmax_loss, {}),
    ("cosface", cosface_loss, dict(margin=0.35, gamma=64.0)),
    ("arcface", arcface_loss, dict(margin=0.5, gamma=64.0)),
    ("sphereface", sphereface_loss, dict(margin=4, annealing_lambda=5.0)),
]


# Fast tier: ArcFace (branches on the target angle under jit and vmap); the other
# losses run in the slow tier.
@pytest.mark.parametrize(
    "name,loss,kw",
    [c if c[0] == "arcface" else slow(*c, id=c[0]) for c in TRANSFORM_CONFIGS],
    ids=[c[0] for c in TRANSFORM_CONFIGS],
)
def test_jit_and_vmap_over_batches_match_direct_calls(name, loss, kw):
  rng = np.random.default_rng(8)
  cases = [make_case(rng, 3, 7) for _ in range(3)]
  w = jnp.asarray(cases[0][1], jnp.float32)
  xs = jnp.asarray(np.stack([c[0] for c in cases]), jnp.float32)
  ys = jnp.asarray(np.stack([c[2] for c in cases]))
  direct = np.stack([loss(xs[i], w, ys[i], **kw) for i in range(3)])
  jitted_loss = jax.jit(functools.partial(loss, **kw))
  jitted = np.stack([jitted_loss(xs[i], w, ys[i]) for i in range(3)])
  mapped = jax.vmap(lambda x, y: loss(x, w, y, **kw))(xs, ys)
  jit_mapped = jax.jit(jax.vmap(lambda x, y: loss(x, w, y, **kw)))(xs, ys)
  for got in (jitted, mapped, jit_mapped):
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, direct, rtol=2e-6, atol=1e-6)


def test_softmax_bias_under_jit_and_vmap():
  rng = np.random.default_rng(9)
  xs = jnp.asarray(rng.normal(size=(3, 3, DIM)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(7, DIM)), jnp.float32)
  biases = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
  ys = jnp.asarray(rng.integers(0, 7, size=(3, 3)).astype(np.int32))
  direct = np.stack([softmax_loss(xs[i], w, ys[i], bias=biases[i]) for i in range(3)])
  mapped = jax.jit(jax.vmap(lambda x, y, c: softmax_loss(x, w, y, bias=c)))(xs, ys, biases)
  np.testing.assert_allclose(mapped, direct, rtol=2e-6, atol=1e-6)


# Fast tier: CosFace; NormFace and ArcFace run in the slow tier.
@pytest.mark.parametrize(
    "loss,kw",
    [(cosface_loss, dict(margin=0.35)), slow(normface_loss, {}), slow(arcface_loss, dict(margin=0.5))],
    ids=["cosface", "normface", "arcface"],
)
def test_vmap_over_gamma_matches_direct_calls(loss, kw):
  rng = np.random.default_rng(10)
  x, w, y, _ = make_case(rng, 3, 7)
  x, w = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
  gammas = jnp.array([16.0, 64.0])
  mapped = jax.vmap(lambda g: loss(x, w, y, gamma=g, **kw))(gammas)
  direct = np.stack([loss(x, w, y, gamma=16.0, **kw), loss(x, w, y, gamma=64.0, **kw)])
  assert mapped.shape == (2, 3)
  np.testing.assert_allclose(mapped, direct, rtol=2e-6, atol=1e-6)
  assert not np.allclose(direct[0], direct[1])  # γ really changes the loss


# ---------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------

ALL_LOSSES = [
    ("softmax", softmax_loss),
    ("normface", normface_loss),
    ("cosface", cosface_loss),
    ("arcface", arcface_loss),
    ("sphereface", sphereface_loss),
]
_ids = [n for n, _ in ALL_LOSSES]


def _valid_inputs(classes=7, batch=3):
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(classes, DIM)), jnp.float32)
  y = jnp.asarray(np.arange(batch) % classes, jnp.int32)
  return x, w, y


@pytest.mark.parametrize("name,loss", ALL_LOSSES, ids=_ids)
def test_float_labels_raise_type_error(name, loss):
  x, w, y = _valid_inputs()
  with pytest.raises(TypeError, match="labels"):
    loss(x, w, y.astype(jnp.float32))


@pytest.mark.parametrize("name,loss", ALL_LOSSES, ids=_ids)
@pytest.mark.parametrize("bad", [-1, 7, 100])
def test_concrete_out_of_range_labels_raise_value_error(name, loss, bad):
  x, w, y = _valid_inputs()
  with pytest.raises(ValueError, match="labels"):
    loss(x, w, y.at[1].set(bad))


@pytest.mark.parametrize("name,loss", ALL_LOSSES, ids=_ids)
def test_class_weights_with_wrong_dimension_raise(name, loss):
  x, w, y = _valid_inputs()
  with pytest.raises(ValueError, match="class_weights"):
    loss(x, w[:, :-1], y)
  with pytest.raises(ValueError, match="class_weights"):
    loss(x, w[None], y)


@pytest.mark.parametrize("bias_shape", [(8,), (6,), (1, 7), ()])
def test_softmax_bias_with_wrong_shape_raises(bias_shape):
  x, w, y = _valid_inputs()
  with pytest.raises(ValueError, match="bias"):
    softmax_loss(x, w, y, bias=jnp.zeros(bias_shape, jnp.float32))


@pytest.mark.parametrize("margin", [math.pi / 2, 2.0, -0.1, float("inf")])
def test_arcface_margin_out_of_range_raises(margin):
  x, w, y = _valid_inputs()
  with pytest.raises(ValueError, match="margin"):
    arcface_loss(x, w, y, margin=margin)


def test_arcface_margin_just_below_half_pi_is_accepted():
  x, w, y = _valid_inputs()
  assert np.all(np.isfinite(arcface_loss(x, w, y, margin=math.pi / 2 - 1e-3)))


def test_sphereface_margin_must_be_a_positive_int():
  x, w, y = _valid_inputs()
  with pytest.raises(TypeError, match="margin"):
    sphereface_loss(x, w, y, margin=2.5)
  with pytest.raises(TypeError, match="margin"):
    sphereface_loss(x, w, y, margin=4.0)
  with pytest.raises(TypeError, match="margin"):
    sphereface_loss(x, w, y, margin=True)
  with pytest.raises(ValueError, match="margin"):
    sphereface_loss(x, w, y, margin=0)
  with pytest.raises(ValueError, match="margin"):
    sphereface_loss(x, w, y, margin=-2)
  with pytest.raises(ValueError, match="annealing_lambda"):
    sphereface_loss(x, w, y, annealing_lambda=-1.0)


@pytest.mark.parametrize(
    "loss", [normface_loss, cosface_loss, arcface_loss], ids=["normface", "cosface", "arcface"]
)
@pytest.mark.parametrize("gamma", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_gamma_raises(loss, gamma):
  x, w, y = _valid_inputs()
  with pytest.raises(ValueError, match="gamma"):
    loss(x, w, y, gamma=gamma)


@pytest.mark.parametrize("name,loss", ALL_LOSSES, ids=_ids)
@pytest.mark.parametrize("bad", [-1, 7])
def test_out_of_range_label_under_jit_is_nan_for_that_example_only(name, loss, bad):
  x, w, y = _valid_inputs()
  bad_y = y.at[1].set(bad)
  got = np.asarray(jax.jit(loss)(x, w, bad_y))
  expected = np.asarray(loss(x, w, y))
  assert np.isnan(got[1])
  np.testing.assert_allclose(got[[0, 2]], expected[[0, 2]], rtol=2e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Half precision.
# ---------------------------------------------------------------------------

BF16_CONFIGS = [
    ("softmax", dict(bias=None)),
    ("normface", dict(gamma=64.0)),
    ("cosface", dict(margin=0.35, gamma=64.0)),
    ("arcface", dict(margin=0.5, gamma=64.0, easy_margin=False)),
    ("arcface", dict(margin=0.5, gamma=64.0, easy_margin=True)),
    ("sphereface", dict(margin=4, annealing_lambda=5.0)),
]


# Fast tier: ArcFace (without easy margin) and SphereFace, the two with branches on
# the angle; the other configurations run in the slow tier.
BF16_FAST = ("arcface-margin=0.5-gamma=64.0-easy_margin=False",
             "sphereface-margin=4-annealing_lambda=5.0")


@pytest.mark.parametrize(
    "name,kw",
    [c if _config_id(c) in BF16_FAST else slow(*c) for c in BF16_CONFIGS],
    ids=[_config_id(c) for c in BF16_CONFIGS],
)
def test_bf16_inputs_give_float32_losses(name, kw):
  rng = np.random.default_rng(13)
  x, w, y, _ = make_case(rng, 8, 50)
  xb = jnp.asarray(x, jnp.bfloat16)
  wb = jnp.asarray(w, jnp.bfloat16)
  loss = LOSSES[name]
  got = loss(xb, wb, y, **kw)
  assert got.dtype == jnp.float32
  assert np.all(np.isfinite(got))
  rounded = loss(xb.astype(jnp.float32), wb.astype(jnp.float32), y, **kw)
  np.testing.assert_allclose(got, rounded, rtol=2e-2, atol=1e-3)
