r"""Fine-grained retrieval, multi-similarity loss (α = 2, β = 50, λ = 0.5, ε = 0.1), the paper's baseline.

Paper setting (§4.1): 512-d embeddings, P×K batches of P = 16 classes × K = 5
images. The paper's backbone is BN-Inception; this config uses ResNet-50
(ImageNet-pretrained via ``model.pretrained``), so expect numbers close to, not
equal to, the paper's. Data through TFDS: CUB-200-2011 and Cars196 merged
train+test and split by class halves; SOP's class-disjoint split. Evaluation:
Recall@K, every test image querying all others.

Command (``cub200``, ``cars196`` or ``sop``); ``data.path`` is the TFDS data_dir
where the dataset was prepared as ArrayRecord, once, on a machine with TensorFlow
(``tfds build caltech_birds2011 --data_dir=/data/tensorflow_datasets
--file_format=array_record``); training reads it without TensorFlow:

  python -m experiments.main --config experiments/configs/fine_grained_multi_similarity.py:cub200 \
      --workdir /tmp/fine_grained_multi_similarity_cub --config.data.path=/data/tensorflow_datasets \
      --config.model.pretrained=/data/resnet50.pth

Runlocal (small CNN, 32×32 crops, 8 steps; a CPU minute):

  python -m experiments.main --config experiments/configs/fine_grained_multi_similarity.py:cub200,local \
      --workdir /tmp/fine_grained_multi_similarity_local --config.data.path=/data/tensorflow_datasets

Compute (estimate: training ≈ 3 × forward FLOPs × images; forward FLOPs from XLA's cost
analysis): ResNet-50 at 224×224 8.0 GFLOPs/image, 80 images per step → CUB 5k steps ≈ 0.010
EFLOPs, Cars196 8k ≈ 0.015, SOP 40k ≈ 0.077 (an hour or a few on one accelerator).
Runlocal: under a minute on a CPU (21–42 s per run in the tests on 2 shared cores).
Paper's numbers to compare with (v2, Table 4):
  Multi-Simi, 512-d: CUB R@1/2/4/8 65.7 / 77.0 / 86.3 / 91.2; Cars196 84.1 / 90.4 / 94.0 / 96.5;
  SOP R@1/10/100/1000 78.2 / 90.5 / 96.0 / 98.7.
"""

import ml_collections

from experiments.configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.fine_grained("multi_similarity", arg, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1)
