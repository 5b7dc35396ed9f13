"""Class-level (proxy) baselines as the verifier sees them: softmax, NormFace,
CosFace, ArcFace and SphereFace.

Each is one cross-entropy over per-class logits z_b,

    L_b = −log softmax(z_b)[y_b] = softplus(LSE_{j≠y_b} z_bj − z_by_b),

differing only in the logits, with s_bj = cos θ_bj the cosine to proxy j:

    softmax     z_bj = x_b·w_j                       (no normalisation, no scale)
    NormFace    z_bj = γ s_bj
    CosFace     z_by = γ(s_by − m),  z_bj = γ s_bj   (= AM-Softmax)
    ArcFace     z_by = γ ψ(θ_by),    z_bj = γ s_bj,  ψ(θ) = cos(θ + m) for θ ≤ π − m,
                                                     cos θ − m·sin m beyond
    SphereFace  z_by = ‖x_b‖ (λ cos θ_by + ψ_m(θ_by))/(1 + λ),  z_bj = ‖x_b‖ s_bj,
                ψ_m(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k + 1)π/m]

The references compute these with circle_jax's masked log-sum-exp and safe
norms, with each axis a switch, and their default variants equal the
circle_jax functions (tested to float64 rounding). torch's ``cross_entropy``
computes LSE − z_y exactly, so these losses have no softplus cut-off axis.

Softmax is verified without a bias: give the implementation a bias-free
classifier (``torch.nn.Linear(D, C, bias=False)``) or a zero bias.

Example:
  >>> from circle_jax.verify import spec
  >>> arcface = spec("arcface")
  >>> arcface.axis("psi").values, arcface.angles
  (('fallback', 'easy_margin', 'plain', 'plain_no_grad'), ('margin',))
  >>> arcface.axis("margin_unit").defects
  ('degrees_as_radians', 'radians_as_degrees')
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _class_level
from circle_jax.losses import _numerics
from circle_jax.verify import _spec
from circle_jax.verify._variants import Axis
from circle_jax.verify._variants import Variant

# The class-level patterns: every example has a target and C − 1 = 9 other
# classes, so no_positive / no_negative add nothing that pk and mixed lack.
CLASS_PATTERNS = ("pk", "mixed", "zero_vector")

NORMALISE = Axis("normalise", ("both", "weights"), {
    "both": "embeddings and class weights are L2-normalised inside the loss",
    "weights": "only the class weights are normalised inside; the caller normalises the "
               "embeddings (e.g. a model whose head ends in an L2 normalisation)",
    "embeddings": "the class weights are not normalised: their norms scale the logits",
    "neither": "nothing is normalised: raw inner products take the place of cosines",
}, defects=("embeddings", "neither"))
GAMMA = Axis("gamma_applied", ("once",), {
    "once": "the cosines are scaled by γ once",
    "twice": "the cosines are scaled by γ twice (γ² in effect)",
    "inverse": "the cosines are divided by γ: the scale used as a temperature "
               "(pytorch-metric-learning's temperature is 1/γ)",
}, defects=("twice", "inverse"))
MARGIN_ON = Axis("margin_on", ("target",), {
    "target": "the margin is applied to the target class only",
    "all_classes": "the margin is applied to every class, not only the target",
}, defects=("all_classes",))
MARGIN_SCALED = Axis("margin_scaled", ("inside",), {
    "inside": "γ(cos θ − m): the margin is subtracted before scaling",
    "outside": "γ·cos θ − m: the margin is subtracted after scaling (γ times too small)",
}, defects=("outside",))
PSI = Axis("psi", ("fallback", "easy_margin", "plain", "plain_no_grad"), {
    "fallback": "ψ = cos(θ + m) for θ + m ≤ π, cos θ − m·sin m beyond (insightface's th/mm rule; "
                "pytorch-metric-learning ArcFaceLoss; circle_jax)",
    "easy_margin": "ψ = cos(θ + m) where cos θ > 0, cos θ elsewhere (easy_margin=True)",
    "plain": "ψ = cos(θ + m) everywhere: it rises again past θ = π − m",
    "plain_no_grad": "ψ = cos(θ + m) in value, but the gradient is that of cos θ: the margin is "
                     "added under no_grad (insightface arcface_torch CombinedMarginLoss)",
})
# A margin in degrees used as radians under the fallback rule makes ψ = cos θ + 10.5
# (m = 28.6 rad for 0.5 rad; + 17.1 for 0.3 rad): every loss is below e^−400 and a
# framework may round it to 0. The verifier compares results below 1e-30
# absolutely (`_verify.TINY`), so this is diagnosed too. The fallback is written
# as θ + m ≤ π (pytorch-metric-learning); insightface's cos θ > cos(π − m) is the
# same rule for m ≤ π and differs only once a unit mistake pushes m past π.
MARGIN_UNIT = Axis("margin_unit", ("as_given",), {
    "as_given": "the margin is used in the unit verify() passes it in (margin_unit)",
    "degrees_as_radians": "the margin arrives in degrees but is used as radians (180/π times too "
                          "large: 28.6 rad for 0.5 rad)",
    "radians_as_degrees": "the margin is converted from degrees to radians although it is already "
                          "in radians (π/180 times too small); pass margin_unit='degrees' if the "
                          "implementation takes degrees (pytorch-metric-learning ArcFaceLoss)",
}, defects=("degrees_as_radians", "radians_as_degrees"))
LOGITS = Axis("logits", ("inner_product",), {
    "inner_product": "logits x·w_j, neither side normalised",
    "cosine": "logits cos θ_j: embeddings and weights normalised (NormFace with γ = 1)",
}, defects=("cosine",))
SOFTMAX_AXIS = Axis("softmax_axis", ("classes",), {
    "classes": "the softmax runs over the classes of each example",
    "batch": "the softmax runs over the batch (log_softmax(logits, dim=0))",
}, defects=("batch",))
SPHERE_NORMALISE = Axis("normalise", ("weights",), {
    "weights": "the class weights are normalised, the feature norm is kept: logits ‖x‖ψ(θ)",
    "neither": "the class weights are not normalised: logits ‖w_j‖‖x‖ψ(θ) "
               "(L-Softmax, pytorch-metric-learning LargeMarginSoftmaxLoss)",
    "both": "the features are normalised too: logits ψ(θ) without ‖x‖",
}, defects=("neither", "both"))
SPHERE_PSI = Axis("psi", ("piecewise",), {
    "piecewise": "ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k + 1)π/m]: decreasing on [0, π]",
    "cos_mtheta": "ψ(θ) = cos(mθ), not extended piecewise: it rises again past θ = π/m",
}, defects=("cos_mtheta",))
ANNEALING = Axis("annealing", ("paper",), {
    "paper": "target logit ‖x‖(λ cos θ + ψ(θ))/(1 + λ)",
    "swapped": "target logit ‖x‖(cos θ + λψ(θ))/(1 + λ): λ weighs ψ instead of cos θ",
}, defects=("swapped",))

# The largest SphereFace margin the reference evaluates (cos(mθ) by the
# Chebyshev recurrence for a traced m); larger ones give NaN.
MAX_SPHEREFACE_MARGIN = 8


def _cross_entropy(z_target, z, labels):
  """softplus(LSE_{j≠y} z_j − z_y), as circle_jax computes it: [B]."""
  others = jnp.arange(z.shape[1])[None, :] != labels[:, None]
  lse_other, nonempty = _numerics.masked_logsumexp(z, others)
  return _class_level.cross_entropy_from_lses(lse_other, nonempty, z_target, True)


def _at_target(z, labels):
  return jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0]


def _cosines(x, w, variant):
  """x·w_j divided by ‖x‖ and/or ‖w_j‖ as the variant's normalisation says: [B, C]."""
  x_inv, w_inv = _numerics.inverse_l2_norm(x), _numerics.inverse_l2_norm(w)
  one_x, one_w = jnp.ones_like(x_inv), jnp.ones_like(w_inv)
  x_scale, w_scale = variant.pick("normalise", both=(x_inv, w_inv), weights=(one_x, w_inv),
                                  embeddings=(x_inv, one_w), neither=(one_x, one_w))
  return _numerics.scaled_inner_products(x, w, x_scale, w_scale)


def _scale(params, variant):
  gamma = params["gamma"]
  return variant.pick("gamma_applied", once=gamma, twice=gamma * gamma, inverse=1.0 / gamma)


def _margin_cross_entropy(s, margin_logits, labels, gamma, variant):
  """Cross-entropy with the margin logits at the target (or, as a defect, everywhere)."""
  z = variant.pick("margin_on", target=gamma * s, all_classes=margin_logits)
  return _cross_entropy(_at_target(margin_logits, labels), z, labels)


def softmax_reference(x, labels, class_weights, params, variant):
  """Softmax cross-entropy on x·w_j (no bias) under a variant: [B]."""
  del params
  z = _numerics.scaled_inner_products(x, class_weights)
  cosine = _numerics.cosine_similarity_matrix(x, class_weights)
  z = variant.pick("logits", inner_product=z, cosine=cosine)
  z_target = _at_target(z, labels)
  over_batch = jax.nn.logsumexp(z, axis=0)[labels] - z_target
  return variant.pick("softmax_axis", classes=_cross_entropy(z_target, z, labels), batch=over_batch)


def normface_reference(x, labels, class_weights, params, variant):
  """NormFace, cross-entropy on γ cos θ_j, under a variant: [B]."""
  z = _scale(params, variant) * _cosines(x, class_weights, variant)
  return _cross_entropy(_at_target(z, labels), z, labels)


def cosface_reference(x, labels, class_weights, params, variant):
  """CosFace / AM-Softmax, γ(cos θ_y − m) at the target, under a variant: [B]."""
  s = _cosines(x, class_weights, variant)
  gamma, margin = _scale(params, variant), params["margin"]
  margin_logits = variant.pick("margin_scaled", inside=gamma * (s - margin),
                               outside=gamma * s - margin)
  return _margin_cross_entropy(s, margin_logits, labels, gamma, variant)


def _arcface_psi(s, margin, variant):
  """ψ(θ) at cos θ = s (clipped to [−1, 1], as circle_jax does) under the variant's rule."""
  c = jnp.clip(s, -1.0, 1.0)
  # The angle only selects a branch; cos(θ + m) is expanded so that no
  # arccos enters the gradient (finite at |cos θ| = 1).
  theta = lax.stop_gradient(jnp.arccos(c))
  shifted = c * jnp.cos(margin) - _numerics.safe_sqrt(1.0 - jnp.square(c)) * jnp.sin(margin)
  # The rule as pytorch-metric-learning writes it, θ ≤ π − m; insightface's
  # cos θ > cos(π − m) is the same for 0 ≤ m ≤ π but not for a margin in
  # degrees used as radians (m > π).
  fallback = jnp.where(theta <= jnp.pi - margin, shifted, c - margin * jnp.sin(margin))
  return variant.pick("psi", fallback=fallback, easy_margin=jnp.where(c > 0, shifted, c),
                      plain=shifted, plain_no_grad=c + lax.stop_gradient(shifted - c))


def arcface_reference(x, labels, class_weights, params, variant):
  """ArcFace, γψ(θ_y) at the target, under a variant: [B]."""
  s = _cosines(x, class_weights, variant)
  gamma, margin = _scale(params, variant), params["margin"]
  margin = variant.pick("margin_unit", as_given=margin, degrees_as_radians=margin * (180 / math.pi),
                        radians_as_degrees=margin * (math.pi / 180))
  return _margin_cross_entropy(s, gamma * _arcface_psi(s, margin, variant), labels, gamma, variant)


def _chebyshev(c, degree):
  """T_degree(c) = cos(degree·θ) at c = cos θ, for a traced integer degree (NaN above the
  largest the reference evaluates, MAX_SPHEREFACE_MARGIN)."""
  terms = [jnp.ones_like(c), c]
  for _ in range(MAX_SPHEREFACE_MARGIN - 1):
    terms.append(2.0 * c * terms[-1] - terms[-2])
  index = jnp.clip(jnp.round(degree), 0, MAX_SPHEREFACE_MARGIN).astype(jnp.int32)
  out = jnp.take(jnp.stack(terms), index, axis=0)
  return jnp.where(degree <= MAX_SPHEREFACE_MARGIN, out, jnp.nan)


def sphereface_reference(x, labels, class_weights, params, variant):
  """SphereFace (A-Softmax), ‖x‖ψ_m(θ_y) at the target, under a variant: [B]."""
  margin, lam = params["margin"], params["annealing_lambda"]
  s = _numerics.cosine_similarity_matrix(x, class_weights)
  c = jnp.clip(s, -1.0, 1.0)
  theta = lax.stop_gradient(jnp.arccos(c))
  k = jnp.clip(jnp.floor(margin * theta / jnp.pi), 0, margin - 1)
  cos_m_theta = _chebyshev(c, margin)
  psi = variant.pick("psi", piecewise=(1.0 - 2.0 * jnp.mod(k, 2)) * cos_m_theta - 2.0 * k,
                     cos_mtheta=cos_m_theta)
  target = variant.pick("annealing", paper=(lam * c + psi) / (1.0 + lam),
                        swapped=(c + lam * psi) / (1.0 + lam))
  x_norm = _numerics.l2_norm(x)[:, None]
  norms = variant.pick("normalise", weights=jnp.broadcast_to(x_norm, s.shape),
                       neither=x_norm * _numerics.l2_norm(class_weights)[None, :],
                       both=jnp.ones_like(s))
  return _cross_entropy(_at_target(norms * target, labels), norms * s, labels)


def _pml(name, **axes):
  """pytorch-metric-learning's convention with its default MeanReducer, and per element."""
  return {
      f"pytorch-metric-learning {name}": dict(axes, reduction="mean"),
      f"pytorch-metric-learning {name} (DoNothingReducer)": dict(axes, reduction="none"),
  }


SOFTMAX = _spec.register(_spec.LossSpec(
    name="softmax",
    kind="class",
    function="circle_jax.softmax_loss",
    hyperparameters=(),
    settings={"linear": {}},
    axes=(LOGITS, SOFTMAX_AXIS),
    reference=softmax_reference,
    default=Variant.of(logits="inner_product", softmax_axis="classes"),
    conventions={
        "torch.nn.functional.cross_entropy(x @ W.T, y, reduction='none')": dict(reduction="none"),
        "torch.nn.CrossEntropyLoss() on x @ W.T": dict(reduction="mean"),
        "optax.softmax_cross_entropy_with_integer_labels": dict(reduction="none"),
        "Keras SparseCategoricalCrossentropy(from_logits=True)": dict(reduction="mean"),
        "circle_jax.softmax_loss (bias=None)": dict(reduction="none"),
    },
    patterns=CLASS_PATTERNS,
    float32_settings=("linear",),
))

NORMFACE = _spec.register(_spec.LossSpec(
    name="normface",
    kind="class",
    function="circle_jax.normface_loss",
    hyperparameters=("gamma",),
    # γ = 64, the margin baselines' scale; pytorch-metric-learning's default temperature 0.05.
    settings={"γ64": {"gamma": 64.0}, "temperature0.05": {"gamma": 20.0}},
    axes=(NORMALISE, GAMMA),
    reference=normface_reference,
    default=Variant.of(normalise="both", gamma_applied="once"),
    conventions={
        **_pml("NormalizedSoftmaxLoss(temperature=1/γ)", normalise="both"),
        "circle_jax.normface_loss": dict(normalise="both", reduction="none"),
    },
    patterns=CLASS_PATTERNS,
    float32_settings=("γ64",),
))

COSFACE = _spec.register(_spec.LossSpec(
    name="cosface",
    kind="class",
    function="circle_jax.cosface_loss",
    hyperparameters=("margin", "gamma"),
    # The paper's (and pytorch-metric-learning's) m = 0.35; insightface's m = 0.4.
    settings={"paper": {"margin": 0.35, "gamma": 64.0},
              "insightface": {"margin": 0.4, "gamma": 64.0}},
    axes=(NORMALISE, MARGIN_ON, MARGIN_SCALED, GAMMA),
    reference=cosface_reference,
    default=Variant.of(normalise="both", margin_on="target", margin_scaled="inside",
                       gamma_applied="once"),
    conventions={
        **_pml("CosFaceLoss", normalise="both"),
        "insightface arcface_torch CombinedMarginLoss(m3=m) + CrossEntropyLoss": dict(
            normalise="both", reduction="mean"),
        "circle_jax.cosface_loss / am_softmax_loss": dict(normalise="both", reduction="none"),
    },
    patterns=CLASS_PATTERNS,
    float32_settings=("paper",),
))

ARCFACE = _spec.register(_spec.LossSpec(
    name="arcface",
    kind="class",
    function="circle_jax.arcface_loss",
    hyperparameters=("margin", "gamma"),
    # The paper's m = 0.5, γ = 64, and a smaller margin and scale. Both visit
    # θ + m > π: the problems hold two examples at θ > π − 0.5 from their proxy.
    settings={"paper": {"margin": 0.5, "gamma": 64.0}, "m0.3-γ30": {"margin": 0.3, "gamma": 30.0}},
    axes=(NORMALISE, PSI, MARGIN_ON, GAMMA, MARGIN_UNIT),
    reference=arcface_reference,
    default=Variant.of(normalise="both", psi="fallback", margin_on="target",
                       gamma_applied="once", margin_unit="as_given"),
    conventions={
        **_pml("ArcFaceLoss (margin in degrees)", normalise="both", psi="fallback"),
        "insightface ArcFace / ArcMarginProduct (th, mm) + CrossEntropyLoss": dict(
            normalise="both", psi="fallback", reduction="mean"),
        "insightface ArcMarginProduct(easy_margin=True) + CrossEntropyLoss": dict(
            normalise="both", psi="easy_margin", reduction="mean"),
        "insightface arcface_torch CombinedMarginLoss(m2=m) + CrossEntropyLoss": dict(
            normalise="both", psi="plain_no_grad", reduction="mean"),
        "circle_jax.arcface_loss": dict(normalise="both", psi="fallback", reduction="none"),
        "circle_jax.arcface_loss(easy_margin=True)": dict(
            normalise="both", psi="easy_margin", reduction="none"),
    },
    angles=("margin",),
    patterns=CLASS_PATTERNS,
    float32_settings=("paper",),
))

SPHEREFACE = _spec.register(_spec.LossSpec(
    name="sphereface",
    kind="class",
    function="circle_jax.sphereface_loss",
    hyperparameters=("margin", "annealing_lambda"),
    # The paper's m = 4, pure and with its final annealing λ = 5; m = 2 for a
    # second piecewise ψ. The margin is a Python int, as sphereface_loss requires.
    settings={"m4": {"margin": 4, "annealing_lambda": 0.0},
              "m4-λ5": {"margin": 4, "annealing_lambda": 5.0},
              "m2": {"margin": 2, "annealing_lambda": 0.0}},
    axes=(SPHERE_NORMALISE, SPHERE_PSI, ANNEALING),
    reference=sphereface_reference,
    default=Variant.of(normalise="weights", psi="piecewise", annealing="paper"),
    conventions={
        # λ = 0 only: pass settings without annealing and annealing_lambda=None.
        **_pml("SphereFaceLoss(scale=1)"),
        "circle_jax.sphereface_loss": dict(reduction="none"),
    },
    patterns=CLASS_PATTERNS,
    float32_settings=("m4",),
))
