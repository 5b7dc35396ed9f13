"""Class-level labels: cross-entropy over transformed proxy logits, and Circle on it.

Every class-level loss here (softmax, NormFace, SphereFace, CosFace, ArcFace and
class-level Circle) is one cross-entropy

    L_b = −log softmax(z_b)[y_b] = softplus(LSE_{j≠y_b} z_bj − z_by_b),

where z_bj = g(s_bj) for the non-target classes and z_by = f(s_by) for the
target, with s the (cosine) similarity to each class proxy. Computing the
log-sum-exp over the non-targets and the target logit separately keeps small
losses accurate (no cancellation of LSE_all − z_y) and lets the non-target
sum stream over classes.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from circle_jax.losses import _checks
from circle_jax.losses import _circle
from circle_jax.losses import _numerics
from circle_jax.losses import _streaming

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
LogitFn = Callable[[Array, object], Array]


def class_inputs(embeddings, class_weights, labels):
  """Validates (x [B, D], W [C, D], labels [B] in [0, C))."""
  x = _checks.embedding_matrix("embeddings", embeddings)
  w = _checks.embedding_matrix("class_weights", class_weights, dim=x.shape[1])
  labels = _checks.integer_labels("labels", labels, x.shape[0], num_classes=w.shape[0])
  return x, w, labels


def proxy_cross_entropy(
    x: Array,
    w: Array,
    labels: Array,
    *,
    target_logit: LogitFn,
    other_logit: LogitFn,
    params=(),
    normalize_embeddings: bool = True,
    normalize_weights: bool = True,
    bias: Array | None = None,
    chunk_size: int | None = None,
) -> Array:
  """softplus(LSE_{j≠y} other_logit(s_j) − target_logit(s_y)) per example.

  Inputs must already be validated (see `class_inputs`). s is x·w_j, divided by
  ‖x‖ and/or ‖w_j‖ as requested, computed as a scaled product so that no
  normalised copy of W is made. The logit functions are called as
  `fn(s, params)` and must close over no traced values (hyper-parameters go in
  `params`, a pytree). With `chunk_size` the classes are streamed in blocks
  with a recomputing backward pass (see `_streaming`), the target logit being
  a second one-entry stream, so neither a [B, C] matrix nor a [C, D] scatter
  of the target rows' gradient is formed. Labels outside [0, C) that could not
  be checked (traced) give NaN for that example.
  """
  num_classes = w.shape[0]
  x_inv = _numerics.inverse_l2_norm(x) if normalize_embeddings else None
  in_range = (labels >= 0) & (labels < num_classes)
  if chunk_size is not None:
    if bias is not None:
      raise ValueError("bias is only supported without chunk_size")
    (lse_other, nonempty), (z_target, _) = streamed_class_lses(
        x, x_inv, w, labels, params, target_logit=target_logit,
        other_logit=other_logit, normalize_weights=normalize_weights,
        chunk_size=chunk_size,
    )
    return cross_entropy_from_lses(lse_other, nonempty, z_target, in_range)

  w_inv = _numerics.inverse_l2_norm(w) if normalize_weights else None
  dtype = _numerics.compute_dtype(x.dtype, w.dtype)
  # Target similarity from the gathered rows w_y: a [B, D] gather, not a [B, C] pass.
  s_target = _numerics.rowwise_inner_products(x, w[labels])
  if x_inv is not None:
    s_target = s_target * x_inv
  if w_inv is not None:
    s_target = s_target * w_inv[labels]
  z_target = target_logit(s_target, params)
  if bias is not None:
    z_target = z_target + bias[labels].astype(dtype)
  z = other_logit(_numerics.scaled_inner_products(x, w, x_inv, w_inv), params)
  if bias is not None:
    z = z + bias.astype(dtype)[None, :]
  others = jnp.arange(num_classes)[None, :] != labels[:, None]
  lse_other, nonempty = _numerics.masked_logsumexp(z, others)
  return cross_entropy_from_lses(lse_other, nonempty, z_target, in_range)


def cross_entropy_from_lses(lse_other, nonempty, z_target, in_range):
  """softplus(LSE_other − z_target); 0 without a non-target; NaN for bad labels."""
  loss = jnp.where(
      nonempty, jax.nn.softplus(jnp.where(nonempty, lse_other - z_target, 0.0)), 0.0
  )
  return jnp.where(in_range, loss, jnp.nan)


def _class_block(
    target_logit, other_logit, normalize_weights, num_classes, rows, cols, consts, start
):
  """(non-target logits, mask), (target logit, one-hot mask) for a class chunk."""
  x, x_inv, labels = rows
  (w,) = cols
  # The chunk's inverse norms are recomputed here (O(chunk·D)), so no [C]-sized
  # norm vector, and no [C, D] gradient through it, exists outside the chunk.
  w_inv = _numerics.inverse_l2_norm(w) if normalize_weights else None
  s = _numerics.scaled_inner_products(x, w, x_inv, w_inv)
  classes = start + jnp.arange(w.shape[0])
  target = classes[None, :] == labels[:, None]
  valid = True if num_classes is None else (classes < num_classes)[None, :]
  return [
      (other_logit(s, consts), ~target & valid),
      # A one-entry log-sum-exp is that entry exactly (exp(0) = 1), with
      # gradient exactly 1: the target logit comes out of the same pass.
      (target_logit(s, consts), target & valid),
  ]


def streamed_class_lses(
    x, x_inv, w, labels, params, *, target_logit, other_logit,
    normalize_weights=True, chunk_size, col_base=0, num_classes=None, finalize=True,
):
  """[(LSE over non-target classes, nonempty), (target logit, found)], streamed.

  `w` holds the classes col_base … col_base + len(w) − 1 (a shard, under
  `circle_jax.parallel`); classes ≥ num_classes (padding) are ignored.
  """
  block_fn = functools.partial(
      _class_block, target_logit, other_logit, normalize_weights, num_classes
  )
  return _streaming.streamed_lse(
      block_fn, (x, x_inv, labels), (w,), params,
      num_streams=2, chunk_size=chunk_size, col_base=col_base, finalize=finalize,
  )


def class_circle_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.25,
    gamma: float = 256.0,
    chunk_size: int | None = None,
    grad_through_alpha: bool = False,
) -> Array:
  r"""Circle loss with class-level labels (proxies), one value per example.

  The only positive is the example's own class proxy (K = 1), the negatives are
  the other C − 1 proxies, and s is the cosine similarity to a proxy:

  .. math::

    L_b = \log\Big[1 + e^{-\gamma\alpha_p(s_{by} - 1 + m)}
                      \sum_{j \ne y} e^{\gamma\alpha_n^j(s_{bj} - m)}\Big],\quad
    \alpha_p = [1 + m - s_{by}]_+,\ \alpha_n^j = [s_{bj} + m]_+

  which is cross-entropy on the logits γα_p(s_y − (1 − m)) for the target and
  γα_n(s_j − m) for the others (fast-reid's ``CircleSoftmax``).

  Args:
    embeddings: [B, D] float features (normalised inside).
    class_weights: [C, D] float class proxies, one row per class (normalised
      inside, without making a normalised copy). Note pytorch-metric-learning
      stores the transpose, [D, C].
    labels: [B] integer class ids in [0, C). Checked when concrete, before any
      conversion (an int64 id ≥ 2³¹ is reported, not truncated onto a valid
      class); under `jit` an out-of-range label gives NaN for that example.
    margin: m (paper: 0.25 for face recognition and re-ID).
    gamma: γ > 0 (paper: 256 face recognition, 128 re-ID).
    chunk_size: None for the dense [B, C] logits; an int streams over classes in
      blocks of that many with a backward pass that recomputes each block
      (memory O(B·chunk_size), no copy of class_weights; same values and
      gradients). C need not be a multiple of chunk_size.
    grad_through_alpha: if False (default, the paper's choice), α is a constant
      in the backward pass; if True, gradients also flow through α.

  Returns:
    [B] per-example losses; with C = 1 (no negative class) every loss is 0.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax import class_circle_loss
    >>> kx, kw = jax.random.split(jax.random.key(0))
    >>> x, w = jax.random.normal(kx, (4, 16)), jax.random.normal(kw, (10, 16))
    >>> class_circle_loss(x, w, jnp.array([0, 3, 3, 9])).shape
    (4,)

  References:
    Sun et al., CVPR 2020, Eq. 6 with class-level labels (§3.1, §4.1).
  """
  x, w, labels = class_inputs(embeddings, class_weights, labels)
  _checks.hyperparameter("margin", margin)
  _checks.hyperparameter("gamma", gamma, positive=True)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)
  return _class_circle_loss(x, w, labels, margin, gamma, chunk_size, grad_through_alpha)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _class_circle_loss(x, w, labels, margin, gamma, chunk_size, grad_through_alpha):
  dtype = _numerics.compute_dtype(x.dtype, w.dtype)
  margin, gamma = _numerics.as_dtype(dtype, margin, gamma)
  target, other = circle_class_logits(grad_through_alpha)
  return proxy_cross_entropy(
      x, w, labels, target_logit=target, other_logit=other, params=(margin, gamma),
      chunk_size=chunk_size,
  )


def _circle_target(grad_through_alpha, s, params):
  margin, gamma = params
  # The target's Eq. 6 exponent is −z_y: z_y = γα_p(s_y − Δ_p).
  return -_circle.circle_logits(
      s, margin=margin, gamma=gamma, positive=True, grad_through_alpha=grad_through_alpha
  )


def _circle_other(grad_through_alpha, s, params):
  margin, gamma = params
  return _circle.circle_logits(
      s, margin=margin, gamma=gamma, positive=False, grad_through_alpha=grad_through_alpha
  )


def circle_class_logits(grad_through_alpha: bool) -> tuple[LogitFn, LogitFn]:
  """(target, non-target) logit functions of class-level Circle; params = (m, γ)."""
  return (
      functools.partial(_circle_target, grad_through_alpha),
      functools.partial(_circle_other, grad_through_alpha),
  )
