"""Circle loss (pair-wise and class-level) as the verifier sees it: axes and references.

Paper form for one anchor (Eq. 6, Sun et al. 2020), with Δ_p = 1 − m,
Δ_n = m, α_p = [1 + m − s_p]_+ and α_n = [s_n + m]_+:

    L = softplus(LSE_p −γα_p(s_p − Δ_p) + LSE_n γα_n(s_n − Δ_n)).

The references below build this from circle_jax's masked log-sum-exp and safe
normalisation, with each axis a switch, so that one function covers every
documented variant and every known defect. Their default variants equal
:func:`circle_jax.pairwise_circle_loss` and :func:`circle_jax.class_circle_loss`
(tested to float64 rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics
from circle_jax.verify import _spec
from circle_jax.verify._variants import Axis
from circle_jax.verify._variants import Variant

# (γ, m) of the paper's three tasks (Sec. 4.2) and a γ far beyond them, where
# implementations that exponentiate without a log-sum-exp overflow.
CIRCLE_SETTINGS = {
    "face": {"margin": 0.25, "gamma": 256.0},
    "re-id": {"margin": 0.25, "gamma": 128.0},
    "fine-grained": {"margin": 0.4, "gamma": 80.0},
    "gamma-1024": {"margin": 0.25, "gamma": 1024.0},
}

ALPHA = Axis("alpha", ("detached", "differentiated"), {
    "detached": "α is a constant for the gradient (the paper; pytorch-metric-learning, fast-reid)",
    "differentiated": "the gradient flows through α (Keras 3, TF-Similarity)",
})
NORMALISE = Axis("normalise", ("inside", "none"), {
    "inside": "embeddings (and proxies) are L2-normalised inside the loss",
    "none": "raw dot products: the caller normalises (Keras 3, TF-Similarity)",
})
CLIP = Axis("clip", ("none", "s<=1"), {
    "none": "similarities are used as they are",
    "s<=1": "similarities are clipped to at most 1 (Keras 3 clips the distance 1 − s at 0)",
})
SOFTPLUS = Axis("softplus", ("exact", "cutoff20", "split"), {
    "exact": "softplus(LSE_p + LSE_n) = log(1 + e^t)",
    "cutoff20": "torch's Softplus: t itself for t > 20 (pytorch-metric-learning, fast-reid)",
    "split": "log(1 + Σe^{l_p}) + log(1 + Σe^{l_n}) (TF-Similarity)",
})
SELF_PAIRS = Axis("self_pairs", ("excluded",), {
    "excluded": "an anchor is not its own positive",
    "kept": "each anchor counts itself as a positive with s = 1 (the diagonal is not removed)",
}, defects=("kept",))
CLAMP = Axis("alpha_clamp", ("clamped",), {
    "clamped": "α_p = [1 + m − s_p]_+, α_n = [s_n + m]_+",
    "unclamped": "α without the [·]_+ clamp: negative weights flip the gradient of pairs "
                 "beyond the optimum",
}, defects=("unclamped",))
MARGINS = Axis("margins", ("paper",), {
    "paper": "Δ_p = 1 − m, Δ_n = m",
    "swapped": "Δ_p = m, Δ_n = 1 − m (the two margins exchanged)",
}, defects=("swapped",))
GAMMA = Axis("gamma_applied", ("once",), {
    "once": "the logits are scaled by γ once",
    "twice": "the logits are scaled by γ twice (γ² in effect)",
}, defects=("twice",))
CLASS_SOFTPLUS = Axis("softplus", ("exact", "cutoff20"), {
    "exact": "softplus(LSE_j≠y z_j − z_y) = cross-entropy on the Circle logits",
    "cutoff20": "torch's Softplus: t itself for t > 20 (pytorch-metric-learning)",
})


def _normalised(x, variant):
  return variant.pick("normalise", inside=x * _numerics.inverse_l2_norm(x, keepdims=True), none=x)


def _alphas(s, margin, variant):
  """(α_p, α_n) for every entry of s under the variant's clamp and gradient choices."""
  src = variant.pick("alpha", detached=lax.stop_gradient(s), differentiated=s)
  alpha_p, alpha_n = 1.0 + margin - src, src + margin
  return variant.pick("alpha_clamp", clamped=(jax.nn.relu(alpha_p), jax.nn.relu(alpha_n)),
                      unclamped=(alpha_p, alpha_n))


def _logits(s, params, variant):
  """(positive-side, negative-side) exponents −γα_p(s − Δ_p) and γα_n(s − Δ_n)."""
  margin, gamma = params["margin"], params["gamma"]
  gamma = variant.pick("gamma_applied", once=gamma, twice=gamma * gamma)
  delta_p, delta_n = variant.pick("margins", paper=(1.0 - margin, margin),
                                  swapped=(margin, 1.0 - margin))
  alpha_p, alpha_n = _alphas(s, margin, variant)
  return -gamma * alpha_p * (s - delta_p), gamma * alpha_n * (s - delta_n)


def softplus_variant(t, variant, **extra):
  """softplus(t), or torch's Softplus(threshold=20) that returns t for t > 20."""
  exact = jax.nn.softplus(t)
  return variant.pick("softplus", exact=exact, cutoff20=jnp.where(t > 20.0, t, exact), **extra)


def _guarded(fn, t, ok):
  """fn(t) where ok, else exactly 0 with a zero gradient (double where)."""
  return jnp.where(ok, fn(jnp.where(ok, t, 0.0)), 0.0)


def pairwise_reference(x, labels, class_weights, params, variant):
  """Pair-wise Circle loss of a batch against itself under a variant: [B]."""
  del class_weights
  xn = _normalised(x, variant)
  s = xn @ xn.T
  s = variant.pick("clip", none=s, **{"s<=1": jnp.minimum(s, 1.0)})
  same = labels[:, None] == labels[None, :]
  pos = variant.pick("self_pairs", excluded=same & ~jnp.eye(len(labels), dtype=bool), kept=same)
  neg = ~same
  lp, ln = _logits(s, params, variant)
  lse_p, has_p = _numerics.masked_logsumexp(lp, pos)
  lse_n, has_n = _numerics.masked_logsumexp(ln, neg)
  joint = _guarded(lambda t: softplus_variant(t, variant, split=t), lse_p + lse_n, has_p & has_n)
  # TF-Similarity: log(1 + Σe^{l_p}) + log(1 + Σe^{l_n}), each set on its own.
  split = (_guarded(jax.nn.softplus, lse_p, has_p) + _guarded(jax.nn.softplus, lse_n, has_n))
  return variant.pick("softplus", exact=joint, cutoff20=joint, split=split)


def class_reference(x, labels, class_weights, params, variant):
  """Class-level Circle loss (one proxy per class) under a variant: [B]."""
  s = _normalised(x, variant) @ _normalised(class_weights, variant).T
  target = jax.nn.one_hot(labels, class_weights.shape[0], dtype=bool)
  lp, ln = _logits(s, params, variant)
  lse_other, has_other = _numerics.masked_logsumexp(ln, ~target)
  z_target = jnp.sum(jnp.where(target, lp, 0.0), axis=-1)
  # One positive: LSE_p is its exponent, and softplus(LSE_p + LSE_n) is the
  # cross-entropy on the logits (−l_p at the target, l_n elsewhere).
  return _guarded(lambda t: softplus_variant(t, variant), z_target + lse_other, has_other)


_DEFECTS = (SELF_PAIRS, CLAMP, MARGINS, GAMMA)

PAIRWISE = _spec.register(_spec.LossSpec(
    name="pairwise_circle",
    kind="pair",
    function="circle_jax.pairwise_circle_loss",
    hyperparameters=("margin", "gamma"),
    settings=CIRCLE_SETTINGS,
    axes=(ALPHA, NORMALISE, CLIP, SOFTPLUS) + _DEFECTS,
    reference=pairwise_reference,
    default=Variant.of(alpha="detached", normalise="inside", clip="none", softplus="exact",
                       self_pairs="excluded", alpha_clamp="clamped", margins="paper",
                       gamma_applied="once"),
    conventions={
        "pytorch-metric-learning CircleLoss": dict(
            alpha="detached", normalise="inside", clip="none", softplus="cutoff20",
            reduction="mean_nonzero"),
        "pytorch-metric-learning CircleLoss (DoNothingReducer)": dict(
            alpha="detached", normalise="inside", clip="none", softplus="cutoff20", reduction="none"),
        "Keras 3 keras.losses.Circle": dict(
            alpha="differentiated", normalise="none", clip="s<=1", softplus="exact",
            reduction="mean_nonzero"),
        "Keras 3 keras.losses.circle": dict(
            alpha="differentiated", normalise="none", clip="s<=1", softplus="exact", reduction="none"),
        "fast-reid pairwise_circleloss": dict(
            alpha="detached", normalise="inside", clip="none", softplus="cutoff20", reduction="mean"),
        "TF-Similarity CircleLoss": dict(
            alpha="differentiated", normalise="none", clip="s<=1", softplus="split", reduction="mean"),
        "circle_jax.pairwise_circle_loss": dict(
            alpha="detached", normalise="inside", clip="none", softplus="exact", reduction="none"),
        "circle_jax.pairwise_circle_loss(grad_through_alpha=True)": dict(
            alpha="differentiated", normalise="inside", clip="none", softplus="exact",
            reduction="none"),
    },
    # Clipping at 1 after normalising changes nothing but rounding.
    moot=(lambda v: v["normalise"] == "inside" and v["clip"] != "none",),
    float32_settings=("fine-grained",),
))

CLASS = _spec.register(_spec.LossSpec(
    name="class_circle",
    kind="class",
    function="circle_jax.class_circle_loss",
    hyperparameters=("margin", "gamma"),
    settings=CIRCLE_SETTINGS,
    axes=(ALPHA, NORMALISE, CLASS_SOFTPLUS, CLAMP, MARGINS, GAMMA),
    reference=class_reference,
    default=Variant.of(alpha="detached", normalise="inside", softplus="exact",
                       alpha_clamp="clamped", margins="paper", gamma_applied="once"),
    conventions={
        "pytorch-metric-learning CircleLoss (ref_emb = proxies)": dict(
            alpha="detached", normalise="inside", softplus="cutoff20", reduction="mean_nonzero"),
        "fast-reid CircleSoftmax": dict(
            alpha="detached", normalise="inside", softplus="exact", reduction="mean"),
        "circle_jax.class_circle_loss": dict(
            alpha="detached", normalise="inside", softplus="exact", reduction="none"),
    },
    patterns=("pk", "mixed", "zero_vector"),
    float32_settings=("fine-grained",),
))
