"""The public API contract of ../shared/DESIGN.md: names, signatures, re-exports."""

import inspect
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import circle_jax
from circle_jax import losses
from circle_jax import parallel

EMPTY = inspect.Parameter.empty

# name → (positional parameters, {keyword-only parameter: default})
CONTRACT = {
    "circle_loss": (("sp", "sn"), dict(margin=0.25, gamma=256.0, sp_mask=None, sn_mask=None)),
    "circle_loss_grads": (("sp", "sn"), dict(margin=EMPTY, gamma=EMPTY, sp_mask=None, sn_mask=None)),
    "unified_loss": (("sp", "sn"), dict(margin=EMPTY, gamma=EMPTY, sp_mask=None, sn_mask=None)),
    "pairwise_circle_loss": (
        ("embeddings", "labels"),
        dict(margin=0.4, gamma=80.0, ref_embeddings=None, ref_labels=None, chunk_size=None),
    ),
    "class_circle_loss": (
        ("embeddings", "class_weights", "labels"),
        dict(margin=0.25, gamma=256.0, chunk_size=None),
    ),
}


# circle_jax.parallel: axis_name is required (keyword-only, no default).
PARALLEL_CONTRACT = {
    "pairwise_circle_loss": (
        ("embeddings", "labels"),
        dict(axis_name=EMPTY, margin=0.4, gamma=80.0, chunk_size=None, ring=False),
    ),
    "class_circle_loss": (
        ("embeddings", "class_weights", "labels"),
        dict(axis_name=EMPTY, margin=0.25, gamma=256.0, chunk_size=None, num_classes=None),
    ),
}


@pytest.mark.parametrize(
    "module, name",
    [(losses, n) for n in sorted(CONTRACT)] + [(parallel, n) for n in sorted(PARALLEL_CONTRACT)],
)
def test_contract_signature(module, name):
  positional, keywords = (CONTRACT if module is losses else PARALLEL_CONTRACT)[name]
  fn = getattr(module, name)
  if module is losses:
    assert getattr(circle_jax, name) is fn
  params = inspect.signature(fn).parameters
  got_positional = tuple(
      p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
  )
  assert got_positional == positional
  for key, default in keywords.items():
    assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key
    assert params[key].default == default or params[key].default is default, key
  # Anything beyond the contract is an optional keyword-only extra.
  for p in params.values():
    if p.name not in positional:
      assert p.kind is inspect.Parameter.KEYWORD_ONLY and (
          p.name in keywords or p.default is not EMPTY), p.name


def test_every_export_is_public_and_documented():
  for name in losses.__all__:
    fn = getattr(losses, name)
    assert getattr(circle_jax, name) is fn
    doc = inspect.getdoc(fn) or ""
    assert "Example:" in doc or name == "am_softmax_loss", name
  assert set(losses.__all__) <= set(circle_jax.__all__)
  assert set(parallel.__all__) == set(PARALLEL_CONTRACT)
  for name in parallel.__all__:
    assert "Example:" in (inspect.getdoc(getattr(parallel, name)) or ""), name


@pytest.mark.parametrize("name", ["normface_loss", "cosface_loss", "arcface_loss"])
def test_cosine_family_takes_chunk_size(name):
  param = inspect.signature(getattr(losses, name)).parameters["chunk_size"]
  assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None


def test_losses_return_jax_arrays_per_example():
  x, y = jnp.ones((3, 4)), jnp.array([0, 0, 1])
  assert isinstance(circle_jax.pairwise_circle_loss(x, y), jax.Array)
  assert circle_jax.class_circle_loss(x, jnp.eye(2, 4), y).shape == (3,)
  assert circle_jax.circle_loss(jnp.ones((2, 3)), jnp.ones((2, 1))).shape == (2,)


def test_losses_import_nothing_heavier_than_jax():
  code = (
      "import sys, circle_jax, circle_jax.parallel; "
      "heavy = {'flax', 'optax', 'tensorflow', 'torch', 'tensorflow_datasets', 'grain'} "
      "& set(sys.modules); print(sorted(heavy))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_the_data_and_training_modules_load_no_input_framework_until_used():
  # grain (worker processes) and TensorFlow (the TFDS sets) come in with the
  # first pipeline that needs them.
  code = ("import sys, circle_jax.data, circle_jax.training; "
          "print(sorted({'grain', 'tensorflow', 'torch'} & set(sys.modules)))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_metrics_and_parallel_are_attributes_of_the_package():
  # The README and the docs write `cj.metrics.…` and `cj.parallel.…` after a
  # plain `import circle_jax as cj`.
  from circle_jax import metrics
  assert circle_jax.metrics is metrics and circle_jax.parallel is parallel
  assert {"metrics", "parallel"} <= set(dir(circle_jax)) & set(circle_jax.__all__)
  with pytest.raises(AttributeError, match="no_such_name"):
    circle_jax.no_such_name  # pylint: disable=pointless-statement


def test_metrics_and_parallel_attributes_load_on_first_use_without_heavy_imports():
  # A fresh process, so that no other test has imported them already; run from
  # the root of the tree under test so that the child imports this circle_jax.
  code = (
      "import sys, circle_jax; "
      "before = {'circle_jax.metrics', 'circle_jax.parallel'} & set(sys.modules); "
      "circle_jax.metrics.recall_at_k, circle_jax.parallel.class_circle_loss; "
      "heavy = {'flax', 'optax', 'tensorflow', 'torch', 'tensorflow_datasets', 'grain'}; "
      "print(sorted(before), sorted(heavy & set(sys.modules)))"
  )
  root = pathlib.Path(circle_jax.__file__).resolve().parents[1]
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=root)
  assert out.stdout.strip() == "[] []"
