"""Input pipelines: the bundled digits, class-disjoint and closed-set splits, P×K sampling, augmentation.

Everything here is numpy on the host; a batch is a deterministic function of
(seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from circle_jax.data._augment import random_shift
from circle_jax.data._digits import load_digits
from circle_jax.data._digits import load_mnist_5k
from circle_jax.data._digits import mnist_5k_path
from circle_jax.data._pipeline import RetrievalData
from circle_jax.data._pipeline import load_retrieval_data
from circle_jax.data._pipeline import train_batch
from circle_jax.data._sampling import pk_batch_indices
from circle_jax.data._sampling import shuffled_batch_indices
from circle_jax.data._split import class_disjoint_split
from circle_jax.data._split import stratified_split

__all__ = (
    "RetrievalData",
    "class_disjoint_split",
    "load_digits",
    "load_mnist_5k",
    "load_retrieval_data",
    "mnist_5k_path",
    "pk_batch_indices",
    "random_shift",
    "shuffled_batch_indices",
    "stratified_split",
    "train_batch",
)
