"""Evidence-map outputs: the map grid placed on the input in world space, maps resampled to the
input's voxels, saved as NIfTI (with the map-to-voxel matrix in their header), and the regions' exact
shares of each logit."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from ..data.formats import image_stem
from ..data.readers import SimpleITKReader, default_readers, quiet_reader_setup, reader_for
from ..regions import region_evidence, voxel_size
from ..utils import InputError, as_flag, atomic_open
from .input import _source
from .spatial import map_grid_affine, map_to_input_index, resample_maps

__all__ = [
    "CheckFinited",
    "EvidenceGridd",
    "LoadLabelMapd",
    "MAP_GRID_EXTENSION",
    "RegionEvidenced",
    "ResampleEvidenced",
    "SaveEvidenceMapsd",
]

#: key of the JSON comment (NIfTI header extension) that places a saved map on its input's voxels
MAP_GRID_EXTENSION = "softcam_map_grid"


class _WithReference(MapTransform):
    """A map transform that reads a reference image (``ref_key``) beside its keys."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image") -> None:
        super().__init__(keys)
        self.ref_key = ref_key


class CheckFinited(_WithReference):
    """Refuse a network output holding NaN or infinite values (``keys``: the logits), naming the input
    (``ref_key``) with an InputError: a model with corrupt weights, or an input outside what it can take, must
    not give a prediction. Placed first in the postprocessing, before any file of the case is written."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key])
            if not bool(torch.isfinite(value).all()):
                source = _source(d, self.ref_key) if self.ref_key in d else "an input"
                raise InputError(
                    f"{source}: the model's {key} are not finite ({value.flatten()[:4].tolist()}): no prediction is "
                    f"given; the checkpoint's weights may be corrupt (a model trained on NaN data), or the input "
                    f"is far outside what the model was trained on"
                )
        return d


class EvidenceGridd(_WithReference):
    """Place evidence maps ``[C, *grid]`` on the physical grid of ``ref_key`` (the preprocessed image).

    The maps keep their own resolution (12 x 12 for a 384-px ResNet input): the result is a MetaTensor with the
    reference's metadata and the affine of :func:`~monai_softcam.transforms.spatial.map_grid_affine`, i.e. each
    cell where :func:`~monai_softcam.networks.outputs.upsample_map` puts it on the network's input. The
    reference's affine already undoes the resize or crop (:class:`~monai_softcam.transforms.spatial.FitToSized`
    composes it), so the map lands on the input in world coordinates, and a viewer interpolates it in place.
    Values are never rescaled: the maps stay signed, in logit units, and their mean is the logit."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        ref_affine = ref.affine if isinstance(ref, MetaTensor) else torch.eye(4, dtype=torch.float64)
        for key in self.key_iterator(d):
            maps = torch.as_tensor(d[key]).float()
            meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {}
            gridded = MetaTensor(maps, meta=meta)
            affine = map_grid_affine(ref_affine, ref.shape[1:], maps.shape[1:])
            gridded.affine = affine.to(torch.as_tensor(ref_affine).dtype)
            d[key] = gridded
        return d


class ResampleEvidenced(_WithReference):
    """Evidence maps placed by :class:`EvidenceGridd`, sampled on the voxels of ``ref_key`` (the input image
    brought back to its own grid by ``Invertd``): the full-resolution maps, for tools that need one value per
    input voxel (:func:`~monai_softcam.transforms.spatial.resample_maps`). With ``enabled`` false (a yes/no
    value: the bundle's ``full_resolution_maps``) the maps stay compact."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image", enabled: Any = True) -> None:
        super().__init__(keys, ref_key)
        self.enabled = as_flag(enabled, "full_resolution_maps")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            maps = d[key]
            full = resample_maps(maps, maps.affine, ref.affine, ref.shape[1:])
            d[key] = MetaTensor(full, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
        return d


class SaveEvidenceMapsd(MapTransform):
    """Write each case's evidence maps, one NIfTI file per class, placed on its input in world space.

    For input ``<dir>/<name>.<ext>`` it writes ``<output_dir>/<name>/<name>_evidence_<class>.nii.gz``:
    raw signed values (float32, logit units) on the maps' own grid with their affine (compact maps
    from :class:`EvidenceGridd`: a few hundred bytes each; or full-resolution ones from
    :class:`ResampleEvidenced`). Each file also carries, in a JSON comment extension of its header
    (key :data:`MAP_GRID_EXTENSION`), the input's voxel grid (``input_shape``) and the matrix from
    map index to input voxel index (``map_to_input_index``), so that a tool holding the input by
    its voxels (the Slicer module) puts the map on it exactly, whatever geometry the input file had.
    Files are written whole or not at all. The case's folder is stored under ``<key>_dir`` (where
    :class:`~monai_softcam.transforms.overlay.SaveOverlayd` puts the overlay picture), and the folder it will
    have once the run's outputs are moved into place under ``<key>_published`` (what ``predictions.csv``
    names).

    Args:
        keys: the evidence-map key (a ``[C, *grid]`` MetaTensor with its affine).
        output_dir: folder receiving one sub-folder per case.
        class_names: one name per class (used in file names).
        image_key: the input image on its own grid (after ``Invertd``): the grid of the header extension.
        published_dir: where ``output_dir`` is moved when the run completes, if it is a staging folder
            (:func:`~monai_softcam.folders.claim_folder`); None: ``output_dir`` itself.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        class_names: Sequence[str],
        image_key: str = "image",
        published_dir: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.output_dir = output_dir
        self.published_dir = published_dir or output_dir
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self._names: dict[str, str] = {}  # source path -> case name, unique within this run

    def _unique_name(self, source: str) -> str:
        if source not in self._names:
            base = name = image_stem(os.path.basename(source))
            taken = set(self._names.values())
            k = 2
            while name in taken:  # same file name in different folders: never overwrite another case
                name, k = f"{base}_{k}", k + 1
            self._names[source] = name
        return self._names[source]

    @staticmethod
    def _grid_extension(affine: np.ndarray, image: Any) -> Any:
        """The header extension placing the map on ``image``'s voxels (None without an image)."""
        if not isinstance(image, MetaTensor):
            return None
        to_input = map_to_input_index(affine, image.affine)
        content = {
            MAP_GRID_EXTENSION: {
                "input_shape": [int(s) for s in image.shape[1:]],
                "map_to_input_index": np.round(to_input, 10).tolist(),
            }
        }
        return nib.nifti1.Nifti1Extension("comment", json.dumps(content).encode())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = d[key]
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            name = self._unique_name(_source(d, key))
            folder = os.path.join(self.output_dir, name)
            affine = np.asarray(maps.affine, dtype=np.float64) if isinstance(maps, MetaTensor) else np.eye(4)
            extension = self._grid_extension(affine, d.get(self.image_key))
            arr = maps.detach().cpu().float().numpy()
            for c, cls in enumerate(self.class_names):
                img = nib.Nifti1Image(arr[c], affine)
                img.header.set_xyzt_units("mm")
                if extension is not None:
                    img.header.extensions.append(extension)
                with atomic_open(os.path.join(folder, f"{name}_evidence_{cls}.nii.gz"), "wb") as f:
                    f.write(gzip.compress(img.to_bytes(), compresslevel=6))
            d[f"{key}_dir"] = folder
            d[f"{key}_published"] = os.path.join(self.published_dir, name)
        return d


class _LabelReader(SimpleITKReader):
    """:class:`~monai_softcam.data.readers.SimpleITKReader` keeping the stored values of every format (PNG labels
    stay 0, 1, 2, ..., not intensities in [0, 1]); one value per voxel."""

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        import SimpleITK  # heavy: SimpleITK, loaded when a label map needs it

        path, image = img
        channels = image.GetNumberOfComponentsPerPixel()
        if channels > 1:
            raise ValueError(f"{path}: a label map has one value per voxel; this file has {channels} channels")
        _, meta = super().get_data(img)
        stored = SimpleITK.GetArrayFromImage(image)  # (z,) y, x
        return np.ascontiguousarray(np.transpose(stored, list(range(stored.ndim))[::-1])), meta


class LoadLabelMapd(MapTransform):
    """Read each case's label map (the path under ``keys``, paired with its input by
    :func:`~monai_softcam.data.datalist.pair_regions`) as an integer array on the input's voxel grid,
    with the package's readers (:func:`~monai_softcam.data.readers.default_readers`) and one that keeps
    the stored values of every format (PNG labels stay 0, 1, 2, ..., not intensities in [0, 1]). The
    path stays under ``<key>_path``. A case without the key passes through (no regions asked for). An
    unreadable file is an :class:`~monai_softcam.utils.InputError` naming it.

    Args:
        keys: the key of the label map's path (``regions``).
        image_key: the input on its own grid (its number of spatial dimensions picks the readers).
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self._loaders: dict[int, LoadImage] = {}

    def _read(self, path: str, spatial_dims: int) -> np.ndarray:
        if spatial_dims not in self._loaders:
            with quiet_reader_setup():
                self._loaders[spatial_dims] = LoadImage(
                    reader=[*default_readers(spatial_dims), _LabelReader()], image_only=True, dtype=None
                )
        loader = self._loaders[spatial_dims]
        try:
            array = np.asarray(loader(path, reader_for(loader, path)))
        except Exception as err:
            raise InputError(f"cannot read label map {path}: {err}") from err
        if array.ndim == spatial_dims + 1 and array.shape[-1] == 1:  # e.g. a 2D label map saved as x, y, 1
            array = array[..., 0]
        return array

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = os.fspath(d[key])
            d[key] = self._read(path, d[self.image_key].dim() - 1)
            d[f"{key}_path"] = path
        return d


class RegionEvidenced(MapTransform):
    """Each region of a label map's exact share of every class's logit, from the compact evidence maps.

    The label map (``regions_key``, read by :class:`LoadLabelMapd`) lies on the input's voxel grid (as
    the bundle reads the input: same size and voxel order; e.g. a NIfTI/NRRD with the image's
    geometry, or a PNG of the image's size), one integer per voxel, 0 for voxels in no region
    (``"outside"``). Rows come from :func:`~monai_softcam.regions.region_evidence` on the map grid
    (the cells weighted by the part of them each region covers, so that the shares add up to each
    logit exactly) and are stored under ``output_key`` as a list of dicts, each with the input's path
    under ``image``. A case without a label map passes through untouched (no regions asked for).

    Placed after ``Invertd`` (``image_key`` on the input's own grid) and before any resampling of the
    maps (``keys``: the maps placed by :class:`EvidenceGridd`, whose affine and the image's give the
    map-to-voxel matrix, :func:`~monai_softcam.transforms.spatial.map_to_input_index`).

    Args:
        keys: the evidence-map key (``[C, *grid]`` MetaTensor).
        class_names: one name per class.
        regions_key: the label map (an array; its path under ``<regions_key>_path``).
        image_key: the input image on its own grid.
        output_key: where the rows go.
        label_names: label value -> region name (default: ``outside`` for 0, ``label_<L>`` for others).

    Errors (:class:`~monai_softcam.utils.InputError`, naming the files): a label map that is not
    integer or not on the input's grid.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Sequence[str],
        regions_key: str = "regions",
        image_key: str = "image",
        output_key: str = "region_rows",
        label_names: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(keys)
        self.class_names = [str(c) for c in class_names]
        self.regions_key = regions_key
        self.image_key = image_key
        self.output_key = output_key
        self.label_names = {int(k): str(v) for k, v in (label_names or {}).items()}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.regions_key not in d:
            return d
        image = d[self.image_key]
        source = _source(d, self.image_key)
        labels = np.asarray(d[self.regions_key])
        path = d.get(f"{self.regions_key}_path", self.regions_key)
        spatial = tuple(int(n) for n in image.shape[1:])
        if tuple(labels.shape) != spatial:
            raise InputError(
                f"label map {path} of shape {tuple(labels.shape)} is not on the grid of the input {source} "
                f"of shape {spatial}: a label map has one label per input voxel"
            )
        rows: list[dict[str, Any]] = []
        for key in self.key_iterator(d):
            maps = d[key]
            if not isinstance(maps, MetaTensor):
                raise ValueError(f"{key}: RegionEvidenced needs the maps placed by EvidenceGridd (a MetaTensor)")
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            image_affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4, dtype=torch.float64)
            to_input = map_to_input_index(maps.affine, image_affine)
            arr = torch.as_tensor(maps).detach().cpu().double().numpy()
            try:
                found = region_evidence(
                    dict(zip(self.class_names, arr)),
                    labels,
                    to_input,
                    self.label_names,
                    voxel_volume=voxel_size(np.asarray(image_affine, dtype=np.float64), len(spatial)),
                )
            except ValueError as err:
                raise InputError(f"label map {path} for input {source}: {err}") from err
            rows += [{"image": source, **row} for row in found]
        d[self.output_key] = rows
        return d
