"""Loading a backbone weights file (a torchvision state dict) for ``config.model.pretrained``."""

from __future__ import annotations

import os

import numpy as np


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Name → numpy array from a ``.pth``/``.pt`` state dict (needs torch) or an ``.npz``.

  torchvision's ImageNet checkpoints (e.g. ``resnet50-0676ba61.pth``) are plain
  state dicts; a dict holding one under ``"state_dict"`` is accepted too.

  Raises:
    FileNotFoundError: no such file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"config.model.pretrained: no weights file at {path}; save a torchvision ResNet's "
        "state dict there (torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V1')"
        ".state_dict(), path)) or an .npz of the same names")
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  import torch  # pylint: disable=g-import-not-at-top  (only for .pth files)
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in obj.items()}
