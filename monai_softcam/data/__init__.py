"""Data: the built-in demo dataset and CSV/folder data lists."""

from .datalist import DataListError, IMAGE_EXTENSIONS, list_images, read_csv_datalist, resolve_under_root
from .demo import DemoDataConfig, DemoSample, ensure_demo_dataset, generate_demo_dataset, render_sample

__all__ = [
    "DataListError",
    "DemoDataConfig",
    "DemoSample",
    "IMAGE_EXTENSIONS",
    "ensure_demo_dataset",
    "generate_demo_dataset",
    "list_images",
    "read_csv_datalist",
    "render_sample",
    "resolve_under_root",
]
