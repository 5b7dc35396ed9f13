"""Class-level baselines of the paper: softmax, NormFace, SphereFace, CosFace, ArcFace.

All are cross-entropies over per-class logits (see `_class_level`), differing
only in how the target and non-target similarities become logits. Each returns
one value per example.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _checks
from circle_jax.losses import _class_level
from circle_jax.losses import _numerics

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def softmax_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
) -> Array:
  r"""Softmax cross-entropy with a linear classifier, per example.

  .. math::  L_b = -\log \frac{e^{w_y^\top x_b + c_y}}{\sum_j e^{w_j^\top x_b + c_j}}

  No normalisation and no scale: the paper's "inner products instead of cosines
  and γ = 1" case of Eq. 2.

  Args:
    embeddings: [B, D] float features.
    class_weights: [C, D] float classifier rows.
    labels: [B] integer class ids in [0, C).
    bias: optional [C] float bias c.

  Returns:
    [B] per-example cross-entropies.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import softmax_loss
    >>> x, w = jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(softmax_loss(x, w, jnp.array([0]))).round(4))
    [0.1269]

  References:
    Sun et al., CVPR 2020, Eq. 2 and Table 1 (Softmax baseline).
  """
  x, w, labels = _class_level.class_inputs(embeddings, class_weights, labels)
  if bias is not None:
    bias = _checks.all_finite("bias", _checks.float_array("bias", bias, ndim=1))
    if bias.shape != (w.shape[0],):
      raise ValueError(
          f"bias must have shape ({w.shape[0]},) to match class_weights "
          f"{w.shape}, got {bias.shape}"
      )
  return _softmax_loss(x, w, labels, bias)


@jax.jit
def _softmax_loss(x, w, labels, bias):
  identity = lambda s, params: s
  return _class_level.proxy_cross_entropy(
      x,
      w,
      labels,
      target_logit=identity,
      other_logit=identity,
      normalize_embeddings=False,
      normalize_weights=False,
      bias=bias,
  )


def _scaled_cosine_inputs(embeddings, class_weights, labels, gamma):
  """Validated (x, w, labels) for the losses whose non-target logits are γ·cos."""
  _checks.hyperparameter("gamma", gamma, positive=True)
  return _class_level.class_inputs(embeddings, class_weights, labels)


def _scaled_cosine(s, params):
  return params[0] * s


def _scaled_cosine_cross_entropy(x, w, labels, params, target_logit, chunk_size):
  """Cross-entropy with non-target logits γ·cos; params = (γ, …) for target_logit."""
  dtype = _numerics.compute_dtype(x.dtype, w.dtype)
  params = _numerics.as_dtype(dtype, *params)
  return _class_level.proxy_cross_entropy(
      x, w, labels, target_logit=target_logit, other_logit=_scaled_cosine,
      params=params, chunk_size=chunk_size,
  )


def normface_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 64.0,
    chunk_size: int | None = None,
) -> Array:
  r"""NormFace: softmax cross-entropy on scaled cosine logits, per example.

  .. math::  L_b = -\log \frac{e^{\gamma s_{by}}}{\sum_j e^{\gamma s_{bj}}},
             \quad s_{bj} = \cos(x_b, w_j)

  The m = 0 case of AM-Softmax (paper Eq. 2). γ defaults to 64, the scale the
  paper's margin baselines use; pytorch-metric-learning's
  ``NormalizedSoftmaxLoss(temperature=0.05)`` is γ = 20.

  Args:
    embeddings: [B, D]; class_weights: [C, D]; labels: [B] in [0, C).
    gamma: the scale γ > 0.
    chunk_size: None for the dense [B, C] logits; an int streams over classes
      in blocks of that many with a recomputing backward pass (memory
      O(B·chunk_size), same values and gradients; see ``class_circle_loss``).

  Returns:
    [B] per-example losses.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import normface_loss
    >>> x, w = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(normface_loss(x, w, jnp.array([0]), gamma=2.0)).round(4))
    [0.1269]

  References:
    Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification",
    ACM MM 2017; Sun et al., CVPR 2020, Eq. 2.
  """
  x, w, labels = _scaled_cosine_inputs(embeddings, class_weights, labels, gamma)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  return _normface_loss(x, w, labels, gamma, chunk_size)


@functools.partial(jax.jit, static_argnums=4)
def _normface_loss(x, w, labels, gamma, chunk_size):
  return _scaled_cosine_cross_entropy(x, w, labels, (gamma,), _scaled_cosine, chunk_size)


def cosface_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.35,
    gamma: float = 64.0,
    chunk_size: int | None = None,
) -> Array:
  r"""CosFace / AM-Softmax: additive cosine margin on the target, per example.

  .. math::  L_b = -\log \frac{e^{\gamma(s_{by} - m)}}
             {e^{\gamma(s_{by} - m)} + \sum_{j\ne y} e^{\gamma s_{bj}}}

  This is the unified loss (Eq. 1) with one positive and class proxies as
  negatives (paper Eq. 2). Defaults are the paper's baseline γ = 64, m = 0.35.
  ``am_softmax_loss`` is the same function.

  Args:
    embeddings: [B, D]; class_weights: [C, D]; labels: [B] in [0, C).
    margin: additive cosine margin m; gamma: scale γ > 0.
    chunk_size: None (dense) or classes per streamed block, as in
      ``normface_loss``.

  Returns:
    [B] per-example losses.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import cosface_loss
    >>> x, w = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(cosface_loss(x, w, jnp.array([0]), margin=0.5, gamma=2.0)).round(4))
    [0.3133]

  References:
    Wang et al., "CosFace", CVPR 2018; Wang et al., "Additive Margin Softmax",
    IEEE SPL 2018; Sun et al., CVPR 2020, Eq. 2.
  """
  _checks.hyperparameter("margin", margin)
  x, w, labels = _scaled_cosine_inputs(embeddings, class_weights, labels, gamma)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  return _cosface_loss(x, w, labels, margin, gamma, chunk_size)


def _cosface_target(s, params):
  gamma, margin = params
  return gamma * (s - margin)


@functools.partial(jax.jit, static_argnums=5)
def _cosface_loss(x, w, labels, margin, gamma, chunk_size):
  return _scaled_cosine_cross_entropy(
      x, w, labels, (gamma, margin), _cosface_target, chunk_size
  )


am_softmax_loss = cosface_loss


def arcface_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    gamma: float = 64.0,
    easy_margin: bool = False,
    chunk_size: int | None = None,
) -> Array:
  r"""ArcFace: additive angular margin on the target, per example.

  .. math::

     L_b = -\log \frac{e^{\gamma\,\psi(\theta_{by})}}
           {e^{\gamma\,\psi(\theta_{by})} + \sum_{j\ne y} e^{\gamma\cos\theta_{bj}}},
     \quad \psi(\theta) = \begin{cases} \cos(\theta + m) & \theta + m \le \pi \\
                                        \cos\theta - m\sin m & \text{otherwise} \end{cases}

  cos(θ + m) stops decreasing past θ = π − m, so beyond it the target logit
  switches to the linear CosFace-like penalty cos θ − m·sin m (insightface's
  rule, kept for agreement with it). ψ stays decreasing, but it is not
  continuous there: it jumps from −1 down to −cos m − m·sin m (by 0.117 at
  m = 0.5), which only matters for targets more than π − m away from their
  proxy. With ``easy_margin=True`` the margin is only applied where
  cos θ > 0 (ψ = cos θ elsewhere). Defaults: the paper's baseline γ = 64, m = 0.5.
  pytorch-metric-learning's ``ArcFaceLoss`` takes the margin in degrees (28.6°).

  Args:
    embeddings: [B, D]; class_weights: [C, D]; labels: [B] in [0, C).
    margin: angular margin m in radians, 0 ≤ m < π/2; gamma: scale γ > 0.
    easy_margin: apply the margin only for cos θ > 0.
    chunk_size: None (dense) or classes per streamed block, as in
      ``normface_loss``.

  Returns:
    [B] per-example losses.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import arcface_loss
    >>> x, w = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(arcface_loss(x, w, jnp.array([0]), margin=0.5, gamma=2.0)).round(4))
    [0.1595]

  References:
    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019; Sun et al., CVPR 2020, Table 1.
  """
  _checks.hyperparameter("margin", margin, nonnegative=True)
  m = _checks.concrete_value(margin)
  if m is not None and float(m) >= math.pi / 2:
    raise ValueError(f"margin must be < π/2 radians, got {float(m)}")
  x, w, labels = _scaled_cosine_inputs(embeddings, class_weights, labels, gamma)
  easy_margin = _checks.flag("easy_margin", easy_margin)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  return _arcface_loss(x, w, labels, margin, gamma, easy_margin, chunk_size)


def _arcface_target(easy_margin, s, params):
  gamma, margin = params
  cos_m, sin_m = jnp.cos(margin), jnp.sin(margin)
  s = jnp.clip(s, -1.0, 1.0)
  # sin θ via a guarded sqrt: zero gradient (not inf) at |cos θ| = 1.
  shifted = s * cos_m - _numerics.safe_sqrt(1.0 - jnp.square(s)) * sin_m  # cos(θ + m)
  if easy_margin:
    return gamma * jnp.where(s > 0, shifted, s)
  threshold = jnp.cos(jnp.pi - margin)
  return gamma * jnp.where(s > threshold, shifted, s - margin * sin_m)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _arcface_loss(x, w, labels, margin, gamma, easy_margin, chunk_size):
  target = functools.partial(_arcface_target, easy_margin)
  return _scaled_cosine_cross_entropy(
      x, w, labels, (gamma, margin), target, chunk_size
  )


def _chebyshev(s: Array, degree: int) -> Array:
  """T_degree(s) = cos(degree·arccos s), by the recurrence (gradient-safe at ±1)."""
  previous, current = jnp.ones_like(s), s
  if degree == 0:
    return previous
  for _ in range(degree - 1):
    previous, current = current, 2.0 * s * current - previous
  return current


def sphereface_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    margin: int = 4,
    annealing_lambda: float = 0.0,
) -> Array:
  r"""SphereFace (A-Softmax): multiplicative angular margin, per example.

  Weights are normalised, features are not; logits are ‖x‖·cos θ_j for the
  non-targets and ‖x‖·ψ(θ_y) for the target, with

  .. math::  \psi(\theta) = (-1)^k \cos(m\theta) - 2k,\quad
             \theta \in [k\pi/m, (k+1)\pi/m],\ k \in \{0,\dots,m-1\}

  (monotonically decreasing on [0, π]). cos(mθ) is the Chebyshev polynomial
  T_m(cos θ), so no arccos enters the gradient. The training-time annealing of
  the paper blends the target logit as ‖x‖(λ cos θ + ψ(θ))/(1 + λ);
  ``annealing_lambda=0`` (the default) is the pure A-Softmax loss.

  Args:
    embeddings: [B, D]; class_weights: [C, D]; labels: [B] in [0, C).
    margin: the integer angular multiplier m ≥ 1 (SphereFace uses 4).
    annealing_lambda: λ ≥ 0 of the annealing blend.

  Returns:
    [B] per-example losses.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax.losses import sphereface_loss
    >>> x, w = jnp.array([[2.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(sphereface_loss(x, w, jnp.array([0]), margin=4)).round(4))
    [0.1269]

  References:
    Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition",
    CVPR 2017, Eq. 7; Sun et al., CVPR 2020, Table 1.
  """
  if isinstance(margin, bool) or not isinstance(margin, numbers.Integral):
    raise TypeError(f"margin must be a Python int >= 1 for SphereFace, got {margin!r}")
  if margin < 1:
    raise ValueError(f"margin must be >= 1, got {margin}")
  _checks.hyperparameter("annealing_lambda", annealing_lambda, nonnegative=True)
  x, w, labels = _class_level.class_inputs(embeddings, class_weights, labels)
  return _sphereface_loss(x, w, labels, margin, annealing_lambda)


@functools.partial(jax.jit, static_argnums=3)
def _sphereface_loss(x, w, labels, margin, annealing_lambda):
  norm = _numerics.l2_norm(x)

  def target(s, params):
    s = jnp.clip(s, -1.0, 1.0)
    theta = lax.stop_gradient(jnp.arccos(s))
    k = jnp.clip(jnp.floor(margin * theta / jnp.pi), 0, margin - 1)
    sign = 1.0 - 2.0 * jnp.mod(k, 2)
    psi = sign * _chebyshev(s, margin) - 2.0 * k
    blended = (annealing_lambda * s + psi) / (1.0 + annealing_lambda)
    return norm * blended

  return _class_level.proxy_cross_entropy(
      x,
      w,
      labels,
      target_logit=target,
      other_logit=lambda s, params: norm[:, None] * s,
  )
