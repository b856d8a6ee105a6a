"""The image formats read: the one list of file-name endings (:data:`~monai_softcam.data.formats.IMAGE_EXTENSIONS`,
which :func:`~monai_softcam.data.datalist.list_images` and :func:`~monai_softcam.data.formats.image_stem` use;
DICOM files are also recognised by their content, whatever their name), file-name stems, and the metadata every
reader of the package returns (an ``affine`` in RAS: DICOM and ITK store LPS)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from monai.utils import MetaKeys, SpaceKeys

__all__ = ["DICOM_SUFFIXES", "IMAGE_EXTENSIONS", "NIFTI_SUFFIXES", "PHOTO_SUFFIXES", "SIMPLEITK_SUFFIXES", "image_stem"]


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # SimpleITKReader, mapped to [0, 1]


SIMPLEITK_SUFFIXES = PHOTO_SUFFIXES + (".nrrd", ".nhdr", ".mha", ".mhd")  # SimpleITKReader


DICOM_SUFFIXES = (".dcm", ".dicom")  # DicomReader (and any file with the DICOM preamble)


NIFTI_SUFFIXES = (".nii", ".nii.gz")  # MONAI's NibabelReader


#: the file extensions of the image formats read (the readers' own list; DICOM files are also recognised by content)
IMAGE_EXTENSIONS = SIMPLEITK_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def _single(path: Sequence[Any] | Any) -> str:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if len(paths) != 1:
        raise ValueError(f"one file per image is supported, got {len(paths)}: {paths}")
    return os.fspath(paths[0])


def image_stem(name: str) -> str:
    """``name`` without its image extension: the longest of :data:`IMAGE_EXTENSIONS` it ends with
    (``a.nii.gz`` -> ``a``), else its last suffix (``a.webp`` -> ``a``), except a numeric one, which is
    part of the name (DICOM files named by their UID: ``1.2.840.5`` stays ``1.2.840.5``). Folders are
    kept: ``img/a.png`` -> ``img/a``.
    """
    lower = name.lower()
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return name[: -len(ext)]
    base, ext = os.path.splitext(name)
    return name if ext[1:].isdigit() else base


def _meta(array_xyz: np.ndarray, affine_lps: np.ndarray, channels: bool, path: str) -> dict[str, Any]:
    affine = _LPS_TO_RAS @ affine_lps
    spatial = array_xyz.shape[:-1] if channels else array_xyz.shape
    return {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(spatial),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if channels else float("nan"),
        "filename_or_obj": path,
    }
