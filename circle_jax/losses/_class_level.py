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
from jax import lax

from circle_jax.losses import _checks
from circle_jax.losses import _circle
from circle_jax.losses import _numerics

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
LogitFn = Callable[[Array], Array]


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
    normalize_embeddings: bool = True,
    normalize_weights: bool = True,
    bias: Array | None = None,
    chunk_size: int | None = None,
) -> Array:
  """softplus(LSE_{j≠y} other_logit(s_j) − target_logit(s_y)) per example.

  Inputs must already be validated (see `class_inputs`). s is x·w_j, divided by
  ‖x‖ and/or ‖w_j‖ as requested, computed as a scaled product so that no
  normalised copy of W is made. With `chunk_size` the non-target classes are
  streamed in blocks (see `_numerics.streamed_row_lse`). Labels outside [0, C)
  that could not be checked (traced) give NaN for that example.
  """
  num_classes = w.shape[0]
  x_inv = _numerics.inverse_l2_norm(x) if normalize_embeddings else None
  w_inv = _numerics.inverse_l2_norm(w) if normalize_weights else None
  dtype = _numerics.compute_dtype(x.dtype, w.dtype)

  # Target similarity from the gathered rows w_y: a [B, D] gather, not a [B, C] pass.
  s_target = _numerics.rowwise_inner_products(x, w[labels])
  if x_inv is not None:
    s_target = s_target * x_inv
  if w_inv is not None:
    s_target = s_target * w_inv[labels]
  z_target = target_logit(s_target)
  if bias is not None:
    z_target = z_target + bias[labels].astype(dtype)

  def chunk(start, size):
    block = lax.dynamic_slice_in_dim(w, start, size)
    block_inv = None if w_inv is None else lax.dynamic_slice_in_dim(w_inv, start, size)
    z = other_logit(_numerics.scaled_inner_products(x, block, x_inv, block_inv))
    if bias is not None:
      z = z + lax.dynamic_slice_in_dim(bias, start, size).astype(dtype)[None, :]
    classes = start + jnp.arange(size)
    return [(z, classes[None, :] != labels[:, None])]

  ((lse_other, nonempty),) = _numerics.streamed_row_lse(
      chunk, num_classes, x.shape[0], dtype, chunk_size, num_streams=1
  )
  loss = jnp.where(
      nonempty, jax.nn.softplus(jnp.where(nonempty, lse_other - z_target, 0.0)), 0.0
  )
  in_range = (labels >= 0) & (labels < num_classes)
  return jnp.where(in_range, loss, jnp.nan)


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
    labels: [B] integer class ids in [0, C). Checked when concrete; under `jit`
      an out-of-range label gives NaN for that example.
    margin: m (paper: 0.25 for face recognition and re-ID).
    gamma: γ > 0 (paper: 256 face recognition, 128 re-ID).
    chunk_size: None for the dense [B, C] logits; an int streams over classes in
      blocks of that many (memory O(B·chunk_size), same values and gradients).
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
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  return proxy_cross_entropy(
      x,
      w,
      labels,
      # The target's Eq. 6 exponent is −z_y: z_y = γα_p(s_y − Δ_p).
      target_logit=lambda s: -_circle.circle_logits(s, positive=True, **kw),
      other_logit=lambda s: _circle.circle_logits(s, positive=False, **kw),
      chunk_size=chunk_size,
  )
