"""Pair-based baselines as the verifier sees them: triplet, contrastive, N-pair,
lifted structure and multi-similarity, with their axes and references.

Each reference builds the loss of :mod:`circle_jax.losses._pair_baselines` on
the batch's own pairs, every axis a switch; the default variants equal the
circle_jax functions (tested to float64 rounding).

Averaging over pairs or triplets. circle_jax returns one value per anchor,
and its reductions (``mean``, ``mean_valid``, ``mean_nonzero``, ``sum``) act on
those. pytorch-metric-learning returns one value per pair or per triplet and
reduces over them (``AvgNonZeroReducer`` over the batch's triplets, ...), which
no reduction of per-anchor values expresses once anchors own different numbers
of pairs. Such losses get an ``average`` axis: besides ``per_anchor`` (circle_jax),
its values return, for anchor a, the share of the batch's scalar that a's own
pairs or triplets carry,

    L_a = Σ_{t owned by a} ℓ_t / N,

with N the batch-wide count the implementation divides by (all its triplets,
or those with ℓ_t > 0, ...), so that ``reduction=sum`` gives the scalar exactly,
gradient included (N carries none). Those values are only meant to be summed:
the other reductions are marked moot for them.

A zero vector. Normalised inside, it has no direction: circle_jax gives it
cosine 0 to everything, so its Euclidean distance to any unit vector is
√(2 − 2·0) = √2; torch's ``F.normalize`` leaves it at the origin, at distance
1 (``torch.cdist``, pytorch-metric-learning's ``LpDistance``). The
``zero_vector`` axis of the distance-based losses tells the two apart; it only
matters on the ``zero_vector`` problems.

pytorch-metric-learning as used out of the box (default distance and reducer,
a scalar) is a named convention of every loss here; NPairsLoss has no scale, so
it is verified with ``hyperparameter_names={"scale": None}`` and settings at
scale 1, and MultiSimilarityLoss without its miner with ``{"epsilon": None}``.
Not expressed: the random triplets of ``TripletMarginLoss(triplets_per_anchor=k)``
and its ``swap=True``; miners other than batch-hard and multi-similarity;
ContrastiveLoss and LiftedStructureLoss with a similarity (CosineSimilarity)
instead of LpDistance; reducers other than the default and MeanReducer
(ThresholdReducer, PerAnchorReducer, ...); a separate ``ref_emb`` set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics
from circle_jax.verify import _spec
from circle_jax.verify._variants import Axis
from circle_jax.verify._variants import Variant

# ------------------------------------------------------------------ shared axes

NORMALISE = Axis("normalise", ("inside", "none"), {
    "inside": "embeddings are L2-normalised inside the loss (pytorch-metric-learning's default)",
    "none": "raw embeddings: the caller normalises, or the loss is defined on them "
            "(Hadsell's contrastive, Hermans' triplet, Sohn's N-pair)",
})
ZERO_VECTOR = Axis("zero_vector", ("cosine_0", "origin"), {
    "cosine_0": "a zero vector has cosine 0 to everything, so it is √2 from every unit vector",
    "origin": "a zero vector stays at the origin, 1 from every unit vector "
              "(torch's F.normalize, pytorch-metric-learning's LpDistance)",
})
SELF_PAIRS = Axis("self_pairs", ("excluded",), {
    "excluded": "an anchor is not its own positive",
    "kept": "each anchor counts itself as a positive at distance 0 (the diagonal is not removed)",
}, defects=("kept",))
DISTANCE = Axis("distance", ("euclidean", "squared", "cosine"), {
    "euclidean": "d = ‖a − b‖ (pytorch-metric-learning's LpDistance)",
    "squared": "d = ‖a − b‖² (FaceNet; LpDistance(power=2))",
    "cosine": "d = 1 − cos(a, b) (CosineSimilarity, margins on similarities)",
})
MARGIN_SIGN = Axis("margin_sign", ("added",), {
    "added": "the margin is added to the violation: [d_ap − d_an + m]",
    "subtracted": "the margin enters with the wrong sign: [d_ap − d_an − m]",
}, defects=("subtracted",))
TRIPLET_HINGE = Axis("hinge", ("relu", "softplus"), {
    "relu": "[d_ap − d_an + m]_+",
    "softplus": "softplus(d_ap − d_an + m): TripletMarginLoss(smooth_loss=True); with m = 0, "
                "Hermans et al.'s soft margin",
})


def _moot_unless_summed(axis: str, value: str):
  """Values of ``axis`` that return shares of a batch-wide scalar: only their sum means anything."""
  return lambda v: v[axis] == value and v.get("reduction") not in (None, "sum")


# ------------------------------------------------------------------ geometry


def _geometry(x, labels, variant):
  """(s, gram, positive mask, negative mask, valid anchors).

  s is the cosine (normalise=inside) or the raw inner product; gram holds what
  the distances are built from (see :func:`_squared_distances`).
  """
  inv = _numerics.inverse_l2_norm(x)
  cos = _numerics.scaled_inner_products(x, x, inv, inv)
  raw = _numerics.scaled_inner_products(x, x)
  s = variant.pick("normalise", inside=cos, none=raw)
  eye = jnp.eye(len(labels), dtype=bool)
  same = labels[:, None] == labels[None, :]
  pos = variant.pick("self_pairs", excluded=same & ~eye, kept=same)
  neg = ~same
  valid = jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)
  return s, (cos, raw, inv, eye), pos, neg, valid


def _squared_distances(parts, variant):
  """‖a − b‖² between the embeddings as the variant normalises them: [B, B].

  The diagonal is exactly 0, so a self-pair kept by a defect carries no √ε
  (and no infinite gradient) in it.
  """
  cos, raw, inv, eye = parts
  zero = (inv == 0).astype(cos.dtype)
  norms = jnp.diagonal(raw)
  unit = 2.0 - 2.0 * cos  # for unit a, b, as circle_jax computes it
  squared = variant.pick(
      "normalise",
      inside=variant.pick("zero_vector", cosine_0=unit,
                          origin=unit - zero[:, None] - zero[None, :]),
      none=norms[:, None] + norms[None, :] - 2.0 * raw)
  return jnp.where(eye, 0.0, squared)


def _euclidean(parts, variant):
  return _numerics.safe_sqrt(_squared_distances(parts, variant))


def _triplet_distances(s, parts, variant):
  """d on the ``distance`` axis: ‖a − b‖, ‖a − b‖² or 1 − s."""
  squared = _squared_distances(parts, variant)
  return variant.pick("distance", euclidean=_numerics.safe_sqrt(squared),
                      squared=jnp.maximum(squared, 0.0), cosine=1.0 - s)


def _masked_mean(x, mask, axis=-1):
  count = jnp.sum(mask, axis=axis)
  total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _share(x, mask, count):
  """Σ_j x[a, j] over mask, divided by a batch-wide count (0 when it is 0): [B]."""
  count = lax.stop_gradient(count)
  return jnp.sum(jnp.where(mask, x, 0.0), axis=tuple(range(1, x.ndim))) / jnp.maximum(count, 1)


def _signed_margin(params, variant):
  return variant.pick("margin_sign", added=params["margin"], subtracted=-params["margin"])


def _triplet_hinge(t, variant):
  return variant.pick("hinge", relu=jax.nn.relu(t), softplus=jax.nn.softplus(t))


# ------------------------------------------------------------------ triplet


def batch_hard_reference(x, labels, class_weights, params, variant):
  """L_a = h(max_p d_ap − min_n d_an + m), h = [·]_+ or softplus: [B]."""
  del class_weights
  s, parts, pos, neg, valid = _geometry(x, labels, variant)
  d = _triplet_distances(s, parts, variant)
  hardest_pos = jnp.max(jnp.where(pos, d, -jnp.inf), axis=-1)
  hardest_neg = jnp.min(jnp.where(neg, d, jnp.inf), axis=-1)
  gap = jnp.where(valid, hardest_pos - hardest_neg, 0.0)
  return jnp.where(valid, _triplet_hinge(gap + _signed_margin(params, variant), variant), 0.0)


TRIPLETS = Axis("triplets", ("nonzero", "all"), {
    "nonzero": "the mean is over triplets with a positive loss (Hermans et al.'s BA≠0; "
               "pytorch-metric-learning's AvgNonZeroReducer)",
    "all": "the mean is over every triplet, zeros included (MeanReducer)",
})
TRIPLET_AVERAGE = Axis("average", ("per_anchor", "per_triplet"), {
    "per_anchor": "each anchor averages its own triplets (circle_jax)",
    "per_triplet": "one mean over the batch's triplets (pytorch-metric-learning); "
                   "per-example values are each anchor's share, to be summed",
})


def batch_all_reference(x, labels, class_weights, params, variant):
  """L_a = mean over a's triplets (p, n) of h(d_ap − d_an + m), or a's share of
  the batch-wide mean over triplets: [B]."""
  del class_weights
  s, parts, pos, neg, valid = _geometry(x, labels, variant)
  d = _triplet_distances(s, parts, variant)
  hinge = _triplet_hinge(d[:, :, None] - d[:, None, :] + _signed_margin(params, variant), variant)
  triplets = pos[:, :, None] & neg[:, None, :]  # [a, p, n]
  triplets = variant.pick("triplets", nonzero=triplets & (hinge > 0), all=triplets)
  flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
  per_anchor = _masked_mean(flat(hinge), flat(triplets))
  per_triplet = _share(hinge, triplets, jnp.sum(triplets))
  loss = variant.pick("average", per_anchor=per_anchor, per_triplet=per_triplet)
  return jnp.where(valid, loss, 0.0)


# Cosine distance on raw embeddings is 1 − x·y, which nobody uses; the zero
# vector only matters after normalising.
_TRIPLET_MOOT = (
    lambda v: v["normalise"] == "none" and v["distance"] == "cosine",
    lambda v: v["normalise"] == "none" and v["zero_vector"] != "cosine_0",
    lambda v: v["distance"] == "cosine" and v["zero_vector"] != "cosine_0",
)
TRIPLET_SETTINGS = {"facenet": {"margin": 0.2}, "pml-default": {"margin": 0.05}}

BATCH_HARD = _spec.register(_spec.LossSpec(
    name="batch_hard_triplet",
    kind="pair",
    function="circle_jax.batch_hard_triplet_loss",
    hyperparameters=("margin",),
    settings=TRIPLET_SETTINGS,
    axes=(DISTANCE, NORMALISE, ZERO_VECTOR, TRIPLET_HINGE, SELF_PAIRS, MARGIN_SIGN),
    reference=batch_hard_reference,
    default=Variant.of(distance="euclidean", normalise="inside", zero_vector="cosine_0",
                       hinge="relu", self_pairs="excluded", margin_sign="added"),
    conventions={
        "pytorch-metric-learning TripletMarginLoss + BatchHardMiner": dict(
            distance="euclidean", normalise="inside", zero_vector="origin", hinge="relu",
            reduction="mean_nonzero"),
        "pytorch-metric-learning TripletMarginLoss(smooth_loss=True) + BatchHardMiner": dict(
            distance="euclidean", normalise="inside", zero_vector="origin", hinge="softplus",
            reduction="mean_nonzero"),
        "circle_jax.batch_hard_triplet_loss": dict(
            distance="euclidean", normalise="inside", zero_vector="cosine_0", hinge="relu",
            reduction="none"),
        "circle_jax.batch_hard_triplet_loss(metric='squared_euclidean')": dict(
            distance="squared", normalise="inside", zero_vector="cosine_0", hinge="relu",
            reduction="none"),
        "circle_jax.batch_hard_triplet_loss(metric='cosine')": dict(
            distance="cosine", normalise="inside", hinge="relu", reduction="none"),
    },
    moot=_TRIPLET_MOOT,
))

BATCH_ALL = _spec.register(_spec.LossSpec(
    name="batch_all_triplet",
    kind="pair",
    function="circle_jax.batch_all_triplet_loss",
    hyperparameters=("margin",),
    settings=TRIPLET_SETTINGS,
    axes=(DISTANCE, NORMALISE, ZERO_VECTOR, TRIPLET_HINGE, TRIPLETS, TRIPLET_AVERAGE, SELF_PAIRS,
          MARGIN_SIGN),
    reference=batch_all_reference,
    default=Variant.of(distance="euclidean", normalise="inside", zero_vector="cosine_0",
                       hinge="relu", triplets="nonzero", average="per_anchor",
                       self_pairs="excluded", margin_sign="added"),
    conventions={
        # No miner: every triplet of the batch, AvgNonZeroReducer over them.
        "pytorch-metric-learning TripletMarginLoss": dict(
            distance="euclidean", normalise="inside", zero_vector="origin", hinge="relu",
            triplets="nonzero", average="per_triplet", reduction="sum"),
        "pytorch-metric-learning TripletMarginLoss(reducer=MeanReducer())": dict(
            distance="euclidean", normalise="inside", zero_vector="origin", hinge="relu",
            triplets="all", average="per_triplet", reduction="sum"),
        "pytorch-metric-learning TripletMarginLoss(smooth_loss=True)": dict(
            distance="euclidean", normalise="inside", zero_vector="origin", hinge="softplus",
            average="per_triplet", reduction="sum"),
        "circle_jax.batch_all_triplet_loss": dict(
            distance="euclidean", normalise="inside", zero_vector="cosine_0", hinge="relu",
            triplets="nonzero", average="per_anchor", reduction="none"),
        "circle_jax.batch_all_triplet_loss(nonzero_only=False)": dict(
            distance="euclidean", normalise="inside", zero_vector="cosine_0", hinge="relu",
            triplets="all", average="per_anchor", reduction="none"),
    },
    # softplus is never 0: every triplet is non-zero.
    moot=_TRIPLET_MOOT + (lambda v: v["hinge"] == "softplus" and v["triplets"] != "nonzero",
                          _moot_unless_summed("average", "per_triplet")),
))

# ------------------------------------------------------------------ contrastive

CONTRASTIVE_HINGE = Axis("hinge", ("squared_half", "squared", "plain"), {
    "squared_half": "½[d − m_p]_+² and ½[m_n − d]_+² (Hadsell et al.; circle_jax)",
    "squared": "[d − m_p]_+² and [m_n − d]_+², without the ½",
    "plain": "[d − m_p]_+ and [m_n − d]_+ (pytorch-metric-learning)",
})
CONTRASTIVE_AVERAGE = Axis("average", ("per_anchor", "pos_neg_nonzero", "pos_neg", "all_pairs"), {
    "per_anchor": "each anchor averages its positive pairs and its negative pairs separately, "
                  "and an anchor without either gets 0 (circle_jax)",
    "pos_neg_nonzero": "the batch's positive pairs and its negative pairs are each averaged over "
                       "those with a non-zero loss, and the two means added "
                       "(pytorch-metric-learning's AvgNonZeroReducer per sub-loss); "
                       "per-example values are shares, to be summed",
    "pos_neg": "the same over all positive and all negative pairs (MeanReducer); shares",
    "all_pairs": "one mean over every ordered pair of the batch, positive or negative; shares",
})
NEG_HINGE = Axis("neg_hinge", ("margin_minus_d",), {
    "margin_minus_d": "negatives are pushed while closer than the margin: [m_n − d]_+",
    "d_minus_margin": "the negative hinge is written the wrong way round: [d − m_n]_+",
}, defects=("d_minus_margin",))


def contrastive_reference(x, labels, class_weights, params, variant):
  """Contrastive loss (pull [d − m_p]_+, push [m_n − d]_+) under a variant: [B]."""
  del class_weights
  _, parts, pos, neg, valid = _geometry(x, labels, variant)
  d = _euclidean(parts, variant)
  pull = jax.nn.relu(d - params["pos_margin"])
  push = variant.pick("neg_hinge", margin_minus_d=jax.nn.relu(params["neg_margin"] - d),
                      d_minus_margin=jax.nn.relu(d - params["neg_margin"]))
  pull, push = (variant.pick("hinge", squared_half=0.5 * jnp.square(t), squared=jnp.square(t),
                             plain=t) for t in (pull, push))
  per_anchor = jnp.where(valid, _masked_mean(pull, pos) + _masked_mean(push, neg), 0.0)
  num_pos, num_neg = jnp.sum(pos), jnp.sum(neg)
  nonzero = (_share(pull, pos, jnp.sum(pos & (pull > 0)))
             + _share(push, neg, jnp.sum(neg & (push > 0))))
  both = _share(pull, pos, num_pos) + _share(push, neg, num_neg)
  pooled = _share(pull, pos, num_pos + num_neg) + _share(push, neg, num_pos + num_neg)
  return variant.pick("average", per_anchor=per_anchor, pos_neg_nonzero=nonzero, pos_neg=both,
                      all_pairs=pooled)


CONTRASTIVE = _spec.register(_spec.LossSpec(
    name="contrastive",
    kind="pair",
    function="circle_jax.contrastive_loss",
    hyperparameters=("pos_margin", "neg_margin"),
    # neg_margin is not 1: a zero vector left at the origin is exactly 1 from
    # everything, and whether its pairs count as non-zero would be rounding.
    settings={"hadsell": {"pos_margin": 0.0, "neg_margin": 1.25},
              "two-margins": {"pos_margin": 0.25, "neg_margin": 1.5}},
    axes=(NORMALISE, ZERO_VECTOR, CONTRASTIVE_HINGE, CONTRASTIVE_AVERAGE, SELF_PAIRS, NEG_HINGE),
    reference=contrastive_reference,
    default=Variant.of(normalise="inside", zero_vector="cosine_0", hinge="squared_half",
                       average="per_anchor", self_pairs="excluded", neg_hinge="margin_minus_d"),
    conventions={
        "pytorch-metric-learning ContrastiveLoss": dict(
            normalise="inside", zero_vector="origin", hinge="plain", average="pos_neg_nonzero",
            reduction="sum"),
        "pytorch-metric-learning ContrastiveLoss(reducer=MeanReducer())": dict(
            normalise="inside", zero_vector="origin", hinge="plain", average="pos_neg",
            reduction="sum"),
        "circle_jax.contrastive_loss": dict(
            normalise="inside", zero_vector="cosine_0", hinge="squared_half", average="per_anchor",
            reduction="none"),
    },
    moot=(lambda v: v["normalise"] == "none" and v["zero_vector"] != "cosine_0",
          *(_moot_unless_summed("average", a) for a in CONTRASTIVE_AVERAGE.values[1:])),
))

# ------------------------------------------------------------------ N-pair

NPAIR_NORMALISE = Axis("normalise", ("none", "inside"), {
    "none": "raw inner products f_a·f_p (Sohn; circle_jax's default)",
    "inside": "cosine similarities (npair_loss(normalize=True); pytorch-metric-learning's "
              "DotProductSimilarity normalises by default)",
})
NPAIR_PAIRS = Axis("pairs", ("all", "first_per_class"), {
    "all": "every anchor, averaged over its positives; every other-class sample is a negative "
           "(circle_jax)",
    "first_per_class": "one (anchor, positive) pair per class with two or more samples: its "
                       "first two in batch order; an anchor's negatives are the other classes' "
                       "positives (pytorch-metric-learning NPairsLoss); other examples get 0",
})
NPAIR_NEGATIVES = Axis("negatives", ("other_classes",), {
    "other_classes": "the softmax denominator holds the positive and the other classes' samples",
    "all_others": "the denominator holds every other sample, the anchor's other positives "
                  "included (a softmax over the batch with one target)",
}, defects=("all_others",))


def npair_reference(x, labels, class_weights, params, variant):
  """L_a = mean_p log(1 + Σ_n e^{γ(s_an − s_ap)}) under a variant: [B]."""
  del class_weights
  s, _, pos, neg, valid = _geometry(x, labels, variant)
  s = params["scale"] * s
  eye = jnp.eye(len(labels), dtype=bool)
  lse_neg, _ = _numerics.masked_logsumexp(s, neg)
  lse_others, _ = _numerics.masked_logsumexp(s, ~eye)
  # The double where keeps empty rows (lse 0 of nothing) out of the gradient.
  keep = valid[:, None]
  per_pair = variant.pick(
      "negatives",
      other_classes=jax.nn.softplus(jnp.where(keep, lse_neg[:, None] - s, 0.0)),
      all_others=jnp.where(keep, lse_others[:, None] - s, 0.0))
  every = jnp.where(valid, _masked_mean(per_pair, pos), 0.0)

  # pytorch-metric-learning: rank of each sample within its class, in batch order.
  same = labels[:, None] == labels[None, :]
  earlier = jnp.tril(jnp.ones_like(same), k=-1)
  rank = jnp.sum(same & earlier, axis=-1)
  second = rank == 1  # the positive of its class's pair
  anchor = (rank == 0) & jnp.any(same & ~eye, axis=-1)
  own = same & second[None, :]
  rivals = ~same & second[None, :]
  lse_rivals, has_rivals = _numerics.masked_logsumexp(s, rivals)
  s_own = jnp.sum(jnp.where(own, s, 0.0), axis=-1)
  ok = anchor & has_rivals
  first = jnp.where(ok, jax.nn.softplus(jnp.where(ok, lse_rivals - s_own, 0.0)), 0.0)
  return variant.pick("pairs", all=every, first_per_class=first)


NPAIR = _spec.register(_spec.LossSpec(
    name="npair",
    kind="pair",
    function="circle_jax.npair_loss",
    hyperparameters=("scale",),
    settings={"sohn": {"scale": 1.0}, "scale-8": {"scale": 8.0}},
    axes=(NPAIR_NORMALISE, NPAIR_PAIRS, SELF_PAIRS, NPAIR_NEGATIVES),
    reference=npair_reference,
    default=Variant.of(normalise="none", pairs="all", self_pairs="excluded",
                       negatives="other_classes"),
    conventions={
        # NPairsLoss has no scale: verify it with hyperparameter_names={"scale": None}
        # and settings whose scale is 1. Only its chosen anchors have a (positive) value.
        "pytorch-metric-learning NPairsLoss": dict(
            normalise="inside", pairs="first_per_class", reduction="mean_nonzero"),
        "circle_jax.npair_loss": dict(normalise="none", pairs="all", reduction="none"),
        "circle_jax.npair_loss(normalize=True)": dict(normalise="inside", pairs="all",
                                                      reduction="none"),
    },
))

# ------------------------------------------------------------------ lifted structure

LIFTED_AVERAGE = Axis("average", ("per_anchor", "per_pair"), {
    "per_anchor": "each anchor averages ½[J_ij]_+² over its positives (circle_jax)",
    "per_pair": "one mean of ½[J_ij]_+² over the batch's ordered positive pairs (Song et al.'s "
                "1/2|P| Σ over unordered pairs; pytorch-metric-learning); per-example values "
                "are shares, to be summed",
})
LIFTED_MARGIN_SIGN = Axis("margin_sign", ("added",), {
    "added": "J_ij = log Σ e^{m − D} + D_ij",
    "subtracted": "the margin enters with the wrong sign: log Σ e^{−m − D} + D_ij",
}, defects=("subtracted",))


def lifted_reference(x, labels, class_weights, params, variant):
  """½[J_ij]_+² per anchor, or its share of the mean over pairs: [B], where
  J_ij = log(Σ_{k∈N_i} e^{m − D_ik} + Σ_{l∈N_j} e^{m − D_jl}) + D_ij."""
  del class_weights
  _, parts, pos, neg, valid = _geometry(x, labels, variant)
  d = _euclidean(parts, variant)
  lse, _ = _numerics.masked_logsumexp(_signed_margin(params, variant) - d, neg)
  j = jnp.logaddexp(lse[:, None], lse[None, :]) + d
  # Positive pairs of anchors without negatives have no J (their lse is of nothing).
  pairs = pos & valid[:, None]
  per_pair = 0.5 * jnp.square(jax.nn.relu(jnp.where(pairs, j, 0.0)))
  per_anchor = jnp.where(valid, _masked_mean(per_pair, pairs), 0.0)
  return variant.pick("average", per_anchor=per_anchor,
                      per_pair=_share(per_pair, pairs, jnp.sum(pairs)))


LIFTED = _spec.register(_spec.LossSpec(
    name="lifted_structure",
    kind="pair",
    function="circle_jax.lifted_structure_loss",
    hyperparameters=("margin",),
    settings={"song": {"margin": 1.0}, "margin-0.5": {"margin": 0.5}},
    axes=(NORMALISE, ZERO_VECTOR, LIFTED_AVERAGE, SELF_PAIRS, LIFTED_MARGIN_SIGN),
    reference=lifted_reference,
    default=Variant.of(normalise="inside", zero_vector="cosine_0", average="per_anchor",
                       self_pairs="excluded", margin_sign="added"),
    conventions={
        # MeanReducer over its per-positive-pair values; pass margin as neg_margin.
        "pytorch-metric-learning LiftedStructureLoss": dict(
            normalise="inside", zero_vector="origin", average="per_pair", reduction="sum"),
        "circle_jax.lifted_structure_loss": dict(
            normalise="inside", zero_vector="cosine_0", average="per_anchor", reduction="none"),
    },
    moot=(lambda v: v["normalise"] == "none" and v["zero_vector"] != "cosine_0",
          _moot_unless_summed("average", "per_pair")),
))

# ------------------------------------------------------------------ multi-similarity

MINING = Axis("mining", ("mined", "none"), {
    "mined": "pairs are mined first: a negative is kept if s_an + ε > min_p s_ap, a positive "
             "if s_ap − ε < max_n s_an (Wang et al.; MultiSimilarityMiner)",
    "none": "every pair is used (MultiSimilarityLoss without a miner)",
})
ONE_SIDED = Axis("one_sided", ("zeroed", "kept"), {
    "zeroed": "an anchor left without a (mined) positive or negative gets 0 (the authors' code; "
              "circle_jax)",
    "kept": "such an anchor keeps its one-sided term (pytorch-metric-learning)",
})
SCALES = Axis("scales", ("paper",), {
    "paper": "α scales the positive term, β the negative one",
    "swapped": "α and β are exchanged",
}, defects=("swapped",))


def multi_similarity_reference(x, labels, class_weights, params, variant):
  """Multi-similarity loss under a variant: [B],

      L_a = (1/α) log(1 + Σ_p e^{−α(s_ap − λ)}) + (1/β) log(1 + Σ_n e^{β(s_an − λ)}).
  """
  del class_weights
  s, _, pos, neg, valid = _geometry(x, labels, variant)
  # Mining only selects pairs; its thresholds carry no gradient.
  sg = lax.stop_gradient(s)
  eps = params["epsilon"]
  min_pos = jnp.min(jnp.where(pos, sg, jnp.inf), axis=-1, keepdims=True)
  max_neg = jnp.max(jnp.where(neg, sg, -jnp.inf), axis=-1, keepdims=True)
  pos, neg = variant.pick("mining", mined=(pos & (sg - eps < max_neg), neg & (sg + eps > min_pos)),
                          none=(pos, neg))
  alpha, beta = variant.pick("scales", paper=(params["alpha"], params["beta"]),
                             swapped=(params["beta"], params["alpha"]))
  base = params["base"]
  lse_p, has_p = _numerics.masked_logsumexp(-alpha * (s - base), pos)
  lse_n, has_n = _numerics.masked_logsumexp(beta * (s - base), neg)
  term_p = jnp.where(has_p, jax.nn.softplus(lse_p) / alpha, 0.0)
  term_n = jnp.where(has_n, jax.nn.softplus(lse_n) / beta, 0.0)
  both = valid & has_p & has_n
  return variant.pick("one_sided", zeroed=jnp.where(both, term_p + term_n, 0.0),
                      kept=term_p + term_n)


MULTI_SIMILARITY = _spec.register(_spec.LossSpec(
    name="multi_similarity",
    kind="pair",
    function="circle_jax.multi_similarity_loss",
    hyperparameters=("alpha", "beta", "base", "epsilon"),
    settings={"pml-default": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
              "ms-code": {"alpha": 2.0, "beta": 40.0, "base": 0.5, "epsilon": 0.1}},
    axes=(NORMALISE, MINING, ONE_SIDED, SELF_PAIRS, SCALES),
    reference=multi_similarity_reference,
    default=Variant.of(normalise="inside", mining="mined", one_sided="zeroed",
                       self_pairs="excluded", scales="paper"),
    conventions={
        # Without a miner, pass epsilon through hyperparameter_names={"epsilon": None}.
        "pytorch-metric-learning MultiSimilarityLoss": dict(
            normalise="inside", mining="none", one_sided="kept", reduction="mean"),
        "pytorch-metric-learning MultiSimilarityLoss + MultiSimilarityMiner": dict(
            normalise="inside", mining="mined", one_sided="kept", reduction="mean"),
        "circle_jax.multi_similarity_loss": dict(
            normalise="inside", mining="mined", one_sided="zeroed", reduction="none"),
        "circle_jax.multi_similarity_loss(epsilon=None)": dict(
            normalise="inside", mining="none", one_sided="zeroed", reduction="none"),
    },
))
