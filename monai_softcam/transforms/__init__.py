"""MONAI transforms for SoftCAM, shaped as MONAI's: input preparation (:mod:`~monai_softcam.transforms.input`),
intensity (:mod:`~monai_softcam.transforms.intensity`), geometry (:mod:`~monai_softcam.transforms.spatial`), the
evidence-map outputs (:mod:`~monai_softcam.transforms.evidence`), the overlay picture
(:mod:`~monai_softcam.transforms.overlay`) and the two recipes the bundle composes
(:mod:`~monai_softcam.transforms.pipelines`)."""

from .evidence import (
    MAP_GRID_EXTENSION,
    CheckFinited,
    EvidenceGridd,
    LoadLabelMapd,
    RegionEvidenced,
    ResampleEvidenced,
    SaveEvidenceMapsd,
)
from .input import AdaptChannelsd, BoxesToMaskd, ReadImaged, load_input
from .intensity import RandColorJitterd, normalize_input
from .overlay import SaveOverlayd, overlay_picture
from .pipelines import output_postprocessing, preprocessing
from .spatial import FitToSized, RandResizedCropd, fraction_of, map_grid_affine, map_to_input_index, resample_maps

__all__ = [
    "AdaptChannelsd",
    "BoxesToMaskd",
    "CheckFinited",
    "EvidenceGridd",
    "FitToSized",
    "LoadLabelMapd",
    "MAP_GRID_EXTENSION",
    "RandColorJitterd",
    "RandResizedCropd",
    "ReadImaged",
    "RegionEvidenced",
    "ResampleEvidenced",
    "SaveEvidenceMapsd",
    "SaveOverlayd",
    "fraction_of",
    "load_input",
    "map_grid_affine",
    "map_to_input_index",
    "normalize_input",
    "output_postprocessing",
    "overlay_picture",
    "preprocessing",
    "resample_maps",
]
