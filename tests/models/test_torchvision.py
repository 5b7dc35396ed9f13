"""Importing torchvision ResNet weights: outputs equal those of a PyTorch ResNet.

The reference is written here in plain torch.nn with torchvision's module and
parameter names (conv1, bn1, layer1.0.conv1, …, downsample.0/1, fc), so the
test needs no torchvision install (and cannot pull in a different torch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from circle_jax.models import ResNet  # noqa: E402
from circle_jax.models import resnet  # noqa: E402
from circle_jax.models import torchvision_resnet_variables  # noqa: E402


class TorchBasic(nn.Module):
  expansion = 1

  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = None
    if stride != 1 or cin != width:
      self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                      nn.BatchNorm2d(width))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchBottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)   # v1.5: stride here
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = None
    if stride != 1 or cin != width * 4:
      self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(width * 4))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  def __init__(self, block, layers, width=64, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
        cin = width * 2**i * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.num_layers = len(layers)
    self.fc = nn.Linear(cin, num_classes)

  def features(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(self.num_layers):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean(dim=(2, 3))


def _randomise_bn(model, gen):
  # Non-trivial BN statistics and affine parameters, so a mix-up of mean/var or
  # scale/bias cannot go unnoticed.
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.uniform_(-0.2, 0.2, generator=gen)
        m.running_mean.uniform_(-0.2, 0.2, generator=gen)
        m.running_var.uniform_(0.5, 2.0, generator=gen)


def _compare(torch_model, ours, x_nchw):
  torch_model.eval()
  with torch.no_grad():
    want = torch_model.features(torch.from_numpy(x_nchw)).numpy()
  x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
  # Shapes are all the import needs; jit keeps the forward pass to one compile.
  variables = jax.eval_shape(lambda: ours.init(jax.random.key(0), x, train=False))
  params, stats = torchvision_resnet_variables(torch_model.state_dict(), variables)
  apply = jax.jit(lambda v, x: ours.apply(v, x, train=False))
  got = apply({"params": params, "batch_stats": stats}, x)
  return np.asarray(got), want


def _shapes(model, hw=32):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, hw, hw, 3)), train=False))


def test_resnet50_outputs_equal_torch(rng):
  gen = torch.Generator().manual_seed(0)
  torch.manual_seed(0)
  ref = TorchResNet(TorchBottleneck, (3, 4, 6, 3))
  _randomise_bn(ref, gen)
  x = rng.normal(size=(2, 3, 64, 48)).astype(np.float32)   # odd-sized maps after striding
  got, want = _compare(ref, resnet("resnet50", head=False), x)
  assert got.shape == want.shape == (2, 2048)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_resnet18_outputs_equal_torch_and_the_head_stays(rng):
  torch.manual_seed(1)
  ref = TorchResNet(TorchBasic, (2, 2, 2, 2), width=16)
  _randomise_bn(ref, torch.Generator().manual_seed(1))
  x = rng.normal(size=(1, 3, 37, 41)).astype(np.float32)
  got, want = _compare(ref, ResNet(stage_sizes=(2, 2, 2, 2), width=16, head=False), x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # With the embedding head, its initial values are kept and the backbone replaced.
  v = _shapes(ResNet(stage_sizes=(2, 2, 2, 2), width=16, embedding_dim=8))
  head = jax.tree.map(lambda s: np.random.default_rng(0).normal(size=s.shape).astype(s.dtype),
                      v["params"]["head"])
  v = {**v, "params": {**v["params"], "head": head}}
  params, _ = torchvision_resnet_variables(ref.state_dict(), v)
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"], v["params"]["head"]["fc"]["kernel"])
  np.testing.assert_array_equal(params["stem"]["kernel"],
                                ref.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_mismatches_are_named():
  torch.manual_seed(2)
  ref = TorchResNet(TorchBasic, (2, 2, 2, 2), width=16).state_dict()
  v = _shapes(ResNet(stage_sizes=(2, 2, 2, 2), width=8, head=False))
  with pytest.raises(ValueError, match=r"conv1.weight: shape \(7, 7, 3, 16\).*stem/kernel"):
    torchvision_resnet_variables(ref, v)
  v = _shapes(ResNet(stage_sizes=(2, 2, 2, 3), width=16, head=False))
  with pytest.raises(ValueError, match=r"stage3_block2/conv1/kernel: not in the state dict"):
    torchvision_resnet_variables(ref, v)
  bad = dict(ref)
  bad["layer1.0.se.weight"] = np.zeros(3)
  v = _shapes(ResNet(stage_sizes=(2, 2, 2, 2), width=16, head=False))
  with pytest.raises(ValueError, match=r"layer1.0.se.weight: no counterpart"):
    torchvision_resnet_variables(bad, v)


def test_pretrained_file_loads_through_the_training_config(tmp_path):
  from experiments import weights  # pylint: disable=g-import-not-at-top
  torch.manual_seed(3)
  ref = TorchResNet(TorchBasic, (1, 1), width=8)
  path = str(tmp_path / "r.pth")
  torch.save(ref.state_dict(), path)
  sd = weights.load_state_dict(path)
  assert set(sd) == set(ref.state_dict())
  np.testing.assert_array_equal(sd["layer2.0.downsample.0.weight"],
                                ref.layer2[0].downsample[0].weight.detach().numpy())
  with pytest.raises(FileNotFoundError, match="no weights file"):
    weights.load_state_dict(str(tmp_path / "missing.pth"))

  # experiments.train: config.model.pretrained fills the backbone of a MetricModel's
  # state and leaves the class proxies (and the head) alone.
  import dataclasses  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class State:
    params: dict
    batch_stats: dict

    def replace(self, **kw):
      return dataclasses.replace(self, **kw)

  v = _shapes(ResNet(stage_sizes=(1, 1), width=8, embedding_dim=4))
  concrete = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v)
  proxies = np.ones((3, 4), np.float32)
  state = State({"backbone": concrete["params"], "class_weights": proxies},
                {"backbone": concrete["batch_stats"]})
  config = ml_collections.ConfigDict({"model": {"pretrained": path}})
  new = train._load_pretrained(state, config)
  np.testing.assert_array_equal(new.params["backbone"]["stage1_block0"]["proj"]["kernel"],
                                sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(new.batch_stats["backbone"]["stem_bn"]["var"],
                                sd["bn1.running_var"])
  assert new.params["class_weights"] is proxies


def test_npz_weights_load_like_the_pth_they_were_saved_from(tmp_path):
  """The torch-free path: an .npz of the state dict's names gives the same arrays."""
  from experiments import weights  # pylint: disable=g-import-not-at-top
  torch.manual_seed(4)
  ref = TorchResNet(TorchBasic, (1, 1), width=8)
  np.savez(tmp_path / "r.npz", **{k: v.numpy() for k, v in ref.state_dict().items()})
  torch.save(ref.state_dict(), tmp_path / "r.pth")
  from_npz = weights.load_state_dict(str(tmp_path / "r.npz"))
  from_pth = weights.load_state_dict(str(tmp_path / "r.pth"))
  assert set(from_npz) == set(from_pth) and len(from_npz) > 10
  for k in from_pth:
    np.testing.assert_array_equal(from_npz[k], from_pth[k], err_msg=k)
  v = _shapes(ResNet(stage_sizes=(1, 1), width=8, head=False))
  a, b = torchvision_resnet_variables(from_npz, v), torchvision_resnet_variables(from_pth, v)
  jax.tree.map(np.testing.assert_array_equal, a, b)
