"""The Slicer extension as a repository of its own, for 3D Slicer's Extensions Index
(``python -m monai_softcam slicer-extension OUT``).

The index builds an extension by configuring the root of its repository (Slicer's
``Extensions/CMake/SlicerBlockBuildPackageAndUploadExtensions.cmake``); its catalog entry (a
``<ExtensionName>.json`` validated by ``schemas/slicer-extension-catalog-entry-schema-v1.0.2.json``)
has no field for a source subfolder; and its ``scripts/check_description_files.py`` wants a root
``CMakeLists.txt`` whose ``project()`` is the extension's name, a category of its accepted list, a
repository name that starts with ``Slicer``, the GitHub topic ``3d-slicer-extension``, a root
license file and icon and screenshot URLs that serve images. ``slicer_extension/`` of this
repository fails the first three, and its module's CMake copies ``monai_softcam`` from two folders above it.

:func:`write_slicer_extension` writes, from this source tree::

    OUT/SlicerSoftCAM/            the extension's repository (push it as github.com/OWNER/SlicerSoftCAM)
        CMakeLists.txt            slicer_extension/CMakeLists.txt, its URLs pointing into this repository
        SoftCAM.png, LICENSE, README.md, Screenshots/1.png
        SoftCAM/                  the module (slicer_extension/SoftCAM), its CMake reading the runtime below
            monai_softcam/        the package's Python source (what CopyRuntime.cmake installs)
            bundle/configs/       the bundle configs of the module's self-test
    OUT/SoftCAM.json              the catalog entry, for a pull request to Slicer/ExtensionsIndex

The extension's name stays ``SoftCAM``: the index refuses one that starts with ``Slicer`` and
wants the repository's to. Nothing here imports Slicer or the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Mapping

from . import __version__

__all__ = [
    "CATALOG_SCHEMA_URL",
    "EXTENSION_NAME",
    "REPOSITORY_NAME",
    "REQUIRED_VARIABLES",
    "cmake_variables",
    "write_slicer_extension",
]

#: the extension's name, which is ``project()`` of the root CMakeLists.txt and the catalog entry's file name
EXTENSION_NAME = "SoftCAM"
#: the repository's name, which starts with "Slicer" (the index's ``check_git_repository_name`` wants it)
REPOSITORY_NAME = "Slicer" + EXTENSION_NAME
#: the newest catalog entry schema (Slicer/Slicer Schemas/, also in ExtensionsIndex schemas/)
CATALOG_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
)
#: the meta-information of Slicer's extension template (Utilities/Templates/Extensions/Default/CMakeLists.txt)
REQUIRED_VARIABLES = (
    "EXTENSION_HOMEPAGE",
    "EXTENSION_CATEGORY",
    "EXTENSION_CONTRIBUTORS",
    "EXTENSION_DESCRIPTION",
    "EXTENSION_ICONURL",
    "EXTENSION_SCREENSHOTURLS",
    "EXTENSION_DEPENDS",
)
SCREENSHOT = os.path.join("docs", "images", "demo_evidence_maps_val.png")
_SET = re.compile(r'^set\((EXTENSION_[A-Z]+) "([^"]*)"\)', re.M)
# the module CMake's line that reaches two folders up (spelt with os.pardir: this file is in the output too)
_SOURCE_ROOT_LINE = f"set(SOFTCAM_SOURCE_ROOT ${{CMAKE_CURRENT_SOURCE_DIR}}/{os.pardir}/{os.pardir})"
_RUNTIME_CONFIGS = (".yaml", ".json", ".conf")  # CopyRuntime.cmake's globs of bundle/configs


def cmake_variables(text: str) -> dict[str, str]:
    """The ``set(EXTENSION_<NAME> "value")`` lines of an extension's CMakeLists.txt, by name."""
    return dict(_SET.findall(text))


def _source_root() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "slicer_extension", "CMakeLists.txt")):
        raise FileNotFoundError(
            f"{root} is not a monai_softcam source tree (no slicer_extension/CMakeLists.txt): "
            "run slicer-extension from a clone of the repository"
        )
    return root


def _ignore(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def _root_cmake(text: str, urls: Mapping[str, str]) -> str:
    found = cmake_variables(text)
    missing = [name for name in REQUIRED_VARIABLES if name not in found]
    if missing:
        raise ValueError(f"slicer_extension/CMakeLists.txt lacks {', '.join(missing)}")
    if not re.search(r"^project\(" + EXTENSION_NAME + r"\)", text, re.M):
        raise ValueError(f"slicer_extension/CMakeLists.txt: project() is not {EXTENSION_NAME}")
    for name, value in urls.items():
        text = re.sub(r"^set\(" + name + r' "[^"]*"\)', lambda _: f'set({name} "{value}")', text, count=1, flags=re.M)
    return text


def _module_cmake(text: str) -> str:
    if text.count(_SOURCE_ROOT_LINE) != 1:
        raise ValueError(f"slicer_extension/SoftCAM/CMakeLists.txt: expected the line {_SOURCE_ROOT_LINE!r} once")
    return text.replace(
        _SOURCE_ROOT_LINE,
        "# In this repository the runtime lies in the module's folder (monai_softcam/, bundle/configs/).\n"
        "set(SOFTCAM_SOURCE_ROOT ${CMAKE_CURRENT_SOURCE_DIR})",
    )


def _readme(variables: Mapping[str, str], owner: str, version: str, commit: str | None) -> str:
    source = f"monai_softcam {version}" + (f" (commit {commit})" if commit else "")
    return f"""# SoftCAM for 3D Slicer

{variables["EXTENSION_DESCRIPTION"]}

![SoftCAM evidence maps](Screenshots/1.png)

Install it from Slicer's Extensions Manager (category *{variables["EXTENSION_CATEGORY"]}*). It depends on
the PyTorch extension; on first use the module lists the Python packages Slicer lacks and installs them only
if you agree.

This repository is generated from {source} by `python -m monai_softcam slicer-extension OUT`: do not
edit it here. The module's documentation (use, tests, security and limits) is `slicer_extension/README.md`
of monai_softcam (https://github.com/{owner}/monai_softcam).

```
CMakeLists.txt        extension meta-information (3D Slicer Extensions Index)
SoftCAM.png           extension icon
Screenshots/1.png     screenshot
SoftCAM/              the scripted module (SoftCAM.py, SoftCAMLib/, Resources/, Testing/)
  monai_softcam/      the monai_softcam package, installed beside the module (CopyRuntime.cmake)
  bundle/configs/     the bundle configs of the module's self-test
```

Contributors: {variables["EXTENSION_CONTRIBUTORS"]}. License: see LICENSE.
"""


def _git_commit(root: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_init(repo: str, branch: str) -> None:
    def git(*args: str) -> None:
        proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise ValueError(f"git {args[0]} in {repo} failed: {proc.stderr.strip()}")

    git("init", "-q", "-b", branch)
    git("add", "-A")
    git(
        "-c",
        "user.name=monai_softcam",
        "-c",
        "user.email=monai_softcam@users.noreply.github.com",
        "commit",
        "-q",
        "-m",
        f"{EXTENSION_NAME} extension, generated by python -m monai_softcam slicer-extension",
    )


def write_slicer_extension(
    out: str, owner: str = "monai-softcam", branch: str = "main", git: bool = False
) -> dict[str, str]:
    """Write the extension repository ``OUT/SlicerSoftCAM`` and its catalog entry ``OUT/SoftCAM.json``
    (module docstring) from this source tree; its URLs name ``github.com/<owner>/SlicerSoftCAM`` at
    ``branch``. ``git``: also make it a git repository with one commit on ``branch``. ``out`` must
    not hold either yet. Returns the paths: ``repository`` and ``entry``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", owner):
        raise ValueError(f"--owner {owner!r} is not a GitHub user or organisation name")
    if not branch or branch.startswith("-") or any(c in branch for c in " ~^:?*[\\"):
        raise ValueError(f"--branch {branch!r} is not a git branch name")
    root = _source_root()
    repo = os.path.join(out, REPOSITORY_NAME)
    entry_path = os.path.join(out, EXTENSION_NAME + ".json")
    for path in (repo, entry_path):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists")
    extension = os.path.join(root, "slicer_extension")
    raw = f"https://raw.githubusercontent.com/{owner}/{REPOSITORY_NAME}/{branch}"
    urls = {
        "EXTENSION_HOMEPAGE": f"https://github.com/{owner}/{REPOSITORY_NAME}",
        "EXTENSION_ICONURL": f"{raw}/{EXTENSION_NAME}.png",
        "EXTENSION_SCREENSHOTURLS": f"{raw}/Screenshots/1.png",
    }
    with open(os.path.join(extension, "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = _root_cmake(f.read(), urls)
    with open(os.path.join(extension, EXTENSION_NAME, "CMakeLists.txt"), encoding="utf-8") as f:
        module_cmake = _module_cmake(f.read())
    variables = cmake_variables(cmake)

    module = os.path.join(repo, EXTENSION_NAME)
    shutil.copytree(os.path.join(extension, EXTENSION_NAME), module, ignore=_ignore)
    with open(os.path.join(module, "CMakeLists.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(module_cmake)
    shutil.copytree(
        os.path.join(root, "monai_softcam"),
        os.path.join(module, "monai_softcam"),
        ignore=lambda folder, names: [
            n for n in names if not n.endswith(".py") and not os.path.isdir(os.path.join(folder, n))
        ]
        + _ignore(folder, names),
    )
    configs = os.path.join(module, "bundle", "configs")
    os.makedirs(configs)
    for name in sorted(os.listdir(os.path.join(root, "bundle", "configs"))):
        if name.endswith(_RUNTIME_CONFIGS):
            shutil.copy(os.path.join(root, "bundle", "configs", name), configs)

    with open(os.path.join(repo, "CMakeLists.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(cmake)
    shutil.copy(os.path.join(extension, EXTENSION_NAME + ".png"), os.path.join(repo, EXTENSION_NAME + ".png"))
    shutil.copy(os.path.join(root, "LICENSE"), os.path.join(repo, "LICENSE"))
    os.makedirs(os.path.join(repo, "Screenshots"))
    shutil.copy(os.path.join(root, SCREENSHOT), os.path.join(repo, "Screenshots", "1.png"))
    with open(os.path.join(repo, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(_readme(variables, owner, __version__, _git_commit(root)))

    depends = variables["EXTENSION_DEPENDS"].split()
    entry = {
        "$schema": CATALOG_SCHEMA_URL,
        "build_dependencies": [] if depends == ["NA"] else depends,
        "build_subdirectory": ".",
        "category": variables["EXTENSION_CATEGORY"],
        "scm_revision": branch,
        "scm_url": f"https://github.com/{owner}/{REPOSITORY_NAME}.git",
        "tier": 1,
    }
    with open(entry_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(entry, indent=2) + "\n")
    if git:
        _git_init(repo, branch)
    return {"repository": repo, "entry": entry_path}
