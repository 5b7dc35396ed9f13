"""Input pipelines: bundled digits (class-disjoint and closed-set splits), bundled Omniglot
(background splits, one-shot runs), re-ID folders, face
packs, TFDS fine-grained sets; P×K sampling, augmentation; per-process batches on grain.

Everything here runs on the host; a batch is a deterministic function of
(seed, step), so a resumed run sees exactly the batches it would have seen.
The fine-grained sets (``load_fine_grained``, ``tfds_train_batches``,
``tfds_eval_images``, ``FineGrainedSource``) read directories that TFDS
prepared in the ArrayRecord format with tensorflow-datasets (imported when
first called, never at ``import circle_jax.data``) and decode with Pillow:
TensorFlow is needed only to prepare such a directory (``tfds build …
--file_format=array_record``), not to train or evaluate on it.
"""

from circle_jax.data._augment import random_resized_crop_box
from circle_jax.data._augment import random_shift
from circle_jax.data._augment import random_flip
from circle_jax.data._augment import flip_images
from circle_jax.data._augment import shift_images
from circle_jax.data._loader import EvalBatches
from circle_jax.data._loader import HostAugment
from circle_jax.data._loader import RandomResizedCrop
from circle_jax.data._loader import SAMPLERS
from circle_jax.data._loader import TrainBatches
from circle_jax.data._loader import batch_indices
from circle_jax.data._loader import grain_batches
from circle_jax.data._loader import normalise_images
from circle_jax.data._errors import DatasetError
from circle_jax.data._errors import DatasetNotFoundError
from circle_jax.data._face import load_identity_folders
from circle_jax.data._face import load_verification_bin
from circle_jax.data._face import read_verification_bin
from circle_jax.data._ijb import IjbProtocol
from circle_jax.data._ijb import load_ijb
from circle_jax.data._images import decode_image
from circle_jax.data._images import encode_image
from circle_jax.data._images import load_image
from circle_jax.data._omniglot import OmniglotSet
from circle_jax.data._omniglot import OneShotRuns
from circle_jax.data._omniglot import ZipImageSource
from circle_jax.data._omniglot import load_omniglot_background
from circle_jax.data._omniglot import load_one_shot_runs
from circle_jax.data._omniglot import omniglot_path
from circle_jax.data._omniglot import unseen_alphabets
from circle_jax.data._recordio import RecordIOReader
from circle_jax.data._recordio import face_pack_index
from circle_jax.data._recordio import unpack_record
from circle_jax.data._reid import ReidDataset
from circle_jax.data._reid import ReidSplit
from circle_jax.data._reid import load_market1501
from circle_jax.data._reid import load_msmt17
from circle_jax.data._reid import parse_market1501_name
from circle_jax.data._sources import ArrayImageSource
from circle_jax.data._sources import EncodedImageSource
from circle_jax.data._sources import FileImageSource
from circle_jax.data._sources import ImageSource
from circle_jax.data._sources import RecordIOImageSource
from circle_jax.data._tfds import FINE_GRAINED
from circle_jax.data._tfds import EncodedImages
from circle_jax.data._tfds import FineGrainedData
from circle_jax.data._tfds import FineGrainedSource
from circle_jax.data._tfds import TfdsRecords
from circle_jax.data._tfds import class_half_split
from circle_jax.data._tfds import eval_images as tfds_eval_images
from circle_jax.data._tfds import load_fine_grained
from circle_jax.data._tfds import train_batches as tfds_train_batches
from circle_jax.data._digits import DigitsSplit
from circle_jax.data._digits import load_digits
from circle_jax.data._digits import load_digits_split
from circle_jax.data._digits import load_mnist_5k
from circle_jax.data._digits import mnist_5k_path
from circle_jax.data._sampling import pk_batch_indices
from circle_jax.data._sampling import shuffled_batch_indices
from circle_jax.data._split import class_disjoint_split
from circle_jax.data._split import stratified_split

__all__ = (
    "ArrayImageSource",
    "batch_indices",
    "EncodedImageSource",
    "EvalBatches",
    "flip_images",
    "grain_batches",
    "HostAugment",
    "RandomResizedCrop",
    "random_resized_crop_box",
    "normalise_images",
    "SAMPLERS",
    "shift_images",
    "TrainBatches",
    "class_disjoint_split",
    "class_half_split",
    "DatasetError",
    "DatasetNotFoundError",
    "decode_image",
    "DigitsSplit",
    "encode_image",
    "EncodedImages",
    "face_pack_index",
    "FileImageSource",
    "FINE_GRAINED",
    "FineGrainedData",
    "FineGrainedSource",
    "TfdsRecords",
    "IjbProtocol",
    "ImageSource",
    "load_digits",
    "load_digits_split",
    "load_fine_grained",
    "load_identity_folders",
    "load_ijb",
    "load_image",
    "load_market1501",
    "load_mnist_5k",
    "load_msmt17",
    "load_verification_bin",
    "mnist_5k_path",
    "load_omniglot_background",
    "load_one_shot_runs",
    "omniglot_path",
    "OmniglotSet",
    "OneShotRuns",
    "unseen_alphabets",
    "ZipImageSource",
    "parse_market1501_name",
    "pk_batch_indices",
    "random_flip",
    "random_shift",
    "read_verification_bin",
    "RecordIOImageSource",
    "RecordIOReader",
    "ReidDataset",
    "ReidSplit",
    "shuffled_batch_indices",
    "stratified_split",
    "tfds_eval_images",
    "tfds_train_batches",
    "unpack_record",
)
