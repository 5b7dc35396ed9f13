r"""Circle loss, pair-wise labels, on Omniglot: class-disjoint retrieval by alphabet, and one-shot runs.

The paper's retrieval protocol (CUB / Cars / SOP) on real handwriting that
ships with the package: a small CNN trains on the 136 characters of
``images_background_small1`` (Balinese, Early Aramaic, Greek, Korean, Latin;
20 drawers each) and embeds the alphabets it never saw, those of
``images_background_small2`` that small1 lacks (Japanese (katakana), Sanskrit,
Tagalog: 106 characters, 2,120 images). Two evaluators:

* ``retrieval``: Recall@K over the unseen alphabets, each query left out of
  its gallery;
* ``one_shot``: Lake et al.'s 20 within-alphabet one-shot runs (evaluation
  alphabets that neither split has): each test image takes the class of its
  nearest of 20 training images; error % over the 400 test images.

Both print beside two baselines that need no training, measured on the same
images: raw pixels (cosine) and the Modified Hausdorff Distance between the
drawings' ink pixels (Omniglot's own baseline; 38.75 % one-shot error here,
Lake et al. report 38.8 %).

Command, from the repository root:

  python -m experiments.main --config experiments/configs/omniglot.py --workdir /tmp/omniglot

Variants (``--config experiments/configs/omniglot.py:<arg>``):

* ``small2``: the mirror split: train on small2, retrieve Balinese, Early
  Aramaic and Korean (86 characters, 1,720 images);
* ``local``: the runlocal check, 20 steps without the MHD baselines (seconds);
* both: ``small2,local``.

Images are 28×28 (as most published Omniglot networks use), ink bright on a
black ground, augmented by rotations of ±10°, scalings of ±10 % and shifts
of ±2 px. The training set is the "minimal" one (5 alphabets, not the
original 30), which makes both protocols harder than the published setting.

Runtime: 82.3 and 76.3 s wall on 2 quiet CPU cores (seed 0, two runs; the
MHD baselines take about 20 s of it). Result (seed 0): R@1/2/4/8 = 75.52 /
85.24 / 91.27 / 95.38 % (raw pixels 36.60 / 47.97 / 58.92 / 70.52 %, MHD
65.66 / 76.56 / 87.12 / 92.41 %); one-shot error 24.00 % (raw pixels 75.50 %,
MHD 38.75 %). Over seeds 0, 1, 2 and both splits, against six other losses:
docs/guides/omniglot.md.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import class_disjoint


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = [a.strip() for a in (arg or "").split(",") if a.strip()]
  unknown = sorted(set(options) - {"small1", "small2", "local"})
  if unknown or ("small1" in options and "small2" in options):
    raise ValueError(f"config arg {arg!r}: expected 'small1' or 'small2' and/or 'local'")
  config = class_disjoint.get_config()
  config.num_steps = 300
  config.checkpoint_every = 100
  config.log_every = 50

  config.data = ml_collections.ConfigDict()
  config.data.name = "omniglot"
  config.data.path = ""                  # "" = the bundled zips (circle_jax/data/bundled/omniglot)
  config.data.background = "small2" if "small2" in options else "small1"
  config.data.image_size = (28, 28)
  config.data.max_shift = 2              # pixels
  config.data.max_rotation = 10.0        # degrees
  config.data.max_scale = 0.1            # scale in [0.9, 1.1]
  config.data.num_workers = 0
  config.data.prefetch = 2

  config.batch.classes_per_batch = 32
  config.batch.images_per_class = 4

  config.model.features = (32, 64, 64)
  config.model.convs_per_stage = 1
  config.model.global_pool = False
  config.model.embedding_dim = 128

  # The paper's fine-grained retrieval setting (§4.1, pair-wise labels).
  config.loss.gamma = 80.0
  config.loss.margin = 0.4

  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 50

  config.eval.batch_size = 1000
  config.evals = ml_collections.ConfigDict()
  config.evals.retrieval = ml_collections.ConfigDict(
      {"type": "recall", "ks": (1, 2, 4, 8), "raw_pixels": True, "mhd": True})
  config.evals.one_shot = ml_collections.ConfigDict(
      {"type": "one_shot", "raw_pixels": True, "mhd": True})

  if "local" in options:
    config.num_steps = 20
    config.checkpoint_every = 10
    config.log_every = 10
    config.optimizer.warmup_steps = 5
    config.evals.retrieval.mhd = False
    config.evals.one_shot.mhd = False
  return config
