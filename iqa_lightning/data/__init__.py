"""Datasets for image quality assessment: records, splits, data modules, synthetic data."""

from .agiqa import AGIQA3KDataModule
from .base import IQADataModule
from .cache import ImageCache
from .clive import CLIVEDataModule
from .csiq import CSIQDataModule
from .dataset import IQAImageDataset, LabelledImage
from .images import ImageLoadError, image_to_tensor, load_rgb, to_rgb
from .instruct import (
    Conversation,
    InstructDataset,
    InstructFormatError,
    MissingImageError,
    collate_instruct,
    read_qinstruct,
)
from .instruct_synthetic import SyntheticInstructDataModule, generate_synthetic_instruct
from .kadid import KADIDDataModule
from .koniq import KonIQDataModule
from .live import LIVEDataModule
from .mixture import InstructDataModule, TaskMixtureLoader
from .pipal import PIPALDataModule
from .pyiqa import LAYOUTS, MetaRow, PyiqaLayoutDataModule, read_meta_info, read_split_pickle
from .qbench import MCQ, MCQDataset, collate_mcq, letters, mcq_accuracy, mcq_prompt, read_qbench
from .records import AnnotationError, AnnotationRow, ImageRecord, read_annotation_csv
from .spaq import SPAQDataModule
from .splits import SPLIT_NAMES, SPLIT_STRATEGIES, SplitError, assign_splits, check_ratios
from .synthetic import SyntheticDataModule, generate_synthetic_kadid, synthetic_dirname
from .tid2013 import TID2013DataModule

__all__ = [
    "AGIQA3KDataModule",
    "AnnotationError",
    "AnnotationRow",
    "CLIVEDataModule",
    "CSIQDataModule",
    "Conversation",
    "IQADataModule",
    "IQAImageDataset",
    "ImageCache",
    "ImageLoadError",
    "ImageRecord",
    "InstructDataModule",
    "InstructDataset",
    "InstructFormatError",
    "KADIDDataModule",
    "KonIQDataModule",
    "LAYOUTS",
    "LIVEDataModule",
    "LabelledImage",
    "MCQ",
    "MCQDataset",
    "MetaRow",
    "MissingImageError",
    "PIPALDataModule",
    "PyiqaLayoutDataModule",
    "SPAQDataModule",
    "SPLIT_NAMES",
    "SPLIT_STRATEGIES",
    "SplitError",
    "SyntheticDataModule",
    "SyntheticInstructDataModule",
    "TID2013DataModule",
    "TaskMixtureLoader",
    "assign_splits",
    "check_ratios",
    "collate_instruct",
    "collate_mcq",
    "generate_synthetic_instruct",
    "generate_synthetic_kadid",
    "image_to_tensor",
    "letters",
    "load_rgb",
    "mcq_accuracy",
    "mcq_prompt",
    "read_annotation_csv",
    "read_meta_info",
    "read_qbench",
    "read_qinstruct",
    "read_split_pickle",
    "synthetic_dirname",
    "to_rgb",
]
