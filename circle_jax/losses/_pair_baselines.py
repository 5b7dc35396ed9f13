"""Pair-level baselines of the paper: triplet, contrastive, N-pair, lifted structure,
multi-similarity. One value per anchor, computed on the batch's own pairs.

Shared conventions: embeddings are L2-normalised inside (except N-pair, which
uses raw inner products as Sohn does, unless asked); self-pairs are never pairs;
an anchor with no positive or no negative in the batch gets exactly 0, so
:func:`valid_anchor_mask` gives the anchors to average over for all of them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from circle_jax.losses import _checks
from circle_jax.losses import _circle
from circle_jax.losses import _numerics
from circle_jax.losses import _pairwise

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_METRICS = ("euclidean", "squared_euclidean", "cosine")


def _batch_inputs(embeddings, labels):
  """Validated (x [B, D], labels [B]); the batch is its own reference set."""
  x, labels, _, _, _ = _pairwise.pair_inputs(embeddings, labels)
  return x, labels


def _batch_pairs(x, labels, normalize: bool = True):
  """(similarity [B, B], positive mask, negative mask, valid anchors [B])."""
  inv = _numerics.inverse_l2_norm(x) if normalize else None
  s = _numerics.scaled_inner_products(x, x, inv, inv)
  pos, neg = _pairwise.pair_masks(labels)
  valid = jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)
  return s, pos, neg, valid


def _distances(s: Array, metric: str) -> Array:
  """Distances between unit vectors from their cosine similarities s."""
  if metric == "cosine":
    return 1.0 - s
  squared = 2.0 - 2.0 * s  # ‖a − b‖² for unit a, b
  if metric == "squared_euclidean":
    return jnp.maximum(squared, 0.0)
  return _numerics.safe_sqrt(squared)


def _per_anchor(loss: Array, valid: Array, s: Array) -> Array:
  """loss where the anchor is valid, else exactly 0; NaN for rows with a NaN similarity.

  Mining, hinges and masks compare with False against NaN, which would turn a
  NaN input into a plausible finite loss; this makes it visible instead.
  """
  return jnp.where(jnp.isnan(s).any(-1), jnp.nan, jnp.where(valid, loss, 0.0))


def _masked_mean(x: Array, mask: Array, axis=-1) -> Array:
  """Mean of x over mask along axis; 0 where the mask is empty."""
  count = jnp.sum(mask, axis=axis)
  total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def batch_hard_triplet_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.2,
    metric: str = "euclidean",
) -> Array:
  r"""Triplet loss with batch-hard mining, per anchor.

  .. math::  L_a = \big[\max_{p} d(a, p) - \min_{n} d(a, n) + m\big]_+

  over the anchor's positives p and negatives n in the batch (Hermans et al.).
  With ``metric="cosine"`` (d = 1 − s) this is max[s_n − s_p + m]_+ over the
  hardest pair, the γ → ∞ limit of the unified loss (paper Eq. 3).
  Ties for the hardest pair share the gradient equally.

  Args:
    embeddings: [B, D] float (L2-normalised inside); labels: [B] integer.
    margin: m ≥ 0 (0.2, FaceNet's α).
    metric: "euclidean" (default), "squared_euclidean" or "cosine" (1 − cos).

  Returns:
    [B] per-anchor losses; 0 for anchors without a positive or a negative.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.losses import batch_hard_triplet_loss
    >>> x = jax.random.normal(jax.random.key(0), (6, 8))
    >>> batch_hard_triplet_loss(x, jnp.array([0, 0, 1, 1, 2, 2])).shape
    (6,)

  References:
    Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017; Schroff et al., "FaceNet", CVPR 2015;
    Sun et al., CVPR 2020, Eq. 3.
  """
  _checks.hyperparameter("margin", margin, nonnegative=True)
  _checks.one_of("metric", metric, _METRICS)
  return _batch_hard_triplet_loss(*_batch_inputs(embeddings, labels), margin, metric)


@functools.partial(jax.jit, static_argnums=3)
def _batch_hard_triplet_loss(x, labels, margin, metric):
  s, pos, neg, valid = _batch_pairs(x, labels)
  d = _distances(s, metric)
  hardest_pos = jnp.max(jnp.where(pos, d, -jnp.inf), axis=-1)
  hardest_neg = jnp.min(jnp.where(neg, d, jnp.inf), axis=-1)
  gap = jnp.where(valid, hardest_pos - hardest_neg, 0.0)
  return _per_anchor(jax.nn.relu(gap + margin), valid, s)


def batch_all_triplet_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.2,
    metric: str = "euclidean",
    nonzero_only: bool = True,
) -> Array:
  r"""Triplet loss over all (anchor, positive, negative) triplets, per anchor.

  .. math::  L_a = \operatorname{mean}_{(p, n) \in T_a} [d(a, p) - d(a, n) + m]_+

  where T_a is every (positive, negative) combination of anchor a, or, with
  ``nonzero_only=True`` (Hermans et al.'s "BA≠0"), only those with a positive
  hinge. Memory is O(B³).

  Args:
    embeddings: [B, D] float (L2-normalised inside); labels: [B] integer.
    margin: m ≥ 0; metric: as in :func:`batch_hard_triplet_loss`.
    nonzero_only: average over active triplets only (default) or over all.

  Returns:
    [B] per-anchor losses; 0 for anchors without a positive or a negative.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.losses import batch_all_triplet_loss
    >>> x = jax.random.normal(jax.random.key(0), (6, 8))
    >>> batch_all_triplet_loss(x, jnp.array([0, 0, 1, 1, 2, 2])).shape
    (6,)

  References:
    Hermans, Beyer, Leibe, 2017 (batch-all); Schroff et al., CVPR 2015.
  """
  _checks.hyperparameter("margin", margin, nonnegative=True)
  _checks.one_of("metric", metric, _METRICS)
  nonzero_only = _checks.flag("nonzero_only", nonzero_only)
  return _batch_all_triplet_loss(
      *_batch_inputs(embeddings, labels), margin, metric, nonzero_only
  )


@functools.partial(jax.jit, static_argnums=(3, 4))
def _batch_all_triplet_loss(x, labels, margin, metric, nonzero_only):
  s, pos, neg, valid = _batch_pairs(x, labels)
  d = _distances(s, metric)
  hinge = jax.nn.relu(d[:, :, None] - d[:, None, :] + margin)  # [a, p, n]
  triplets = pos[:, :, None] & neg[:, None, :]
  if nonzero_only:
    triplets = triplets & (hinge > 0)
  flat = lambda t: t.reshape(t.shape[0], -1)
  return _per_anchor(_masked_mean(flat(hinge), flat(triplets)), valid, s)


def contrastive_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
) -> Array:
  r"""Contrastive loss (Hadsell et al.) on Euclidean distances, per anchor.

  .. math::  L_a = \tfrac12\operatorname{mean}_p [d_{ap} - m_p]_+^2
                 + \tfrac12\operatorname{mean}_n [m_n - d_{an}]_+^2

  with d the Euclidean distance between L2-normalised embeddings (in [0, 2]).
  The positive and negative pairs of each anchor are averaged separately, so
  a batch's many negatives do not drown its few positives; pos_margin = 0 is
  the original loss. Like every pair loss here, an anchor without a positive or
  a negative gets 0.

  Args:
    embeddings: [B, D] float (L2-normalised inside); labels: [B] integer.
    pos_margin: distance below which positives are not pulled further (≥ 0).
    neg_margin: distance beyond which negatives are not pushed further.

  Returns:
    [B] per-anchor losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from circle_jax.losses import contrastive_loss
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    >>> contrastive_loss(x, jnp.array([0, 0, 1]), neg_margin=1.0).shape
    (3,)

  References:
    Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006.
  """
  _checks.hyperparameter("pos_margin", pos_margin, nonnegative=True)
  _checks.hyperparameter("neg_margin", neg_margin)
  return _contrastive_loss(*_batch_inputs(embeddings, labels), pos_margin, neg_margin)


@jax.jit
def _contrastive_loss(x, labels, pos_margin, neg_margin):
  s, pos, neg, valid = _batch_pairs(x, labels)
  d = _distances(s, "euclidean")
  pull = 0.5 * _masked_mean(jnp.square(jax.nn.relu(d - pos_margin)), pos)
  push = 0.5 * _masked_mean(jnp.square(jax.nn.relu(neg_margin - d)), neg)
  return _per_anchor(pull + push, valid, s)


def npair_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    normalize: bool = False,
    scale: float = 1.0,
) -> Array:
  r"""Multi-class N-pair loss (Sohn), per anchor, averaged over its positives.

  .. math::  L_a = \operatorname{mean}_{p}\,
             \log\Big[1 + \sum_{n} e^{\,\gamma(f_a^\top f_n - f_a^\top f_p)}\Big]

  with f the raw embeddings (Sohn's inner products; ``normalize=True`` uses
  cosines) and γ = ``scale``. Sohn's L2 penalty on the embeddings is a separate
  regulariser and is not included.

  Args:
    embeddings: [B, D] float; labels: [B] integer.
    normalize: use cosine similarities instead of inner products.
    scale: γ > 0 multiplying the similarities.

  Returns:
    [B] per-anchor losses; 0 for anchors without a positive or a negative.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.losses import npair_loss
    >>> x = jax.random.normal(jax.random.key(0), (4, 8))
    >>> npair_loss(x, jnp.array([0, 0, 1, 1])).shape
    (4,)

  References:
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016, Eq. 6.
  """
  _checks.hyperparameter("scale", scale, positive=True)
  normalize = _checks.flag("normalize", normalize)
  return _npair_loss(*_batch_inputs(embeddings, labels), normalize, scale)


@functools.partial(jax.jit, static_argnums=2)
def _npair_loss(x, labels, normalize, scale):
  s, pos, neg, valid = _batch_pairs(x, labels, normalize=normalize)
  s = scale * s
  lse_neg, _ = _numerics.masked_logsumexp(s, neg)
  per_pair = jax.nn.softplus(jnp.where(valid[:, None], lse_neg[:, None] - s, 0.0))
  return _per_anchor(_masked_mean(per_pair, pos), valid, s)


def lifted_structure_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 1.0,
) -> Array:
  r"""Lifted structured loss (Song et al.), per anchor.

  For each positive pair (i, j), with D the Euclidean distance and N_i the
  negatives of i:

  .. math::  J_{ij} = \log\Big(\sum_{k\in N_i} e^{m - D_{ik}}
                     + \sum_{l\in N_j} e^{m - D_{jl}}\Big) + D_{ij},\qquad
             L_i = \frac{1}{2|P_i|}\sum_{j \in P_i} [J_{ij}]_+^2

  Song et al. average ½[J]₊² over the :math:`|P|` unordered positive pairs; with equally
  many positives per anchor (P×K batches) the mean of L_i over anchors is exactly
  that value, since each unordered pair appears once from each end.

  Args:
    embeddings: [B, D] float (L2-normalised inside); labels: [B] integer.
    margin: m (Song et al.: 1).

  Returns:
    [B] per-anchor losses; 0 for anchors without a positive or a negative.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.losses import lifted_structure_loss
    >>> x = jax.random.normal(jax.random.key(0), (4, 8))
    >>> lifted_structure_loss(x, jnp.array([0, 0, 1, 1])).shape
    (4,)

  References:
    Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured
    Feature Embedding", CVPR 2016, Eq. 4.
  """
  _checks.hyperparameter("margin", margin)
  return _lifted_structure_loss(*_batch_inputs(embeddings, labels), margin)


@jax.jit
def _lifted_structure_loss(x, labels, margin):
  s, pos, neg, valid = _batch_pairs(x, labels)
  d = _distances(s, "euclidean")
  lse, _ = _numerics.masked_logsumexp(margin - d, neg)  # empty sets only on invalid rows
  j = jnp.logaddexp(lse[:, None], lse[None, :]) + d
  per_pair = jnp.square(jax.nn.relu(jnp.where(pos, j, 0.0)))
  return _per_anchor(0.5 * _masked_mean(per_pair, pos), valid, s)


def multi_similarity_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float | None = 0.1,
) -> Array:
  r"""Multi-similarity loss (Wang et al.) with its pair mining, per anchor.

  .. math::  L_a = \frac1\alpha\log\Big[1 + \sum_{p} e^{-\alpha(s_{ap} - \lambda)}\Big]
                 + \frac1\beta\log\Big[1 + \sum_{n} e^{\beta(s_{an} - \lambda)}\Big]

  over mined pairs: a negative is kept if s_an + ε > min_p s_ap, a positive if
  s_ap − ε < max_n s_an (``epsilon=None`` keeps all pairs, as
  pytorch-metric-learning's loss does without its miner). As in the authors'
  code, an anchor left without a mined positive or negative gets 0.

  Args:
    embeddings: [B, D] float (L2-normalised inside); labels: [B] integer.
    alpha, beta: positive/negative scales (2 and 50); base: the threshold λ (0.5).
    epsilon: mining margin ε (0.1), or None for no mining.

  Returns:
    [B] per-anchor losses.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.losses import multi_similarity_loss
    >>> x = jax.random.normal(jax.random.key(0), (4, 8))
    >>> multi_similarity_loss(x, jnp.array([0, 0, 1, 1])).shape
    (4,)

  References:
    Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", CVPR 2019, Eq. 12 (mining Eq. 7–8).
  """
  _checks.hyperparameter("alpha", alpha, positive=True)
  _checks.hyperparameter("beta", beta, positive=True)
  _checks.hyperparameter("base", base)
  mine = epsilon is not None
  if mine:
    _checks.hyperparameter("epsilon", epsilon)
  return _multi_similarity_loss(
      *_batch_inputs(embeddings, labels), alpha, beta, base, epsilon if mine else 0.0, mine
  )


@functools.partial(jax.jit, static_argnums=6)
def _multi_similarity_loss(x, labels, alpha, beta, base, epsilon, mine):
  s, pos, neg, valid = _batch_pairs(x, labels)
  if mine:
    # Mining only selects pairs; its thresholds carry no gradient.
    sg = jax.lax.stop_gradient(s)
    min_pos = jnp.min(jnp.where(pos, sg, jnp.inf), axis=-1, keepdims=True)
    max_neg = jnp.max(jnp.where(neg, sg, -jnp.inf), axis=-1, keepdims=True)
    neg = neg & (sg + epsilon > min_pos)
    pos = pos & (sg - epsilon < max_neg)
  lse_p, ok_p = _numerics.masked_logsumexp(-alpha * (s - base), pos)
  lse_n, ok_n = _numerics.masked_logsumexp(beta * (s - base), neg)
  keep = valid & ok_p & ok_n
  loss = jax.nn.softplus(lse_p) / alpha + jax.nn.softplus(lse_n) / beta
  return _per_anchor(loss, keep, s)
