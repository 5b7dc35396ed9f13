"""Pair-wise labels: positive/negative pair masks and Circle loss on embeddings."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from circle_jax.losses import _checks
from circle_jax.losses import _circle
from circle_jax.losses import _numerics
from circle_jax.losses import _self_pairs
from circle_jax.losses import _streaming

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def pair_inputs(embeddings, labels, ref_embeddings=None, ref_labels=None):
  """Validates anchors and the reference set; returns (x, labels, ref, ref_labels, is_self)."""
  x = _checks.embedding_matrix("embeddings", embeddings)
  labels = _checks.integer_labels("labels", labels, x.shape[0])
  if (ref_embeddings is None) != (ref_labels is None):
    raise ValueError(
        "ref_embeddings and ref_labels must be given together (got "
        f"ref_embeddings={'None' if ref_embeddings is None else 'an array'}, "
        f"ref_labels={'None' if ref_labels is None else 'an array'})"
    )
  if ref_embeddings is None:
    return x, labels, x, labels, True
  ref = _checks.embedding_matrix("ref_embeddings", ref_embeddings, dim=x.shape[1])
  ref_labels = _checks.integer_labels("ref_labels", ref_labels, ref.shape[0])
  return x, labels, ref, ref_labels, False


def _masks(labels, ref_labels, is_self, col_start=0, num_cols=None):
  num_cols = ref_labels.shape[0] if num_cols is None else num_cols
  same = labels[:, None] == ref_labels[None, :]
  if is_self:
    cols = col_start + jnp.arange(num_cols)
    same_index = jnp.arange(labels.shape[0])[:, None] == cols[None, :]
    return same & ~same_index, ~same
  return same, ~same


def pair_masks(
    labels: ArrayLike, ref_labels: ArrayLike | None = None
) -> tuple[Array, Array]:
  """Boolean masks of positive and negative pairs, each [B, N].

  pos[a, r] is True when labels[a] == ref_labels[r], neg[a, r] when they differ.
  Without a reference set the batch is its own reference and the self-pairs
  (the diagonal) are not positives.

  Args:
    labels: [B] integer labels of the anchors.
    ref_labels: optional [N] integer labels of a reference set.

  Returns:
    (pos, neg), boolean [B, N] (N = B without a reference set).

  Example:
    >>> import jax.numpy as jnp
    >>> from circle_jax.losses import pair_masks
    >>> pos, neg = pair_masks(jnp.array([0, 0, 1]))
    >>> pos.astype(int)
    Array([[0, 1, 0],
           [1, 0, 0],
           [0, 0, 0]], dtype=int32)
  """
  labels = _checks.integer_labels("labels", labels)
  if ref_labels is None:
    return _masks(labels, labels, True)
  return _masks(labels, _checks.integer_labels("ref_labels", ref_labels), False)


def valid_anchor_mask(
    labels: ArrayLike, ref_labels: ArrayLike | None = None
) -> Array:
  """True for anchors with at least one positive and one negative pair, [B].

  Every pair-wise loss here gives exactly 0 to the other anchors, so the mean over
  the anchors that carry a loss is ``loss.sum() / valid_anchor_mask(labels).sum()``
  (use ``jnp.maximum(…, 1)`` for batches that may have none).

  Args:
    labels: [B] integer labels of the anchors.
    ref_labels: optional [N] integer labels of a reference set (as passed to
      ``pairwise_circle_loss``).

  Returns:
    [B] boolean mask.

  Example:
    >>> import jax.numpy as jnp
    >>> from circle_jax.losses import valid_anchor_mask
    >>> valid_anchor_mask(jnp.array([0, 0, 1, 2]))
    Array([ True,  True, False, False], dtype=bool)
  """
  pos, neg = pair_masks(labels, ref_labels)
  return jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)


def pairwise_circle_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.4,
    gamma: float = 80.0,
    ref_embeddings: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    chunk_size: int | None = None,
    grad_through_alpha: bool = False,
) -> Array:
  r"""Circle loss with pair-wise labels: one value per anchor.

  For anchor a, s_p ranges over cos(x_a, r) for references r with the same label
  and s_n over those with a different label (Eq. 6):

  .. math::

    L_a = \mathrm{softplus}\big(\mathrm{LSE}_{n}\,\gamma[s_{an} + m]_+(s_{an} - m)
          + \mathrm{LSE}_{p}\,{-\gamma}[1 + m - s_{ap}]_+(s_{ap} - 1 + m)\big)

  Embeddings are L2-normalised inside (cosine similarity; a zero vector has
  similarity 0 to everything and a zero gradient). Without a reference set, the
  batch is the reference and self-pairs are excluded; gradients then flow through
  both roles of each embedding, as in pytorch-metric-learning and Keras; the
  similarity matrix is then symmetric and the backward pass spends one GEMM on
  the embedding gradient, (G + Gᵀ)X̂, not two (see `_self_pairs`). The dense
  path supports forward mode and higher derivatives; the chunked path is
  reverse-mode only. Similarities are not clipped to ≤ 1.

  Args:
    embeddings: [B, D] float anchors.
    labels: [B] integer labels (only equality matters). Concrete int64 ids
      outside int32's range (x64 disabled) raise a ValueError rather than being
      truncated into equal ids: remap them first with
      ``np.unique(labels, return_inverse=True)[1]``. Under `jit` an int64
      argument is truncated at the jit boundary, where no check can see it.
    margin: m (paper: 0.4 for fine-grained retrieval).
    gamma: γ > 0 (paper: 80).
    ref_embeddings: optional [N, D] reference set (e.g. a cross-batch memory).
    ref_labels: optional [N] integer labels, given together with ref_embeddings.
    chunk_size: None computes the [B, N] similarities at once; an int streams over
      reference columns in blocks of that many with running log-sum-exps and a
      custom backward pass that recomputes each block, so memory is
      O(B·chunk_size) (no [B, N] matrix in either pass); same values and
      gradients. N need not be a multiple of chunk_size. Without a reference
      set the backward pass costs two B²D GEMMs (recompute, then one product
      for both roles of each embedding) instead of three.
    grad_through_alpha: differentiate through the self-paced weights α (Keras 3,
      TF-Similarity) instead of treating them as constants (paper, default).

  Returns:
    [B] per-anchor losses; anchors without a positive or a negative get exactly 0
    (see :func:`valid_anchor_mask` to average over the others).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax import pairwise_circle_loss
    >>> x = jax.random.normal(jax.random.key(0), (6, 8))
    >>> y = jnp.array([0, 0, 1, 1, 2, 3])
    >>> loss = pairwise_circle_loss(x, y, margin=0.4, gamma=80.0)
    >>> loss.shape, bool(loss[4] == 0)
    ((6,), True)

  References:
    Sun et al., CVPR 2020, Eq. 6 with pair-wise labels (§3.1, §4.1).
  """
  x, labels, ref, ref_labels, is_self = pair_inputs(
      embeddings, labels, ref_embeddings, ref_labels
  )
  _checks.hyperparameter("margin", margin)
  _checks.hyperparameter("gamma", gamma, positive=True)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)
  return _pairwise_circle_loss(
      x, labels, ref, ref_labels, margin, gamma, is_self, chunk_size, grad_through_alpha
  )


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _pairwise_circle_loss(
    x, labels, ref, ref_labels, margin, gamma, is_self, chunk_size, grad_through_alpha
):
  dtype = _numerics.compute_dtype(x.dtype, ref.dtype)
  margin, gamma = _numerics.as_dtype(dtype, margin, gamma)
  if is_self:
    # The batch against itself: symmetric similarities, one GEMM in the backward pass.
    if chunk_size is not None and chunk_size < x.shape[0]:
      return _self_pairs.chunked_self_loss(x, labels, margin, gamma, grad_through_alpha, chunk_size)
    return _self_pairs.dense_self_loss(x, labels, margin, gamma, grad_through_alpha)
  if chunk_size is not None:
    (lse_p, ok_p), (lse_n, ok_n) = streamed_pair_lses(
        x, labels, ref, ref_labels, margin, gamma, is_self=is_self,
        grad_through_alpha=grad_through_alpha, chunk_size=chunk_size,
    )
    return _circle.softplus_of_sum(lse_p, ok_p, lse_n, ok_n)
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  s = _numerics.scaled_inner_products(
      x, ref, _numerics.inverse_l2_norm(x), _numerics.inverse_l2_norm(ref)
  )
  pos, neg = _masks(labels, ref_labels, is_self)
  lse_p, ok_p = _numerics.masked_logsumexp(_circle.circle_logits(s, positive=True, **kw), pos)
  lse_n, ok_n = _numerics.masked_logsumexp(_circle.circle_logits(s, positive=False, **kw), neg)
  return _circle.softplus_of_sum(lse_p, ok_p, lse_n, ok_n)


def _pair_block(is_self, grad_through_alpha, rows, cols, consts, start):
  """(positive logits, mask), (negative logits, mask) for one reference chunk."""
  x, x_inv, labels = rows
  ref, ref_inv, ref_labels = cols
  margin, gamma, row_base = consts
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  s = _numerics.scaled_inner_products(x, ref, x_inv, ref_inv)
  same = labels[:, None] == ref_labels[None, :]
  pos = same
  if is_self:
    # Global indices, so a shard of anchors against a gathered (or ring-passed)
    # reference set still excludes exactly its own self-pairs.
    row_index = row_base + jnp.arange(x.shape[0])
    col_index = start + jnp.arange(ref.shape[0])
    pos = same & (row_index[:, None] != col_index[None, :])
  return [
      (_circle.circle_logits(s, positive=True, **kw), pos),
      (_circle.circle_logits(s, positive=False, **kw), ~same),
  ]


def pair_block_fn(is_self: bool, grad_through_alpha: bool):
  return functools.partial(_pair_block, is_self, grad_through_alpha)


def streamed_pair_lses(
    x, labels, ref, ref_labels, margin, gamma, *, is_self, grad_through_alpha,
    chunk_size, row_base=0, col_base=0,
):
  """[(lse_p, ok_p), (lse_n, ok_n)] of the pair-wise Circle logits, streamed.

  Memory O(B·chunk_size) in both passes (see `_streaming`). `row_base` and
  `col_base` are the global indices of the first anchor and the first reference,
  which locate the self-pairs when is_self.
  """
  rows = (x, _numerics.inverse_l2_norm(x), labels)
  cols = (ref, _numerics.inverse_l2_norm(ref), ref_labels)
  consts = (margin, gamma, jnp.asarray(row_base, jnp.int32))
  return _streaming.streamed_lse(
      pair_block_fn(is_self, grad_through_alpha), rows, cols, consts,
      num_streams=2, chunk_size=chunk_size, col_base=col_base,
  )
