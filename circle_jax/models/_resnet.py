"""ResNet family (He et al.) with the face-recognition variants and an embedding head."""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from circle_jax.models._head import EmbeddingHead

# name → (block, stage depths). The "face" depths are those of the ResNets
# used for face recognition (ArcFace's IR-50/100), built from basic blocks.
# Explicit symmetric padding, as in torchvision: "SAME" would pad a stride-2
# layer on the bottom/right only, which shifts every feature map by a pixel and
# makes imported torchvision weights compute something else.
_PAD1 = ((1, 1), (1, 1))
_PAD3 = ((3, 3), (3, 3))

RESNET_STAGES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
    "face_resnet50": ("basic", (3, 4, 14, 3)),
    "face_resnet100": ("basic", (3, 13, 30, 3)),
}


class BasicBlock(nn.Module):
  """Two 3×3 convolutions with a residual connection.

  Example:
    >>> import jax
    >>> block = BasicBlock(features=8, strides=2)
    >>> v = block.init(jax.random.key(0), jnp.ones((1, 8, 8, 4)), train=False)
    >>> block.apply(v, jnp.ones((1, 8, 8, 4)), train=False).shape
    (1, 4, 4, 8)
  """

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, dtype=self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    y = conv(self.features, (3, 3), strides=self.strides, padding=_PAD1, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), padding=_PAD1, name="conv2")(y)
    # Zero-initialised last BN scale: each block starts as the identity.
    y = norm(scale_init=nn.initializers.zeros, name="bn2")(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = norm(name="proj_bn")(conv(self.features, (1, 1), strides=self.strides, name="proj")(x))
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  """1×1 → 3×3 → 1×1 (×4 channels) with a residual connection.

  Example:
    >>> import jax
    >>> block = BottleneckBlock(features=4)
    >>> v = block.init(jax.random.key(0), jnp.ones((1, 8, 8, 4)), train=False)
    >>> block.apply(v, jnp.ones((1, 8, 8, 4)), train=False).shape
    (1, 8, 8, 16)
  """

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, dtype=self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    y = nn.relu(norm(name="bn1")(conv(self.features, (1, 1), name="conv1")(x)))
    y = nn.relu(norm(name="bn2")(conv(self.features, (3, 3), strides=self.strides, padding=_PAD1,
                                      name="conv2")(y)))
    y = norm(scale_init=nn.initializers.zeros, name="bn3")(conv(self.features * 4, (1, 1), name="conv3")(y))
    if x.shape[-1] != self.features * 4 or self.strides != 1:
      x = norm(name="proj_bn")(conv(self.features * 4, (1, 1), strides=self.strides, name="proj")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet backbone + :class:`EmbeddingHead`.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: ``"basic"`` or ``"bottleneck"``.
    width: channels of the first stage (doubled at every later stage).
    embedding_dim: D (512 in the paper).
    dropout_rate: dropout in the head.
    small_input: a 3×3 stride-1 stem without max-pool, for inputs such as
      112×112 faces or 32×32 images; ``False`` is the ImageNet 7×7/2 stem + pool.
    head: ``False`` returns the pooled backbone features (no embedding head),
      e.g. to compare with a torchvision ResNet before its ``fc``.
    dtype: computation dtype.

  Example:
    >>> import jax
    >>> model = ResNet(stage_sizes=(1, 1), width=4, embedding_dim=8, small_input=True)
    >>> x = jnp.ones((2, 16, 16, 3))
    >>> v = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(v, x, train=False).shape
    (2, 8)
  """

  stage_sizes: Sequence[int]
  block: str = "basic"
  width: int = 64
  embedding_dim: int = 512
  dropout_rate: float = 0.0
  small_input: bool = False
  head: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Args: x [B, H, W, C] images. Returns: [B, embedding_dim] embeddings."""
    blocks = {"basic": BasicBlock, "bottleneck": BottleneckBlock}
    if self.block not in blocks:
      raise ValueError(f"ResNet: block must be one of {sorted(blocks)}, got {self.block!r}")
    x = x.astype(self.dtype)
    if self.small_input:
      x = nn.Conv(self.width, (3, 3), padding=_PAD1, use_bias=False, dtype=self.dtype,
                  name="stem")(x)
    else:
      x = nn.Conv(self.width, (7, 7), strides=2, padding=_PAD3, use_bias=False, dtype=self.dtype,
                  name="stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="stem_bn")(x))
    if not self.small_input:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = blocks[self.block](self.width * 2**i, strides, self.dtype, name=f"stage{i}_block{j}")(
            x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if not self.head:
      return x.astype(jnp.float32)
    return EmbeddingHead(self.embedding_dim, self.dropout_rate, self.dtype, name="head")(
        x, train=train)


def resnet(name: str, **kwargs) -> ResNet:
  """A named ResNet from :data:`RESNET_STAGES` (e.g. ``"resnet50"``, ``"face_resnet100"``).

  Args:
    name: a key of :data:`RESNET_STAGES`.
    **kwargs: other :class:`ResNet` attributes (``embedding_dim``, ``width`` …).

  Returns:
    The :class:`ResNet` module.

  Example:
    >>> resnet("resnet50", embedding_dim=128).stage_sizes
    (3, 4, 6, 3)
  """
  if name not in RESNET_STAGES:
    raise ValueError(f"resnet: unknown name {name!r}; known: {sorted(RESNET_STAGES)}")
  block, stages = RESNET_STAGES[name]
  return ResNet(stage_sizes=stages, block=block, **kwargs)
