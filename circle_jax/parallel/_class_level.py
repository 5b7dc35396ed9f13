"""Class-level Circle loss with the class weights sharded by class across devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from circle_jax.losses import _checks
from circle_jax.losses import _class_level
from circle_jax.losses import _numerics
from circle_jax.parallel import _collectives

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def class_circle_loss(
    embeddings: ArrayLike,
    class_weights: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name,
    margin: float = 0.25,
    gamma: float = 256.0,
    chunk_size: int | None = None,
    num_classes: int | None = None,
    grad_through_alpha: bool = False,
) -> Array:
  r"""Class-level Circle loss with class proxies sharded over ``axis_name``.

  Call inside ``jax.shard_map`` (or ``jax.pmap``) over ``axis_name`` with n
  devices. Device i holds a batch shard and the class rows
  [i·C_local, (i+1)·C_local) of the proxy matrix. The result on each device is
  the per-example loss of its batch shard, equal to
  ``circle_jax.class_circle_loss`` on the full batch and the full proxy matrix:

  .. math::

    L_b = \mathrm{softplus}\Big(\log \sum_{d=1}^{n} e^{\mathrm{LSE}_d(b)} - z_{b y_b}\Big),
    \quad \mathrm{LSE}_d(b) = \mathrm{LSE}_{j \in \mathrm{shard}_d,\ j \ne y_b}
    \gamma\alpha_n^j(s_{bj} - m)

  with the target logit z_by = −γα_p(s_by − 1 + m) taken from the device that
  holds class y_b. The embeddings and labels are all-gathered ([B, D] and [B]);
  the per-device log-sum-exps are merged with one ``pmax`` and one ``psum`` of
  [B] values; the class weights never leave their device and their gradient
  stays sharded. The backward pass reduce-scatters the [B, D] embedding
  gradient. No collective depends on the number of classes.

  Padding rule: when C is not a multiple of n, pad the proxy matrix at the end
  with any finite rows (zeros are fine) up to n·⌈C/n⌉ rows, shard that, and
  pass ``num_classes=C``. Rows with global index ≥ num_classes take no part in
  the loss and get exactly zero gradient.

  Args:
    embeddings: [B_local, D] float features of this device's batch shard.
    class_weights: [C_local, D] float proxies of this device's classes
      (normalised inside, never copied).
    labels: [B_local] integer *global* class ids in [0, num_classes).
    axis_name: the mesh / pmap axis the classes and the batch are sharded over.
    margin: m; gamma: γ > 0 (as in ``circle_jax.class_circle_loss``).
    chunk_size: None for one [B, C_local] block per device; an int streams the
      local classes in blocks (memory O(B·chunk_size) per device).
    num_classes: the real number of classes C ≤ n·C_local (default n·C_local).
    grad_through_alpha: as in ``circle_jax.class_circle_loss``.

  Returns:
    [B_local] per-example losses of this device's batch shard (NaN for a label
    outside [0, num_classes) that could not be checked at trace time).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import PartitionSpec as P
    >>> import circle_jax as cj
    >>> from circle_jax import parallel
    >>> n = jax.device_count()
    >>> mesh = jax.make_mesh((n,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> kx, kw = jax.random.split(jax.random.key(0))
    >>> x, w = jax.random.normal(kx, (4 * n, 16)), jax.random.normal(kw, (3 * n, 16))
    >>> y = jnp.arange(4 * n) % (3 * n - 1)
    >>> loss = jax.jit(jax.shard_map(
    ...     lambda a, p, l: parallel.class_circle_loss(a, p, l, axis_name="d"),
    ...     mesh=mesh, in_specs=(P("d"), P("d"), P("d")), out_specs=P("d")))(x, w, y)
    >>> bool(jnp.allclose(loss, cj.class_circle_loss(x, w, y), rtol=1e-5))
    True

  References:
    Sun et al., CVPR 2020, Eq. 6 with class-level labels; the sharded softmax
    follows insightface's model-parallel classifier (local max → all-reduce
    max → local Σexp → all-reduce sum).
  """
  x = _checks.embedding_matrix("embeddings", embeddings)
  w = _checks.embedding_matrix("class_weights", class_weights, dim=x.shape[1])
  n = _collectives.axis_size(axis_name)
  total = n * w.shape[0]
  if num_classes is None:
    num_classes = total
  elif isinstance(num_classes, bool) or not isinstance(num_classes, int):
    raise TypeError(f"num_classes must be None or a Python int, got {num_classes!r}")
  elif not 1 <= num_classes <= total:
    raise ValueError(
        f"num_classes must be in [1, {total}] for class_weights shards of shape "
        f"{w.shape} on {n} devices, got {num_classes}"
    )
  labels = _checks.integer_labels("labels", labels, x.shape[0], num_classes=num_classes)
  _checks.hyperparameter("margin", margin)
  _checks.hyperparameter("gamma", gamma, positive=True)
  chunk_size = _checks.chunk_size_arg(chunk_size)
  grad_through_alpha = _checks.flag("grad_through_alpha", grad_through_alpha)

  dtype = _numerics.compute_dtype(x.dtype, w.dtype)
  margin, gamma = _numerics.as_dtype(dtype, margin, gamma)
  index = lax.axis_index(axis_name)
  all_x = lax.all_gather(x, axis_name, tiled=True)
  all_labels = lax.all_gather(labels, axis_name, tiled=True)
  target, other = _class_level.circle_class_logits(grad_through_alpha)
  other_state, target_state = _class_level.streamed_class_lses(
      all_x, _numerics.inverse_l2_norm(all_x), w, all_labels, (margin, gamma),
      target_logit=target, other_logit=other, chunk_size=chunk_size,
      col_base=index * w.shape[0], num_classes=num_classes, finalize=False,
  )
  lse_other, nonempty = _collectives.distributed_lse(other_state, axis_name)
  # Exactly one device holds each in-range target, and its one-entry
  # log-sum-exp is the logit itself: a sum of one term is exact.
  z_target, found = _numerics.lse_finalize(target_state)
  z_target = lax.psum(jnp.where(found, z_target, 0.0), axis_name)
  in_range = (all_labels >= 0) & (all_labels < num_classes)
  loss = _class_level.cross_entropy_from_lses(lse_other, nonempty, z_target, in_range)
  return lax.dynamic_slice_in_dim(loss, index * x.shape[0], x.shape[0])
