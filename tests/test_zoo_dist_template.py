"""The Model Zoo's distributed test of a packaged bundle (``ci/unit_tests/test_<name>_dist.py``), written from the
template ``monai_softcam/templates/zoo_dist_test.py``: it fills in as the unit-test template does (the same three
marked lines), the filled file is valid, lint-clean Python naming the bundle, and (slow) it trains the packaged
tiny demo bundle with train.yaml + multi_gpu_train.yaml through the Zoo's multi-GPU command, run as the Zoo runs
its distributed tests (tests/test_model_zoo.py, slow)."""

import ast
import importlib.util
import os
import subprocess
import sys
import types

import pytest
import torch
from conftest import REPO_ROOT

NAME = "lesion_synthetic_softcam_classification"
CLASS = "TestLesionSyntheticSoftcamClassification"
ZOO_DIST_TEST = os.path.join(REPO_ROOT, "monai_softcam", "templates", "zoo_dist_test.py")
#: the marked lines package-bundle fills in (as in zoo_unit_test.py); a trailing "  #" comment may follow each
MARKERS = ('BUNDLE_NAME = "bundle_name"', "QUICK_TASK: dict = {}", "class TestBundle(unittest.TestCase):")
#: the Zoo's flake8 and isort settings (github:Project-MONAI/model-zoo setup.cfg); its black: line length 120
ZOO_SETUP_CFG = """[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore = E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419

[isort]
known_first_party = models
profile = black
line_length = 120
"""


def dist_test(name, task):
    """The filled template, as package-bundle writes it."""
    from monai_softcam.package import zoo_dist_test

    return zoo_dist_test(name, task)


def test_the_zoo_dist_test_template_has_each_marked_line_once_and_imports(monkeypatch):
    """The template is package data (linted with the tree): each line package-bundle fills in occurs exactly once
    (the filler's rule: the line up to a trailing ``  #`` comment), and it imports with the Zoo's
    ci/unit_tests/utils.py stood in: one test, one process per GPU or two CPU processes."""
    with open(ZOO_DIST_TEST, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    for marker in MARKERS:
        assert [line.split("  #")[0] for line in lines].count(marker) == 1, marker
    assert text.count("the bundle_name bundle") == 1  # the docstring names the bundle

    monkeypatch.setattr(sys, "path", list(sys.path))  # the template puts models/<name> on the path
    monkeypatch.setitem(sys.modules, "utils", types.SimpleNamespace(export_config_and_run_mgpu_cmd=None))
    spec = importlib.util.spec_from_file_location("zoo_dist_template", ZOO_DIST_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {n for n in dir(module.TestBundle) if n.startswith("test_")} == {"test_train_mgpu_config"}
    assert module.BUNDLE_NAME == "bundle_name" and module.QUICK_TASK == {}
    assert module.NPROC == (torch.cuda.device_count() or 2)


def test_the_filled_zoo_dist_test_is_python_naming_the_bundle():
    from monai_softcam.task import Task

    text = dist_test(NAME, Task(["a", "b"], 2, 1, [96, 96]))
    compile(text, f"test_{NAME}_dist.py", "exec")
    tree = ast.parse(text)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign):
            values[node.target.id] = node.value
    assert ast.literal_eval(values["BUNDLE_NAME"]) == NAME
    assert ast.literal_eval(values["QUICK_TASK"]) == {"image_size": [64, 64]}  # a quick run of a 96-px task
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == [CLASS]
    assert "bundle_name" not in text and text.startswith(f'"""Model Zoo distributed test of the {NAME} bundle.')
    assert "QUICK_TASK: dict = {}" in dist_test(NAME, Task(["a", "b"], 2, 1, [32, 32]))


@pytest.mark.parametrize("name", [NAME, "pathology_nuclei_segmentation_classification_wholeslide_softcam_x"])
def test_the_filled_zoo_dist_test_passes_the_zoos_code_format_check(name, tmp_path):
    """isort, black and flake8 with the Zoo's settings and flags (its runtests.sh --codeformat) on the filled file, also for a
    long bundle name (the docstring's first line holds it)."""
    for tool in ("isort", "black", "flake8"):
        pytest.importorskip(tool)
    from monai_softcam.task import Task

    path = tmp_path / f"test_{name}_dist.py"
    path.write_text(dist_test(name, Task(["a", "b"], 2, 1, [96, 96])), encoding="utf-8")
    (tmp_path / "setup.cfg").write_text(ZOO_SETUP_CFG)
    for cmd in (
        ["isort", "--settings-path", str(tmp_path), "--check-only", "--diff", str(path)],
        ["black", "--line-length", "120", "--skip-magic-trailing-comma", "--check", "--diff", str(path)],
        ["flake8", "--config", str(tmp_path / "setup.cfg"), str(path)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *cmd], cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace"
        )
        assert done.returncode == 0, f"{cmd[0]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
