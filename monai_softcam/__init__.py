"""monai_softcam: self-explaining SoftCAM classifiers for medical images, built on MONAI."""

__version__ = "0.1.0"

from .losses import EvidencePenalty, SoftCAMLoss  # noqa: E402
from .networks import BlackBox, SoftCAM, available_backbones, build_backbone  # noqa: E402
from .utils import install_error_hook  # noqa: E402

install_error_hook()  # a mistake of the user's ends the output with its own message, not MONAI's wrapper

__all__ = ["BlackBox", "EvidencePenalty", "SoftCAM", "SoftCAMLoss", "__version__", "available_backbones", "build_backbone"]
