"""Circle loss (Eq. 6), its closed-form gradients (Eq. 9–10) and the unified loss (Eq. 1)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from circle_jax import circle_exponents, circle_loss, circle_loss_grads, unified_loss

SETTINGS = [  # (margin, gamma): the paper's three tasks and the extremes it studies
    (0.25, 256.0),
    (0.25, 128.0),
    (0.4, 80.0),
    (-0.2, 1024.0),
    (0.5, 32.0),
]


# ----------------------------------------------------------------------------
# Independent numpy reference: Eq. 6 as the double sum over (i, j) pairs.
# ----------------------------------------------------------------------------


def np_logsumexp(v):
  v = np.asarray(v, np.float64)
  if v.size == 0:
    return -np.inf
  top = v.max()
  return top + math.log(np.exp(v - top).sum())


def np_circle(sp, sn, margin, gamma, sp_mask=None, sn_mask=None):
  """log[1 + Σ_i Σ_j exp(γα_n(s_n − Δ_n) − γα_p(s_p − Δ_p))] for one row."""
  sp, sn = np.asarray(sp, np.float64), np.asarray(sn, np.float64)
  sp = sp[sp_mask] if sp_mask is not None else sp
  sn = sn[sn_mask] if sn_mask is not None else sn
  if sp.size == 0 or sn.size == 0:
    return 0.0
  op, on, dp, dn = 1 + margin, -margin, 1 - margin, margin
  terms = [
      gamma * max(s_n - on, 0.0) * (s_n - dn) - gamma * max(op - s_p, 0.0) * (s_p - dp)
      for s_p in sp
      for s_n in sn
  ]
  return float(np.logaddexp(0.0, np_logsumexp(terms)))


def np_unified(sp, sn, margin, gamma):
  terms = [gamma * (s_n - s_p + margin) for s_p in sp for s_n in sn]
  return float(np.logaddexp(0.0, np_logsumexp(terms)))


def random_sets(rng, shape, k, l, masked=False):
  sp = rng.uniform(-0.3, 1.0, size=shape + (k,))
  sn = rng.uniform(-0.6, 0.8, size=shape + (l,))
  if not masked:
    return sp, sn, None, None
  sp_mask = rng.random(shape + (k,)) < 0.7
  sn_mask = rng.random(shape + (l,)) < 0.7
  return sp, sn, sp_mask, sn_mask


# ----------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("margin,gamma", SETTINGS)
@pytest.mark.parametrize("masked", [False, True])
def test_circle_matches_reference(x64, rng, margin, gamma, masked):
  sp, sn, spm, snm = random_sets(rng, (7,), 5, 9, masked)
  got = circle_loss(
      jnp.asarray(sp), jnp.asarray(sn), margin=margin, gamma=gamma,
      sp_mask=spm, sn_mask=snm,
  )
  want = [
      np_circle(sp[b], sn[b], margin, gamma,
                None if spm is None else spm[b], None if snm is None else snm[b])
      for b in range(7)
  ]
  chex.assert_shape(got, (7,))
  np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("margin,gamma", SETTINGS)
def test_circle_float32_matches_reference(rng, margin, gamma):
  sp, sn, spm, snm = random_sets(rng, (6,), 4, 8, masked=True)
  got = circle_loss(
      jnp.asarray(sp, jnp.float32), jnp.asarray(sn, jnp.float32),
      margin=margin, gamma=gamma, sp_mask=spm, sn_mask=snm,
  )
  assert got.dtype == jnp.float32
  # The reference sees the float32-rounded inputs.
  sp32, sn32 = sp.astype(np.float32), sn.astype(np.float32)
  want = [np_circle(sp32[b], sn32[b], margin, gamma, spm[b], snm[b]) for b in range(6)]
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


def test_circle_docstring_defaults_are_the_face_setting():
  sp, sn = jnp.array([0.5, 0.7]), jnp.array([0.1, 0.3, -0.2])
  np.testing.assert_allclose(
      circle_loss(sp, sn), np_circle(sp, sn, 0.25, 256.0), rtol=1e-5
  )


@pytest.mark.parametrize("gamma", [256.0, 512.0, 1024.0])
@pytest.mark.parametrize("margin", [-0.2, 0.0, 0.25, 0.5])
def test_large_gamma_neither_overflows_nor_underflows(gamma, margin):
  """pytorch-metric-learning #173: the loss collapsed to 0 at γ = 256."""
  sp = jnp.array([[0.2, 0.95], [0.99, 0.98], [1.0, 1.0]], jnp.float32)
  sn = jnp.array([[0.9, -0.5], [-0.3, 0.01], [-1.0, -1.0]], jnp.float32)
  got = circle_loss(sp, sn, margin=margin, gamma=gamma)
  want = [np_circle(np.asarray(sp[b]), np.asarray(sn[b]), margin, gamma) for b in range(3)]
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert float(got[0]) > 10.0  # a hard row has a large, not vanished, loss
  dsp, dsn = jax.grad(
      lambda a, b: circle_loss(a, b, margin=margin, gamma=gamma).sum(), argnums=(0, 1)
  )(sp, sn)
  assert np.all(np.isfinite(dsp)) and np.all(np.isfinite(dsn))


def test_unified_matches_reference(x64, rng):
  sp, sn, _, _ = random_sets(rng, (5,), 3, 6)
  for margin, gamma in SETTINGS:
    got = unified_loss(jnp.asarray(sp), jnp.asarray(sn), margin=margin, gamma=gamma)
    want = [np_unified(sp[b], sn[b], margin, gamma) for b in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_unified_masks(x64, rng):
  sp, sn, spm, snm = random_sets(rng, (6,), 4, 5, masked=True)
  got = unified_loss(
      jnp.asarray(sp), jnp.asarray(sn), margin=0.3, gamma=20.0, sp_mask=spm, sn_mask=snm
  )
  for b in range(6):
    p, n = sp[b][spm[b]], sn[b][snm[b]]
    want = 0.0 if (p.size == 0 or n.size == 0) else np_unified(p, n, 0.3, 20.0)
    np.testing.assert_allclose(got[b], want, rtol=1e-11, atol=1e-12)


# ----------------------------------------------------------------------------
# The paper's geometry and reductions
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.1, 0.25, 0.4])
@pytest.mark.parametrize("gamma", [1.0, 64.0, 256.0])
def test_decision_boundary_is_the_circle(x64, margin, gamma):
  """Eq. 7–8: on s_n² + (s_p − 1)² = 2m² the two exponents cancel: L = log 2."""
  radius = math.sqrt(2.0) * margin
  # Angles that keep the point inside the unclipped region s_n > −m, s_p < 1 + m.
  angles = np.linspace(-0.7, 0.7, 9) * math.pi / 2 - math.pi / 4
  sn = radius * np.cos(angles)
  sp = 1.0 + radius * np.sin(angles)
  assert np.all(sn > -margin) and np.all(sp < 1 + margin)
  got = circle_loss(
      jnp.asarray(sp)[:, None], jnp.asarray(sn)[:, None], margin=margin, gamma=gamma
  )
  np.testing.assert_allclose(got, math.log(2.0), rtol=1e-12)
  # Inside the circle (closer to the optimum (0, 1)) the loss is lower, outside higher.
  inner = circle_loss(jnp.asarray(1 + 0.5 * (sp - 1))[:, None],
                      jnp.asarray(0.5 * sn)[:, None], margin=margin, gamma=gamma)
  assert np.all(inner < math.log(2.0))


@pytest.mark.parametrize("margin", [0.0, 0.25, 0.35])
def test_unified_tends_to_hard_mined_triplet(x64, rng, margin):
  """Eq. 3: (1/γ)·L_uni → max_{i,j}[s_n^j − s_p^i + m]_+ as γ → ∞."""
  sp, sn, _, _ = random_sets(rng, (8,), 4, 6)
  hinge = np.maximum(sn.max(-1) - sp.min(-1) + margin, 0.0)
  errors = []
  for gamma in [1e2, 1e3, 1e4, 1e5]:
    scaled = unified_loss(jnp.asarray(sp), jnp.asarray(sn), margin=margin, gamma=gamma) / gamma
    # log(1 + KL e^{γh}) / γ − h lies in [0, log(1 + KL)/γ].
    err = np.asarray(scaled) - hinge
    assert np.all(err >= -1e-12) and np.all(err <= math.log(1 + 24) / gamma + 1e-12)
    errors.append(np.abs(err).max())
  assert errors[-1] < 1e-4 and errors[-1] < errors[0]


def test_circle_rewards_pairs_far_from_optimum_more():
  """Self-paced weighting: a low s_p gets a larger gradient than a nearly optimal one."""
  dsp, _ = circle_loss_grads(
      jnp.array([[0.2, 0.8]]), jnp.array([[0.1]]), margin=0.25, gamma=64.0
  )
  assert abs(float(dsp[0, 0])) > abs(float(dsp[0, 1])) > 0


# ----------------------------------------------------------------------------
# Gradients: closed form (Eq. 9–10) against autodiff and against the paper's text
# ----------------------------------------------------------------------------


def autodiff(sp, sn, **kw):
  return jax.grad(lambda a, b: circle_loss(a, b, **kw).sum(), argnums=(0, 1))(sp, sn)


@pytest.mark.parametrize("margin,gamma", SETTINGS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("through_alpha", [False, True])
def test_closed_form_grads_equal_autodiff(x64, rng, margin, gamma, masked, through_alpha):
  sp, sn, spm, snm = random_sets(rng, (6,), 5, 7, masked)
  if masked:
    spm[0], snm[1] = False, False  # a row with no positive, one with no negative
  kw = dict(margin=margin, gamma=gamma, sp_mask=spm, sn_mask=snm,
            grad_through_alpha=through_alpha)
  sp, sn = jnp.asarray(sp), jnp.asarray(sn)
  closed = circle_loss_grads(sp, sn, **kw)
  auto = autodiff(sp, sn, **kw)
  for c, a in zip(closed, auto):
    chex.assert_trees_all_close(c, a, rtol=1e-10, atol=1e-12)
  if masked:
    assert np.all(np.asarray(closed[0])[~spm] == 0) and np.all(np.asarray(closed[1])[~snm] == 0)
    assert np.all(np.asarray(closed[0])[0:2] == 0) and np.all(np.asarray(closed[1])[0:2] == 0)


@pytest.mark.parametrize("margin,gamma", [(0.25, 256.0), (0.4, 80.0), (0.25, 16.0)])
def test_closed_form_grads_are_the_papers_equations(x64, rng, margin, gamma):
  """Eq. 9–10 typed in literally, inside the unclipped region s_n > −m, s_p < 1 + m."""
  sp = rng.uniform(0.0, 1.0, size=(4, 3))
  sn = rng.uniform(-margin + 0.05, 0.6, size=(4, 5))
  loss = np.array([np_circle(sp[b], sn[b], margin, gamma) for b in range(4)])
  z = 1.0 - np.exp(-loss)
  en = gamma * (sn**2 - margin**2)
  ep = gamma * ((sp - 1.0) ** 2 - margin**2)
  wn = np.exp(en - en.max(-1, keepdims=True))
  wp = np.exp(ep - ep.max(-1, keepdims=True))
  dsn = z[:, None] * wn / wn.sum(-1, keepdims=True) * gamma * (sn + margin)
  dsp = z[:, None] * wp / wp.sum(-1, keepdims=True) * gamma * (sp - 1.0 - margin)
  got = circle_loss_grads(jnp.asarray(sp), jnp.asarray(sn), margin=margin, gamma=gamma)
  np.testing.assert_allclose(got[0], dsp, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(got[1], dsn, rtol=1e-9, atol=1e-12)
  # Differentiating through α multiplies them by 2s_n/(s_n + m) and 2(1 − s_p)/(1 + m − s_p).
  through = circle_loss_grads(jnp.asarray(sp), jnp.asarray(sn), margin=margin,
                              gamma=gamma, grad_through_alpha=True)
  np.testing.assert_allclose(through[0], dsp * 2 * (1 - sp) / (1 + margin - sp), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(through[1], dsn * 2 * sn / (sn + margin), rtol=1e-9, atol=1e-12)


def test_clipped_scores_get_zero_gradient(x64):
  """s_p ≥ 1 + m or s_n ≤ −m: α = 0, the score is already optimal and is not pushed."""
  sp, sn = jnp.array([[1.3, 0.5]]), jnp.array([[-0.5, 0.4]])
  dsp, dsn = circle_loss_grads(sp, sn, margin=0.25, gamma=64.0)
  assert float(dsp[0, 0]) == 0.0 and float(dsn[0, 0]) == 0.0
  assert float(dsp[0, 1]) < 0.0 < float(dsn[0, 1])
  chex.assert_trees_all_close((dsp, dsn), autodiff(sp, sn, margin=0.25, gamma=64.0))


def test_check_grads_circle(x64, rng):
  """Through α the gradient is the true derivative of the value: finite differences agree."""
  sp, sn, spm, snm = random_sets(rng, (3,), 4, 5, masked=True)
  f = lambda a, b: circle_loss(
      a, b, margin=0.3, gamma=8.0, sp_mask=spm, sn_mask=snm, grad_through_alpha=True)
  check_grads(f, (jnp.asarray(sp), jnp.asarray(sn)), order=2, modes=("fwd", "rev"))


def test_stop_gradient_alpha_is_not_the_derivative_of_the_value(x64, rng):
  """The paper's gradient treats α as a constant, so it differs from finite differences."""
  sp, sn, _, _ = random_sets(rng, (3,), 4, 5)
  f = lambda a, b: circle_loss(a, b, margin=0.3, gamma=8.0)
  with pytest.raises(AssertionError):
    check_grads(f, (jnp.asarray(sp), jnp.asarray(sn)), order=1, modes=("rev",))


def test_check_grads_unified(x64, rng):
  sp, sn, spm, snm = random_sets(rng, (3,), 4, 5, masked=True)
  f = lambda a, b: unified_loss(a, b, margin=0.3, gamma=8.0, sp_mask=spm, sn_mask=snm)
  check_grads(f, (jnp.asarray(sp), jnp.asarray(sn)), order=2, modes=("fwd", "rev"))


def test_grads_broadcast_leading_dims(x64, rng):
  """sp shared by every row of sn: the closed form sums over the broadcast axis."""
  sp = jnp.asarray(rng.uniform(0, 1, (1, 4)))
  sn = jnp.asarray(rng.uniform(-0.5, 0.5, (6, 3)))
  got = circle_loss_grads(sp, sn, margin=0.25, gamma=32.0)
  chex.assert_shape(got, ((1, 4), (6, 3)))
  chex.assert_trees_all_close(got, autodiff(sp, sn, margin=0.25, gamma=32.0), rtol=1e-10)


# ----------------------------------------------------------------------------
# Empty and masked rows: exactly 0, zero gradients, never NaN
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [circle_loss, unified_loss])
def test_zero_length_sets(fn):
  kw = dict(margin=0.25, gamma=256.0)
  sp, sn = jnp.zeros((3, 0)), jnp.array([[0.1, 0.2]] * 3)
  for a, b in [(sp, sn), (sn, sp)]:
    loss = fn(a, b, **kw)
    chex.assert_trees_all_equal(loss, jnp.zeros(3))
    grads = jax.grad(lambda u, v: fn(u, v, **kw).sum(), argnums=(0, 1))(a, b)
    chex.assert_trees_all_equal(grads, (jnp.zeros_like(a), jnp.zeros_like(b)))


@pytest.mark.parametrize("fn", [circle_loss, unified_loss])
def test_fully_masked_rows_have_zero_loss_and_gradient(fn):
  # NaN and inf padding in masked slots must reach neither value nor gradient.
  sp = jnp.array([[0.5, jnp.nan], [jnp.inf, 0.3], [0.9, 0.8]])
  sn = jnp.array([[0.2, -jnp.inf], [0.1, 0.4], [jnp.nan, 0.3]])
  sp_mask = jnp.array([[True, False], [False, False], [True, True]])
  sn_mask = jnp.array([[True, False], [True, True], [False, True]])
  kw = dict(margin=0.25, gamma=1024.0, sp_mask=sp_mask, sn_mask=sn_mask)
  loss = fn(sp, sn, **kw)
  assert float(loss[1]) == 0.0 and np.all(np.isfinite(loss)) and float(loss[0]) > 0
  dsp, dsn = jax.grad(lambda a, b: fn(a, b, **kw).sum(), argnums=(0, 1))(sp, sn)
  assert np.all(np.isfinite(dsp)) and np.all(np.isfinite(dsn))
  assert np.all(np.asarray(dsp)[~np.asarray(sp_mask)] == 0)
  assert np.all(np.asarray(dsn)[~np.asarray(sn_mask)] == 0)
  assert np.all(np.asarray(dsp)[1] == 0) and np.all(np.asarray(dsn)[1] == 0)


def test_closed_form_grads_of_masked_rows_are_zero():
  sp, sn = jnp.array([[0.5, 0.1]]), jnp.array([[0.2, 0.3]])
  dsp, dsn = circle_loss_grads(
      sp, sn, margin=0.25, gamma=256.0, sp_mask=jnp.array([[False, False]])
  )
  chex.assert_trees_all_equal((dsp, dsn), (jnp.zeros((1, 2)), jnp.zeros((1, 2))))


# ----------------------------------------------------------------------------
# dtypes, transformations
# ----------------------------------------------------------------------------


def test_bf16_accumulates_in_float32(rng):
  sp, sn, _, _ = random_sets(rng, (4,), 64, 512)
  sp16, sn16 = jnp.asarray(sp, jnp.bfloat16), jnp.asarray(sn, jnp.bfloat16)
  got = circle_loss(sp16, sn16, margin=0.25, gamma=256.0)
  assert got.dtype == jnp.float32
  want = circle_loss(sp16.astype(jnp.float32), sn16.astype(jnp.float32), margin=0.25, gamma=256.0)
  chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_jit_vmap_grad_compose(rng):
  sp, sn, spm, snm = random_sets(rng, (3, 4), 5, 6, masked=True)
  kw = dict(margin=0.25, gamma=64.0)
  direct = circle_loss(sp, sn, sp_mask=spm, sn_mask=snm, **kw)
  chex.assert_shape(direct, (3, 4))
  mapped = jax.jit(jax.vmap(lambda a, b, c, d: circle_loss(a, b, sp_mask=c, sn_mask=d, **kw)))(
      sp, sn, spm, snm
  )
  chex.assert_trees_all_close(mapped, direct, rtol=1e-6)
  grad_fn = jax.jit(jax.vmap(jax.grad(
      lambda a, b, c, d: circle_loss(a, b, sp_mask=c, sn_mask=d, **kw).sum(), argnums=(0, 1))))
  closed = circle_loss_grads(sp, sn, sp_mask=spm, sn_mask=snm, **kw)
  chex.assert_trees_all_close(grad_fn(sp, sn, spm, snm), closed, rtol=2e-5, atol=1e-6)


def test_vmap_over_hyperparameters(x64, rng):
  sp, sn, _, _ = random_sets(rng, (5,), 3, 4)
  gammas = jnp.array([32.0, 80.0, 256.0, 1024.0])
  margins = jnp.array([-0.2, 0.0, 0.25, 0.4])
  for fn in (circle_loss, unified_loss):
    grid = jax.jit(jax.vmap(jax.vmap(
        lambda g, m: fn(sp, sn, margin=m, gamma=g), in_axes=(None, 0)), in_axes=(0, None)))(
            gammas, margins)
    chex.assert_shape(grid, (4, 4, 5))
    for i, g in enumerate(gammas):
      for j, m in enumerate(margins):
        chex.assert_trees_all_close(
            grid[i, j], fn(sp, sn, margin=float(m), gamma=float(g)), rtol=1e-12)
  # And the closed-form gradients, vmapped over γ.
  grads = jax.vmap(lambda g: circle_loss_grads(sp, sn, margin=0.25, gamma=g))(gammas)
  for i, g in enumerate(gammas):
    chex.assert_trees_all_close(
        jax.tree.map(lambda t: t[i], grads),
        circle_loss_grads(sp, sn, margin=0.25, gamma=float(g)), rtol=1e-12)


def test_any_leading_shape():
  sp = jnp.full((2, 3, 4), 0.6)
  sn = jnp.full((2, 3, 5), 0.3)
  chex.assert_shape(circle_loss(sp, sn), (2, 3))
  chex.assert_shape(circle_loss(sp[0, 0], sn[0, 0]), ())
  chex.assert_shape(circle_loss(sp[:1], sn), (2, 3))  # broadcast


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(sp=jnp.ones((2, 3), jnp.int32)), TypeError, "sp must have a floating dtype"),
        (dict(sn=jnp.float32(0.1)), ValueError, "trailing set axis"),
        (dict(sn=jnp.ones((3, 2))), ValueError, "leading"),
        (dict(gamma=-1.0), ValueError, "gamma must be > 0"),
        (dict(gamma=0.0), ValueError, "gamma must be > 0"),
        (dict(gamma=float("inf")), ValueError, "gamma must be finite"),
        (dict(gamma=float("nan")), ValueError, "gamma must be finite"),
        (dict(margin=float("nan")), ValueError, "margin must be finite"),
        (dict(gamma=jnp.ones(2)), ValueError, "gamma must be a scalar"),
        (dict(gamma="80"), TypeError, "gamma must be a real scalar"),
        (dict(sp_mask=jnp.ones((2, 3))), TypeError, "sp_mask must be a boolean"),
        (dict(sp_mask=jnp.ones((2, 4), bool)), ValueError, "sp_mask has shape"),
        (dict(sn_mask=jnp.ones((5,), bool)), ValueError, "sn_mask has shape"),
    ],
)
@pytest.mark.parametrize("fn", [circle_loss, circle_loss_grads, unified_loss])
def test_bad_input(fn, kwargs, error, match):
  args = dict(sp=jnp.ones((2, 3)) * 0.5, sn=jnp.ones((2, 4)) * 0.1, margin=0.25, gamma=64.0)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    fn(args.pop("sp"), args.pop("sn"), **args)


@pytest.mark.parametrize("fn", [circle_loss, circle_loss_grads])
def test_grad_through_alpha_must_be_a_python_bool(fn):
  with pytest.raises(TypeError, match="grad_through_alpha must be a Python bool"):
    fn(jnp.ones((1, 2)), jnp.ones((1, 2)), margin=0.25, gamma=8.0,
       grad_through_alpha=jnp.array(True))


def test_bad_hyperparameters_are_caught_at_trace_time():
  f = jax.jit(lambda a, b: circle_loss(a, b, gamma=-3.0))
  with pytest.raises(ValueError, match="gamma"):
    f(jnp.ones((1, 2)), jnp.ones((1, 2)))


def test_masks_may_add_leading_axes(x64, rng):
  """One shared set of scores, masked differently per row."""
  sp, sn = rng.uniform(0, 1, 4), rng.uniform(-0.5, 0.5, 5)
  sp_mask = rng.random((3, 4)) < 0.6
  sn_mask = rng.random((3, 5)) < 0.6
  got = circle_loss(sp, sn, margin=0.25, gamma=32.0, sp_mask=sp_mask, sn_mask=sn_mask)
  chex.assert_shape(got, (3,))
  want = [np_circle(sp, sn, 0.25, 32.0, sp_mask[b], sn_mask[b]) for b in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
  closed = circle_loss_grads(sp, sn, margin=0.25, gamma=32.0, sp_mask=sp_mask, sn_mask=sn_mask)
  auto = jax.grad(lambda a, b: circle_loss(a, b, margin=0.25, gamma=32.0, sp_mask=sp_mask,
                                           sn_mask=sn_mask).sum(), argnums=(0, 1))(sp, sn)
  chex.assert_shape(closed, ((4,), (5,)))
  chex.assert_trees_all_close(closed, auto, rtol=1e-10, atol=1e-12)


# Fast tier: the face setting; the other settings run in the slow tier.
@pytest.mark.parametrize("margin, gamma", [SETTINGS[0]] + [
    pytest.param(*s, marks=pytest.mark.slow) for s in SETTINGS[1:]])
def test_exponents_recombine_to_circle_loss(x64, rng, margin, gamma):
  """circle_loss = softplus(LSE(l_p) + LSE(l_n)) of the exposed exponents, gradients too."""
  sp, sn, _, _ = random_sets(rng, (3,), 4, 5)
  sp, sn = jnp.asarray(sp), jnp.asarray(sn)
  for through in (False, True):
    def recombined(a, b):
      lp, ln = circle_exponents(a, b, margin=margin, gamma=gamma, grad_through_alpha=through)
      return jax.nn.softplus(jax.nn.logsumexp(lp, -1) + jax.nn.logsumexp(ln, -1))

    direct = lambda a, b: circle_loss(a, b, margin=margin, gamma=gamma, grad_through_alpha=through)
    np.testing.assert_allclose(recombined(sp, sn), direct(sp, sn), rtol=1e-12)
    for g1, g2 in zip(jax.grad(lambda a, b: recombined(a, b).sum(), (0, 1))(sp, sn),
                      jax.grad(lambda a, b: direct(a, b).sum(), (0, 1))(sp, sn)):
      np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-300)


def test_exponents_match_the_paper_by_hand():
  lp, ln = circle_exponents(jnp.array([0.8, 1.3]), jnp.array([0.3, -0.5]), margin=0.25, gamma=10.0)
  # α_p = [1.25 − s]_+: 0.45 and 0 (clipped); α_n = [s + 0.25]_+: 0.55 and 0.
  np.testing.assert_allclose(lp, [-10 * 0.45 * (0.8 - 0.75), 0.0], atol=1e-6)
  np.testing.assert_allclose(ln, [10 * 0.55 * (0.3 - 0.25), 0.0], atol=1e-6)


def test_exponents_bad_input():
  with pytest.raises(ValueError, match="gamma"):
    circle_exponents(jnp.ones(2), jnp.ones(2), margin=0.25, gamma=-1.0)
  with pytest.raises(TypeError, match="grad_through_alpha"):
    circle_exponents(jnp.ones(2), jnp.ones(2), grad_through_alpha="yes")
