"""Datasets for training and evaluation: images of any size, in memory when they fit, streamed when not.

A data spec is one of:
  * ``cifar10`` / ``cifar100``: torchvision's copy (downloaded when online); for ``cifar10`` the
    environment variable ``COMPRESS_DATA`` may point at a local archive or folder instead;
  * an ImageFolder directory with ``train/`` and ``test/`` sub-folders (one folder per class);
  * a ``.tar`` / ``.tar.gz`` archive holding the same layout.
A torch ``Dataset`` or ``DataLoader`` from the user's own code is wrapped by `from_torch`.
`DataOptions` (compress.data.options) is a dataset as the stages use it, sized for a model by one rule.

Every dataset kind has the same interface (see `ImageData`), which training, evaluation and BN
recalibration use: ``classes``, ``input_size`` (C, H, W), ``len()``, ``labels``, ``subset(indices)``,
``channel_stats()``, ``eval_images()`` and ``batches(...)``.
"""

from compress.data.augment import augment_crop_flip, normalize, random_resized_crop_flip
from compress.data.cache import CACHE_ENV, cache_dir
from compress.data.load import DATA_DIR_ENV, DATA_ENV, MODES, load_dataset, resolve_spec
from compress.data.memory import Batches, ImageSet, stratified_indices, stratified_subset
from compress.data.options import DataOptions, data_source, load_dataset_for, sized_for
from compress.data.protocol import ImageData
from compress.data.sources import IMAGE_SUFFIXES, SPLIT_ALIASES
from compress.data.stream import StreamBatches, StreamSet
from compress.data.torch_source import from_torch

__all__ = [
    "CACHE_ENV", "DATA_DIR_ENV", "DATA_ENV", "IMAGE_SUFFIXES", "MODES", "SPLIT_ALIASES", "Batches", "DataOptions",
    "ImageData", "ImageSet", "StreamBatches", "StreamSet", "augment_crop_flip", "cache_dir", "data_source", "from_torch",
    "load_dataset", "load_dataset_for", "normalize", "random_resized_crop_flip", "resolve_spec", "sized_for",
    "stratified_indices", "stratified_subset",
]
