"""Optimisers and learning-rate schedules."""

from __future__ import annotations

from typing import Sequence

import jax
import optax


def make_schedule(name: str, *, base_lr: float, num_steps: int, warmup_steps: int = 0,
                  boundaries: Sequence[float] = (0.5, 0.7, 0.9), decay: float = 0.1):
  r"""A learning-rate schedule, with an optional linear warm-up.

  ``"step"`` is the paper's face-recognition schedule: the rate is divided by
  10 at 50 %, 70 % and 90 % of training,

  .. math::  \eta_t = \eta_0 \cdot 0.1^{\,|\{b:\ t \ge b\,T\}|}

  ``"cosine"`` decays to 0 over the run, ``"constant"`` keeps ``base_lr``.

  Args:
    name: ``"step"``, ``"cosine"`` or ``"constant"``.
    base_lr: η₀.
    num_steps: T, the length of the run.
    warmup_steps: linear ramp from 0 to η₀ first.
    boundaries: fractions of T where ``"step"`` multiplies by ``decay``.
    decay: the factor at each boundary.

  Returns:
    An ``optax.Schedule``.

  Example:
    >>> s = make_schedule("step", base_lr=0.1, num_steps=100)
    >>> [round(float(s(t)), 6) for t in (0, 49, 50, 70, 95)]
    [0.1, 0.1, 0.01, 0.001, 0.0001]
  """
  if name == "step":
    main = optax.piecewise_constant_schedule(
        base_lr, {int(round(b * num_steps)) - warmup_steps: decay for b in boundaries})
  elif name == "cosine":
    main = optax.cosine_decay_schedule(base_lr, max(1, num_steps - warmup_steps))
  elif name == "constant":
    main = optax.constant_schedule(base_lr)
  else:
    raise ValueError(f"unknown schedule {name!r}; known: 'step', 'cosine', 'constant'")
  if warmup_steps <= 0:
    return main
  warm = optax.linear_schedule(0.0, base_lr, warmup_steps)
  return optax.join_schedules([warm, main], [warmup_steps])


def decay_mask(params):
  """True for the weights to decay: kernels and proxies (ndim ≥ 2), not biases or BN.

  Example:
    >>> import jax.numpy as jnp
    >>> decay_mask({"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)})
    {'bias': False, 'kernel': True}
  """
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(name: str, schedule, *, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
  """SGD with momentum (the paper's) or AdamW, with weight decay on :func:`decay_mask` only.

  For SGD the decay is added to the gradient before momentum (L2, as in the
  paper's frameworks); AdamW decouples it.

  Args:
    name: ``"sgd"`` or ``"adamw"``.
    schedule: a float or ``optax.Schedule``.
    momentum: SGD momentum.
    nesterov: Nesterov momentum for SGD.
    weight_decay: decay coefficient (0 disables it).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = make_optimizer("sgd", 0.1, weight_decay=5e-4)
    >>> state = tx.init({"w": jnp.ones((2, 2))})
  """
  if name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov),
    )
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
  raise ValueError(f"unknown optimizer {name!r}; known: 'sgd', 'adamw'")
