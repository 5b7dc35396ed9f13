"""ImageNet-pretrained ResNet weights from a torchvision state dict into :class:`ResNet`.

No torch import: the caller loads the file (``torch.load(path, map_location="cpu")``
or an ``.npz``) and passes a mapping of names to arrays; anything with
``__array__`` (torch tensors included) works.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

# torchvision name → (our module path, our param name, collection, transform).
_BN = {"weight": ("scale", "params"), "bias": ("bias", "params"),
       "running_mean": ("mean", "batch_stats"), "running_var": ("var", "batch_stats")}
_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")


def _our_module(torch_module: str) -> str:
  """``"layer2.0.downsample.1"`` → ``"stage1_block0/proj_bn"``; ``"conv1"`` → ``"stem"``."""
  if torch_module == "conv1":
    return "stem"
  if torch_module == "bn1":
    return "stem_bn"
  m = _LAYER.match(torch_module)
  if m is None:
    raise KeyError(torch_module)
  stage, block, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
  rest = {"downsample.0": "proj", "downsample.1": "proj_bn"}.get(rest, rest)
  if not re.fullmatch(r"(conv|bn)[123]|proj|proj_bn", rest):
    raise KeyError(torch_module)
  return f"stage{stage}_block{block}/{rest}"


def torchvision_resnet_variables(state_dict: Mapping[str, Any],
                                 variables: Mapping[str, Any]) -> tuple[dict, dict]:
  """Backbone ``params`` and ``batch_stats`` with a torchvision ResNet's weights filled in.

  Name mapping (``i`` = torchvision layer − 1): ``conv1`` → ``stem``, ``bn1`` →
  ``stem_bn``, ``layer{i+1}.{j}.conv{k}`` / ``bn{k}`` → ``stage{i}_block{j}/conv{k}`` /
  ``bn{k}``, ``downsample.0`` / ``.1`` → ``proj`` / ``proj_bn``. Convolution
  kernels go from torch's [out, in, kh, kw] to Flax's [kh, kw, in, out]; BN
  ``weight``/``bias`` → ``scale``/``bias`` (params), ``running_mean``/``running_var``
  → ``mean``/``var`` (batch_stats). torchvision's ``fc`` and ``num_batches_tracked``
  are not used; the embedding ``head`` keeps the values given in ``variables``.
  Torchvision uses BN ε = 1e-5, as Flax does, and (v1.5) puts the stride of a
  bottleneck on its 3×3 convolution, as :class:`BottleneckBlock` does.

  Args:
    state_dict: torchvision ``resnet18/34/50/101/152`` state dict (name → array).
    variables: ``{"params": …, "batch_stats": …}`` of the :class:`ResNet`
      (``small_input=False``) to fill in, e.g. from ``model.init``.

  Returns:
    ``(params, batch_stats)``, new nested dicts; every backbone leaf replaced.

  Raises:
    ValueError: a torchvision weight with no counterpart, a backbone weight
      missing from the state dict, or a shape mismatch (all listed by name).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from circle_jax.models import ResNet
    >>> m = ResNet(stage_sizes=(1,), width=4, head=False)
    >>> v = m.init(jax.random.key(0), jnp.ones((1, 16, 16, 3)), train=False)
    >>> sd = {"conv1.weight": np.ones((4, 3, 7, 7)), **{f"bn1.{k}": np.ones(4) for k in
    ...       ("weight", "bias", "running_mean", "running_var")}}
    >>> sd.update({f"layer1.0.{c}.weight": np.ones((4, 4, 3, 3)) for c in ("conv1", "conv2")})
    >>> sd.update({f"layer1.0.bn{i}.{k}": np.ones(4) for i in (1, 2) for k in
    ...            ("weight", "bias", "running_mean", "running_var")})
    >>> params, stats = torchvision_resnet_variables(sd, v)
    >>> params["stem"]["kernel"].shape, float(stats["stem_bn"]["var"][0])
    ((7, 7, 3, 4), 1.0)
  """
  params = _copy(variables["params"])
  stats = _copy(variables.get("batch_stats", {}))
  problems, filled = [], set()
  for name, value in state_dict.items():
    if name.startswith("fc.") or name.endswith("num_batches_tracked"):
      continue
    module, _, leaf = name.rpartition(".")
    try:
      path = _our_module(module)
    except KeyError:
      problems.append(f"{name}: no counterpart in circle_jax.models.ResNet")
      continue
    array = np.asarray(value, np.float32)
    last = path.rsplit("/", 1)[-1]
    is_bn = last.startswith("bn") or last.endswith("_bn")
    if is_bn and leaf in _BN:
      ours, collection = _BN[leaf]
      tree = params if collection == "params" else stats
    elif not is_bn and leaf == "weight":
      ours, tree = "kernel", params
      if array.ndim != 4:
        problems.append(f"{name}: expected a 4-d convolution kernel, got shape {array.shape}")
        continue
      array = array.transpose(2, 3, 1, 0)
    else:
      problems.append(f"{name}: unexpected parameter {leaf!r}")
      continue
    node = tree
    for part in path.split("/"):
      if part not in node:
        problems.append(f"{name}: our model has no module {path!r} (depth or block type differ?)")
        break
      node = node[part]
    else:
      if ours not in node:
        problems.append(f"{name}: our module {path!r} has no {ours!r}")
      elif node[ours].shape != array.shape:
        problems.append(f"{name}: shape {array.shape} (after layout change) but {path}/{ours} "
                        f"is {tuple(node[ours].shape)}")
      else:
        node[ours] = array.astype(node[ours].dtype)
        filled.add(f"{path}/{ours}")
  for collection, tree in (("params", params), ("batch_stats", stats)):
    for path in _leaf_paths(tree):
      if not path.startswith("head/") and path not in filled:
        problems.append(f"{collection} {path}: not in the state dict")
  if problems:
    raise ValueError("torchvision_resnet_variables: " + "; ".join(problems[:20])
                     + (f"; … {len(problems) - 20} more" if len(problems) > 20 else ""))
  return params, stats


def _copy(tree) -> dict:
  return {k: _copy(v) if hasattr(v, "keys") else v for k, v in tree.items()}


def _leaf_paths(tree, prefix: str = ""):
  for k, v in tree.items():
    if hasattr(v, "keys"):
      yield from _leaf_paths(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}"
