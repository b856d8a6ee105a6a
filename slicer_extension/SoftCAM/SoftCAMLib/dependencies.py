"""Which Python packages the module needs and which are missing or older than it needs, found
from their metadata without importing them (nothing is imported or installed when Slicer loads the
module; the widget asks once before installing or upgrading).

Versions count, not only presence: Slicer 5.10 bundles pydicom 2.4.4, which has no
``pydicom.pixels`` (monai_softcam's DICOM reader needs pydicom 3), and another extension may have
installed a torch or monai older than the floors. Whatever falls short is upgraded in Slicer's own
Python (slicer_extension/README.md says why not in a separate folder); an upgraded package that
Slicer had already imported (its DICOM plugins import pydicom at start-up) is used only after a
restart (:func:`loaded_requirements`).

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
import sys

from packaging.requirements import Requirement  # bundled with Slicer (python-pythonqt-requirements)
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

__all__ = [
    "REQUIREMENTS_FILE",
    "TORCH_REQUIREMENT",
    "describe_requirements",
    "ensure_package_path",
    "loaded_requirements",
    "missing_requirements",
    "module_dir",
    "package_root",
    "requirements",
    "unmet_requirements",
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


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (from its metadata; None when it is not installed)."""
    try:
        return importlib.metadata.distribution(distribution).version
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfied(requirement: Requirement, version: str | None) -> bool:
    if version is None:
        return False
    try:  # a local or pre-release build (torch 2.5.0+cpu, 2.6.0.dev...) counts as its version
        return requirement.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


def unmet_requirements() -> list[tuple[str, str | None]]:
    """``(requirement, installed version or None)`` for each requirement, torch's first, that this
    Python does not satisfy: not installed, or installed at a version outside the requirement
    (below its floor). Requirements whose environment marker does not apply are left out."""
    unmet = []
    for line in [TORCH_REQUIREMENT, *requirements()]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installed_version(requirement.name)
        if not _satisfied(requirement, version):
            unmet.append((line, version))
    return unmet


def missing_requirements() -> list[str]:
    """The requirements this Python lacks or holds at too old a version, torch's first (as pip
    requirement strings, which pip installs or upgrades to), plus ``"monai_softcam"`` if its source
    is not importable (an incomplete installation)."""
    missing = [line for line, _version in unmet_requirements()]
    if importlib.util.find_spec("monai_softcam") is None:
        missing.append("monai_softcam")
    return missing


def describe_requirements(missing) -> str:
    """One line per requirement of ``missing``, with what is installed now: ``pydicom>=3.0
    (2.4.4 installed)``, ``monai>=1.4 (not installed)``."""
    lines = []
    for line in missing:
        if line == "monai_softcam":
            lines.append("monai_softcam (its source is not beside the module)")
            continue
        version = installed_version(_distribution(line))
        lines.append(f"{line} ({version + ' installed' if version else 'not installed'})")
    return "\n".join(lines)


def loaded_requirements(missing) -> list[str]:
    """The requirements of ``missing`` whose distribution this Python has already imported (its
    modules are in ``sys.modules``, e.g. pydicom, which Slicer's DICOM plugins import at start-up):
    installing a new version changes the files, not the loaded modules, so these need a restart."""
    wanted = {canonicalize_name(_distribution(m)): m for m in missing if m != "monai_softcam"}
    loaded = []
    for module, distributions in importlib.metadata.packages_distributions().items():
        if module in sys.modules:
            for name in distributions:
                line = wanted.get(canonicalize_name(name))
                if line is not None and line not in loaded:
                    loaded.append(line)
    return [m for m in missing if m in loaded]


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
