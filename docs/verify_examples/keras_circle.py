"""Keras 3's Circle loss object on its JAX backend (a scalar: the mean over loss > 0).

  python -m circle_jax.verify docs/verify_examples/keras_circle.py:circle_loss --framework jax
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras fixes its backend on first import

import keras  # noqa: E402


def circle_loss(embeddings, labels, *, margin, gamma):
  # dtype: Keras casts to float32 by default; keep the problem's precision.
  loss = keras.losses.Circle(gamma=gamma, margin=margin, dtype=str(embeddings.dtype))
  return loss(labels, embeddings)
