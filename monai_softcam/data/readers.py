"""Image readers for MONAI's ``LoadImage``, and the one rule that picks a file's reader.

Every reader returns arrays in MONAI's axis order (x, y[, z]; channels last for colour images,
moved first by ``EnsureChannelFirst``) and an ``affine`` in RAS, as MONAI's own readers do; Slicer
and NIfTI use RAS too, while DICOM and ITK store LPS, so the affine is converted.

* :class:`~monai_softcam.data.readers.SimpleITKReader`: PNG, JPEG, TIFF, BMP (8- and 16-bit, grey or RGB: 16-bit
  colour keeps its precision, unlike PIL), mapped to float32 in [0, 1]: 8-bit data by 0-255, deeper data by its
  effective range (:func:`~monai_softcam.data.dicom.effective_range`: 12-bit data in a 16-bit file by 12 bits);
  NRRD and MetaImage (``.mha``/``.mhd``) keep their values (e.g. CT in Hounsfield units).
* :class:`~monai_softcam.data.readers.DicomSeriesReader`: a folder holding one DICOM series (CT/MR), stacked by
  position with SimpleITK/GDCM; values rescaled (CT in Hounsfield units).
* :class:`~monai_softcam.data.dicom.DicomReader` (:mod:`monai_softcam.data.dicom`): single DICOM files.

NIfTI stays with MONAI's ``NibabelReader``. :func:`~monai_softcam.data.readers.default_readers`,
:func:`~monai_softcam.data.readers.reader_for` and :func:`~monai_softcam.data.readers.probe_image` choose among
them by name and content; the formats and their file-name endings are :mod:`monai_softcam.data.formats`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
from monai.data import ImageReader

from .dicom import DicomReader, _dcmread, _pixel_data_problem, effective_range, is_dicom_file
from .formats import PHOTO_SUFFIXES, SIMPLEITK_SUFFIXES, _meta, _single
from .rules import InputRules, header_shape

__all__ = [
    "DicomSeriesReader",
    "SimpleITKReader",
    "default_readers",
    "dicom_series",
    "probe_image",
    "quiet_reader_setup",
    "read_checked",
    "reader_for",
]

logger = logging.getLogger("monai_softcam")


class SimpleITKReader(ImageReader):
    """Read 2D/3D images with SimpleITK (see the module docstring for the formats)."""

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        """Whether every name ends with one of ``SIMPLEITK_SUFFIXES``."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return bool(names) and all(
            os.fspath(n).lower().endswith(SIMPLEITK_SUFFIXES) and not os.path.isdir(os.fspath(n)) for n in names
        )

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        """``(path, SimpleITK image)`` of the one file given; a ValueError for another format or an unreadable file."""
        import SimpleITK  # heavy: SimpleITK, loaded when an image needs it

        path = _single(data)
        if not self.verify_suffix(path):  # MONAI tries every given reader: leave other formats to theirs
            raise ValueError(f"{path}: not a {', '.join(SIMPLEITK_SUFFIXES)} file")
        try:
            return path, SimpleITK.ReadImage(path)
        except RuntimeError as err:  # ITK's exception text is long; keep its first line
            raise ValueError(f"{path}: not a readable image ({str(err).strip().splitlines()[-1]})") from err

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The image as an array ``x, y (, z) [, c]`` (photos' unsigned integers mapped to [0, 1]) and its metadata."""
        import SimpleITK  # heavy: SimpleITK, loaded when an image needs it

        path, image = img
        array = SimpleITK.GetArrayViewFromImage(image)  # (z,) y, x [, c]
        channels = image.GetNumberOfComponentsPerPixel() > 1
        spatial = image.GetDimension()
        order = list(range(spatial))[::-1] + ([spatial] if channels else [])
        array = np.ascontiguousarray(np.transpose(array, order))  # x, y (, z) [, c]
        if path.lower().endswith(PHOTO_SUFFIXES) and array.dtype.kind == "u":
            # the container says nothing of the bits used (12-bit X-rays in 16-bit PNG/TIFF): map to
            # [0, 1] by the effective range, as DICOM's stored bits; 8-bit data by 0-255
            low, high = effective_range(array, 8 * array.dtype.itemsize, signed=False)
            array = ((array.astype(np.float32) - low) / (high - low)).astype(np.float32)
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(spatial, spatial)
        affine = np.eye(4)
        affine[:spatial, :spatial] = direction * np.asarray(image.GetSpacing(), dtype=float)[None, :]
        affine[:spatial, 3] = image.GetOrigin()
        return array, _meta(array, affine, channels, path)


def dicom_series(folder: str) -> list[str]:
    """The files of the one DICOM series in ``folder``, sorted by position; a ValueError naming the
    folder if it holds no series or several."""
    import SimpleITK  # heavy: SimpleITK, loaded when an image needs it

    shown = SimpleITK.ProcessObject.GetGlobalWarningDisplay()
    SimpleITK.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found": said below, by name
    try:
        ids = SimpleITK.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    finally:
        SimpleITK.ProcessObject.SetGlobalWarningDisplay(shown)
    if not ids:
        raise ValueError(f"{folder}: no DICOM series in this folder")
    if len(ids) > 1:
        raise ValueError(
            f"{folder}: {len(ids)} DICOM series in one folder ({', '.join(ids)}); give one series per folder"
        )
    return list(SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))


class DicomSeriesReader(SimpleITKReader):
    """Read a folder holding one DICOM series as a volume (SimpleITK/GDCM).

    Args:
        spatial_dims: 2 refuses series of more than one slice with a clear message.
    """

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        """Whether the name is one folder."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and os.path.isdir(os.fspath(names[0]))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        """``(folder, SimpleITK volume)`` of the folder's one DICOM series; a ValueError for anything but a folder
        of one readable series, or for a series of several slices in 2D."""
        import SimpleITK  # heavy: SimpleITK, loaded when an image needs it

        path = _single(data)
        if not os.path.isdir(path):  # MONAI tries every given reader: leave files to the others
            raise ValueError(f"{path}: not a folder")
        files = dicom_series(path)
        if len(files) > 1 and self.spatial_dims == 2:
            raise ValueError(f"{path}: a DICOM series of {len(files)} slices cannot be used as a 2D image")
        reader = SimpleITK.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            return path, reader.Execute()
        except RuntimeError as err:
            raise ValueError(f"{path}: not a readable DICOM series ({str(err).strip().splitlines()[-1]})") from err


def default_readers(spatial_dims: int = 2, frame: int | None = None, window: bool = False) -> list[ImageReader]:
    """The readers the preprocessing puts before MONAI's defaults (NIfTI and anything else); ``frame``: the frame
    2D configs take from multi-frame DICOM files, ``window``: DICOM files map to [0, 1] through their VOI
    LUT/window (:class:`~monai_softcam.data.dicom.DicomReader`)."""
    dicom = DicomReader(spatial_dims=spatial_dims, frame=frame, window=window)
    return [DicomSeriesReader(spatial_dims=spatial_dims), dicom, SimpleITKReader()]


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


def probe_image(path: str, rules: InputRules | None = None) -> str:
    """Read only the header of an image file: "" when it looks readable, else what is wrong.

    Fast (no pixel data is decoded), so every file of a large dataset can be probed before
    training; it finds files that are not images, of an unknown format, or with a broken header,
    truncated JPEG/PNG files and, with ``rules`` (the task's :class:`~monai_softcam.data.rules.InputRules`),
    images too large to decode, of the wrong number of spatial dimensions or smaller than the network's
    smallest input. DICOM files without pixel data, or with less of it than their header asks for
    (uncompressed syntaxes), are found here; damaged compressed pixel data, like any other file whose pixel
    data alone is damaged, passes here and fails, named, when it is decoded (``python -m monai_softcam
    check-data`` decodes every image in full).
    """
    shape: list[int] | None = None
    check_dims = True
    try:
        if os.path.isdir(path):
            files = dicom_series(path)
            ds = _dcmread(files[0], defer_size=1024)
            shape = [int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), len(files)]
        elif is_dicom_file(path):
            ds = _dcmread(path, defer_size=1024)  # large values (the pixel data) are not read
            if "Rows" not in ds or "Columns" not in ds:
                return "a DICOM file without an image (no Rows/Columns)"
            problem = _pixel_data_problem(ds, path)
            if problem:
                return problem
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            shape = [int(ds.Columns), int(ds.Rows)] + ([frames] if frames > 1 else [])
            check_dims = False  # the DICOM reader takes a frame for 2D tasks, or refuses the file by name
        else:
            shape = header_shape(path)  # other suffixes: left to MONAI's readers when the image is loaded
    except Exception as err:
        text = re.sub(r"\(0x[0-9a-fA-F]+\)", "", str(err)).strip().splitlines()  # ITK prints object addresses
        return f"unreadable image ({text[-1] if text else type(err).__name__})"
    if rules is None:  # no task: the file's own checks, and the largest default size
        return InputRules(spatial_dims=3).header_problem(path, shape, check_dims=False)
    return rules.header_problem(path, shape, check_dims)


def read_checked(loader: Any, path: Any, rules: InputRules, reader: Any = None) -> Any:
    """``path`` read by ``loader`` (a MONAI ``LoadImage``) as every run reads an image: its header checked by
    ``rules`` before decoding (:func:`probe_image`), decoded by the reader its name calls for (or ``reader``), its
    pixels checked and conformed (:meth:`~monai_softcam.data.rules.InputRules.conform`). A ValueError says what
    is wrong; the callers name the file."""
    problem = probe_image(path, rules) if isinstance(path, str) else ""
    if problem:
        raise ValueError(problem)
    return rules.conform(loader(path, reader or reader_for(loader, path)), path)
