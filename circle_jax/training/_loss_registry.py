"""Losses by name: which kind (pair-wise or class-level), which function, which hyper-parameters."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from circle_jax import losses as L


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A registered loss.

  Attributes:
    kind: ``"pair"`` (labels within the batch; P×K batches) or ``"class"``
      (a ``[C, D]`` proxy matrix ``params["class_weights"]``; shuffled batches).
    fn: the per-example loss from :mod:`circle_jax.losses`.
    hparams: its keyword-only hyper-parameters and their defaults.
  """

  kind: str
  fn: Callable[..., jax.Array]
  hparams: Mapping[str, Any]

  @property
  def sampler(self) -> str:
    """The batches it trains on, ``"pk"`` (P classes × K images, so that every anchor has
    positives in the batch) for a pair-wise loss and ``"shuffle"`` for a class-level one.

    Example:
      >>> get_loss_spec("circle_pair").sampler, get_loss_spec("arcface").sampler
      ('pk', 'shuffle')
    """
    return {"pair": "pk", "class": "shuffle"}[self.kind]


def _spec(kind, fn, **overrides) -> LossSpec:
  sig = inspect.signature(fn).parameters
  hp = {p.name: p.default for p in sig.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
  # Reference sets / streaming are not hyper-parameters of a training recipe.
  for name in ("ref_embeddings", "ref_labels"):
    hp.pop(name, None)
  hp.update(overrides)
  return LossSpec(kind, fn, hp)


LOSSES: dict[str, LossSpec] = {
    "circle_pair": _spec("pair", L.pairwise_circle_loss),
    "circle_class": _spec("class", L.class_circle_loss),
    "triplet": _spec("pair", L.batch_hard_triplet_loss),
    "batch_all_triplet": _spec("pair", L.batch_all_triplet_loss),
    "contrastive": _spec("pair", L.contrastive_loss),
    "npair": _spec("pair", L.npair_loss),
    "lifted_structure": _spec("pair", L.lifted_structure_loss),
    "multi_similarity": _spec("pair", L.multi_similarity_loss),
    "softmax": _spec("class", L.softmax_loss),
    "normface": _spec("class", L.normface_loss),
    "sphereface": _spec("class", L.sphereface_loss),
    "am_softmax": _spec("class", L.am_softmax_loss),
    "cosface": _spec("class", L.cosface_loss),
    "arcface": _spec("class", L.arcface_loss),
}


def get_loss_spec(name: str) -> LossSpec:
  """The :class:`LossSpec` registered as ``name``.

  Raises:
    ValueError: unknown name (the message lists the known ones).

  Example:
    >>> spec = get_loss_spec("circle_pair")
    >>> spec.kind, spec.hparams["gamma"], spec.hparams["margin"]
    ('pair', 80.0, 0.4)
  """
  if not isinstance(name, str) or name not in LOSSES:
    raise ValueError(f"unknown loss name {name!r}; known: {', '.join(sorted(LOSSES))}")
  return LOSSES[name]


def make_loss(name: str, hparams: Mapping[str, Any] | None = None):
  r"""A scalar training loss from a registered per-example loss.

  Pair-wise losses are averaged over the anchors that have a positive and a
  negative in the batch (:func:`circle_jax.losses.valid_anchor_mask`): the
  others are exactly 0 and would only dilute the mean. Class-level losses are
  averaged over the batch:

  .. math::  \mathcal L = \frac{\sum_b \ell_b}{\max(1, |\{b: \text{valid}\}|)}
             \quad\text{or}\quad \frac1B\sum_b \ell_b

  Args:
    name: a key of :data:`LOSSES`.
    hparams: keyword arguments for the loss; unknown keys are an error.

  Returns:
    ``(spec, loss_fn)`` with ``loss_fn(embeddings [B, D], labels [B],
    class_weights [C, D] or None) -> scalar``.

  Raises:
    ValueError: unknown loss name or hyper-parameter; a class-level loss
      called without class weights.

  Example:
    >>> spec, loss_fn = make_loss("circle_pair", {"gamma": 32.0})
    >>> x = jnp.eye(4, 3) + 0.1
    >>> float(loss_fn(x, jnp.array([0, 0, 1, 1]), None)) > 0
    True
  """
  spec, hp_loss = make_hparam_loss(name, hparams)

  def loss_fn(embeddings, labels, class_weights=None):
    return hp_loss(embeddings, labels, class_weights, {})

  return spec, loss_fn


def make_hparam_loss(name: str, hparams: Mapping[str, Any] | None = None):
  r"""Like :func:`make_loss`, with hyper-parameters also passed at call time.

  The call-time ``hparams`` override the fixed ones and may be traced arrays
  (under ``jit``/``vmap``), so one compiled loss serves many values of γ and
  m — what the hyper-parameter ablations of :mod:`circle_jax.training` vmap
  over. The reduction is that of :func:`make_loss`.

  Args:
    name: a key of :data:`LOSSES`.
    hparams: fixed keyword arguments (static ones such as ``chunk_size`` or
      ``grad_through_alpha`` belong here); unknown keys are an error.

  Returns:
    ``(spec, loss_fn)`` with ``loss_fn(embeddings [B, D], labels [B],
    class_weights [C, D] or None, hparams: dict) -> scalar``; unknown keys in
    the call-time ``hparams`` are an error too.

  Example:
    >>> _, loss_fn = make_hparam_loss("circle_pair")
    >>> x, y = jnp.eye(4, 3) + 0.1, jnp.array([0, 0, 1, 1])
    >>> f = jax.jit(lambda g: loss_fn(x, y, None, {"gamma": g, "margin": 0.25}))
    >>> bool(jnp.allclose(f(32.0), make_loss("circle_pair", {"gamma": 32.0, "margin": 0.25})[1](x, y)))
    True
  """
  spec = get_loss_spec(name)
  fixed = dict(hparams or {})
  _check_keys(name, spec, fixed)

  def loss_fn(embeddings, labels, class_weights=None, hparams=None):
    call = dict(hparams or {})
    _check_keys(name, spec, call)
    kwargs = {**spec.hparams, **fixed, **call}
    if spec.kind == "pair":
      per_anchor = spec.fn(embeddings, labels, **kwargs)
      valid = L.valid_anchor_mask(labels)
      return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(valid), 1)
    if class_weights is None:
      raise ValueError(f"class-level loss {name!r} needs class_weights (params['class_weights'])")
    return jnp.mean(spec.fn(embeddings, class_weights, labels, **kwargs))

  return spec, loss_fn


def _check_keys(name: str, spec: LossSpec, hparams: Mapping[str, Any]) -> None:
  unknown = sorted(set(hparams) - set(spec.hparams))
  if unknown:
    raise ValueError(f"loss {name!r} has no hyper-parameter(s) {unknown}; "
                     f"it takes {sorted(spec.hparams)}")
