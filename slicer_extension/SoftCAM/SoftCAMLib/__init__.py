"""Everything the SoftCAM Slicer module does that does not need Slicer: read a bundle, run its
inference on a volume (in a subprocess or in-process), put the evidence maps back on the volume's
geometry, display settings, export. Usable from plain Python:

    from SoftCAMLib import BundleInfo, Volume, run_inference
    bundle = BundleInfo.read("path/to/bundle")
    result = run_inference(bundle, Volume(array_kji, ijk_to_ras, name="case"))
    result.probabilities, result.maps["lesion"]  # (K, J, I) on the volume's grid

Nothing here imports torch or MONAI at import time.
"""

from .bundle import BundleError, BundleInfo
from .dependencies import REQUIREMENTS, missing_requirements, package_source
from .display import DIVERGING_COLORS, SEQUENTIAL_COLORS, OverlayDisplay, overlay_display
from .inference import InferenceError, InferenceJob, InferenceResult, export_result, run_inference
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
    "REQUIREMENTS",
    "SEQUENTIAL_COLORS",
    "Volume",
    "VolumeError",
    "export_result",
    "geometry_matrix",
    "missing_requirements",
    "overlay_display",
    "package_source",
    "read_map",
    "run_inference",
    "write_exchange_file",
    "write_volume",
]
