"""monai_softcam: self-explaining SoftCAM classifiers for medical images, built on MONAI."""

__version__ = "0.1.0"

import importlib  # noqa: E402
import importlib.util  # noqa: E402

from .losses import EvidencePenalty, SoftCAMLoss  # noqa: E402
from .networks import BlackBox, SoftCAM, available_backbones, build_backbone  # noqa: E402


def __getattr__(name: str):  # PEP 562: ``monai_softcam.bundle`` etc. after a plain ``import monai_softcam``
    """Import a submodule on first access, so that the bundle configs' ``$import monai_softcam``
    reaches ``monai_softcam.bundle.start`` without importing every submodule up front."""
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = [
    "BlackBox",
    "EvidencePenalty",
    "SoftCAM",
    "SoftCAMLoss",
    "__version__",
    "available_backbones",
    "build_backbone",
]
