"""The trained model: a backbone, plus the class proxies for class-level losses."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from circle_jax import models


class MetricModel(nn.Module):
  """Backbone embeddings, with a ``[C_pad, D]`` ``class_weights`` param when ``num_classes > 0``.

  The class proxies live in the params (so the optimiser, weight decay,
  checkpoints and sharding treat them like any weight) but are not used in the
  forward pass: class-level losses read ``params["class_weights"]``.

  For proxies split by class over ``class_shards`` devices (the ``'model'``
  mesh axis), C is padded to C_pad = class_shards·⌈C/class_shards⌉ rows. The
  first C rows are initialised exactly as with ``class_shards=1`` (same key,
  same values), the padding rows to zero: a sharded run starts from the same
  proxies as a replicated one, and, since the sharded loss gives padding rows
  zero gradient and the decay of a zero row is zero, they stay zero.

  The embeddings come out in float32 whatever the backbone's computation dtype,
  so that the loss, its normalisation, the class proxies and the log-sum-exp
  accumulate in float32 under bfloat16 mixed precision.

  Attributes:
    backbone: a module mapping ``[B, H, W, C]`` to ``[B, D]``.
    num_classes: C; 0 for pair-wise losses (no proxies).
    class_shards: pad C to a multiple of this (the ``'model'`` axis size).

  Example:
    >>> import jax
    >>> m = MetricModel(models.SmallCNN(features=(4,), embedding_dim=6), num_classes=3)
    >>> v = m.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)
    >>> v["params"]["class_weights"].shape
    (3, 6)
    >>> m2 = MetricModel(m.backbone, num_classes=3, class_shards=2)
    >>> w = m2.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)
    >>> w = w["params"]["class_weights"]
    >>> w.shape, bool((w[:3] == v["params"]["class_weights"]).all()), bool((w[3:] == 0).all())
    ((4, 6), True, True)
  """

  backbone: nn.Module
  num_classes: int = 0
  class_shards: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x [B, H, W, C]. Returns: embeddings [B, D]."""
    emb = self.backbone(x, train=train).astype(jnp.float32)
    if self.num_classes:
      if isinstance(self.class_shards, bool) or not isinstance(self.class_shards, int) or (
          self.class_shards < 1):
        raise ValueError(f"MetricModel: class_shards must be a positive int, "
                         f"got {self.class_shards!r}")
      real = (self.num_classes, emb.shape[-1])
      rows = -(-self.num_classes // self.class_shards) * self.class_shards

      def init(key, shape):
        # Draw the real rows alone so that they do not depend on the padding.
        w = nn.initializers.normal(1.0)(key, real)
        return jnp.pad(w, ((0, shape[0] - real[0]), (0, 0)))

      self.param("class_weights", init, (rows, emb.shape[-1]))
    return emb


# Computation dtypes a backbone may use. float16 is left out on purpose: it
# needs loss scaling (its range ends at 65504), which nothing here does.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _compute_dtype(dtype) -> Any:
  """``"bfloat16"`` / ``jnp.bfloat16`` / ``np.dtype("bfloat16")`` → ``jnp.bfloat16``."""
  if isinstance(dtype, str):
    name = dtype  # the canonical names only, not aliases such as "f4" or "float"
  else:
    try:
      name = np.dtype(dtype).name
    except TypeError:
      name = None
  if name not in DTYPES:
    raise ValueError(f"dtype: expected one of {', '.join(map(repr, DTYPES))} (the computation "
                     f"dtype; parameters stay float32), got {dtype!r}")
  return DTYPES[name]


def make_backbone(name: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
  """``"small_cnn"`` or a ResNet name of :data:`circle_jax.models.RESNET_STAGES`.

  ``kwargs`` are the module's attributes. Its ``dtype``, the computation dtype
  (activations and matmuls), may be given by name, ``"float32"`` or
  ``"bfloat16"``, or as the dtype itself; parameters, BatchNorm statistics and
  the embeddings stay float32 either way.

  Example:
    >>> make_backbone("resnet18", {"embedding_dim": 128}).stage_sizes
    (2, 2, 2, 2)
    >>> make_backbone("small_cnn", {"dtype": "bfloat16"}).dtype
    <class 'jax.numpy.bfloat16'>
  """
  kwargs = dict(kwargs or {})
  if "dtype" in kwargs:
    kwargs["dtype"] = _compute_dtype(kwargs["dtype"])
  if name == "small_cnn":
    return models.SmallCNN(**kwargs)
  if name in models.RESNET_STAGES:
    return models.resnet(name, **kwargs)
  raise ValueError(f"unknown model name {name!r}; known: "
                   f"{', '.join(['small_cnn', *sorted(models.RESNET_STAGES)])}")
