"""Everything the SoftCAM Slicer module does that does not need Slicer: read a bundle, run its
inference on a volume (in a subprocess or in-process), put the evidence maps back on the volume's
geometry, display settings, export. Usable from plain Python:

    from SoftCAMLib import BundleInfo, Volume, run_inference
    bundle = BundleInfo.read("path/to/bundle")
    result = run_inference(bundle, Volume(array_kji, ijk_to_ras, name="case"))
    result.probabilities, result.maps["lesion"]  # (K, J, I) on the volume's grid

Nothing here imports torch or MONAI at import time; importing it puts the folder holding
monai_softcam on ``sys.path`` when it is not importable yet (:func:`ensure_package_path`).
"""

from .bundle import BundleError, BundleInfo
from .dependencies import (
    REQUIREMENTS_FILE,
    TORCH_REQUIREMENT,
    describe_requirements,
    ensure_package_path,
    loaded_requirements,
    missing_requirements,
    package_root,
    requirements,
    unmet_requirements,
)
from .display import DIVERGING_COLORS, SEQUENTIAL_COLORS, OverlayDisplay, overlay_display
from .inference import InferenceError, InferenceJob, InferenceResult, export_result, run_inference
from .regions import region_table
from .volume import LPS_TO_RAS, Volume, VolumeError, geometry_matrix, read_map, write_exchange_file, write_volume

__all__ = [
    "BundleError",
    "BundleInfo",
    "DIVERGING_COLORS",
    "InferenceError",
    "InferenceJob",
    "InferenceResult",
    "LPS_TO_RAS",
    "OverlayDisplay",
    "REQUIREMENTS_FILE",
    "SEQUENTIAL_COLORS",
    "TORCH_REQUIREMENT",
    "Volume",
    "VolumeError",
    "describe_requirements",
    "ensure_package_path",
    "export_result",
    "geometry_matrix",
    "loaded_requirements",
    "missing_requirements",
    "overlay_display",
    "package_root",
    "read_map",
    "region_table",
    "requirements",
    "run_inference",
    "unmet_requirements",
    "write_exchange_file",
    "write_volume",
]

ensure_package_path()
