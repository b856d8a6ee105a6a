"""What an input image must be, checked the same way wherever images enter: the header check before a run
(:func:`~monai_softcam.data.readers.probe_image`: training's split lists, inference's inputs), the reader of
every run (:class:`~monai_softcam.transforms.input.ReadImaged`) and ``check-data``, which decodes every file.

:class:`InputRules` holds the task's side of it: its spatial dimensions, the network's smallest input (one cell
of its output grid) and the largest image decoded. Before decoding (:meth:`InputRules.header_problem`): the
size from the header (a 20000 x 20000 PNG of 438 KB would take gigabytes), the spatial dimensions, and
truncated JPEG/PNG files (libjpeg fills a truncated JPEG with grey and only prints a warning without the file's
name). After decoding (:meth:`InputRules.conform`): a trailing axis of size 1 is dropped (a 2D NIfTI saved as
``32 x 32 x 1``), an RGBA image loses a uniform alpha channel and is refused with a varying one, and NaN or
infinite values are refused."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import nibabel
import torch

from .formats import NIFTI_SUFFIXES, PHOTO_SUFFIXES, SIMPLEITK_SUFFIXES

__all__ = ["MAX_PIXELS", "InputRules", "header_shape"]

logger = logging.getLogger("monai_softcam")

#: the largest image decoded unless ``max_image_pixels`` says otherwise: pixels in 2D, voxels in 3D
MAX_PIXELS = {2: 200_000_000, 3: 1_000_000_000}

_ALPHA_DROPPED: list[str] = []  # the first RGBA file whose uniform alpha channel was dropped (said once)
_TAIL = 4096  # bytes read from a JPEG/PNG's end to find its end marker (trailing padding after it is common)
_END_MARKERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND"}


def _sizes(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class InputRules:
    """The checks every input passes (see the module docstring).

    Args:
        spatial_dims: the task's (2 or 3); an image with more spatial axes (after dropping trailing
            axes of size 1) or fewer is refused.
        max_pixels: the largest image decoded, in pixels (2D) or voxels (3D); None: :data:`MAX_PIXELS`.
            Configs: ``max_image_pixels``.
        min_size: the network's smallest input per spatial axis (one number for all axes): an image
            with a smaller side is refused rather than stretched into a prediction.
    """

    spatial_dims: int = 2
    max_pixels: int | None = None
    min_size: int | Sequence[int] = 1

    def __post_init__(self) -> None:
        if self.max_pixels is not None and (
            isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1
        ):
            raise ValueError(f"max_image_pixels must be a positive integer or null, got {self.max_pixels!r}")

    @property
    def pixel_limit(self) -> int:
        """``max_pixels``, or the default of the task's dimensions."""
        return int(self.max_pixels or MAX_PIXELS.get(self.spatial_dims, MAX_PIXELS[3]))

    def _min_sizes(self) -> list[int]:
        sizes = [self.min_size] * self.spatial_dims if isinstance(self.min_size, int) else list(self.min_size)
        return [int(s) for s in sizes]

    # ------------------------------------------------------------------ before decoding
    def header_problem(self, path: str, shape: Sequence[int] | None, check_dims: bool = True) -> str:
        """ "" or what is wrong with the image at ``path`` whose header gives the spatial ``shape`` (x, y[, z];
        None when the format's header was not read): too many pixels, the wrong number of spatial
        dimensions (``check_dims``; DICOM files leave it to their reader, which takes a frame), a side
        below the network's minimum, or a truncated JPEG/PNG."""
        problem = _truncation(path)
        if problem or shape is None:
            return problem
        shape = [int(s) for s in shape]
        pixels = math.prod(shape)
        if pixels > self.pixel_limit:
            unit = "pixels" if len(shape) == 2 else "voxels"
            return (
                f"image of {_sizes(shape)} = {pixels:,} {unit} is larger than the limit of {self.pixel_limit:,} "
                f"(max_image_pixels; set it higher to read this file)"
            )
        spatial = _drop_trailing_ones(shape, self.spatial_dims)
        if check_dims and len(spatial) != self.spatial_dims:
            return self._dims_problem(shape)
        return self._size_problem(spatial[: self.spatial_dims])

    def _dims_problem(self, shape: Sequence[int]) -> str:
        return (
            f"a {len(shape)}D image ({_sizes(shape)}) for a {self.spatial_dims}D task: give one "
            f"{self.spatial_dims}D image per file"
        )

    def _size_problem(self, spatial: Sequence[int]) -> str:
        minimum = self._min_sizes()
        if any(s < m for s, m in zip(spatial, minimum)):
            return (
                f"image of {_sizes(spatial)} {'pixels' if len(spatial) == 2 else 'voxels'} is smaller than the "
                f"network's smallest input "
                f"{_sizes(minimum)} (one cell of its output grid)"
            )
        return ""

    # ------------------------------------------------------------------ after decoding
    def conform(self, image: torch.Tensor, path: str) -> torch.Tensor:
        """The decoded ``image`` (channels first) as the task takes it, or a ValueError saying what is wrong
        (the caller names the file): trailing spatial axes of size 1 dropped, a uniform alpha channel of an
        RGBA image dropped, and the checks of :meth:`header_problem` that need the pixels."""
        shape = [int(s) for s in image.shape[1:]]
        spatial = _drop_trailing_ones(shape, self.spatial_dims)
        if len(spatial) != self.spatial_dims:
            raise ValueError(self._dims_problem(shape))
        if len(spatial) < len(shape):
            image = image.reshape(image.shape[0], *spatial)
        problem = self._size_problem(spatial)
        if problem:
            raise ValueError(problem)
        if image.shape[0] == 4 and str(path).lower().endswith(PHOTO_SUFFIXES):
            alpha = image[3]
            if bool(alpha.min() != alpha.max()):
                raise ValueError(
                    "4 channels (RGBA) with transparent pixels: dropping the alpha channel would change "
                    "the image; save it as RGB or grey"
                )
            if not _ALPHA_DROPPED:  # said once per process: a dataset of RGBA photos would repeat it per file
                logger.warning("%s (and any other RGBA image of uniform alpha): the alpha channel is dropped", path)
                _ALPHA_DROPPED.append(path)
            image = image[:3]
        finite = torch.isfinite(image)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            where = tuple(int(i) for i in (~finite).nonzero()[0][1:])
            raise ValueError(
                f"{bad} value(s) are NaN or infinite (the first at pixel {where}); a model trained or run on "
                f"them would give NaN"
            )
        return image


def _drop_trailing_ones(shape: Sequence[int], spatial_dims: int) -> list[int]:
    shape = list(shape)
    while len(shape) > spatial_dims and shape[-1] == 1:
        shape.pop()
    return shape


def _truncation(path: str) -> str:
    """ "" or the missing end marker of a JPEG (EOI) or PNG (IEND) file."""
    lower = str(path).lower()
    marker = next((m for suffix, m in _END_MARKERS.items() if lower.endswith(suffix)), None)
    if marker is None or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL))
        tail = f.read()
    if marker not in tail:
        kind = "JPEG" if marker == b"\xff\xd9" else "PNG"
        return f"truncated {kind} file (no end-of-image marker): the file is incomplete"
    return ""


def header_shape(path: str) -> list[int] | None:
    """The spatial shape (x, y[, z]) in the header of a NIfTI or SimpleITK-format file (no pixels decoded);
    None for other files (DICOM: :func:`~monai_softcam.data.readers.probe_image` reads its header)."""
    lower = str(path).lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return [int(s) for s in nibabel.load(path).shape]
    if lower.endswith(SIMPLEITK_SUFFIXES) and os.path.isfile(path):
        import SimpleITK  # heavy: SimpleITK, loaded when an image needs it

        reader = SimpleITK.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return [int(s) for s in reader.GetSize()]
    return None
