"""Pair-wise Circle loss with the global batch as the reference set (cross-device negatives)."""

from __future__ import annotations

import jax

from circle_jax.losses import _checks
from circle_jax.losses import _numerics
from circle_jax.parallel import _collectives
from circle_jax.parallel import _self_pairs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def pairwise_circle_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name,
    margin: float = 0.4,
    gamma: float = 80.0,
    chunk_size: int | None = None,
    ring: bool = False,
    grad_through_alpha: bool = False,
) -> Array:
  r"""Pair-wise Circle loss of local anchors against the global batch.

  Call inside ``jax.shard_map`` (or ``jax.pmap``) over ``axis_name``. Each
  device's anchors are compared with every embedding of every device (all
  positives and negatives of the global batch, self-pairs excluded), so the
  per-anchor losses equal ``circle_jax.pairwise_circle_loss`` on the
  concatenated batch:

  .. math::

    L_a = \mathrm{softplus}\big(\mathrm{LSE}_{n}\,\gamma[s_{an} + m]_+(s_{an} - m)
          + \mathrm{LSE}_{p}\,{-\gamma}[1 + m - s_{ap}]_+(s_{ap} - 1 + m)\big),

  with n, p ranging over the global batch. Gradients flow to both roles of each
  embedding (anchor and reference), across devices. The global similarity
  matrix is symmetric, so each device computes the gradient of its own
  embeddings in both roles itself, with one GEMM, from the other anchors'
  log-sum-exp statistics ([B_local] vectors that travel with the embeddings);
  no reference gradient is sent back to its owner. Reverse-mode only.

  Two communication patterns, same values and gradients:

  * ``ring=False``: all-gather the normalised embeddings and labels
    ([B_global, D]), in the forward pass and again in the backward pass (with
    the statistics); per-device memory O(B_local·B_global) for the similarity
    block (O(B_local·chunk_size) with ``chunk_size``).
  * ``ring=True``: pass [B_local, D] blocks around the ring with ``ppermute``
    (n − 1 hops in each pass, the statistics travelling with the blocks in the
    backward one); per-device memory O(B_local²) (O(B_local·chunk_size) with
    chunk_size) and no [B_global, D] copy.

  Args:
    embeddings: [B_local, D] float embeddings of this device's batch shard.
    labels: [B_local] integer labels (any values; only equality matters).
    axis_name: the mesh / pmap axis the batch is sharded over.
    margin: m; gamma: γ > 0 (as in ``circle_jax.pairwise_circle_loss``).
    chunk_size: None or the number of reference columns per streamed block.
    ring: use the ppermute ring instead of an all-gather.
    grad_through_alpha: as in ``circle_jax.pairwise_circle_loss``.

  Returns:
    [B_local] per-anchor losses; anchors without a positive or a negative in the
    global batch get exactly 0.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import PartitionSpec as P
    >>> import circle_jax as cj
    >>> from circle_jax import parallel
    >>> n = jax.device_count()
    >>> mesh = jax.make_mesh((n,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> x = jax.random.normal(jax.random.key(0), (4 * n, 8))
    >>> y = jnp.arange(4 * n) % 3
    >>> loss = jax.jit(jax.shard_map(
    ...     lambda a, l: parallel.pairwise_circle_loss(a, l, axis_name="d", ring=True),
    ...     mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d")))(x, y)
    >>> bool(jnp.allclose(loss, cj.pairwise_circle_loss(x, y), rtol=1e-5))
    True

  References:
    Sun et al., CVPR 2020, Eq. 6 with pair-wise labels; cross-device negatives
    as in fast-reid's multi-GPU label gather.
  """
  x = _checks.embedding_matrix("embeddings", embeddings)
  labels = _checks.integer_labels("labels", labels, x.shape[0])
  _collectives.axis_size(axis_name)
  _checks.hyperparameter("margin", margin)
  _checks.hyperparameter("gamma", gamma, positive=True)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  ring = _checks.flag("ring", ring)
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)

  dtype = _numerics.compute_dtype(x.dtype)
  margin, gamma = _numerics.as_dtype(dtype, margin, gamma)
  return _self_pairs.global_self_loss(
      x, labels, margin, gamma, grad_through_alpha=grad_through_alpha,
      chunk_size=chunk_size, axis_name=axis_name, ring=ring)
