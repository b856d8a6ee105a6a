"""Data: CSV-driven data lists, image readers, samplers, cached datasets and the built-in demo data."""

from .datalist import (
    CSVDataSpec,
    DataListError,
    Problem,
    SplitLists,
    list_images,
    read_csv_datalist,
    resolve_under_root,
    split_datalist,
)
from .datasets import CACHE_MODES, SKIPPED, SkipBadDataset, collate_skipping, intensity_stats, make_dataset
from .demo import DemoDataConfig, DemoSample, ensure_demo_dataset, generate_demo_dataset, render_sample
from .dicom import DicomReader, is_dicom_file
from .formats import IMAGE_EXTENSIONS, image_stem
from .readers import DicomSeriesReader, SimpleITKReader, default_readers
from .sampling import SAMPLING_MODES, BalancedSampler, make_sampler

__all__ = [
    "BalancedSampler",
    "CACHE_MODES",
    "CSVDataSpec",
    "DataListError",
    "DemoDataConfig",
    "DemoSample",
    "DicomReader",
    "DicomSeriesReader",
    "IMAGE_EXTENSIONS",
    "Problem",
    "SAMPLING_MODES",
    "SKIPPED",
    "SkipBadDataset",
    "SimpleITKReader",
    "SplitLists",
    "collate_skipping",
    "default_readers",
    "ensure_demo_dataset",
    "generate_demo_dataset",
    "image_stem",
    "intensity_stats",
    "is_dicom_file",
    "list_images",
    "make_dataset",
    "make_sampler",
    "read_csv_datalist",
    "render_sample",
    "resolve_under_root",
    "split_datalist",
]
