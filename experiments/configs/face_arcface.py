r"""Face recognition, ArcFace, γ = 64, m = 0.5 (the paper's baseline); ResNet-34 or ResNet-100.

Paper setting (§4.1): MS-Celeb-1M cleaned (MS1M-style RecordIO pack), 112×112
aligned crops, 512-d embeddings, SGD lr 0.1 ÷10 at 50 / 70 / 90 %, 182k
iterations. Evaluation: 10-fold accuracy on the ``.bin`` verification sets
(LFW, CFP-FP, AgeDB-30; flip-fused embeddings) and, with ``data.ijb_path``,
IJB-C 1:1 TAR@FAR.

Command (``r34`` or ``r100``):

  python -m experiments.main --config experiments/configs/face_arcface.py:r100 \
      --workdir /tmp/face_arcface_r100 --config.data.path=/data/faces_emore \
      --config.data.val_path=/data/faces_emore

Runlocal (small CNN, 32×32, 8 steps; a CPU minute; any pack or folder tree):

  python -m experiments.main --config experiments/configs/face_arcface.py:local \
      --workdir /tmp/face_arcface_local --config.data.path=<pack> --config.data.val_path=<bins>

Compute (estimate: training ≈ 3 × forward FLOPs × images; forward FLOPs from XLA's cost
analysis): ResNet-34 at 112×112 27.3 GFLOPs/image → 182k × 512 images ≈ 7.6 EFLOPs;
ResNet-100 86.5 GFLOPs/image ≈ 24 EFLOPs (multi-accelerator days). Runlocal: under a
minute on a CPU (12–74 s per run in the tests on 2 shared cores).
Paper's numbers to compare with (v2, Tables 1–2):
  MegaFace rank-1 97.68 (R34) / 98.36 (R100); LFW / YTF / CFP-FP (R34) 99.68 / 96.34 / 95.84;
  IJB-C TAR@FAR 1e-3 / 1e-4 / 1e-5: R34 95.94 / 92.28 / 84.23, R100 96.01 / 93.25 / 89.10.
"""

import ml_collections

from experiments.configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.face("arcface", arg, gamma=64.0, margin=0.5)
