"""Which Python packages the module needs and which are missing, found without importing them
(nothing is imported or installed when Slicer loads the module; the widget asks before installing)."""

from __future__ import annotations

import importlib.util
import os

__all__ = ["REQUIREMENTS", "missing_requirements", "package_source"]

#: import name -> pip requirement (torch first: in Slicer it comes from the PyTorch extension)
REQUIREMENTS = {
    "torch": "torch",
    "monai": "monai>=1.4",
    "ignite": "pytorch-ignite>=0.4.11",
    "nibabel": "nibabel>=5.0",
    "SimpleITK": "SimpleITK>=2.2",
    "yaml": "pyyaml>=6.0",
    "monai_softcam": "monai_softcam",
}


def missing_requirements() -> list[str]:
    """The import names of :data:`REQUIREMENTS` that this Python cannot import."""
    return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]


def package_source() -> str:
    """What to give ``pip install`` for monai_softcam: the source tree this extension sits in
    (``<repo>/slicer_extension/SoftCAM/SoftCAMLib`` -> ``<repo>``) when it is there, else the name."""
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    return repo if os.path.isfile(os.path.join(repo, "setup.py")) else REQUIREMENTS["monai_softcam"]
