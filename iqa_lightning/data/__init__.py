"""Datasets for image quality assessment: records, splits, data modules, synthetic data."""

from .agiqa import AGIQA3KDataModule
from .base import IQADataModule, IQAImageDataset, LabelledImage
from .images import ImageLoadError, image_to_tensor, load_rgb, to_rgb
from .kadid import KADIDDataModule
from .koniq import KonIQDataModule
from .records import AnnotationError, AnnotationRow, ImageRecord, read_annotation_csv
from .splits import SPLIT_NAMES, SPLIT_STRATEGIES, SplitError, assign_splits, check_ratios
from .synthetic import SyntheticDataModule, generate_synthetic_kadid, synthetic_dirname

__all__ = [
    "AGIQA3KDataModule",
    "AnnotationError",
    "AnnotationRow",
    "IQADataModule",
    "IQAImageDataset",
    "ImageLoadError",
    "ImageRecord",
    "KADIDDataModule",
    "KonIQDataModule",
    "LabelledImage",
    "SPLIT_NAMES",
    "SPLIT_STRATEGIES",
    "SplitError",
    "SyntheticDataModule",
    "assign_splits",
    "check_ratios",
    "generate_synthetic_kadid",
    "image_to_tensor",
    "load_rgb",
    "read_annotation_csv",
    "synthetic_dirname",
    "to_rgb",
]
