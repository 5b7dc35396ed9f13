"""Circle loss (Eq. 6), its closed-form gradients (Eq. 9–10) and the unified loss (Eq. 1).

These act on similarity *sets*: for each row, K within-class scores s_p and L
between-class scores s_n. The pair-wise and class-level losses build those sets
from embeddings and reuse the pieces defined here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _checks
from circle_jax.losses import _numerics

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def circle_logits(
    s: Array,
    *,
    margin,
    gamma,
    positive: bool,
    grad_through_alpha: bool = False,
) -> Array:
  """The exponents of Eq. 6 for one side: −γα_p(s_p − Δ_p) or γα_n(s_n − Δ_n).

  With O_p = 1 + m, O_n = −m, Δ_p = 1 − m, Δ_n = m (Eq. 8):
  α_p = [1 + m − s_p]_+ and α_n = [s_n + m]_+. α is a constant for the gradient
  (the paper's choice, `lax.stop_gradient`) unless `grad_through_alpha`.
  """
  if positive:
    alpha = jax.nn.relu(1.0 + margin - s)
    logits = -gamma * (s - (1.0 - margin))
  else:
    alpha = jax.nn.relu(s + margin)
    logits = gamma * (s - margin)
  if not grad_through_alpha:
    alpha = lax.stop_gradient(alpha)
  return alpha * logits


def circle_logit_slopes(
    s: Array, *, margin, gamma, positive: bool, grad_through_alpha: bool = False
) -> Array:
  """d(circle_logits)/ds, written out: the last factor of Eq. 9–10.

  Stop-gradient α: −γ[1 + m − s_p]_+ and γ[s_n + m]_+ — inside the unclipped
  region γ(s_p − 1 − m) and γ(s_n + m), as in the paper. Through α (product
  rule, with the subgradient 0 at the kink): 2γ(s_p − 1) and 2γs_n there.
  """
  if positive:
    alpha = jax.nn.relu(1.0 + margin - s)
    slope = -gamma * alpha
    if grad_through_alpha:
      slope = slope + gamma * jnp.where(alpha > 0, s - (1.0 - margin), 0.0)
  else:
    alpha = jax.nn.relu(s + margin)
    slope = gamma * alpha
    if grad_through_alpha:
      slope = slope + gamma * jnp.where(alpha > 0, s - margin, 0.0)
  return slope


def softplus_of_sum(lse_p, ok_p, lse_n, ok_n) -> Array:
  """log(1 + e^{lse_p + lse_n}), or exactly 0 where either set is empty.

  The double `where` keeps the gradient of empty rows at 0 instead of NaN.
  """
  valid = ok_p & ok_n
  return jnp.where(valid, jax.nn.softplus(jnp.where(valid, lse_p + lse_n, 0.0)), 0.0)


def _similarity_sets(sp, sn, sp_mask, sn_mask, margin, gamma):
  """Validates and converts (sp, sn, masks) to the compute dtype."""
  sp = _checks.float_array("sp", sp)
  sn = _checks.float_array("sn", sn)
  if sp.ndim == 0 or sn.ndim == 0:
    raise ValueError(
        f"sp and sn must have a trailing set axis ([..., K] and [..., L]), got "
        f"shapes {sp.shape} and {sn.shape}"
    )
  _checks.hyperparameter("margin", margin)
  _checks.hyperparameter("gamma", gamma, positive=True)
  sp, sp_mask = _checks.score_mask("sp_mask", sp_mask, sp, "sp")
  sn, sn_mask = _checks.score_mask("sn_mask", sn_mask, sn, "sn")
  try:
    jnp.broadcast_shapes(sp.shape[:-1], sn.shape[:-1])
  except ValueError as e:
    raise ValueError(
        f"sp and sn must share their leading (batch) shape: sp {sp.shape} "
        f"[..., K] and sn {sn.shape} [..., L] (with their masks) do not broadcast"
    ) from e
  _checks.all_finite("sp", sp, sp_mask)  # masked entries may hold any padding
  _checks.all_finite("sn", sn, sn_mask)
  dtype = _numerics.compute_dtype(sp.dtype, sn.dtype)
  # Masked entries are replaced before any arithmetic, so a NaN or inf used as
  # padding can reach neither the value nor the gradient.
  sp = jnp.where(sp_mask, sp.astype(dtype), 0.0)
  sn = jnp.where(sn_mask, sn.astype(dtype), 0.0)
  return sp, sn, sp_mask, sn_mask


def circle_loss(
    sp: ArrayLike,
    sn: ArrayLike,
    *,
    margin: float = 0.25,
    gamma: float = 256.0,
    sp_mask: ArrayLike | None = None,
    sn_mask: ArrayLike | None = None,
    grad_through_alpha: bool = False,
) -> Array:
  r"""Circle loss over similarity sets (paper Eq. 6), one value per row.

  .. math::

    L = \log\Big[1 + \sum_j e^{\gamma\alpha_n^j(s_n^j - \Delta_n)}
                     \sum_i e^{-\gamma\alpha_p^i(s_p^i - \Delta_p)}\Big]
      = \mathrm{softplus}\big(\mathrm{LSE}_j\,\gamma\alpha_n^j(s_n^j - m)
                        + \mathrm{LSE}_i\,{-\gamma}\alpha_p^i(s_p^i - 1 + m)\big)

  with :math:`\alpha_p^i = [1 + m - s_p^i]_+`, :math:`\alpha_n^j = [s_n^j + m]_+`,
  :math:`\Delta_p = 1 - m`, :math:`\Delta_n = m` (Eq. 8). Each log-sum-exp runs over
  the valid (unmasked) entries only, with its max over those entries, so γ up to
  1024 neither overflows nor underflows. A row with no valid positive or no valid
  negative gets exactly 0 with a zero gradient.

  Args:
    sp: within-class similarities, shape [..., K].
    sn: between-class similarities, shape [..., L]; leading shape broadcastable
      with sp's.
    margin: relaxation m (paper: 0.25 face/re-ID, 0.4 fine-grained).
    gamma: scale γ > 0 (paper: 256 face, 128 re-ID, 80 fine-grained).
    sp_mask: optional boolean mask, True at valid entries; broadcast with sp
      (it may add leading axes: one set of scores masked per row).
    sn_mask: optional boolean mask, broadcast with sn likewise.
    grad_through_alpha: if False (the paper, pytorch-metric-learning, fast-reid),
      the weights α are constants in the backward pass; if True, gradients also
      flow through α (Keras 3 `keras.losses.Circle`, TF-Similarity). Values are
      identical either way.

  Returns:
    Per-row losses, shape ``broadcast(sp.shape[:-1], sn.shape[:-1])``, in float32 for
    half-precision inputs (float64 for float64).

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax import circle_loss
    >>> sp = jnp.array([[0.8, 0.6], [0.9, 0.95]])
    >>> sn = jnp.array([[0.3, -0.1, 0.2], [0.0, 0.1, -0.2]])
    >>> print(np.asarray(circle_loss(sp, sn, margin=0.25, gamma=32.0)).round(4))
    [4.2814 0.2384]

  References:
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", CVPR 2020, Eq. 6–8.
  """
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)
  sp, sn, sp_mask, sn_mask = _similarity_sets(sp, sn, sp_mask, sn_mask, margin, gamma)
  return _circle_loss(sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha)


@functools.partial(jax.jit, static_argnums=6)
def _circle_loss(sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha):
  return _circle_terms(sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha)[0]


def _circle_terms(sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha):
  """(loss, (logits_p, lse_p), (logits_n, lse_n)) of Eq. 6 for validated sets."""
  margin, gamma = _numerics.as_dtype(sp.dtype, margin, gamma)
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  logits_p = circle_logits(sp, positive=True, **kw)
  logits_n = circle_logits(sn, positive=False, **kw)
  lse_p, ok_p = _numerics.masked_logsumexp(logits_p, sp_mask)
  lse_n, ok_n = _numerics.masked_logsumexp(logits_n, sn_mask)
  loss = softplus_of_sum(lse_p, ok_p, lse_n, ok_n)
  return loss, (logits_p, lse_p), (logits_n, lse_n)


def _sum_to_shape(x: Array, shape: tuple[int, ...]) -> Array:
  """Sums the axes that broadcasting added, as the adjoint of broadcasting does."""
  lead = x.ndim - len(shape)
  x = jnp.sum(x, axis=tuple(range(lead))) if lead else x
  axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def circle_loss_grads(
    sp: ArrayLike,
    sn: ArrayLike,
    *,
    margin: float,
    gamma: float,
    sp_mask: ArrayLike | None = None,
    sn_mask: ArrayLike | None = None,
    grad_through_alpha: bool = False,
) -> tuple[Array, Array]:
  r"""The paper's closed-form gradients of Circle loss (Eq. 9–10), not autodiff.

  With :math:`Z = 1 - e^{-L}` and the logits
  :math:`\ell_n^j = \gamma\alpha_n^j(s_n^j - m)`,
  :math:`\ell_p^i = -\gamma\alpha_p^i(s_p^i - 1 + m)`:

  .. math::

    \frac{\partial L}{\partial s_n^j} = Z\,
      \frac{e^{\ell_n^j}}{\sum_l e^{\ell_n^l}}\,\gamma\,[s_n^j + m]_+ ,\qquad
    \frac{\partial L}{\partial s_p^i} = -Z\,
      \frac{e^{\ell_p^i}}{\sum_k e^{\ell_p^k}}\,\gamma\,[1 + m - s_p^i]_+ .

  Inside the unclipped region (s_n > −m, s_p < 1 + m) the last factors are
  γ(s_n + m) and γ(s_p − 1 − m) and the softmax weights are the paper's
  exp(γ((s_n)² − m²)) / Σ and exp(γ((s_p − 1)² − m²)) / Σ, i.e. Eq. 9–10 of the
  corrected (v2) paper. With `grad_through_alpha=True` the last factors become
  2γs_n and 2γ(s_p − 1) (the α-derivative added by the product rule).
  Masked entries and rows without a positive or a negative get exactly 0.

  Args:
    sp, sn, margin, gamma, sp_mask, sn_mask, grad_through_alpha: as in
      :func:`circle_loss`.

  Returns:
    (dsp, dsn): ∂L_row/∂sp and ∂L_row/∂sn, shaped like sp and sn (summed over
    broadcast leading axes), equal to ``jax.grad`` of ``circle_loss(...).sum()``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax import circle_loss, circle_loss_grads
    >>> sp, sn = jnp.array([[0.8, 0.6]]), jnp.array([[0.3, -0.1, 0.2]])
    >>> dsp, dsn = circle_loss_grads(sp, sn, margin=0.25, gamma=32.0)
    >>> auto = jax.grad(lambda a, b: circle_loss(a, b, margin=0.25, gamma=32.0).sum(),
    ...                 argnums=(0, 1))(sp, sn)
    >>> bool(jnp.allclose(dsp, auto[0], atol=1e-5) & jnp.allclose(dsn, auto[1], atol=1e-5))
    True

  References:
    Sun et al., CVPR 2020, Eq. 9–10 (arXiv:2002.10857v2; v1 had a sign error in
    Eq. 10).
  """
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)
  sp_in, sn_in = jnp.shape(sp), jnp.shape(sn)
  sp, sn, sp_mask, sn_mask = _similarity_sets(sp, sn, sp_mask, sn_mask, margin, gamma)
  return _circle_loss_grads(
      sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha, sp_in, sn_in
  )


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _circle_loss_grads(
    sp, sn, sp_mask, sn_mask, margin, gamma, grad_through_alpha, sp_in, sn_in
):
  loss, (logits_p, lse_p), (logits_n, lse_n) = _circle_terms(
      sp, sn, sp_mask, sn_mask, margin, gamma, False
  )
  z = -jnp.expm1(-loss)  # Z = 1 − exp(−L), accurate when L is small.
  # The softmax weights of Eq. 9–10: e^ℓ / Σ e^ℓ over the valid entries.
  weight = lambda logits, lse, mask: jnp.where(
      mask, jnp.exp(jnp.where(mask, logits - lse[..., None], 0.0)), 0.0
  )
  weights_p = weight(logits_p, lse_p, sp_mask)
  weights_n = weight(logits_n, lse_n, sn_mask)
  margin, gamma = _numerics.as_dtype(sp.dtype, margin, gamma)
  kw = dict(margin=margin, gamma=gamma)
  slope_p = circle_logit_slopes(
      sp, positive=True, grad_through_alpha=grad_through_alpha, **kw
  )
  slope_n = circle_logit_slopes(
      sn, positive=False, grad_through_alpha=grad_through_alpha, **kw
  )
  dsp = jnp.where(sp_mask, z[..., None] * weights_p * slope_p, 0.0)
  dsn = jnp.where(sn_mask, z[..., None] * weights_n * slope_n, 0.0)
  return _sum_to_shape(dsp, sp_in), _sum_to_shape(dsn, sn_in)


def unified_loss(
    sp: ArrayLike,
    sn: ArrayLike,
    *,
    margin: float,
    gamma: float,
    sp_mask: ArrayLike | None = None,
    sn_mask: ArrayLike | None = None,
) -> Array:
  r"""The unified loss of pair similarity optimisation (paper Eq. 1), per row.

  .. math::

    L_{uni} = \log\Big[1 + \sum_i\sum_j e^{\gamma(s_n^j - s_p^i + m)}\Big]
            = \mathrm{softplus}\big(\mathrm{LSE}_j\,\gamma(s_n^j + m)
                                + \mathrm{LSE}_i\,(-\gamma s_p^i)\big)

  Its special cases (Eq. 2–3): one positive against class proxies is
  AM-Softmax/CosFace (m = 0: NormFace); with pair-wise labels, (1/γ)·L_uni tends to
  the hard-mined triplet hinge max[s_n − s_p + m]_+ as γ → ∞.

  Args:
    sp: within-class similarities [..., K]; sn: between-class similarities [..., L].
    margin: the margin m (may be negative); gamma: the scale γ > 0.
    sp_mask, sn_mask: optional boolean validity masks broadcastable to sp / sn.

  Returns:
    Per-row losses, shape ``broadcast(sp.shape[:-1], sn.shape[:-1])``; rows with no
    valid positive or negative give exactly 0.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax import unified_loss
    >>> loss = unified_loss(jnp.array([0.7]), jnp.array([0.1, 0.2]), margin=0.35,
    ...                     gamma=16.0)
    >>> print(np.asarray(loss).round(4))
    0.1035

  References:
    Sun et al., CVPR 2020, Eq. 1–3.
  """
  sp, sn, sp_mask, sn_mask = _similarity_sets(sp, sn, sp_mask, sn_mask, margin, gamma)
  return _unified_loss(sp, sn, sp_mask, sn_mask, margin, gamma)


@jax.jit
def _unified_loss(sp, sn, sp_mask, sn_mask, margin, gamma):
  margin, gamma = _numerics.as_dtype(sp.dtype, margin, gamma)
  lse_p, ok_p = _numerics.masked_logsumexp(-gamma * sp, sp_mask)
  lse_n, ok_n = _numerics.masked_logsumexp(gamma * (sn + margin), sn_mask)
  return softplus_of_sum(lse_p, ok_p, lse_n, ok_n)


def circle_exponents(
    sp: ArrayLike,
    sn: ArrayLike,
    *,
    margin: float = 0.25,
    gamma: float = 256.0,
    grad_through_alpha: bool = False,
) -> tuple[Array, Array]:
  r"""The exponents of Eq. 6, one per similarity: the building block of other conventions.

  .. math::

    l_p^i = -\gamma\alpha_p^i(s_p^i - \Delta_p), \qquad
    l_n^j = \gamma\alpha_n^j(s_n^j - \Delta_n)

  with :math:`\alpha_p^i = [1 + m - s_p^i]_+`, :math:`\alpha_n^j = [s_n^j + m]_+`,
  :math:`\Delta_p = 1 - m`, :math:`\Delta_n = m`. :func:`circle_loss` is
  softplus(LSE(l_p) + LSE(l_n)); other implementations combine the same exponents
  differently, e.g. TF-Similarity's log1p(Σe^{l_p}) + log1p(Σe^{l_n}), which is
  ``softplus(masked_logsumexp(lp, sp_mask)[0]) + softplus(masked_logsumexp(ln, sn_mask)[0])``.

  Args:
    sp: within-class similarities, shape [..., K].
    sn: between-class similarities, shape [..., L].
    margin: relaxation m.
    gamma: scale γ > 0.
    grad_through_alpha: whether gradients flow through α (see :func:`circle_loss`).

  Returns:
    (lp [..., K], ln [..., L]) in the compute dtype (float32 for half precision).

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from circle_jax import circle_exponents
    >>> lp, ln = circle_exponents(jnp.array([0.8]), jnp.array([0.3]), margin=0.4, gamma=80.0)
    >>> print(np.asarray(lp).round(4), np.asarray(ln).round(4))
    [-9.6] [-5.6]

  References:
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", CVPR 2020, Eq. 6–8.
  """
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)
  sp, sn, _, _ = _similarity_sets(sp, sn, None, None, margin, gamma)
  return _circle_exponents(sp, sn, margin, gamma, grad_through_alpha)


@functools.partial(jax.jit, static_argnums=4)
def _circle_exponents(sp, sn, margin, gamma, grad_through_alpha):
  kw = dict(margin=margin, gamma=gamma, grad_through_alpha=grad_through_alpha)
  return circle_logits(sp, positive=True, **kw), circle_logits(sn, positive=False, **kw)
