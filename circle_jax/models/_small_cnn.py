"""A small CNN for 28×28 (or 8×8) grey-scale digits."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from circle_jax.models._head import EmbeddingHead


class SmallCNN(nn.Module):
  """Conv-BN-ReLU stages with 2×2 max-pooling, then flatten (or average-pool) and an embedding head.

  Attributes:
    features: channels per stage; each stage is ``convs_per_stage`` 3×3
      convolutions then a 2×2 max-pool (skipped once the map is 1 pixel wide).
    convs_per_stage: convolutions per stage.
    global_pool: average over space before the head; ``False`` flattens the
      last feature map instead, keeping where strokes are (what tells digits
      apart, including classes not seen in training).
    embedding_dim: D.
    dropout_rate: dropout in the head.
    dtype: computation dtype.

  Example:
    >>> import jax
    >>> model = SmallCNN(features=(4, 8), embedding_dim=6)
    >>> x = jnp.ones((2, 28, 28, 1))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> sorted(variables), model.apply(variables, x, train=False).shape
    (['batch_stats', 'params'], (2, 6))
  """

  features: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 2
  global_pool: bool = True
  embedding_dim: int = 64
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x [B, H, W, C] images. Returns: [B, embedding_dim] embeddings."""
    x = x.astype(self.dtype)
    for i, f in enumerate(self.features):
      for j in range(self.convs_per_stage):
        x = nn.Conv(f, (3, 3), use_bias=False, dtype=self.dtype, name=f"conv{i}_{j}")(x)
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"bn{i}_{j}")(x)
        x = nn.relu(x)
      if x.shape[1] > 1 and x.shape[2] > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2)) if self.global_pool else x.reshape(x.shape[0], -1)
    return EmbeddingHead(self.embedding_dim, self.dropout_rate, self.dtype, name="head")(
        x, train=train)
