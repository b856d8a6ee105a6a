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
import types
from unittest import mock

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
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
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
    return [
        n
        for n in scene.nodes
        if n.attributes.get("SoftCAM.source") == source.GetID() and "SoftCAM.class" in n.attributes
    ]


def _run_widget(widget):
    widget.onApplyButton()
    deadline = time.time() + 120
    while widget._job is not None and time.time() < deadline:
        time.sleep(0.1)
        widget.onPoll()
    assert widget._job is None


def _shown_opacity(util):
    return util.setSliceViewerLayers.call_args.kwargs.get("foregroundOpacity")


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
    params, ui = widget._parameterNode, widget.ui
    assert params.inputVolume is source  # the first volume of the scene is preselected
    assert params.bundlePath == pathlib.Path(".") and not ui.applyButton.enabled  # no bundle yet
    ui.bundlePathLineEdit.currentPath = folder  # typed or browsed: through the GUI connector
    assert params.bundlePath == pathlib.Path(folder) and ui.applyButton.enabled
    ui.presetLineEdit.text = KNOWN_2D
    ui.subprocessCheckBox.checked = False
    assert (params.presetConfigs, params.runInSubprocess) == (KNOWN_2D, False)
    _run_widget(widget)
    assert not util.errorDisplay.called and not util.pip_install.called

    expected = run_inference(BundleInfo.read(folder, [KNOWN_2D]), Volume(source.array, matrix, name="chest"))
    table = params.resultTable  # the result lives in the scene, referred to by the parameter node
    maps = widget.logic.mapNodes(table)
    assert sorted(maps) == ["lesion", "no_lesion"] and maps == {
        n.attributes["SoftCAM.class"]: n for n in _map_nodes(scene, source)
    }
    assert maps["lesion"].name == "chest evidence lesion"
    for name, node in maps.items():
        np.testing.assert_array_equal(node.matrix, matrix)  # the source's IJK-to-RAS, unchanged
        np.testing.assert_allclose(node.array, expected.maps[name], atol=1e-6)
        display = node.GetDisplayNode()
        assert display.window_level[1] == 0 and display.color == "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
    assert [c.name for c in table.table.columns] == ["class", "probability", "logit (mean evidence)"]
    assert table.table.columns[1].values == pytest.approx(
        [expected.probabilities[c] for c in ["no_lesion", "lesion"]], abs=1e-6
    )
    shown = util.setSliceViewerLayers.call_args.kwargs
    assert shown["background"] is source and shown["foreground"] is maps[expected.predicted_class]
    assert ui.classComboBox.items == ["no_lesion", "lesion"] and ui.probabilityTableView.table_node is table
    assert expected.predicted_class in ui.statusLabel.text and ui.exportButton.enabled

    ui.classComboBox.currentIndex = 1 - ui.classComboBox.currentIndex  # the class selector switches the overlay
    assert util.setSliceViewerLayers.call_args.kwargs["foreground"] is maps[ui.classComboBox.currentText]
    ui.thresholdSlider.value = 0.5
    assert maps["lesion"].GetDisplayNode().apply_threshold and maps["lesion"].GetDisplayNode().threshold[0] > 0

    fakes.qt.QFileDialog.getExistingDirectory.return_value = str(tmp_path / "export")
    ui.exportFormatComboBox.currentIndex = 0  # NRRD
    ui.exportButton.click()
    assert sorted(os.listdir(tmp_path / "export")) == [
        "chest_evidence_lesion.nrrd",
        "chest_evidence_no_lesion.nrrd",
        "chest_probabilities.csv",
    ]

    ui.subprocessCheckBox.checked = True  # the default: same result from a child process
    _run_widget(widget)
    assert widget._timer.start.called and not util.errorDisplay.called
    second = [n for n in _map_nodes(scene, source) if n not in maps.values()]
    assert sorted(n.name for n in second) == ["chest evidence lesion_1", "chest evidence no_lesion_1"]
    assert params.resultTable is not table and set(widget.logic.mapNodes(params.resultTable).values()) == set(second)
    for node in second:
        np.testing.assert_allclose(node.array, expected.maps[node.attributes["SoftCAM.class"]], atol=1e-6)


def _with_views(fakes):
    """A main window's layout manager (one slice view) that records the rotations asked of it."""
    rotations = []
    manager = mock.MagicMock(name="layoutManager")
    manager.sliceViewNames.return_value = ["Red"]
    manager.sliceWidget.return_value.mrmlSliceNode.return_value.RotateToVolumePlane.side_effect = rotations.append
    fakes.slicer.app.layoutManager = lambda: manager
    return rotations


def _shown_result(slicer_env, tmp_path, views=True):
    """A widget that has shown a result of the known-evidence bundle (in-process), with slice views
    or (``views=False``) headless."""
    fakes, SoftCAM = slicer_env
    if views:
        _with_views(fakes)
    from SoftCAMLib.testing import write_test_bundle

    folder = write_test_bundle(str(tmp_path / "bundle"), [KNOWN_2D])
    source = _volume_node(fakes.slicer.mrmlScene, "chest", (1, 40, 64), np.diag([0.5, 0.7, 1.0, 1.0]))
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    params = widget._parameterNode  # set directly: the widget path of the bundle is the first test's
    params.bundlePath, params.presetConfigs, params.runInSubprocess = pathlib.Path(folder), KNOWN_2D, False
    _run_widget(widget)
    assert not fakes.slicer.util.errorDisplay.called, fakes.slicer.util.errorDisplay.call_args
    maps = {n.attributes["SoftCAM.class"]: n for n in _map_nodes(fakes.slicer.mrmlScene, source)}
    assert sorted(maps) == ["lesion", "no_lesion"]
    return widget, maps


def test_a_bundle_folder_or_a_torchscript_file_can_be_chosen(slicer_env, tmp_path):
    """Defect 1: the path widget must accept folders (its validator is built from nameFilters: with
    *.ts, a folder never reached the parameter node), Browse must open a folder dialog, and a .ts
    export is chosen with its own file dialog."""
    fakes, SoftCAM = slicer_env
    from SoftCAMLib.testing import write_test_bundle

    folder = write_test_bundle(str(tmp_path / "bundle"))
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    line, params, dialog = widget.ui.bundlePathLineEdit, widget._parameterNode, fakes.qt.QFileDialog
    dialog.getExistingDirectory.return_value = folder
    line.browse()
    assert dialog.getExistingDirectory.called and not dialog.getOpenFileName.called
    assert params.bundlePath == pathlib.Path(folder)
    export = tmp_path / "model.ts"
    export.write_bytes(b"PK")
    dialog.getOpenFileName.return_value = str(export)
    widget.ui.torchScriptButton.click()
    assert "*.ts" in dialog.getOpenFileName.call_args.args[3] and params.bundlePath == export
    # Apply only for a usable path (and an input volume)
    _volume_node(fakes.slicer.mrmlScene, "image", (1, 20, 20), np.eye(4))
    widget.ui.inputSelector.setCurrentNode(fakes.slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode"))
    assert widget.ui.applyButton.enabled
    line.currentPath = str(tmp_path)  # a folder that is not a bundle
    assert not widget.ui.applyButton.enabled and "not a MONAI bundle" in widget.ui.applyButton.toolTip


def test_the_sliders_apply_their_new_value(slicer_env, tmp_path):
    """Defect 2: Qt calls slots in connection order, so a slot connected before connectGui read the
    parameter node before the connector had written the new value."""
    fakes, _ = slicer_env
    widget, maps = _shown_result(slicer_env, tmp_path)
    util = fakes.slicer.util
    widget.ui.opacitySlider.value = 0.8
    assert _shown_opacity(util) == 0.8
    widget.ui.thresholdSlider.value = 0.6
    peak = max(float(np.abs(n.array).max()) for n in maps.values())
    assert maps["lesion"].GetDisplayNode().threshold[0] == pytest.approx(0.6 * peak)
    widget.ui.thresholdSlider.value = 0.0
    assert not maps["lesion"].GetDisplayNode().apply_threshold


def test_headless_slicer_has_no_layout_manager_and_views_are_oriented_once(slicer_env, tmp_path):
    """Defect 4: with --no-main-window slicer.app.layoutManager() is None, and
    setSliceViewerLayers(rotateToVolumePlane=True) dereferences it; with views, a new result
    rotates and fits them once, a class switch does not."""
    fakes, _ = slicer_env
    widget, _ = _shown_result(slicer_env, tmp_path, views=False)  # headless: no AttributeError
    rotations = _with_views(fakes)
    _run_widget(widget)
    assert len(rotations) == 1
    widget.ui.classComboBox.currentIndex = 1 - widget.ui.classComboBox.currentIndex
    assert len(rotations) == 1


def test_after_a_scene_close_or_node_removal_nothing_stale_is_touched(slicer_env, tmp_path):
    """Defect 7: the logic kept nodes that had left the scene; their GetDisplayNode() is None."""
    fakes, _ = slicer_env
    widget, maps = _shown_result(slicer_env, tmp_path)
    scene = fakes.slicer.mrmlScene
    scene.RemoveNode(maps["lesion"])
    assert maps["lesion"].GetDisplayNode() is None  # as vtkMRMLNode::GetNthNodeReference without a scene
    widget.ui.opacitySlider.value = 0.3  # the remaining map is updated, the removed one left alone
    assert _shown_opacity(fakes.slicer.util) == 0.3
    scene.Clear()  # File > Close scene: the widget reconnects to the (reset) parameter node
    assert not widget.ui.exportButton.enabled  # the result went with the scene
    widget.ui.opacitySlider.value = 0.9
    widget.ui.thresholdSlider.value = 0.4
    assert not fakes.slicer.util.errorDisplay.called


def test_packages_install_as_lists_torch_through_pytorch_utils_with_a_floor(slicer_env, monkeypatch, tmp_path):
    """Defect 3 and the self-sufficient extension: pip gets lists (slicer.util.pip_install splits a
    string with shlex: Windows paths and spaces break); torch comes from PyTorchUtils with the
    version floor; Slicer 5.12's slicer.packaging.pip_ensure gets the requirements file."""
    fakes, SoftCAM = slicer_env
    from SoftCAMLib import REQUIREMENTS_FILE, TORCH_REQUIREMENT, requirements

    logic = SoftCAM.SoftCAMLogic()
    logic.installRequirements([TORCH_REQUIREMENT, "monai>=1.4", "pydicom>=3.0"])
    assert fakes.pip_calls == [["install", "torch>=2.3"], ["install", "monai>=1.4", "pydicom>=3.0"]]
    assert all(type(c.args[0]) is list for c in fakes.slicer.util.pip_install.call_args_list)
    fakes.slicer.util.pip_install(r"C:\Users\me\My Bundle")  # what a string would have done
    assert fakes.pip_calls[-1] == ["install", "C:UsersmeMy", "Bundle"]  # POSIX shlex: backslashes and the space

    torch_utils = types.ModuleType("PyTorchUtils")
    installs = []
    torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(
        installTorch=lambda **kw: installs.append(kw) or "torch"
    )
    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: ["loaded", path]
    ensured = []
    packaging.pip_ensure = lambda reqs, **kw: ensured.append((reqs, kw))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    del fakes.pip_calls[:]
    logic.installRequirements([TORCH_REQUIREMENT, "monai>=1.4"])
    assert installs == [{"askConfirmation": False, "torchVersionRequirement": ">=2.3"}] and not fakes.pip_calls
    assert ensured == [
        (["loaded", REQUIREMENTS_FILE], {"prompt_install": False, "requester": "SoftCAM", "skip_in_testing": False})
    ]
    assert "monai>=1.4" in requirements() and not any(r.startswith("torch") for r in requirements())
    with pytest.raises(RuntimeError, match="reinstall the SoftCAM extension"):
        logic.installRequirements(["monai_softcam"])


def test_relative_presets_are_read_from_the_bundle_and_the_help_states_versions_and_security(slicer_env, tmp_path):
    fakes, SoftCAM = slicer_env
    from SoftCAMLib.testing import write_test_bundle

    folder = write_test_bundle(str(tmp_path / "bundle"), [KNOWN_2D])
    with open(KNOWN_2D) as f:
        (tmp_path / "bundle" / "configs" / "known.yaml").write_text(f.read())
    bundle = SoftCAM.SoftCAMLogic.loadBundle(folder, "configs/known.yaml")
    assert bundle.config_files[-1] == os.path.join(folder, "configs", "known.yaml")
    with pytest.raises(ValueError, match=r"preset config .*bundle.*configs.*missing.yaml not found"):
        SoftCAM.SoftCAMLogic.loadBundle(folder, "configs/missing.yaml")
    module = SoftCAM.SoftCAM(types.SimpleNamespace())
    assert "Slicer 5.10 or newer" in module.parent.helpText and "runs the Python expressions" in module.parent.helpText


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

    def attempt(expected_message, can_apply=True):
        util.errorDisplay.reset_mock()
        _run_widget(widget)
        assert util.errorDisplay.called and expected_message in util.errorDisplay.call_args.args[0]
        assert len(scene.nodes) == count and widget.ui.applyButton.enabled == can_apply

    params.inputVolume, params.bundlePath = source, pathlib.Path(tmp_path)
    attempt("is not a MONAI bundle", can_apply=False)  # Apply is off for it; a script may still call it
    params.bundlePath = pathlib.Path(folder)
    params.inputVolume = volume3d
    attempt("has 6 slices but the bundle classifies 2D images")
    params.inputVolume = source
    import torch

    from monai_softcam.networks import SoftCAM as SoftCAMNet

    other = SoftCAMNet(
        "resnet18",
        spatial_dims=2,
        in_channels=3,
        num_classes=2,
        backbone_kwargs={"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True},
    )
    torch.save(other.state_dict(), os.path.join(folder, "models", "model.pt"))
    attempt("does not fit the network")
    util.errorDisplay.reset_mock()
    widget.onLoadBundle()  # loading the bundle in-process checks the weights up front
    assert "does not fit the network" in util.errorDisplay.call_args.args[0]

    # a failure half-way through making the nodes removes those already made
    from SoftCAMLib import InferenceResult

    result = InferenceResult(
        "image",
        ["a", "b"],
        {"a": 0.4, "b": 0.6},
        {"a": 0.0, "b": 0.4},
        {"a": np.zeros((1, 40, 40), np.float32), "b": None},
        np.eye(4),
    )
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
    monkeypatch.setattr(SoftCAM, "missing_requirements", lambda: ["monai>=1.4", "pydicom>=3.0"])
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    util.confirmOkCancelDisplay.return_value = False
    widget.onApplyButton()
    assert "monai>=1.4, pydicom>=3.0" in util.confirmOkCancelDisplay.call_args.args[0]
    assert not util.pip_install.called and "missing packages" in widget.ui.statusLabel.text
    util.confirmOkCancelDisplay.return_value = True
    widget.onApplyButton()  # installs, then stops at the missing input volume
    assert fakes.pip_calls == [["install", "monai>=1.4", "pydicom>=3.0"]]


def test_region_evidence_per_segment_adds_up_to_each_logit_and_follows_the_segments(slicer_env, tmp_path):
    """★ Each logit is the mean of its map, so a region's share is exact: the table per segment and
    class (summed on the map grid) adds up, with the outside, to each logit; editing a segment
    updates the table; the numbers are SoftCAMLib.region_table's (the bundle's regions.csv rule)."""
    fakes, _ = slicer_env
    from SoftCAMLib import BundleInfo, Volume, region_table, run_inference

    widget, maps = _shown_result(slicer_env, tmp_path)
    scene, params = fakes.slicer.mrmlScene, widget._parameterNode
    source = scene.GetNodeByID(params.resultTable.GetAttribute("SoftCAM.source"))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segments")
    block = np.zeros(source.array.shape, bool)
    block[..., 10:25, 30:50] = True  # the bright block of _volume_node
    corner = np.zeros(source.array.shape, bool)
    corner[..., :8, :8] = True
    lesion_id = segmentation.GetSegmentation().AddSegment("bright block", block)
    segmentation.GetSegmentation().AddSegment("corner", corner)
    widget.ui.regionsSelector.setCurrentNode(segmentation)  # through the GUI connector
    assert params.regionsSegmentation is segmentation
    regions = params.regionsTable
    assert widget.ui.regionsTableView.table_node is regions

    def rows():
        columns = {c.name: c.values for c in regions.GetTable().columns}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    logits = dict(zip(*(c.values for c in params.resultTable.GetTable().columns[::2])))
    for cls, logit in logits.items():
        shares = [r["share of the logit"] for r in rows() if r["class"] == cls]
        assert len(shares) == 3 and sum(shares) == pytest.approx(logit, abs=1e-6)  # block, corner, outside
    lesion = {r["region"]: r for r in rows() if r["class"] == "lesion"}
    assert max(lesion, key=lambda k: lesion[k]["share of the logit"]) == "bright block"
    assert lesion["bright block"]["area (mm2) or volume (mm3)"] == pytest.approx(15 * 20 * 0.5 * 0.7)

    bundle = BundleInfo.read(params.bundlePath.as_posix(), [KNOWN_2D])
    result = run_inference(bundle, Volume(source.array, source.matrix, name="chest"))
    labels = np.where(block, 1, 0) + np.where(corner & ~block, 2, 0)
    expected = {(r["region"], r["class"]): r for r in region_table(result, labels, {1: "bright block", 2: "corner"})}
    for row in rows():
        assert row["share of the logit"] == pytest.approx(
            expected[(row["region"], row["class"])]["share_of_logit"], abs=1e-9
        )

    before = lesion["bright block"]["share of the logit"]
    segmentation.GetSegmentation().SetMask(lesion_id, np.zeros_like(block))  # erase the segment
    lesion = {r["region"]: r for r in rows() if r["class"] == "lesion"}
    assert lesion["bright block"]["share of the logit"] == 0 != before
