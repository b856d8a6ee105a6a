"""Volumes as 3D Slicer holds them, without Slicer: a voxel array in (K, J, I) order (what
``slicer.util.arrayFromVolume`` returns; a trailing axis for the components of a colour volume)
and the 4x4 IJK-to-RAS matrix of the volume node.

The bundle reads images in MONAI's (I, J, K) = (x, y, z) voxel order and saves each evidence map
at the network's resolution, with the matrix from map cells to the input's voxels in the file
(:func:`read_map`), so a map is put on the source volume by voxel index and inherits its
IJK-to-RAS matrix unchanged: the map at voxel (i, j, k) is the evidence where the model read that
input voxel, whatever the volume's orientation, spacing or obliquity. Geometry from DICOM/ITK is LPS;
:meth:`Volume.from_lps` converts it to Slicer's RAS.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "MAP_GRID_EXTENSION",
    "Volume",
    "VolumeError",
    "geometry_matrix",
    "map_on_voxels",
    "read_map",
    "read_map_grid",
    "safe_name",
    "write_exchange_file",
    "write_probabilities",
    "write_volume",
]

#: flips x and y: LPS <-> RAS (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: 2D single-slice volumes of these integer types go to the bundle as PNG, the format photographs
#: are read from, so that they get the same intensity scaling (integer range -> [0, 1])
_PNG_TYPES = (np.uint8, np.uint16)


class VolumeError(ValueError):
    """A volume that the bundle cannot take (dimensions, channels) or a result that does not fit it."""


def geometry_matrix(
    origin: Sequence[float], spacing: Sequence[float], direction: Sequence[Sequence[float]]
) -> np.ndarray:
    """The 4x4 index-to-physical matrix of an ITK-style geometry (direction columns are the axes)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    matrix[:3, 3] = np.asarray(origin, dtype=float)
    return matrix


@dataclass
class Volume:
    """A volume node's content: ``array`` in (K, J, I[, components]) order and ``ijk_to_ras``.

    Args:
        array: voxels, shape ``(K, J, I)`` or ``(K, J, I, C)`` for colour (vector) volumes; a 2D
            image loaded in Slicer is a single-slice volume (K = 1).
        ijk_to_ras: the node's IJK-to-RAS matrix (4x4).
        name: the node name (used for file names).
        source_file: the file the volume was loaded from, when it is unchanged since; the bundle
            then reads that very file (results identical to ``run inference`` on it).
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    name: str = "volume"
    source_file: str | None = None
    components: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=float)
        if self.array.ndim not in (3, 4) or min(self.array.shape[:3]) < 1:
            raise VolumeError(
                f"volume '{self.name}': expected a (K, J, I) or (K, J, I, components) array, got shape {self.array.shape}"
            )
        if self.ijk_to_ras.shape != (4, 4) or not np.all(np.isfinite(self.ijk_to_ras)):
            raise VolumeError(f"volume '{self.name}': IJK-to-RAS must be a finite 4x4 matrix")
        if abs(np.linalg.det(self.ijk_to_ras[:3, :3])) < 1e-12:
            raise VolumeError(f"volume '{self.name}': IJK-to-RAS matrix is singular (zero spacing?)")
        self.components = self.array.ndim == 4

    @classmethod
    def from_lps(cls, array: np.ndarray, ijk_to_lps: np.ndarray, **kwargs) -> "Volume":
        """A volume whose geometry is given in LPS (DICOM, ITK, SimpleITK)."""
        return cls(array, LPS_TO_RAS @ np.asarray(ijk_to_lps, dtype=float), **kwargs)

    @property
    def ijk_shape(self) -> tuple[int, int, int]:
        """(I, J, K): the voxel counts along the node's I, J and K axes."""
        k, j, i = self.array.shape[:3]
        return i, j, k

    @property
    def channels(self) -> int:
        return int(self.array.shape[3]) if self.components else 1

    @property
    def spatial_dims(self) -> int:
        """2 for a single-slice volume (a 2D image), else 3."""
        return 2 if self.array.shape[0] == 1 else 3

    def check_fits(self, spatial_dims: int, in_channels: int) -> None:
        """Raise a :class:`VolumeError` saying what is wrong if a bundle with these settings cannot
        take this volume (a 2D bundle takes single-slice volumes, a 3D bundle volumes of more than
        one slice; channels as the bundle's preprocessing adapts them)."""
        if spatial_dims == 2 and self.spatial_dims != 2:
            raise VolumeError(
                f"volume '{self.name}' has {self.array.shape[0]} slices but the bundle classifies 2D images: "
                "select a single-slice volume (a 2D image)"
            )
        if spatial_dims == 3 and self.spatial_dims != 3:
            raise VolumeError(f"volume '{self.name}' is a single slice but the bundle classifies 3D volumes")
        if self.components and spatial_dims == 3:
            raise VolumeError(f"volume '{self.name}': colour (vector) volumes are not supported for 3D bundles")
        import torch  # optional: installed on first use (Resources/requirements.txt)

        from monai_softcam.transforms import (
            AdaptChannelsd,  # optional: installed on first use (Resources/requirements.txt)
        )

        try:  # the bundle's own channel rule (grey -> 3 channels, RGBA -> RGB, ...)
            AdaptChannelsd(keys="image", channels=in_channels)({"image": torch.zeros(self.channels, 1)})
        except ValueError:
            raise VolumeError(
                f"volume '{self.name}' has {self.channels} channel(s) but the bundle's network takes {in_channels}"
            ) from None

    def ijk_array(self) -> np.ndarray:
        """The voxels in MONAI's order: (I, J[, K]) for 2D/3D, components last."""
        array = self.array[0] if self.spatial_dims == 2 else self.array
        order = list(range(array.ndim - (1 if self.components else 0)))[::-1]
        return np.transpose(array, order + ([array.ndim - 1] if self.components else []))


def _sitk_image(volume: Volume, spatial_dims: int):
    import SimpleITK  # optional: installed on first use (Resources/requirements.txt)

    array = volume.array[0] if spatial_dims == 2 else volume.array  # (J, I) / (K, J, I) [+ C]: ITK's numpy order
    image = SimpleITK.GetImageFromArray(np.ascontiguousarray(array), isVector=volume.components)
    ijk_to_lps = LPS_TO_RAS @ volume.ijk_to_ras
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    if spatial_dims == 3:
        image.SetSpacing(spacing.tolist())
        image.SetDirection((ijk_to_lps[:3, :3] / spacing[None, :]).ravel().tolist())
        image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    else:  # a 2D file keeps the in-plane spacing; the map goes back on the slice by voxel index
        image.SetSpacing(spacing[:2].tolist())
    return image


def write_exchange_file(volume: Volume, folder: str, spatial_dims: int) -> str:
    """The file the bundle reads for ``volume``: its unchanged source file when it has one, else
    a file written into ``folder``: 8/16-bit PNG for integer 2D images of those types (read like
    any photograph: integer range -> [0, 1]), NRRD with the volume's geometry otherwise (values
    as Slicer holds them, e.g. CT in Hounsfield units)."""
    if volume.source_file and os.path.isfile(volume.source_file):
        return volume.source_file
    import SimpleITK  # optional: installed on first use (Resources/requirements.txt)

    png = spatial_dims == 2 and volume.array.dtype.type in _PNG_TYPES and volume.channels in (1, 3, 4)
    path = os.path.join(folder, f"{safe_name(volume.name)}.{'png' if png else 'nrrd'}")
    SimpleITK.WriteImage(_sitk_image(volume, spatial_dims), path, useCompression=not png)
    return path


#: key of the JSON comment in a map file's NIfTI header that places it on its input's voxels
#: (monai_softcam.transforms.MAP_GRID_EXTENSION; not imported: this module loads without torch)
MAP_GRID_EXTENSION = "softcam_map_grid"


def _map_grid(image, path: str) -> dict | None:
    """The map-grid record of a map file's header (None for a map saved on its input's own grid)."""
    import json

    for extension in image.header.extensions:
        try:
            content = json.loads(extension.get_content())
        except ValueError:  # UnicodeDecodeError is a ValueError
            continue
        if isinstance(content, dict) and MAP_GRID_EXTENSION in content:
            return content[MAP_GRID_EXTENSION]
    return None


def _expected_shape(volume: Volume) -> tuple[int, ...]:
    """``volume``'s voxel grid in the bundle's (I, J[, K]) order (a 2D image: (I, J))."""
    i, j, k = volume.ijk_shape
    return (i, j) if volume.spatial_dims == 2 else (i, j, k)


def read_map_grid(path: str, volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An evidence map file of the bundle as stored: the map on its own grid in the file's (I, J[, K])
    index order (float32, e.g. 12 x 12 cells), the matrix from map index to ``volume``'s voxel index
    (I, J[, K]) from the file's header (:data:`MAP_GRID_EXTENSION`; the identity for a map saved on
    the input's own grid without that record), and the file's affine. Region sums on this grid are
    exact (:func:`SoftCAMLib.regions.region_table`); :func:`map_on_voxels` puts it on the volume."""
    import nibabel as nib  # optional: installed on first use (Resources/requirements.txt)

    image = nib.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    expected = _expected_shape(volume)
    if data.ndim == 3 and volume.spatial_dims == 2 and data.shape[2] == 1:
        data = data[..., 0]
    grid = _map_grid(image, path)
    if grid is not None and tuple(grid["input_shape"]) != expected:
        raise VolumeError(
            f"{path}: map made for an input of (I, J[, K]) {tuple(grid['input_shape'])}, "
            f"not volume '{volume.name}' of (I, J, K) {volume.ijk_shape}"
        )
    if grid is None and data.shape != expected:
        raise VolumeError(
            f"{path}: map of shape {data.shape} does not fit volume '{volume.name}' of (I, J, K) {volume.ijk_shape}"
        )
    to_input = np.eye(4) if grid is None else np.asarray(grid["map_to_input_index"], dtype=float)
    return data, to_input, np.asarray(image.affine, dtype=float)


def map_on_voxels(data: np.ndarray, to_input: np.ndarray, volume: Volume) -> np.ndarray:
    """A map of :func:`read_map_grid` as a (K, J, I) float32 array on ``volume``'s voxels: sampled
    through its map-to-voxel matrix with the bundle's own resampler
    (:func:`monai_softcam.transforms.resample_maps`: bi/trilinear, as the bundle's upsampling), or
    taken voxel for voxel when it is already on the volume's grid."""
    expected = _expected_shape(volume)
    if tuple(data.shape) != expected:
        import torch  # optional: installed on first use (Resources/requirements.txt)

        from monai_softcam.transforms import (
            resample_maps,  # optional: installed on first use (Resources/requirements.txt)
        )

        # map index -> voxel index is the map's "affine" in voxel-index space, where the volume's is the identity
        data = resample_maps(torch.as_tensor(data)[None], to_input, np.eye(4), expected)[0].numpy()
    kji = np.transpose(data if data.ndim == 3 else data[..., None], (2, 1, 0))
    return np.ascontiguousarray(kji, dtype=np.float32)


def read_map(path: str, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """An evidence map file of the bundle as a (K, J, I) float32 array on ``volume``'s voxels, with
    the affine stored in the file.

    The bundle saves maps at the network's resolution; the file's header says which input grid the
    map was stretched over and how map cells sit on its voxels (:data:`MAP_GRID_EXTENSION`). The map
    is put on the volume by voxel index through that matrix (:func:`map_on_voxels`), whatever
    geometry the file the bundle read had. A map saved on the input's own grid
    (``--full_resolution_maps true``, or an older bundle) is taken voxel for voxel."""
    data, to_input, affine = read_map_grid(path, volume)
    return map_on_voxels(data, to_input, volume), affine


def write_volume(path: str, array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> str:
    """Write a (K, J, I) array with its geometry: NRRD (``.nrrd``) or NIfTI (``.nii``/``.nii.gz``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib  # optional: installed on first use (Resources/requirements.txt)

        nib.save(nib.Nifti1Image(np.transpose(array_kji, (2, 1, 0)).astype(np.float32), ijk_to_ras), path)
        return path
    if not path.endswith(".nrrd"):
        raise ValueError(f"{path}: choose a .nrrd, .nii or .nii.gz file name")
    import SimpleITK  # optional: installed on first use (Resources/requirements.txt)

    SimpleITK.WriteImage(_sitk_image(Volume(array_kji.astype(np.float32), ijk_to_ras), 3), path, useCompression=True)
    return path


def write_probabilities(path: str, rows: Sequence[dict]) -> str:
    """One CSV row per volume: ``volume``, ``prob_<class>`` ..., ``predicted_class``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def safe_name(name: str) -> str:
    """``name`` usable as a file name (letters, digits, ``-_.``; anything else becomes ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "volume"
