"""Which Python packages the module needs and which are missing, found without importing them
(nothing is imported or installed when Slicer loads the module; the widget asks before installing).

The extension is self-sufficient: monai_softcam's source is installed beside the module (the
extension's CMake copies it; from a source tree it is the tree itself), so only third-party
packages come from pip: those of ``Resources/requirements.txt`` (monai_softcam's own
dependencies, ``pyproject.toml``, minus torch) and torch, which Slicer gets through the PyTorch extension.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re

__all__ = [
    "REQUIREMENTS_FILE",
    "TORCH_REQUIREMENT",
    "ensure_package_path",
    "missing_requirements",
    "module_dir",
    "package_root",
    "requirements",
]

#: torch's floor (monai_softcam's pyproject.toml); given to PyTorchUtils as ``torchVersionRequirement``
TORCH_REQUIREMENT = "torch>=2.3"


def module_dir() -> str:
    """The folder holding ``SoftCAM.py`` (in an installed extension: Slicer's qt-scripted-modules)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


REQUIREMENTS_FILE = os.path.join(module_dir(), "Resources", "requirements.txt")


def requirements() -> list[str]:
    """The pip requirements of ``Resources/requirements.txt`` (comments and blank lines left out)."""
    with open(REQUIREMENTS_FILE, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]


def _distribution(requirement: str) -> str:
    """The distribution name of a requirement string (``"pytorch-ignite>=0.4.11"`` -> ``pytorch-ignite``)."""
    return re.split(r"[<>=!~;\[\s]", requirement, maxsplit=1)[0]


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_requirements() -> list[str]:
    """The requirements this Python lacks, torch's first (as pip requirement strings), plus
    ``"monai_softcam"`` if its source is not importable (an incomplete installation)."""
    missing = [TORCH_REQUIREMENT] if not _installed("torch") else []
    missing += [r for r in requirements() if not _installed(_distribution(r))]
    if importlib.util.find_spec("monai_softcam") is None:
        missing.append("monai_softcam")
    return missing


def package_root() -> str | None:
    """The folder that holds the ``monai_softcam`` package for this module: the source tree the
    module sits in (``<repo>/slicer_extension/SoftCAM`` -> ``<repo>``) or the module's own folder
    in an installed extension; None when neither has it. A subprocess gets it on its PYTHONPATH."""
    for root in (os.path.abspath(os.path.join(module_dir(), "..", "..")), module_dir()):
        if os.path.isfile(os.path.join(root, "monai_softcam", "__init__.py")):
            return root
    return None


def ensure_package_path() -> None:
    """Put :func:`package_root` on ``sys.path`` when ``monai_softcam`` is not importable yet (a
    module loaded from a source tree: Slicer adds only the module's folder). Imports nothing."""
    import sys

    root = package_root()
    if root is not None and importlib.util.find_spec("monai_softcam") is None and root not in sys.path:
        sys.path.append(root)
