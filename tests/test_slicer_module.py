"""The Slicer module ``SoftCAM.py`` with stand-ins for Slicer's Python modules (tests/slicer_stubs.py):
importing it does nothing heavy; the widget drives the logic once, in-process and in a subprocess;
bad input ends in a message and leaves no half-made nodes."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import slicer_stubs
from conftest import REPO_ROOT, TESTS_DIR

KNOWN_2D = os.path.join(TESTS_DIR, "configs", "known_evidence_2d.yaml")


def test_importing_the_module_installs_and_computes_nothing():
    code = (
        "import sys, slicer_stubs\n"
        "fakes = slicer_stubs.install()\n"
        "import SoftCAM\n"
        "heavy = [m for m in ('torch', 'monai', 'monai_softcam', 'SimpleITK', 'nibabel', 'ignite') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not fakes.slicer.util.pip_install.called and not fakes.slicer.util.confirmOkCancelDisplay.called\n"
        "assert not fakes.slicer.mrmlScene.nodes and not fakes.slicer.app.method_calls\n"
        "assert {'SoftCAM', 'SoftCAMWidget', 'SoftCAMLogic', 'SoftCAMTest', 'SoftCAMParameterNode'} <= set(dir(SoftCAM))\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + REPO_ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.fixture
def slicer_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + os.pathsep + REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    fakes = slicer_stubs.install()
    module = importlib.import_module("SoftCAM")
    yield fakes, module
    slicer_stubs.uninstall()


def _volume_node(scene, name, shape, matrix):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.array = np.full(shape, 0.2, np.float32)
    node.array[..., 10:25, 30:50] = 0.9
    node.matrix = np.asarray(matrix, float)
    return node


def _map_nodes(scene, source):
    return [n for n in scene.nodes if n.attributes.get("SoftCAM.source") == source.GetID()]


def _run_widget(widget):
    widget.onApplyButton()
    deadline = time.time() + 120
    while widget._job is not None and time.time() < deadline:
        time.sleep(0.1)
        widget.onPoll()
    assert widget._job is None


def test_widget_drives_logic_in_process_and_in_a_subprocess(slicer_env, tmp_path):
    fakes, SoftCAM = slicer_env
    from SoftCAMLib import BundleInfo, Volume, run_inference
    from SoftCAMLib.testing import write_test_bundle

    scene, util = fakes.slicer.mrmlScene, fakes.slicer.util
    folder = write_test_bundle(str(tmp_path / "bundle"), [KNOWN_2D])
    matrix = np.array([[0, -0.4, 0, 10.0], [0.6, 0, 0, -4.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])
    source = _volume_node(scene, "chest", (1, 40, 64), matrix)

    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    params = widget._parameterNode
    assert params.inputVolume is source  # the first volume of the scene is preselected
    params.bundlePath = pathlib.Path(folder)
    params.presetConfigs = KNOWN_2D
    params.runInSubprocess = False
    _run_widget(widget)
    assert not util.errorDisplay.called and not util.pip_install.called

    expected = run_inference(BundleInfo.read(folder, [KNOWN_2D]), Volume(source.array, matrix, name="chest"))
    maps = {n.attributes["SoftCAM.class"]: n for n in _map_nodes(scene, source)}
    assert sorted(maps) == ["lesion", "no_lesion"]
    assert maps["lesion"].name == "chest evidence lesion"
    for name, node in maps.items():
        np.testing.assert_array_equal(node.matrix, matrix)  # the source's IJK-to-RAS, unchanged
        np.testing.assert_allclose(node.array, expected.maps[name], atol=1e-6)
        assert node.display.window_level[1] == 0 and "ColdToHot" in node.display.color  # diverging, centred at 0
    table = widget.logic.tableNode
    assert [c.name for c in table.table.columns] == ["class", "probability", "logit (mean evidence)"]
    assert table.table.columns[1].values == pytest.approx([expected.probabilities[c] for c in ["no_lesion", "lesion"]], abs=1e-6)
    shown = util.setSliceViewerLayers.call_args.kwargs
    assert shown["background"] is source and shown["foreground"] is maps[expected.predicted_class]
    widget.ui.classComboBox.addItems.assert_called_with(["no_lesion", "lesion"])
    assert expected.predicted_class in widget.ui.statusLabel.text

    widget.onClassSelected(1)  # the class selector switches the overlay
    assert util.setSliceViewerLayers.call_args.kwargs["foreground"] is maps["lesion"]
    params.threshold = 0.5
    widget.onDisplayChanged()
    assert maps["lesion"].display.apply_threshold and maps["lesion"].display.threshold[0] > 0

    fakes.qt.QFileDialog.getExistingDirectory.return_value = str(tmp_path / "export")
    widget.ui.exportFormatComboBox.currentText = "NRRD"
    widget.onExportButton()
    assert sorted(os.listdir(tmp_path / "export")) == [
        "chest_evidence_lesion.nrrd", "chest_evidence_no_lesion.nrrd", "chest_probabilities.csv"
    ]  # fmt: skip

    params.runInSubprocess = True  # the default: same result from a child process
    _run_widget(widget)
    assert widget._timer.start.called and not util.errorDisplay.called
    second = [n for n in _map_nodes(scene, source) if n not in maps.values()]
    assert sorted(n.name for n in second) == ["chest evidence lesion_1", "chest evidence no_lesion_1"]
    for node in second:
        np.testing.assert_allclose(node.array, expected.maps[node.attributes["SoftCAM.class"]], atol=1e-6)


def test_bad_input_gives_a_message_and_no_nodes(slicer_env, tmp_path):
    fakes, SoftCAM = slicer_env
    from SoftCAMLib.testing import write_test_bundle

    scene, util = fakes.slicer.mrmlScene, fakes.slicer.util
    folder = write_test_bundle(str(tmp_path / "bundle"))
    source = _volume_node(scene, "image", (1, 40, 40), np.eye(4))
    volume3d = _volume_node(scene, "ct", (6, 40, 40), np.eye(4))
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    params = widget._parameterNode
    params.runInSubprocess = False
    count = len(scene.nodes)

    def attempt(expected_message):
        util.errorDisplay.reset_mock()
        _run_widget(widget)
        assert util.errorDisplay.called and expected_message in util.errorDisplay.call_args.args[0]
        assert len(scene.nodes) == count and widget.ui.applyButton.enabled

    params.inputVolume, params.bundlePath = source, pathlib.Path(tmp_path)
    attempt("is not a MONAI bundle")
    params.bundlePath = pathlib.Path(folder)
    params.inputVolume = volume3d
    attempt("has 6 slices but the bundle classifies 2D images")
    params.inputVolume = source
    import torch

    from monai_softcam.networks import SoftCAM as SoftCAMNet

    other = SoftCAMNet("resnet18", spatial_dims=2, in_channels=3, num_classes=2,
                       backbone_kwargs={"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True})  # fmt: skip
    torch.save(other.state_dict(), os.path.join(folder, "models", "model.pt"))
    attempt("does not fit the network")
    util.errorDisplay.reset_mock()
    widget.onLoadBundle()  # loading the bundle in-process checks the weights up front
    assert "does not fit the network" in util.errorDisplay.call_args.args[0]

    # a failure half-way through making the nodes removes those already made
    from SoftCAMLib import InferenceResult

    result = InferenceResult("image", ["a", "b"], {"a": 0.4, "b": 0.6}, {"a": 0.0, "b": 0.4},
                             {"a": np.zeros((1, 40, 40), np.float32), "b": None}, np.eye(4))  # fmt: skip
    real = util.updateVolumeFromArray

    def fail_on_none(node, array):
        if array is None:
            raise ValueError("no array")
        real(node, array)

    util.updateVolumeFromArray = fail_on_none
    with pytest.raises(ValueError, match="no array"):
        widget.logic.showResult(result, source)
    assert len(scene.nodes) == count


def test_missing_packages_are_installed_only_with_consent(slicer_env, monkeypatch):
    fakes, SoftCAM = slicer_env
    util = fakes.slicer.util
    monkeypatch.setattr(SoftCAM, "missing_requirements", lambda: ["monai", "monai_softcam"])
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    util.confirmOkCancelDisplay.return_value = False
    widget.onApplyButton()
    assert "monai>=1.4" in util.confirmOkCancelDisplay.call_args.args[0]
    assert not util.pip_install.called and "missing packages" in widget.ui.statusLabel.text
    util.confirmOkCancelDisplay.return_value = True
    widget._parameterNode.bundlePath = None  # installs, then stops at the missing bundle
    widget.onApplyButton()
    installed = [c.args[0] for c in util.pip_install.call_args_list]
    assert installed == ["monai>=1.4", REPO_ROOT]  # monai_softcam from this source tree
