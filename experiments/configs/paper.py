"""Builders shared by the paper-setting configs (face, re-ID, fine-grained retrieval).

Each paper config calls one of ``face``, ``reid`` or ``fine_grained`` with its
loss and the ``--config=<file>:<arg>`` string. ``arg`` is a comma-separated list
of options: a variant (``r34`` / ``r100``; ``market1501`` / ``msmt17``;
``cub200`` / ``cars196`` / ``sop``) and ``local``, the runlocal variant: the
same pipeline, protocol and loss on a small CNN, small images and a few
steps, which runs on a CPU in under a minute (given data at ``data.path``).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import class_disjoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Faces: (x − 127.5) / 127.5, the insightface convention.
FACE_MEAN = (0.5, 0.5, 0.5)
FACE_STD = (0.5, 0.5, 0.5)


def parse_arg(arg: str | None, variants: tuple[str, ...], default_variant: str):
  """``"cub200,local"`` → ("cub200", True); unknown options are an error."""
  options = [a.strip() for a in (arg or "").split(",") if a.strip()]
  local = "local" in options
  rest = [a for a in options if a != "local"]
  unknown = [a for a in rest if a not in variants]
  if unknown or len(rest) > 1:
    raise ValueError(f"config arg {arg!r}: expected one of {variants} and/or 'local'")
  return (rest[0] if rest else default_variant), local


def _loss(name: str, **hparams) -> ml_collections.ConfigDict:
  loss = ml_collections.ConfigDict()
  loss.name = name
  for k, v in hparams.items():
    loss[k] = v
  return loss


def _model(name: str, *, small_input: bool) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = name
  model.embedding_dim = 512
  model.small_input = small_input
  model.dropout_rate = 0.0
  model.pretrained = ""
  # bf16 activations and matmuls, float32 parameters, optimiser state,
  # BatchNorm statistics and loss: how these models train on TPUs and recent GPUs.
  model.dtype = "bfloat16"
  return model


def _local_model(config, embedding_dim: int = 32) -> None:
  # A two-stage CNN: it compiles in seconds, so the runlocal check is about
  # the data, the loss and the protocol, not about waiting for XLA.
  config.model = ml_collections.ConfigDict()
  config.model.name = "small_cnn"
  config.model.features = (8, 16)
  config.model.convs_per_stage = 1
  config.model.global_pool = True
  config.model.embedding_dim = embedding_dim
  config.model.dropout_rate = 0.0
  config.model.pretrained = ""
  # The full run's mixed precision, so the runlocal check covers it too.
  config.model.dtype = "bfloat16"


def _local_run(config, steps: int = 8) -> None:
  config.num_steps = steps
  config.log_every = 2
  config.checkpoint_every = steps
  config.optimizer.warmup_steps = 0
  config.eval.batch_size = 64


def face(loss_name: str, arg: str | None, **hparams) -> ml_collections.ConfigDict:
  """Face recognition (§4.1): class-level labels, 112×112, 512-d, SGD 0.1 ÷10 at 50/70/90 %."""
  variant, local = parse_arg(arg, ("r34", "r100"), "r34")
  config = class_disjoint.get_config()
  config.num_steps = 182_000
  config.log_every = 100
  config.checkpoint_every = 5_000
  config.data = ml_collections.ConfigDict()
  config.data.name = "face_recordio"      # or "face_folders" (<root>/<identity>/<image>)
  config.data.path = ""                   # the folder holding train.rec and train.idx
  config.data.image_size = (112, 112)
  config.data.mean = FACE_MEAN
  config.data.std = FACE_STD
  config.data.max_shift = 0               # faces are aligned: flips only
  config.data.num_workers = 16
  config.data.val_path = ""               # the folder of lfw.bin, cfp_fp.bin, agedb_30.bin
  config.data.val_sets = ("lfw", "cfp_fp", "agedb_30")
  config.data.ijb_path = ""               # optional: IJB-C meta/ + aligned crops
  config.data.ijb_name = "ijbc"
  config.data.ijb_image_dir = "loose_crop"
  # Shuffled batches of P·K = 512 (class-level losses need no P×K structure).
  config.batch.classes_per_batch = 128
  config.batch.images_per_class = 4
  # 3×3 stride-1 stem for 112×112 crops.
  config.model = _model("resnet34" if variant == "r34" else "face_resnet100", small_input=True)
  config.loss = _loss(loss_name, **hparams)
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.schedule = "step"      # ÷10 at 50 / 70 / 90 % of the steps
  config.optimizer.warmup_steps = 0
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.eval.batch_size = 256
  config.evals = ml_collections.ConfigDict()
  config.evals.verification = ml_collections.ConfigDict({"type": "verification", "num_folds": 10})
  # Measured where config.data.ijb_path names IJB-style templates.
  config.evals.tar_at_far = ml_collections.ConfigDict(
      {"type": "tar_at_far", "fars": (1e-3, 1e-4, 1e-5)})
  if local:
    config.data.image_size = (32, 32)
    config.data.num_workers = 2
    config.batch.classes_per_batch = 4
    config.batch.images_per_class = 4
    config.optimizer.learning_rate = 0.01
    _local_model(config)
    _local_run(config)
  return config


def reid(loss_name: str, arg: str | None, **hparams) -> ml_collections.ConfigDict:
  """Person re-ID (§4.1): ResNet-50, class-level labels, 256×128, ImageNet-pretrained backbone."""
  variant, local = parse_arg(arg, ("market1501", "msmt17"), "market1501")
  config = class_disjoint.get_config()
  # About 120 epochs of Market-1501 (12,936 images) at 64 per batch.
  config.num_steps = 24_000 if variant == "market1501" else 60_000
  config.log_every = 100
  config.checkpoint_every = 2_000
  config.data = ml_collections.ConfigDict()
  config.data.name = variant
  config.data.path = ""                   # the unpacked dataset folder
  config.data.image_size = (256, 128)
  config.data.mean = IMAGENET_MEAN
  config.data.std = IMAGENET_STD
  config.data.max_shift = 10              # pad-10 random crop, as common re-ID baselines
  config.data.num_workers = 16
  config.batch.classes_per_batch = 16
  config.batch.images_per_class = 4
  # model.pretrained: a torchvision resnet50 state-dict file (recommended).
  config.model = _model("resnet50", small_input=False)
  config.loss = _loss(loss_name, **hparams)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3.5e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 2_000
  config.optimizer.weight_decay = 5e-4
  config.eval.batch_size = 256
  config.evals = ml_collections.ConfigDict()
  config.evals.reid = ml_collections.ConfigDict({"type": "cmc_map", "ranks": (1, 5, 10)})
  config.eval.block_size = 256
  if local:
    config.data.image_size = (32, 16)
    config.data.max_shift = 2
    config.data.num_workers = 2
    config.batch.classes_per_batch = 4
    config.batch.images_per_class = 4
    config.optimizer.learning_rate = 1e-3
    _local_model(config)
    _local_run(config)
  return config


def fine_grained(loss_name: str, arg: str | None, **hparams) -> ml_collections.ConfigDict:
  """Fine-grained retrieval (§4.1): pair-wise labels, P×K = 16×5, 512-d, 224×224 crops."""
  variant, local = parse_arg(arg, ("cub200", "cars196", "sop"), "cub200")
  config = class_disjoint.get_config()
  config.num_steps = {"cub200": 5_000, "cars196": 8_000, "sop": 40_000}[variant]
  config.log_every = 100
  config.checkpoint_every = 1_000
  config.data = ml_collections.ConfigDict()
  config.data.name = variant
  # A TFDS data_dir holding the set prepared as ArrayRecord ("" = TFDS's default):
  # `tfds build caltech_birds2011 --data_dir=<dir> --file_format=array_record`
  # (TensorFlow needed for that step only; training reads it without).
  config.data.path = ""
  config.data.download = False            # never download unless asked (needs TensorFlow)
  config.data.image_size = (224, 224)
  config.data.mean = IMAGENET_MEAN
  config.data.std = IMAGENET_STD
  config.data.crop_to_bbox = False        # CUB / Cars boxes: True crops to the object first
  config.data.min_crop_area = 0.16        # random resized crop: area in [0.16, 1]
  config.data.num_workers = 16            # grain processes decoding JPEGs ahead of the step
  config.batch.classes_per_batch = 16     # P
  config.batch.images_per_class = 5       # K
  # The paper uses BN-Inception. model.pretrained: a torchvision resnet50
  # state-dict file (recommended).
  config.model = _model("resnet50", small_input=False)
  config.loss = _loss(loss_name, **hparams)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 500
  config.optimizer.weight_decay = 5e-4
  config.eval.batch_size = 256
  config.evals = ml_collections.ConfigDict()
  config.evals.retrieval = ml_collections.ConfigDict(
      {"type": "recall", "ks": (1, 10, 100, 1000) if variant == "sop" else (1, 2, 4, 8)})
  config.eval.block_size = 1024
  if local:
    config.data.image_size = (32, 32)
    config.data.num_workers = 2
    config.batch.classes_per_batch = 4
    config.batch.images_per_class = 5
    _local_model(config)
    _local_run(config)
  return config
