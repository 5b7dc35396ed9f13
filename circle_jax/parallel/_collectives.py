"""Collectives shared by the cross-device losses: axis checks, the distributed
log-sum-exp, and the ring order of the blocks passed with `ppermute`.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _numerics

Array = jax.Array


def axis_size(axis_name) -> int:
  """The number of devices along `axis_name`; a clear error outside shard_map/pmap."""
  if axis_name is None:
    raise ValueError(
        "axis_name must name the mapped mesh axis (as given to jax.shard_map or "
        "jax.pmap), got None; for one device use circle_jax.losses instead"
    )
  try:
    return lax.axis_size(axis_name)
  except NameError as e:
    raise ValueError(
        f"axis_name {axis_name!r} is not a mapped axis here: call this loss inside "
        f"jax.shard_map (or jax.pmap) over that axis ({e})"
    ) from e


def distributed_lse(state: _numerics.LSEState, axis_name) -> tuple[Array, Array]:
  """Merges per-device running log-sum-exps (max_d, sum_d) of the same rows.

  .. math::  \\mathrm{LSE} = M + \\log \\sum_{d} \\mathrm{sum}_d\\, e^{\\max_d - M},\\quad
             M = \\max_d\\, \\max_d \\ (\\text{over devices})

  Only [rows] values cross devices (one pmax, one psum). The maxima are
  constants for the gradient (the result does not depend on them), which is
  also why a `pmax` can be used: it has no differentiation rule. Merging the
  (max, sum) pairs rather than per-device LSE values keeps the gradient's
  softmax weights as accurate as the single-device ones.

  Returns:
    (lse, nonempty), as `lse_finalize`.
  """
  local_max = lax.stop_gradient(state.max)
  top = lax.pmax(local_max, axis_name)
  shift = jnp.where(jnp.isfinite(top), top, 0.0)
  # exp(−inf − shift) = 0 for devices with nothing valid in a row.
  total = lax.psum(state.sum * jnp.exp(local_max - shift), axis_name)
  return _numerics.lse_finalize(_numerics.LSEState(max=top, sum=total))


def ring_perm(n: int) -> list[tuple[int, int]]:
  """The ``ppermute`` pairs that pass every device's block to the next one."""
  return [(i, (i + 1) % n) for i in range(n)]
