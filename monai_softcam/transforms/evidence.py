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

from ..data.formats import IMAGE_EXTENSIONS, image_stem
from ..data.readers import SimpleITKReader, default_readers, quiet_reader_setup, reader_for
from ..regions import region_evidence, voxel_size
from ..utils import ConfigError, InputError, MissingInputError, as_flag, atomic_open
from .input import _source
from .spatial import map_grid_affine, map_to_input_index, resample_maps

__all__ = ["EvidenceGridd", "MAP_GRID_EXTENSION", "RegionEvidenced", "ResampleEvidenced", "SaveEvidenceMapsd"]

#: key of the JSON comment (NIfTI header extension) that places a saved map on its input's voxels
MAP_GRID_EXTENSION = "softcam_map_grid"


class _WithReference(MapTransform):
    """A map transform that reads a reference image (``ref_key``) beside its keys."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image") -> None:
        super().__init__(keys)
        self.ref_key = ref_key


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
    :class:`~monai_softcam.transforms.overlay.SaveOverlayd` puts the overlay picture).

    Args:
        keys: the evidence-map key (a ``[C, *grid]`` MetaTensor with its affine).
        output_dir: folder receiving one sub-folder per case.
        class_names: one name per class (used in file names).
        image_key: the input image on its own grid (after ``Invertd``): the grid of the header extension.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str, class_names: Sequence[str], image_key: str = "image"
    ) -> None:
        super().__init__(keys)
        self.output_dir = output_dir
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


class RegionEvidenced(MapTransform):
    """Each region of a label map's exact share of every class's logit, from the compact evidence maps.

    The label map lies on the input's voxel grid (as the bundle reads the input: same size and
    voxel order; e.g. a NIfTI/NRRD with the image's geometry, or a PNG of the image's size), one
    integer per voxel, 0 for voxels in no region (``"outside"``). Rows come from
    :func:`~monai_softcam.regions.region_evidence` on the map grid (the cells weighted by the part
    of them each region covers, so that the shares add up to each logit exactly) and are stored
    under ``output_key`` as a list of dicts, each with the input's path under ``image``.

    Placed after ``Invertd`` (``image_key`` on the input's own grid) and before any resampling of the maps
    (``keys``: the maps placed by :class:`EvidenceGridd`, whose affine and the image's give the map-to-voxel
    matrix, :func:`~monai_softcam.transforms.spatial.map_to_input_index`).

    Args:
        keys: the evidence-map key (``[C, *grid]`` MetaTensor).
        regions: a label-map file (one input), or a folder holding one label map per input named
            after the input's stem (``<stem>.nii.gz``, ``<stem>.nrrd``, ``<stem>.png``, ...; for a
            DICOM series folder, the folder's name); None: no regions, the transform does nothing.
        class_names: one name per class.
        image_key: the input image on its own grid.
        output_key: where the rows go.
        label_names: label value -> region name (default: ``outside`` for 0, ``label_<L>`` for others).
        inputs: the data list (``{"image": path}`` items): when given, every input's label map is
            looked up here, before anything runs, so that a missing one stops the run at once.

    Errors (:class:`~monai_softcam.utils.InputError`, naming the files): a label map that is
    missing for an input, ambiguous, unreadable, not integer, or not on the input's grid.
    """

    def __init__(
        self,
        keys: KeysCollection,
        regions: str | None,
        class_names: Sequence[str],
        image_key: str = "image",
        output_key: str = "regions",
        label_names: Mapping[int, str] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(keys)
        self.regions = None if regions is None else os.fspath(regions)
        if self.regions is not None and not os.path.exists(self.regions):
            raise MissingInputError(f"regions: {self.regions} does not exist (a label-map file, or a folder of them)")
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self.output_key = output_key
        self.label_names = {int(k): str(v) for k, v in (label_names or {}).items()}
        self._folder_files: dict[str, list[str]] | None = None
        self._sources: set[str] = set()
        self._loaders: dict[int, LoadImage] = {}
        if inputs is not None and self.regions is not None:
            sources = [str(item["image"]) for item in inputs]
            if os.path.isfile(self.regions) and len(set(sources)) > 1:
                raise ConfigError(self._one_file_message(len(set(sources))))
            for source in sources:
                self.label_map_for(source)

    def _one_file_message(self, count: int) -> str:
        return (
            f"regions is one label map ({self.regions}) but the input has {count} images: give a folder holding "
            "one label map per input, named after each input (<stem>.nii.gz, <stem>.nrrd, <stem>.png, ...)"
        )

    def label_map_for(self, source: str) -> str:
        """The label map of the input ``source`` (a file path, or a DICOM series folder)."""
        if os.path.isfile(self.regions):
            return self.regions
        if self._folder_files is None:
            found: dict[str, list[str]] = {}
            for name in sorted(os.listdir(self.regions)):
                path = os.path.join(self.regions, name)
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path):
                    found.setdefault(image_stem(name), []).append(path)
            self._folder_files = found
        stem = image_stem(os.path.basename(os.path.normpath(source)))
        candidates = [p for p in self._folder_files.get(stem, []) if os.path.abspath(p) != os.path.abspath(source)]
        if not candidates:
            raise InputError(
                f"no label map for input {source} in the regions folder {self.regions} "
                f"(expected {stem}.nii.gz, {stem}.nrrd, {stem}.png or another image format named {stem})"
            )
        if len(candidates) > 1:
            raise InputError(
                f"several label maps for input {source} in the regions folder {self.regions}: "
                f"{', '.join(os.path.basename(p) for p in candidates)}; keep one"
            )
        return candidates[0]

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
        if self.regions is None:
            return dict(data)
        d = dict(data)
        image = d[self.image_key]
        source = _source(d, self.image_key)
        if os.path.isfile(self.regions):
            self._sources.add(source)
            if len(self._sources) > 1:
                raise ConfigError(self._one_file_message(len(self._sources)))
        rows: list[dict[str, Any]] = []
        for key in self.key_iterator(d):
            maps = d[key]
            if not isinstance(maps, MetaTensor):
                raise ValueError(f"{key}: RegionEvidenced needs the maps placed by EvidenceGridd (a MetaTensor)")
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            spatial = tuple(int(n) for n in image.shape[1:])
            path = self.label_map_for(source)
            labels = self._read(path, len(spatial))
            if tuple(labels.shape) != spatial:
                raise InputError(
                    f"label map {path} of shape {tuple(labels.shape)} is not on the grid of the input {source} "
                    f"of shape {spatial}: a label map has one label per input voxel"
                )
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
