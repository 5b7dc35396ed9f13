"""Per-process batches on grain: rows, augmentation, decode counts, iterator state."""

import numpy as np
import pytest
from tests.conftest import slow

from circle_jax import data as cdata
from circle_jax import training


class CountingSource(cdata.ImageSource):
  """Images whose pixels encode their index; records every index it decodes."""

  def __init__(self, n, num_classes):
    self.labels = np.arange(n, dtype=np.int32) % num_classes
    self.size = (4, 6)
    self.decoded = []

  def image(self, i):
    self.decoded.append(i)
    return np.full((4, 6, 3), i % 251, np.uint8) + np.arange(6, dtype=np.uint8)[None, :, None]


def _fn(source, rows, sampler="pk", **kw):
  return cdata.TrainBatches(source, np.asarray(rows), sampler, 4, 4, seed=3,
                            augment=cdata.HostAugment(flip=True, max_shift=1),
                            mean=(0.5,), std=(0.25,), **kw)


@pytest.mark.parametrize("sampler", ["pk", "shuffle"])
def test_a_process_share_is_its_rows_of_the_whole_batch(sampler):
  whole = _fn(CountingSource(60, 7), np.arange(16), sampler)
  halves = [_fn(CountingSource(60, 7), rows, sampler) for rows in (np.arange(8), np.arange(8, 16))]
  uneven = _fn(CountingSource(60, 7), [1, 5, 6, 14], sampler)
  for step in (0, 9):
    full = whole(step)
    parts = [h(step) for h in halves]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
      np.testing.assert_array_equal(uneven(step)[key], full[key][[1, 5, 6, 14]])
  # The flips and shifts of a row do not depend on which process decodes it:
  # the augmentation did change images (not a no-op the equality above hides).
  plain = cdata.TrainBatches(CountingSource(60, 7), np.arange(16), sampler, 4, 4, seed=3,
                             mean=(0.5,), std=(0.25,))
  assert not np.array_equal(plain(9)["image"], whole(9)["image"])


def test_each_process_decodes_only_its_rows():
  source = CountingSource(60, 7)
  fn = _fn(source, [2, 3, 11])
  batch = fn(4)
  whole_idx = cdata.batch_indices(source.labels, 4, sampler="pk", classes_per_batch=4,
                                  images_per_class=4, seed=3)
  assert source.decoded == whole_idx[[2, 3, 11]].tolist()
  assert int(batch["decoded"]) == 3 and int(batch["step"]) == 4


def test_digits_batches_are_functions_of_seed_and_step():
  # A resumed run sees exactly the batches it would have seen: batch s depends
  # on (seed, s) alone, and its shifts come from stream 1 of (seed, s), apart
  # from the sampler's draws (the stream earlier digits runs drew them from).
  d = cdata.load_digits_split()
  source = cdata.ArrayImageSource(d.train_images, d.train_labels)

  def fn(seed, sampler="pk"):
    return cdata.TrainBatches(source, np.arange(20), sampler, 5, 4, seed=seed,
                              augment=cdata.HostAugment(max_shift=2))

  a = fn(0)(9)
  np.testing.assert_array_equal(a["image"], fn(0)(9)["image"])
  assert a["image"].shape == (20, 28, 28, 1) and 0.0 <= a["image"].min() <= a["image"].max() <= 1.0
  assert not np.array_equal(a["image"], fn(0)(10)["image"])
  assert not np.array_equal(a["image"], fn(1)(9)["image"])
  for step in (0, 7):
    idx = cdata.batch_indices(d.train_labels, step, sampler="pk", classes_per_batch=5,
                              images_per_class=4, seed=0)
    shifted = cdata.random_shift(d.train_images[idx], 2, np.random.default_rng([0, step, 1]))
    np.testing.assert_array_equal(fn(0)(step)["image"], shifted)
    np.testing.assert_array_equal(fn(0)(step)["label"], d.train_labels[idx])
  s = fn(0, "shuffle")(0)
  assert s["label"].shape == (20,) and s["label"].max() < d.num_train_classes


def test_evaluation_batches_pad_past_the_end_without_decoding():
  source = CountingSource(10, 3)
  fn = cdata.EvalBatches(source, np.array([2, 3]), batch_size=4)
  assert fn.num_batches() == 3
  out = [fn(b) for b in range(3)]
  assert source.decoded == [2, 3, 6, 7]          # items 10 and 11 are padding
  assert [int(b["decoded"]) for b in out] == [2, 2, 0]
  assert not out[2]["image"].any()


@pytest.mark.parametrize("num_workers", [0, slow(2)])
def test_resumed_iterator_continues_batch_for_batch(num_workers):
  # Shuffled sampling straddles epochs (60 items, batches of 16): resume mid-epoch.
  fn = _fn(CountingSource(60, 7), np.arange(16), "shuffle")
  it = cdata.grain_batches(fn, 12, num_workers=num_workers)
  first = [next(it) for _ in range(5)]
  state = it.get_state()
  rest = list(it)
  resumed = list(cdata.grain_batches(fn, 12, num_workers=num_workers, state=state))
  assert [int(b["step"]) for b in first + rest] == list(range(12))
  assert len(resumed) == len(rest) == 7
  for a, b in zip(resumed, rest):
    for key in ("image", "label", "step"):
      np.testing.assert_array_equal(a[key], b[key])


def test_the_input_position_goes_through_the_checkpoint(tmp_path):
  import jax
  import jax.numpy as jnp
  import optax
  from circle_jax.models import SmallCNN
  fn = _fn(CountingSource(60, 7), np.arange(16))
  it = cdata.grain_batches(fn, 10)
  _ = [next(it) for _ in range(3)]
  state = training.create_train_state(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
                                      jax.random.key(0), jnp.ones((1, 8, 8, 1)))
  ckpt = training.Checkpointer(tmp_path, every_steps=1)
  ckpt.save(3, state, data={"start": 0, "iterator": it.get_state()})
  ckpt.save(4, state)                        # no input position: restore_data says so
  assert ckpt.restore_data(4) is None
  saved = ckpt.restore_data(3)
  resumed = cdata.grain_batches(fn, 10, state=saved["iterator"])
  np.testing.assert_array_equal(next(resumed)["image"], next(it)["image"])


def test_batch_indices_rejects_an_unknown_sampler():
  with pytest.raises(ValueError, match="sampler must be one of .*got 'random'"):
    cdata.batch_indices(np.zeros(4), 0, sampler="random", classes_per_batch=1,
                        images_per_class=1, seed=0)


def test_prefetcher_keeps_order_positions_and_errors():
  mesh = training.make_mesh(8)

  def host():
    for s in range(4):
      if s == 3:
        raise RuntimeError("decode failed at 3")
      yield {"image": np.full((16, 2), s, np.float32), "step": np.int64(s),
             "decoded": np.int64(16)}

  taken = []
  gen = host()

  def tracked():
    for b in gen:
      taken.append(int(b["step"]))
      yield b

  it = training.MeshPrefetcher(tracked(), mesh, 16, size=2, position=lambda: len(taken))
  got = [next(it) for _ in range(3)]
  assert [int(m["step"]) for m, _, _ in got] == [0, 1, 2]
  assert [p for _, _, p in got] == [1, 2, 3]     # the position right after each batch
  assert got[2][1]["image"].sharding.spec == training.batch_sharding(mesh).spec
  np.testing.assert_array_equal(np.asarray(got[1][1]["image"]), np.ones((16, 2)))
  with pytest.raises(RuntimeError, match="decode failed at 3"):
    next(it)
  assert it.decoded == 48
  it.close()


def test_global_batch_from_process_rows():
  mesh = training.make_mesh(8, model_axis_size=2)
  rows = training.process_rows(mesh, 16)
  np.testing.assert_array_equal(rows, np.arange(16))  # one process holds every row
  x = np.arange(32.0).reshape(16, 2)
  g = training.make_global_batch({"x": x}, mesh, 16)
  np.testing.assert_array_equal(np.asarray(g["x"]), x)
  for shard in g["x"].addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
  with pytest.raises(ValueError, match="has 3 rows but this process holds 16"):
    training.make_global_batch({"x": x[:3]}, mesh, 16)
