"""Image readers for MONAI's ``LoadImage``: DICOM (pydicom) and the formats SimpleITK reads.

Both return arrays in MONAI's axis order (x, y[, z]; channels last for colour images, moved first
by ``EnsureChannelFirst``) and an ``affine`` in RAS, as MONAI's own readers do; Slicer and NIfTI
use RAS too, while DICOM and ITK store LPS, so the affine is converted.

* :class:`SimpleITKReader`: PNG, JPEG, TIFF, BMP (8- and 16-bit, grey or RGB: 16-bit colour keeps
  its precision, unlike PIL), mapped to float32 in [0, 1] by their integer type's range; NRRD and
  MetaImage (``.mha``/``.mhd``) keep their values (e.g. CT in Hounsfield units).
* :class:`DicomSeriesReader`: a folder holding one DICOM series (CT/MR), stacked by position with
  SimpleITK/GDCM; values rescaled (CT in Hounsfield units).
* :class:`DicomReader`: single DICOM files. The modality rescale (slope, intercept) is applied, so
  CT comes out in Hounsfield units (float32). Images without a rescale (X-ray, photographs) come
  out as float32 in [0, 1] by their stored bit depth. ``MONOCHROME1`` images (where larger values
  are darker) are inverted to look like ``MONOCHROME2``. RGB/YBR colour is returned as RGB.
  Multi-frame files are refused when ``spatial_dims`` is 2.
NIfTI stays with MONAI's ``NibabelReader``.

:data:`IMAGE_EXTENSIONS` lists every file name ending these readers (and MONAI's NIfTI reader) take;
it is the one list of image formats of the package (:func:`~monai_softcam.data.list_images` and
:func:`image_stem` use it). DICOM files are also recognised by their content, whatever their name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from typing import Any, Iterator, Sequence

import nibabel
import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

__all__ = [
    "IMAGE_EXTENSIONS",
    "DicomReader",
    "DicomSeriesReader",
    "SimpleITKReader",
    "default_readers",
    "dicom_series",
    "image_stem",
    "is_dicom_file",
    "probe_image",
    "quiet_reader_setup",
    "reader_for",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # SimpleITKReader, mapped to [0, 1]
SIMPLEITK_SUFFIXES = PHOTO_SUFFIXES + (".nrrd", ".nhdr", ".mha", ".mhd")  # SimpleITKReader
DICOM_SUFFIXES = (".dcm", ".dicom")  # DicomReader (and any file with the DICOM preamble)
NIFTI_SUFFIXES = (".nii", ".nii.gz")  # MONAI's NibabelReader
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


def is_dicom_file(path: str) -> bool:
    """True for files named ``.dcm``/``.dicom`` or carrying the DICOM preamble (``DICM`` at byte 128)."""
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    if not os.path.isfile(path) or path.lower().endswith(IMAGE_EXTENSIONS + (".gz",)):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


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


class SimpleITKReader(ImageReader):
    """Read 2D/3D images with SimpleITK (see the module docstring for the formats)."""

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return bool(names) and all(os.fspath(n).lower().endswith(SIMPLEITK_SUFFIXES) for n in names)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        import SimpleITK as sitk  # heavy: SimpleITK, loaded when an image needs it

        path = _single(data)
        if not self.verify_suffix(path):  # MONAI tries every given reader: leave other formats to theirs
            raise ValueError(f"{path}: not a {', '.join(SIMPLEITK_SUFFIXES)} file")
        try:
            return path, sitk.ReadImage(path)
        except RuntimeError as err:  # ITK's exception text is long; keep its first line
            raise ValueError(f"{path}: not a readable image ({str(err).strip().splitlines()[-1]})") from err

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk  # heavy: SimpleITK, loaded when an image needs it

        path, image = img
        array = sitk.GetArrayViewFromImage(image)  # (z,) y, x [, c]
        channels = image.GetNumberOfComponentsPerPixel() > 1
        spatial = image.GetDimension()
        order = list(range(spatial))[::-1] + ([spatial] if channels else [])
        array = np.ascontiguousarray(np.transpose(array, order))  # x, y (, z) [, c]
        if path.lower().endswith(PHOTO_SUFFIXES) and array.dtype.kind == "u":
            array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(spatial, spatial)
        affine = np.eye(4)
        affine[:spatial, :spatial] = direction * np.asarray(image.GetSpacing(), dtype=float)[None, :]
        affine[:spatial, 3] = image.GetOrigin()
        return array, _meta(array, affine, channels, path)


def dicom_series(folder: str) -> list[str]:
    """The files of the one DICOM series in ``folder``, sorted by position; a ValueError naming the
    folder if it holds no series or several."""
    import SimpleITK as sitk  # heavy: SimpleITK, loaded when an image needs it

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not ids:
        raise ValueError(f"{folder}: no DICOM series in this folder")
    if len(ids) > 1:
        raise ValueError(f"{folder}: {len(ids)} DICOM series in one folder ({', '.join(ids)}); give one series per folder")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))


class DicomSeriesReader(SimpleITKReader):
    """Read a folder holding one DICOM series as a volume (SimpleITK/GDCM).

    Args:
        spatial_dims: 2 refuses series of more than one slice with a clear message.
    """

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and os.path.isdir(os.fspath(names[0]))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        import SimpleITK as sitk  # heavy: SimpleITK, loaded when an image needs it

        path = _single(data)
        if not os.path.isdir(path):  # MONAI tries every given reader: leave files to the others
            raise ValueError(f"{path}: not a folder")
        files = dicom_series(path)
        if len(files) > 1 and self.spatial_dims == 2:
            raise ValueError(f"{path}: a DICOM series of {len(files)} slices cannot be used as a 2D image")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            return path, reader.Execute()
        except RuntimeError as err:
            raise ValueError(f"{path}: not a readable DICOM series ({str(err).strip().splitlines()[-1]})") from err


class DicomReader(ImageReader):
    """Read one DICOM file with pydicom (see the module docstring for the intensity rules).

    Args:
        spatial_dims: 2 refuses multi-frame files with a clear message; 3 stacks the frames.
    """

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and is_dicom_file(os.fspath(names[0]))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        path = _single(data)
        if not is_dicom_file(path):  # MONAI tries every given reader: leave other formats to theirs
            raise ValueError(f"{path}: not a DICOM file")
        try:
            return path, pydicom.dcmread(path)
        except Exception as err:
            raise ValueError(f"{path}: not a readable DICOM file ({err})") from err

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        path, ds = img
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1 and self.spatial_dims == 2:
            raise ValueError(f"{path}: multi-frame DICOM ({frames} frames) cannot be used as a 2D image")
        try:
            pixels = ds.pixel_array
        except Exception as err:  # compressed syntax without a decoder, missing pixel data, ...
            raise ValueError(f"{path}: cannot decode the DICOM pixel data ({err})") from err
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        channels = int(getattr(ds, "SamplesPerPixel", 1)) > 1  # pydicom already returns YBR colour as RGB
        values = self._intensities(ds, pixels, photometric, channels)
        # pydicom: ([frames,] rows, cols [, samples]) -> MONAI: x = column, y = row (, z = frame)
        if frames > 1:
            values = np.moveaxis(values, 0, 2)  # rows, cols, frames [, c]
        order = [1, 0] + list(range(2, values.ndim))
        array = np.ascontiguousarray(np.transpose(values, order))
        return array, _meta(array, self._affine(ds), channels, path)

    @staticmethod
    def _intensities(ds: Any, pixels: np.ndarray, photometric: str, channels: bool) -> np.ndarray:
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        bits = int(getattr(ds, "BitsStored", 8 * pixels.dtype.itemsize))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        values = pixels.astype(np.float32)
        rescaled = slope != 1 or intercept != 0
        if rescaled:
            values = values * slope + intercept
            low, high = low * slope + intercept, high * slope + intercept
        if photometric == "MONOCHROME1":
            values = (low + high) - values  # same range, larger values brighter
        if not rescaled:
            values = (values - low) / float(high - low)
        return values.astype(np.float32)

    @staticmethod
    def _affine(ds: Any) -> np.ndarray:
        """LPS affine from the image plane module, or from the pixel spacing alone (projection X-ray)."""
        spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None) or [1.0, 1.0]
        row_spacing, col_spacing = float(spacing[0]), float(spacing[1])
        affine = np.eye(4)
        orientation = getattr(ds, "ImageOrientationPatient", None)
        position = getattr(ds, "ImagePositionPatient", None)
        if orientation is not None and position is not None:
            row_dir = np.asarray(orientation[:3], dtype=float)  # direction of increasing column index
            col_dir = np.asarray(orientation[3:], dtype=float)  # direction of increasing row index
            affine[:3, 0] = row_dir * col_spacing
            affine[:3, 1] = col_dir * row_spacing
            normal = np.cross(row_dir, col_dir)
            thickness = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 1) or 1)
            affine[:3, 2] = normal * thickness
            affine[:3, 3] = np.asarray(position, dtype=float)
        else:
            affine[0, 0], affine[1, 1] = col_spacing, row_spacing
        return affine


def default_readers(spatial_dims: int = 2) -> list[ImageReader]:
    """The readers the preprocessing puts before MONAI's defaults (NIfTI and anything else)."""
    return [DicomSeriesReader(spatial_dims=spatial_dims), DicomReader(spatial_dims=spatial_dims), SimpleITKReader()]


@contextlib.contextmanager
def quiet_reader_setup() -> Iterator[None]:
    """Silence the two messages MONAI prints when it builds its nvImageCodec DICOM reader on a machine
    without nvImageCodec (a GPU decoder this package does not use; every ``LoadImage`` builds all of
    MONAI's readers). Nothing else is silenced."""
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
            yield
    finally:
        plugin_log.setLevel(level)


def reader_for(loader: Any, path: Any) -> Any:
    """The reader of ``loader`` that claims ``path`` by its name (the readers given to it first, then
    MONAI's), to pass as ``loader(path, reader)`` so that no other reader is tried on the file; None
    (MONAI then tries every reader) if none claims it."""
    for candidate in loader.readers[::-1]:  # the readers given come last in the list, and win
        if candidate.verify_suffix(path):
            return candidate
    return None


def probe_image(path: str) -> str:
    """Read only the header of an image file: "" when it looks readable, else what is wrong.

    Fast (no pixel data is decoded), so every file of a large dataset can be probed before
    training; it finds files that are not images, of an unknown format, or with a broken header.
    A file whose pixel data alone is damaged passes here and fails, named, when it is decoded
    (``python -m monai_softcam check-data`` decodes every image in full).
    """
    lower = path.lower()
    try:
        if os.path.isdir(path):
            dicom_series(path)
        elif is_dicom_file(path):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                return "a DICOM file without an image (no Rows/Columns)"
        elif lower.endswith(NIFTI_SUFFIXES):
            nibabel.load(path)
        elif lower.endswith(SIMPLEITK_SUFFIXES):
            import SimpleITK as sitk  # heavy: SimpleITK, loaded when an image needs it

            reader = sitk.ImageFileReader()
            reader.SetFileName(path)
            reader.ReadImageInformation()
        # other suffixes: left to MONAI's readers when the image is loaded
    except Exception as err:
        text = re.sub(r"\(0x[0-9a-fA-F]+\)", "", str(err)).strip().splitlines()  # ITK prints object addresses
        return f"unreadable image ({text[-1] if text else type(err).__name__})"
    return ""
