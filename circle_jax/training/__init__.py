"""Training: losses by name, vmapped hyper-parameter ablations, TrainState with batch_stats, optimisers, sharded steps, checkpoints, metrics logs (JSON lines and TensorBoard).

Sharded steps: the batch over every device of a ``('data', 'model')`` mesh, and
for ``circle_class`` the class proxies split along ``'model'`` (:func:`make_mesh_loss`).
"""

from circle_jax.training._ablation import Ablation
from circle_jax.training._ablation import MEMBER_STRATEGIES
from circle_jax.training._ablation import Member
from circle_jax.training._ablation import ablation_embed_step
from circle_jax.training._ablation import ablation_loss
from circle_jax.training._ablation import ablation_mesh
from circle_jax.training._ablation import ablation_train_step
from circle_jax.training._ablation import create_stacked_states
from circle_jax.training._ablation import jit_ablation_step
from circle_jax.training._ablation import make_ablation
from circle_jax.training._ablation import member_sharding
from circle_jax.training._ablation import resolve_member_strategy
from circle_jax.training._ablation import stack_states
from circle_jax.training._ablation import unstack_state
from circle_jax.training._checkpoint import CheckpointRestoreError
from circle_jax.training._checkpoint import Checkpointer
from circle_jax.training._loss_registry import LOSSES
from circle_jax.training._loss_registry import LossSpec
from circle_jax.training._loss_registry import get_loss_spec
from circle_jax.training._loss_registry import make_hparam_loss
from circle_jax.training._loss_registry import make_loss
from circle_jax.training._metrics_log import JsonlWriter
from circle_jax.training._metrics_log import MetricsLog
from circle_jax.training._metrics_log import WorkdirInUseError
from circle_jax.training._metrics_log import WorkdirLock
from circle_jax.training._metrics_log import read_jsonl
from circle_jax.training._model import MetricModel
from circle_jax.training._model import make_backbone
from circle_jax.training._optim import decay_mask
from circle_jax.training._optim import make_optimizer
from circle_jax.training._optim import make_schedule
from circle_jax.training._sharded_loss import SHARDED_CLASS_LOSSES
from circle_jax.training._sharded_loss import check_model_axis
from circle_jax.training._sharded_loss import make_mesh_loss
from circle_jax.training._prefetch import MeshPrefetcher
from circle_jax.training._sharding import batch_sharding
from circle_jax.training._sharding import class_sharding
from circle_jax.training._sharding import jit_embed_step
from circle_jax.training._sharding import jit_train_step
from circle_jax.training._sharding import make_global_batch
from circle_jax.training._sharding import make_mesh
from circle_jax.training._sharding import model_axis_size
from circle_jax.training._sharding import padded_num_classes
from circle_jax.training._sharding import process_rows
from circle_jax.training._sharding import replicated
from circle_jax.training._sharding import shard_batch
from circle_jax.training._sharding import state_shardings
from circle_jax.training._state import TrainState
from circle_jax.training._state import create_train_state
from circle_jax.training._steps import embed_step
from circle_jax.training._steps import train_step
from circle_jax.training._tensorboard import TensorBoardWriter

__all__ = (
    "Ablation",
    "CheckpointRestoreError",
    "Checkpointer",
    "JsonlWriter",
    "WorkdirInUseError",
    "WorkdirLock",
    "LOSSES",
    "LossSpec",
    "Member",
    "MEMBER_STRATEGIES",
    "MeshPrefetcher",
    "MetricModel",
    "MetricsLog",
    "SHARDED_CLASS_LOSSES",
    "TensorBoardWriter",
    "TrainState",
    "ablation_embed_step",
    "ablation_loss",
    "ablation_mesh",
    "ablation_train_step",
    "batch_sharding",
    "check_model_axis",
    "class_sharding",
    "create_stacked_states",
    "create_train_state",
    "decay_mask",
    "embed_step",
    "get_loss_spec",
    "jit_embed_step",
    "jit_ablation_step",
    "jit_train_step",
    "make_ablation",
    "make_backbone",
    "make_global_batch",
    "make_hparam_loss",
    "make_loss",
    "make_mesh",
    "make_mesh_loss",
    "make_optimizer",
    "make_schedule",
    "model_axis_size",
    "padded_num_classes",
    "member_sharding",
    "process_rows",
    "read_jsonl",
    "replicated",
    "resolve_member_strategy",
    "shard_batch",
    "stack_states",
    "state_shardings",
    "train_step",
    "unstack_state",
)
