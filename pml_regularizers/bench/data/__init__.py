"""Data sets of the benchmark runner: decoded in memory once, served as tensors.

Loaders return an :class:`ImageSet` (grayscale ``uint8`` images) or a :class:`FeatureSet`
(precomputed features), labelled ``0..num_classes-1`` in sorted order of the class names. The
split helpers make class-disjoint train/test halves and cross-validation folds.
"""

from .download import download_file, safe_extract_zip
from .features import load_features
from .folder import load_image_folder
from .glyphs import load_glyphs
from .images import FeatureDataset, FeatureSet, ImageSet, TensorImageDataset
from .omniglot import load_omniglot
from .pml_folders import load_cars196, load_cub, load_sop
from .registry import dataset_names, load_dataset
from .splits import class_disjoint_split, class_kfold, training_folds

__all__ = [
    "FeatureDataset",
    "FeatureSet",
    "ImageSet",
    "TensorImageDataset",
    "class_disjoint_split",
    "class_kfold",
    "training_folds",
    "dataset_names",
    "download_file",
    "load_cars196",
    "load_cub",
    "load_dataset",
    "load_features",
    "load_glyphs",
    "load_image_folder",
    "load_omniglot",
    "load_sop",
    "safe_extract_zip",
]
