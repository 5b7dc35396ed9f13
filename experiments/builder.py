r"""``build(config) -> Setup``: every part of a run, made from the config in one place.

Training (``experiments/train.py``), ablations (``experiments/ablate.py``), the
figures and ``experiments/compare_losses.py`` all start here, so a config
means the same thing to each of them:

    config ─► mesh ─► loss (its spec picks the sampler) ─► model ─► schedule, optimiser
           ─► evaluators (config.evals) ─► dataset (config.data) ─► evaluators bound to its sets

A config is validated by building it: each builder's own complaint is raised
as a :class:`ConfigError` naming the field (``config.loss.gamma: gamma must be
> 0, got -1.0``), and everything that needs no data is built (and so checked)
before the dataset is opened. Field types are ml_collections' business: a
config file's fields lock their types, so ``--config.num_steps=ten`` is refused
when the flags are parsed.

Example:
  >>> from experiments.configs import default
  >>> setup = build(default.get_config(), data=False)
  >>> setup.spec.kind, setup.sampler, setup.batch_size, list(setup.evaluators)
  ('pair', 'pk', 128, ['one_shot', 'retrieval'])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from circle_jax import data as cdata
from circle_jax import training
from experiments import evaluators as evaluators_lib
from experiments import input_pipeline
from experiments.config_error import ConfigError

__all__ = ["ConfigError", "Setup", "build", "field", "loss_hparams", "model_kwargs"]

# Fields that count something: an int ≥ 1.
_COUNTS = ("num_steps", "log_every", "checkpoint_every", "max_checkpoints",
           "batch.classes_per_batch", "batch.images_per_class", "eval.batch_size",
           "eval.block_size")


@dataclasses.dataclass
class Setup:
  """What a run is made of.

  Attributes:
    config: the config it was built from.
    mesh: the ``('data', 'model')`` training mesh.
    spec: the :class:`circle_jax.training.LossSpec` of ``config.loss``.
    loss_fn: its scalar training loss on ``mesh`` (class-sharded where ``model`` > 1).
    sampler: ``"pk"`` or ``"shuffle"``: what ``spec`` trains on.
    model: the :class:`circle_jax.training.MetricModel` (with class proxies
      where a class-level loss of ``losses`` needs them).
    schedule, tx: the learning-rate schedule and the optax optimiser.
    batch_size: examples per global batch (P × K).
    evaluators: ``{name: Evaluator}`` from ``config.evals``, bound to the dataset.
    dataset: the :class:`experiments.input_pipeline.Pipeline` (None when built without data).
    init_rng, step_rng: the keys of ``config.seed`` (initialisation; dropout).
  """

  config: ml_collections.ConfigDict
  mesh: Mesh
  spec: training.LossSpec
  loss_fn: Any
  sampler: str
  model: training.MetricModel | None
  schedule: Any
  tx: Any
  batch_size: int
  evaluators: dict[str, evaluators_lib.Evaluator]
  dataset: input_pipeline.Pipeline | None
  init_rng: jax.Array
  step_rng: jax.Array

  @property
  def num_classes(self) -> int:
    """Rows of the class-proxy matrix (0: no proxies)."""
    return self.model.num_classes if self.model is not None else 0


def field(config, dotted: str):
  """``config.<dotted>``, or a :class:`ConfigError` saying that it is missing."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise ConfigError(f"config.{dotted}: missing field")
    node = node[part]
  return node


def loss_hparams(config) -> dict:
  """``config.loss`` without its name: the loss's keyword arguments."""
  return {k: v for k, v in field(config, "loss").items() if k != "name"}


def model_kwargs(config) -> dict:
  """``config.model`` as the backbone's attributes."""
  # "pretrained" is a weights file for the loader, not a module attribute.
  kwargs = {k: v for k, v in field(config, "model").items() if k not in ("name", "pretrained")}
  if "features" in kwargs:
    kwargs["features"] = tuple(kwargs["features"])
  return kwargs


def _int_at_least(config, dotted: str, low: int):
  value = field(config, dotted)
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ConfigError(f"config.{dotted}: must be an int ≥ {low}, got {value!r}")
  return value


def _mesh(config) -> Mesh:
  num_devices = _int_at_least(config, "num_devices", 0) or jax.device_count()
  if num_devices > jax.device_count():
    raise ConfigError(f"config.num_devices: {config.num_devices} but only {jax.device_count()} "
                      "devices are visible")
  if num_devices % jax.process_count():
    raise ConfigError(f"config.num_devices: {num_devices} devices do not split evenly over the "
                      f"{jax.process_count()} processes (every process holds an equal share of "
                      "the mesh); use a multiple of the process count, or 0 for all")
  m = field(config, "model_axis_size")
  if isinstance(m, bool) or not isinstance(m, int) or m < 1 or num_devices % m:
    raise ConfigError(f"config.model_axis_size: must be ≥ 1 and divide the {num_devices} "
                      f"device(s) (config.num_devices), got {m!r}")
  try:
    training.check_model_axis(field(config, "loss.name"), m)
  except ValueError as e:
    raise ConfigError(f"config.model_axis_size: {e}") from None
  return training.make_mesh(num_devices, model_axis_size=m)


def _probe_loss(config, loss_fn, kind: str) -> None:
  """Calls the loss once on a tiny batch, so that its own argument checks
  (γ > 0, a margin in range, …) reject a bad config.loss field now rather than
  at the first training step."""
  x = jnp.eye(4, 3) + 0.1
  weights = jnp.eye(2, 3) + 0.1 if kind == "class" else None
  try:
    loss_fn(x, jnp.array([0, 0, 1, 1]), weights)
  except (ValueError, TypeError) as e:
    message = str(e).splitlines()[0]
    name = message.split(" ", 1)[0]
    where = f"config.loss.{name}" if name in config.loss else "config.loss"
    raise ConfigError(f"{where}: {message}") from None


def _spec(config, losses: Sequence[str]):
  try:
    spec, loss_fn = training.make_loss(field(config, "loss.name"), loss_hparams(config))
    for name in losses:
      training.get_loss_spec(name)
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from None
  _probe_loss(config, loss_fn, spec.kind)
  return spec


def _optimizer(config):
  opt = field(config, "optimizer")
  for name in ("name", "learning_rate", "schedule", "warmup_steps", "momentum", "weight_decay"):
    field(config, f"optimizer.{name}")
  try:
    schedule = training.make_schedule(opt.schedule, base_lr=opt.learning_rate,
                                      num_steps=config.num_steps, warmup_steps=opt.warmup_steps)
  except ValueError as e:
    raise ConfigError(f"config.optimizer.schedule: {e}") from None
  try:
    tx = training.make_optimizer(opt.name, schedule, momentum=opt.momentum,
                                 weight_decay=opt.weight_decay)
  except ValueError as e:
    raise ConfigError(f"config.optimizer.name: {e}") from None
  return schedule, tx


def _check_images(config) -> None:
  size = config.data.get("image_size")
  if size is None:
    return
  if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
    raise ConfigError(f"config.data.image_size: expected (height, width) positive ints, got {size!r}")


def _open_dataset(config) -> input_pipeline.Pipeline:
  """Every dataset the run will use, train and evaluation, opened and checked."""
  try:
    return input_pipeline.make_pipeline(config)
  except (ConfigError, FileNotFoundError):  # DatasetNotFoundError too: says where and how
    raise
  except (ValueError, OSError) as e:
    raise cdata.DatasetError(str(e)) from e


def build(config: ml_collections.ConfigDict, *, losses: Sequence[str] = (),
          data: bool = True) -> Setup:
  """Builds (and so validates) every part of a run of ``config``.

  Args:
    config: a training config (``experiments/configs/``).
    losses: further loss names the model must serve (an ablation's members):
      class proxies are added when any of them, or ``config.loss``, is
      class-level.
    data: open the dataset and bind the evaluators to it; False builds and
      checks everything else (no file is read).

  Raises:
    ConfigError: the first bad field, named. FileNotFoundError
      (``DatasetNotFoundError``) or ``circle_jax.data.DatasetError``: missing or
      damaged data, with the file.
  """
  data_name = field(config, "data.name")
  try:
    input_pipeline.protocol_of(data_name)
  except ValueError as e:
    raise ConfigError(f"config.data.name: {e}") from None
  field(config, "data.path")
  for dotted in _COUNTS:
    _int_at_least(config, dotted, 1)
  _int_at_least(config, "seed", 0)
  if not isinstance(field(config, "distributed"), bool):
    raise ConfigError(f"config.distributed: expected bool, got {config.distributed!r}")
  if not isinstance(field(config, "compilation_cache_dir"), str):
    raise ConfigError(f"config.compilation_cache_dir: expected a directory path (str; \"\" = off), "
                      f"got {config.compilation_cache_dir!r}")
  _int_at_least(config, "data.num_workers", 0) if "num_workers" in config.data else None
  _int_at_least(config, "data.prefetch", 1) if "prefetch" in config.data else None
  _check_images(config)

  mesh = _mesh(config)
  spec = _spec(config, losses)
  kinds = {spec.kind} | {training.get_loss_spec(n).kind for n in losses}
  batch_size = config.batch.classes_per_batch * config.batch.images_per_class
  if batch_size % mesh.size:
    raise ConfigError(f"config.batch: {config.batch.classes_per_batch} × "
                      f"{config.batch.images_per_class} = {batch_size} examples per batch, not "
                      f"divisible by the {mesh.size} devices the batch is split over")
  try:
    backbone = training.make_backbone(field(config, "model.name"), model_kwargs(config))
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from None
  schedule, tx = _optimizer(config)
  evaluators = evaluators_lib.make_evaluators(field(config, "evals"),
                                              block_size=config.eval.block_size)

  dataset, model, loss_fn = None, None, None
  if data:
    dataset = _open_dataset(config)
    if "pair" in kinds and config.batch.classes_per_batch > dataset.num_train_classes:
      raise ConfigError(f"config.batch.classes_per_batch: {config.batch.classes_per_batch} "
                        f"classes per batch but only {dataset.num_train_classes} training classes")
    sets = dataset.eval_sets()
    for e in evaluators.values():
      e.bind(sets)
    # 'model' > 1 splits the class proxies (padded to a multiple of it) over devices.
    num_classes = dataset.num_train_classes if "class" in kinds else 0
    model = training.MetricModel(backbone, num_classes=num_classes,
                                 class_shards=config.model_axis_size)
    _, loss_fn = training.make_mesh_loss(config.loss.name, loss_hparams(config), mesh,
                                         num_classes=num_classes if spec.kind == "class" else None)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  return Setup(config=config, mesh=mesh, spec=spec, loss_fn=loss_fn, sampler=spec.sampler,
               model=model, schedule=schedule, tx=tx, batch_size=batch_size,
               evaluators=evaluators, dataset=dataset, init_rng=init_rng, step_rng=step_rng)
