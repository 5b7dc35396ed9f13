r"""Person re-ID, Circle loss, class-level labels, γ = 128, m = 0.25; ResNet-50.

Paper setting (§4.1): ResNet-50 (ImageNet-pretrained), class-level labels over the
training identities. Evaluation: CMC rank-1/5/10 and mAP, query against
gallery, same-identity-same-camera gallery items removed, junk (pid −1) dropped.

Command (``market1501`` or ``msmt17``), with torchvision's ResNet-50 weights
(``resnet50-*.pth``, a state-dict file) for the backbone:

  python -m experiments.main --config experiments/configs/reid_circle.py:market1501 \
      --workdir /tmp/reid_circle_market --config.data.path=/data/Market-1501-v15.09.15 \
      --config.model.pretrained=/data/resnet50.pth

Runlocal (small CNN, 32×16 crops, 8 steps; a CPU minute):

  python -m experiments.main --config experiments/configs/reid_circle.py:market1501,local \
      --workdir /tmp/reid_circle_local --config.data.path=<Market-1501 folder>

Compute (estimate: training ≈ 3 × forward FLOPs × images; forward FLOPs from XLA's cost
analysis): ResNet-50 at 256×128 5.2 GFLOPs/image → Market-1501 24k × 64 images ≈ 0.024
EFLOPs, MSMT17 60k steps ≈ 0.06 EFLOPs (hours on one accelerator; decoding the JPEGs on the
host may dominate). Runlocal: under a minute on a CPU (20–26 s per run in the tests on 2 shared cores).
Paper's numbers to compare with (v2, Table 3):
  R-1 / mAP: Market-1501 94.2 / 84.9, MSMT17 76.3 / 50.2 (ResNet-50).
"""

import ml_collections

from experiments.configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.reid("circle_class", arg, gamma=128.0, margin=0.25)
