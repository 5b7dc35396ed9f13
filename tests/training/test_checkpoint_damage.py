"""A damaged newest checkpoint: fall back to the newest one that restores."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from circle_jax import training
from circle_jax.models import SmallCNN


def _state(seed):
  model = SmallCNN(features=(4,), embedding_dim=6)
  return training.create_train_state(model, optax.sgd(0.1), jax.random.key(seed),
                                     jnp.ones((1, 8, 8, 1)))


def _saved(tmp_path):
  """Checkpoints of steps 10 and 20 (different params), and a fresh template."""
  ckpt = training.Checkpointer(tmp_path / "ckpt", every_steps=10, max_to_keep=3)
  ten, twenty = _state(1), _state(2)
  ckpt.save(10, ten, data={"next_step": 10})
  ckpt.save(20, twenty, data={"next_step": 20})
  return ckpt, ten, twenty


def _files(step_dir):
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs)


def _empty_folder(step_dir):
  for entry in os.listdir(step_dir):
    path = os.path.join(step_dir, entry)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _array_files(step_dir):
  """The array data files (OCDBT data blocks) of the state."""
  return [p for p in _files(os.path.join(step_dir, "state")) if f"{os.sep}d{os.sep}" in p]


def _truncate_arrays(step_dir):
  for path in _array_files(step_dir):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 3)


def _garble_arrays(step_dir):
  rng = np.random.default_rng(0)
  for path in _array_files(step_dir):
    with open(path, "r+b") as f:
      f.write(rng.integers(0, 256, os.path.getsize(path), dtype=np.uint8).tobytes())


def _delete_manifests(step_dir):
  for path in _files(step_dir):
    if os.path.basename(path) == "manifest.ocdbt":
      os.remove(path)


def _truncate_metadata(step_dir):
  path = os.path.join(step_dir, "state", "_METADATA")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


# Garbled array bytes (the subtlest damage) in the fast tier; the other four in the slow one.
@pytest.mark.parametrize("damage", [_garble_arrays] + [
    pytest.param(f, marks=pytest.mark.slow)
    for f in (_empty_folder, _truncate_arrays, _delete_manifests, _truncate_metadata)])
def test_falls_back_to_the_previous_checkpoint(tmp_path, damage):
  ckpt, ten, _ = _saved(tmp_path)
  damage(str(tmp_path / "ckpt" / "20"))
  said = []
  reopened = training.Checkpointer(tmp_path / "ckpt", every_steps=10, max_to_keep=3)
  state, step, data = reopened.restore_newest_good(_state(0), say=lambda *a, **k: said.append(a[0]))
  assert step == 10 and data == {"next_step": 10}
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ten.params)):
    np.testing.assert_array_equal(got, want)
  assert len(said) == 1 and said[0].startswith("warning: the checkpoint of step 20 does not "
                                                 "restore")
  assert os.path.isdir(tmp_path / "ckpt_damaged" / "20")  # kept aside, for inspection
  assert not os.path.exists(tmp_path / "ckpt" / "20")
  assert reopened.latest_step() == 10
  # Training goes on: the same step saves again.
  assert reopened.save(20, state, data={"next_step": 20})
  assert reopened.restore_newest_good(_state(0), say=lambda *a, **k: None)[1] == 20


def test_an_intact_newest_checkpoint_is_used(tmp_path):
  ckpt, _, twenty = _saved(tmp_path)
  state, step, data = ckpt.restore_newest_good(_state(0), say=pytest.fail)
  assert step == 20 and data == {"next_step": 20}
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(twenty)):
    np.testing.assert_array_equal(got, want)


def test_a_state_that_fits_no_checkpoint_moves_nothing(tmp_path):
  """A changed model is not damage: every checkpoint fails, none is set aside."""
  _saved(tmp_path)
  other = training.create_train_state(SmallCNN(features=(8,), embedding_dim=6), optax.sgd(0.1),
                                      jax.random.key(0), jnp.ones((1, 8, 8, 1)))
  ckpt = training.Checkpointer(tmp_path / "ckpt", every_steps=10)
  with pytest.raises(training.CheckpointRestoreError, match=r"no checkpoint in .* restores "
                                                            r"\(the newest, step 20"):
    ckpt.restore_newest_good(other, say=pytest.fail)
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["10", "20"]
  assert not os.path.exists(tmp_path / "ckpt_damaged")


def test_no_checkpoint_returns_the_given_state(tmp_path):
  ckpt = training.Checkpointer(tmp_path / "ckpt", every_steps=10)
  template = _state(0)
  assert ckpt.restore_newest_good(template, say=pytest.fail) == (template, None, None)
