"""Rotations and scalings of decoded batches (affine_images), and HostAugment's draws of them:
the same per row whichever process applies them, and unchanged shifts when they are off."""

import numpy as np
import pytest

from circle_jax import data as cdata
from circle_jax.data._augment import affine_images


def test_identity_returns_the_input(rng):
  b = 3
  zero, one = np.zeros(b), np.ones(b)
  x = rng.random((b, 6, 9, 2)).astype(np.float32)      # even and odd sides
  y = affine_images(x, zero, one)
  assert y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_array_equal(y, x)
  u = rng.integers(0, 256, size=(b, 7, 5), dtype=np.uint8)
  v = affine_images(u, zero, one)
  assert v.dtype == np.uint8
  np.testing.assert_array_equal(v, u)
  d = rng.random((b, 5, 5))
  np.testing.assert_allclose(affine_images(d, zero, one), d, rtol=1e-6)   # float64 kept as dtype
  assert affine_images(d, zero, one).dtype == np.float64


def test_quarter_turn_is_rot90_counter_clockwise(rng):
  # np.rot90(…, 1, axes=(1, 2)) turns counter-clockwise as displayed (rows down):
  # the pixel right of the centre goes above it, as the docstring's example says.
  x = rng.random((2, 7, 7, 3)).astype(np.float32)
  y = affine_images(x, np.full(2, np.pi / 2), np.ones(2))
  np.testing.assert_allclose(y, np.rot90(x, 1, axes=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(affine_images(x, np.full(2, -np.pi / 2), np.ones(2)),
                             np.rot90(x, -1, axes=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(affine_images(x, np.full(2, np.pi), np.ones(2)),
                             x[:, ::-1, ::-1], atol=1e-6)
  u = rng.integers(0, 256, size=(2, 9, 9), dtype=np.uint8)
  np.testing.assert_array_equal(affine_images(u, np.full(2, np.pi / 2), np.ones(2)),
                                np.rot90(u, 1, axes=(1, 2)))
  dot = np.zeros((1, 5, 5))
  dot[0, 2, 4] = 1.0
  turned = affine_images(dot, np.array([np.pi / 2]), np.array([1.0]))
  assert np.argwhere(turned[0] > 0.5).tolist() == [[0, 2]]


def test_scale_enlarges_about_the_centre():
  x = np.zeros((1, 9, 9), np.float32)
  x[0, 4, 4] = 1.0
  y = affine_images(x, np.zeros(1), np.array([2.0]))[0]
  assert np.unravel_index(np.argmax(y), y.shape) == (4, 4) and y[4, 4] == 1.0
  rows, cols = np.mgrid[:9, :9]
  assert (rows * y).sum() / y.sum() == pytest.approx(4.0)
  assert (cols * y).sum() / y.sum() == pytest.approx(4.0)
  # A dot two pixels right of the centre moves to four pixels right of it.
  x = np.zeros((1, 9, 9), np.float32)
  x[0, 4, 6] = 1.0
  y = affine_images(x, np.zeros(1), np.array([2.0]))[0]
  assert y[4, 8] == 1.0 and y[4, 6] == 0.0
  # Scale ½ shrinks: a pixel four right of the centre lands two right of it.
  x = np.zeros((1, 9, 9), np.float32)
  x[0, 4, 8] = 1.0
  y = affine_images(x, np.zeros(1), np.array([0.5]))[0]
  assert y[4, 6] == 1.0 and y.sum() == 1.0


def test_channels_are_transformed_alike(rng):
  x = rng.random((3, 8, 8, 3)).astype(np.float32)
  angles, scales = np.array([0.3, -1.0, 2.0]), np.array([0.8, 1.2, 1.0])
  y = affine_images(x, angles, scales)
  assert y.shape == x.shape
  for c in range(3):
    np.testing.assert_array_equal(y[..., c], affine_images(x[..., c], angles, scales))
  # Each image by its own angle and scale.
  for i in range(3):
    np.testing.assert_array_equal(y[i:i + 1], affine_images(x[i:i + 1], angles[i:i + 1],
                                                            scales[i:i + 1]))
  # Outside the source reads 0: a shrunk image has a black border.
  small = affine_images(np.ones((1, 8, 8), np.float32), np.zeros(1), np.array([0.5]))[0]
  assert small[0].max() == 0 and small[4, 4] == 1.0


# ------------------------------------------------------------- HostAugment


def _batch(rng, b=4):
  return rng.random((b, 12, 12, 1)).astype(np.float32)


def test_a_process_gets_the_rows_the_whole_batch_gets(rng):
  aug = cdata.HostAugment(max_rotation=10, max_scale=0.1, max_shift=2)
  x = _batch(rng)
  whole = aug(x, np.arange(4), 4, seed=7, step=3)
  rows = np.array([1, 3])
  part = aug(x[rows], rows, 4, seed=7, step=3)
  np.testing.assert_array_equal(part, whole[rows])
  assert not np.array_equal(whole, x)


def test_draws_are_a_function_of_seed_and_step(rng):
  aug = cdata.HostAugment(max_rotation=10, max_scale=0.1, max_shift=2)
  x = _batch(rng)
  rows = np.arange(4)
  a = aug(x, rows, 4, seed=7, step=3)
  np.testing.assert_array_equal(aug(x, rows, 4, seed=7, step=3), a)
  assert not np.array_equal(aug(x, rows, 4, seed=7, step=4), a)
  assert not np.array_equal(aug(x, rows, 4, seed=8, step=3), a)


def test_shift_alone_draws_as_before(rng):
  # HostAugment(max_shift=2) as before max_rotation and max_scale existed: one draw of the
  # offsets for the whole batch from stream 1 of (seed, step).
  x = _batch(rng, 5)
  got = cdata.HostAugment(max_shift=2)(x, np.arange(5), 5, seed=11, step=6)
  dy, dx = np.random.default_rng([11, 6, 1]).integers(0, 5, size=(2, 5))
  np.testing.assert_array_equal(got, cdata.shift_images(x, 2, dy, dx))


def test_all_three_compose_as_documented(rng):
  # Shifts, then angles, then scales from one generator; applied rotate-and-scale, then shift.
  x = _batch(rng)
  got = cdata.HostAugment(max_rotation=10, max_scale=0.1, max_shift=2)(
      x, np.arange(4), 4, seed=2, step=9)
  g = np.random.default_rng([2, 9, 1])
  dy, dx = g.integers(0, 5, size=(2, 4))
  angles = np.deg2rad(g.uniform(-10, 10, 4))
  scales = g.uniform(0.9, 1.1, 4)
  want = cdata.shift_images(affine_images(x, angles, scales), 2, dy, dx)
  np.testing.assert_array_equal(got, want)
  # Rotation alone: the first draws of the generator are the angles.
  only = cdata.HostAugment(max_rotation=10)(x, np.arange(4), 4, seed=2, step=9)
  g = np.random.default_rng([2, 9, 1])
  np.testing.assert_array_equal(
      only, affine_images(x, np.deg2rad(g.uniform(-10, 10, 4)), np.ones(4)))


def test_no_augmentation_returns_the_input(rng):
  x = _batch(rng)
  assert cdata.HostAugment()(x, np.arange(4), 4, seed=0, step=0) is x
