"""The embedding head shared by the backbones."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class EmbeddingHead(nn.Module):
  """BN → dropout → dense → BN: pooled features to a ``embedding_dim`` embedding.

  The face-recognition head (ArcFace's "BN-Dropout-FC-BN"). The last BN has no
  learnt scale, so the embedding's direction, which every cosine loss reads, is
  not rescaled per dimension by a free parameter.

  Attributes:
    embedding_dim: D, the output size (512 in the paper).
    dropout_rate: dropout on the pooled features during training.
    dtype: computation dtype.

  Example:
    >>> import jax
    >>> head = EmbeddingHead(embedding_dim=8)
    >>> v = head.init(jax.random.key(0), jnp.ones((2, 16)), train=False)
    >>> head.apply(v, jnp.ones((2, 16)), train=False).shape
    (2, 8)
  """

  embedding_dim: int = 512
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x [B, F] features. Returns: [B, embedding_dim] float32 embeddings."""
    x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn_in")(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, name="fc")(x)
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, dtype=self.dtype,
                     name="bn_out")(x)
    return x.astype(jnp.float32)
