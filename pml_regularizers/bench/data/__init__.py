"""Data sets of the benchmark runner.

Two pipelines. Grayscale: loaders decode every image once and return an :class:`ImageSet`
(grayscale ``uint8`` images held in memory) or a :class:`FeatureSet` (precomputed features).
Natural (CUB, Cars196, SOP and image folders): the ``list_*`` functions return a :class:`FileSet`
(paths only) that :class:`NaturalImageDataset` serves, decoding each image as RGB when it is
served, through the :func:`natural_transforms`. Labels are ``0..num_classes-1`` in sorted order of
the class names, the same in both pipelines. The split helpers make class-disjoint train/test
halves and cross-validation folds.
"""

from ..errors import DataWarning, ImageDecodeError
from .arrays import load_arrays
from .download import download_file, safe_extract_zip
from .features import load_features
from .folder import list_image_folder, load_image_folder
from .glyphs import load_glyphs
from .images import FeatureDataset, FeatureSet, FileSet, ImageSet, TensorImageDataset
from .natural import NaturalImageDataset
from .omniglot import load_omniglot
from .pml_folders import list_cars196, list_cub, list_sop, load_cars196, load_cub, load_sop
from .registry import PIPELINES, dataset_names, load_dataset
from .splits import class_disjoint_split, class_kfold, training_folds
from .transforms import IMAGENET_MEAN, IMAGENET_STD, natural_transforms

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIPELINES",
    "DataWarning",
    "FeatureDataset",
    "FeatureSet",
    "FileSet",
    "ImageDecodeError",
    "ImageSet",
    "NaturalImageDataset",
    "TensorImageDataset",
    "class_disjoint_split",
    "class_kfold",
    "training_folds",
    "dataset_names",
    "download_file",
    "list_cars196",
    "list_cub",
    "list_image_folder",
    "list_sop",
    "load_cars196",
    "load_cub",
    "load_arrays",
    "load_dataset",
    "load_features",
    "load_glyphs",
    "load_image_folder",
    "load_omniglot",
    "load_sop",
    "natural_transforms",
    "safe_extract_zip",
]
