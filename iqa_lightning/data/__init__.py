"""Datasets for image quality assessment: records, splits, data modules, synthetic data."""

from .base import IQADataModule
from .cache import ImageCache
from .checks import CHECK_LEVELS, ImageCheckError
from .dataset import IQAImageDataset, LabelledImage
from .datasets.agiqa import AGIQA3KDataModule
from .datasets.ava import AVADataModule
from .datasets.clive import CLIVEDataModule
from .datasets.csiq import CSIQDataModule
from .datasets.kadid import KADIDDataModule
from .datasets.koniq import KonIQDataModule
from .datasets.konvid import KoNViDDataModule
from .datasets.learning import LearningDataModule, generate_learning_set
from .datasets.live import LIVEDataModule
from .datasets.lsvq import LSVQDataModule
from .datasets.pipal import PIPALDataModule
from .datasets.spaq import SPAQDataModule
from .datasets.synthetic import SyntheticDataModule, generate_synthetic_kadid, synthetic_dirname
from .datasets.table import TableDataModule
from .datasets.tid2013 import TID2013DataModule
from .images import ImageLoadError, image_to_tensor, load_rgb, to_rgb
from .instruct.conversations import (
    Conversation,
    InstructDataset,
    InstructFormatError,
    MissingImageError,
    collate_instruct,
    read_qinstruct,
)
from .instruct.mixture import InstructDataModule, TaskMixtureLoader
from .instruct.qbench import (
    MCQ,
    MCQDataset,
    collate_mcq,
    letters,
    mcq_prompt,
    read_qbench,
)
from .instruct.synthetic import SyntheticInstructDataModule, generate_synthetic_instruct
from .pyiqa import LAYOUTS, MetaRow, PyiqaLayoutDataModule, read_meta_info, read_split_pickle
from .records import AnnotationError, AnnotationRow, ImageRecord, read_annotation_csv
from .spec import DatasetSpec
from .splits import SPLIT_NAMES, SPLIT_STRATEGIES, SplitError, assign_splits, check_ratios
from .video import VideoDataModule

#: What reading, checking and splitting data raises for problems in the user's files or data
#: settings (``prepare_records()`` / ``setup()``); each message names the file, row and key.
#: ``ImageCheckError`` and ``MissingImageError`` are subclasses of two of these.
DATA_ERRORS = (AnnotationError, SplitError, ImageLoadError, InstructFormatError, FileNotFoundError)

__all__ = [
    "AGIQA3KDataModule",
    "AVADataModule",
    "AnnotationError",
    "AnnotationRow",
    "CHECK_LEVELS",
    "CLIVEDataModule",
    "CSIQDataModule",
    "DATA_ERRORS",
    "DatasetSpec",
    "Conversation",
    "IQADataModule",
    "IQAImageDataset",
    "ImageCache",
    "ImageCheckError",
    "ImageLoadError",
    "ImageRecord",
    "InstructDataModule",
    "InstructDataset",
    "InstructFormatError",
    "KADIDDataModule",
    "KonIQDataModule",
    "KoNViDDataModule",
    "LAYOUTS",
    "LIVEDataModule",
    "LSVQDataModule",
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
    "LearningDataModule",
    "SyntheticDataModule",
    "SyntheticInstructDataModule",
    "TID2013DataModule",
    "TableDataModule",
    "TaskMixtureLoader",
    "VideoDataModule",
    "assign_splits",
    "check_ratios",
    "collate_instruct",
    "collate_mcq",
    "generate_learning_set",
    "generate_synthetic_instruct",
    "generate_synthetic_kadid",
    "image_to_tensor",
    "letters",
    "load_rgb",
    "mcq_prompt",
    "read_annotation_csv",
    "read_meta_info",
    "read_qbench",
    "read_qinstruct",
    "read_split_pickle",
    "synthetic_dirname",
    "to_rgb",
]
