"""Retrieval metrics computed in row blocks (never an N × N matrix at once)."""

from circle_jax.metrics._recall import recall_at_k

__all__ = ("recall_at_k",)
