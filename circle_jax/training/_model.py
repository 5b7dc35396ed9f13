"""The trained model: a backbone, plus the class proxies for class-level losses."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from circle_jax import models


class MetricModel(nn.Module):
  """Backbone embeddings, with a ``[C, D]`` ``class_weights`` param when ``num_classes > 0``.

  The class proxies live in the params (so the optimiser, weight decay,
  checkpoints and sharding treat them like any weight) but are not used in the
  forward pass: class-level losses read ``params["class_weights"]``.

  Attributes:
    backbone: a module mapping ``[B, H, W, C]`` to ``[B, D]``.
    num_classes: C; 0 for pair-wise losses (no proxies).

  Example:
    >>> import jax
    >>> m = MetricModel(models.SmallCNN(features=(4,), embedding_dim=6), num_classes=3)
    >>> v = m.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)
    >>> v["params"]["class_weights"].shape
    (3, 6)
  """

  backbone: nn.Module
  num_classes: int = 0

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x [B, H, W, C]. Returns: embeddings [B, D]."""
    emb = self.backbone(x, train=train)
    if self.num_classes:
      self.param("class_weights", nn.initializers.normal(1.0), (self.num_classes, emb.shape[-1]))
    return emb


def make_backbone(name: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
  """``"small_cnn"`` or a ResNet name of :data:`circle_jax.models.RESNET_STAGES`.

  Example:
    >>> make_backbone("resnet18", {"embedding_dim": 128}).stage_sizes
    (2, 2, 2, 2)
  """
  kwargs = dict(kwargs or {})
  if name == "small_cnn":
    return models.SmallCNN(**kwargs)
  if name in models.RESNET_STAGES:
    return models.resnet(name, **kwargs)
  raise ValueError(f"unknown model name {name!r}; known: "
                   f"{', '.join(['small_cnn', *sorted(models.RESNET_STAGES)])}")
