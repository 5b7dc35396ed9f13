"""Flax linen backbones with embedding heads.

Every model maps images ``[B, H, W, C]`` to embeddings ``[B, D]`` and takes
``train: bool`` (batch statistics and dropout); BatchNorm statistics live in the
``batch_stats`` collection.
"""

from circle_jax.models._head import EmbeddingHead
from circle_jax.models._resnet import BasicBlock
from circle_jax.models._resnet import BottleneckBlock
from circle_jax.models._resnet import ResNet
from circle_jax.models._resnet import RESNET_STAGES
from circle_jax.models._resnet import resnet
from circle_jax.models._small_cnn import SmallCNN
from circle_jax.models._torchvision import torchvision_resnet_variables

__all__ = (
    "BasicBlock",
    "BottleneckBlock",
    "EmbeddingHead",
    "RESNET_STAGES",
    "ResNet",
    "SmallCNN",
    "resnet",
    "torchvision_resnet_variables",
)
