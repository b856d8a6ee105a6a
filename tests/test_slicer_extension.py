"""The Slicer extension as it is built and installed: what its CMake puts in Slicer's
qt-scripted-modules folder (the module, SoftCAMLib, its resources, and, copied by
CopyRuntime.cmake, the monai_softcam package and the bundle configs) is self-sufficient: the
module's self-test (what Reload and Test and the ctest run) passes there with no source tree and
no monai_softcam installed from pip. Real Slicer builds cannot run here: the layout is made with
the same file lists and the same CMake script the build uses, and the Slicer API with the
stand-ins of tests/slicer_stubs.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TESTS_DIR, package_requirements

MODULE_SOURCE = os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM")


def _cmake_list(name: str) -> list[str]:
    """The entries of ``set(<name> ...)`` in the module's CMakeLists.txt, ``${MODULE_NAME}`` expanded."""
    text = open(os.path.join(MODULE_SOURCE, "CMakeLists.txt"), encoding="utf-8").read()
    body = re.search(r"set\(" + name + r"\s+(.*?)\)", text, re.S).group(1)
    return [entry.replace("${MODULE_NAME}", "SoftCAM") for entry in body.split()]


def test_the_cmake_lists_name_every_file_and_the_requirements_are_monai_softcams():
    scripts = _cmake_list("MODULE_PYTHON_SCRIPTS")
    library = sorted(
        f"SoftCAMLib/{f}" for f in os.listdir(os.path.join(MODULE_SOURCE, "SoftCAMLib")) if f.endswith(".py")
    )
    assert sorted(s for s in scripts if s.startswith("SoftCAMLib/")) == library  # none forgotten, none stale
    for entry in scripts + _cmake_list("MODULE_PYTHON_RESOURCES"):
        assert os.path.isfile(os.path.join(MODULE_SOURCE, entry)), entry

    sys.path.insert(0, MODULE_SOURCE)
    from SoftCAMLib import TORCH_REQUIREMENT, requirements

    setup = package_requirements()
    assert TORCH_REQUIREMENT in setup  # the same floor as the package's
    assert requirements() == [r for r in setup if not r.startswith("torch")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake to run CopyRuntime.cmake")
def test_the_installed_layout_runs_the_module_self_test_on_its_own(tmp_path):
    layout = tmp_path / "lib" / "Slicer-5.12" / "qt-scripted-modules"
    for entry in _cmake_list("MODULE_PYTHON_SCRIPTS") + _cmake_list("MODULE_PYTHON_RESOURCES"):
        os.makedirs(layout / os.path.dirname(entry), exist_ok=True)
        shutil.copy(os.path.join(MODULE_SOURCE, entry), layout / entry)
    subprocess.run(
        [
            "cmake",
            f"-DSOFTCAM_SOURCE_ROOT={REPO_ROOT}",
            f"-DSOFTCAM_DESTINATION={layout}",
            "-P",
            os.path.join(MODULE_SOURCE, "CopyRuntime.cmake"),
        ],
        check=True,
        capture_output=True,
    )
    assert (layout / "monai_softcam" / "networks" / "softcam.py").is_file()
    assert (layout / "Resources" / "bundle" / "configs" / "inference.yaml").is_file()

    code = (
        "import os, sys, slicer_stubs\n"
        "slicer_stubs.install()\n"
        "import SoftCAM, SoftCAMLib, monai_softcam\n"
        "layout = os.environ['SOFTCAM_MODULE_DIR']\n"
        "assert monai_softcam.__file__.startswith(layout), monai_softcam.__file__\n"
        "assert SoftCAMLib.package_root() == layout and SoftCAMLib.missing_requirements() == []\n"
        "SoftCAM.SoftCAMTest().runTest()\n"
        "print('self-test passed')\n"
    )
    env = dict(os.environ, SOFTCAM_MODULE_DIR=str(layout), PYTHONPATH=TESTS_DIR)  # no source tree on the path
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert proc.returncode == 0 and "self-test passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_the_inference_subprocess_finds_the_shipped_package_and_hides_its_console(monkeypatch, tmp_path):
    """An installed extension keeps monai_softcam beside the module, on Slicer's sys.path but not a
    child Python's: the child's PYTHONPATH starts with it. On Windows the console window is hidden
    as slicer.util.launchConsoleProcess hides it (STARTUPINFO, STARTF_USESHOWWINDOW, SW_HIDE)."""
    import subprocess as sp
    import types

    sys.path.insert(0, MODULE_SOURCE)
    from SoftCAMLib import inference, package_root

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    options = inference.child_process_options()
    assert options["env"]["PYTHONPATH"].split(os.pathsep) == [package_root(), "/elsewhere"]
    assert "startupinfo" not in options
    monkeypatch.setattr(sp, "STARTUPINFO", lambda: types.SimpleNamespace(), raising=False)
    monkeypatch.setattr(os, "name", "nt")
    try:
        info = inference.child_process_options()["startupinfo"]
    finally:
        monkeypatch.undo()
    assert (info.dwFlags, info.wShowWindow) == (1, 0)
