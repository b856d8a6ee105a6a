"""The Slicer module ``SoftCAM.py`` with stand-ins for Slicer's Python modules (tests/slicer_stubs.py):
importing it does nothing heavy; the widget drives the logic once, in-process and in a subprocess;
bad input ends in a message and leaves no half-made nodes."""

from __future__ import annotations

import importlib
import json
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
    """The map nodes (on the source's voxels) that refer to ``source`` (MRML node references)."""
    return [
        n for n in scene.nodes if n.GetNodeReference("SoftCAM.source") is source and "SoftCAM.class" in n.attributes
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
    """A main window with one slice view (slicer_stubs.LayoutManager); returns its log of the
    rotations and fits asked of it."""
    return slicer_stubs.with_views(fakes, views=("Red",)).log


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
    log = _with_views(fakes)
    _run_widget(widget)
    assert [kind for kind, _ in log] == ["rotate", "fit"]
    widget.ui.classComboBox.currentIndex = 1 - widget.ui.classComboBox.currentIndex
    assert len(log) == 2


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
    version floor; Slicer 5.12's slicer.packaging.pip_ensure gets what falls short (it checks
    versions itself; the widget asked and offers the restart, so it does neither)."""
    fakes, SoftCAM = slicer_env
    from SoftCAMLib import TORCH_REQUIREMENT, requirements

    logic = SoftCAM.SoftCAMLogic()
    logic.installRequirements([TORCH_REQUIREMENT, "monai>=1.4", "pydicom>=3.0"])
    assert fakes.pip_calls == [["install", "torch>=2.3"], ["install", "monai>=1.4", "pydicom>=3.0"]]
    assert all(type(c.args[0]) is list for c in fakes.slicer.util.pip_install.call_args_list)
    fakes.slicer.util.pip_install(r"C:\Users\me\My Bundle")  # what a string would have done
    assert fakes.pip_calls[-1] == ["install", "C:UsersmeMy", "Bundle"]  # POSIX shlex: backslashes and the space

    torch_utils = types.ModuleType("PyTorchUtils")
    installs = []

    def installTorch(askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
        """SlicerPyTorch's PyTorchUtils/PyTorchUtils.py PyTorchUtilsLogic.installTorch: these three parameters
        (an unknown keyword is a TypeError, as there); it returns the torch module."""
        installs.append(
            {
                "askConfirmation": askConfirmation,
                "forceComputationBackend": forceComputationBackend,
                "torchVersionRequirement": torchVersionRequirement,
            }
        )
        return "torch"

    torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=installTorch)
    packaging = types.ModuleType("slicer.packaging")
    ensured = []

    def pip_ensure(
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        """Slicer 5.12's slicer.packaging.pip_ensure signature (an unknown keyword is a TypeError, as there;
        tests/slicer_packages.py models its behaviour per release)."""
        given = {"prompt_install": prompt_install, "prompt_restart": prompt_restart, "requester": requester}
        ensured.append((requirements, {**given, "skip_in_testing": skip_in_testing}))

    packaging.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    del fakes.pip_calls[:]
    logic.installRequirements([TORCH_REQUIREMENT, "monai>=1.4"])
    assert (
        installs == [{"askConfirmation": False, "forceComputationBackend": None, "torchVersionRequirement": ">=2.3"}]
        and not fakes.pip_calls
    )
    assert ensured == [
        (
            ["monai>=1.4"],
            {"prompt_install": False, "prompt_restart": False, "requester": "SoftCAM", "skip_in_testing": False},
        )
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
    monkeypatch.setattr(SoftCAM, "loaded_requirements", lambda missing: [])  # none imported yet
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    util.confirmOkCancelDisplay.return_value = False
    widget.onApplyButton()
    asked = util.confirmOkCancelDisplay.call_args.args[0]
    assert "monai>=1.4 (" in asked and "pydicom>=3.0 (" in asked and "installed" in asked  # with what is there now
    assert not util.pip_install.called and "missing packages" in widget.ui.statusLabel.text
    util.confirmOkCancelDisplay.return_value = True
    widget.onApplyButton()  # installs, then stops at the missing input volume
    assert fakes.pip_calls == [["install", "monai>=1.4", "pydicom>=3.0"]] and not util.restart.called
    # an upgraded package that Slicer had imported (pydicom: its DICOM plugins): restart offered, no run
    monkeypatch.setattr(SoftCAM, "loaded_requirements", lambda missing: ["pydicom>=3.0"])
    util.confirmYesNoDisplay.return_value = False
    assert not widget._ensureRequirements() and "restart Slicer" in widget.ui.statusLabel.text
    assert "pydicom>=3.0" in util.confirmYesNoDisplay.call_args.args[0] and not util.restart.called


def test_region_evidence_per_segment_adds_up_to_each_logit_and_follows_the_segments(slicer_env, tmp_path):
    """★ Each logit is the mean of its map, so a region's share is exact: the table per segment and
    class (summed on the map grid) adds up, with the outside, to each logit; editing a segment
    updates the table; the numbers are SoftCAMLib.region_table's (the bundle's regions.csv rule)."""
    fakes, _ = slicer_env
    from SoftCAMLib import BundleInfo, Volume, region_table, run_inference

    widget, maps = _shown_result(slicer_env, tmp_path)
    scene, params = fakes.slicer.mrmlScene, widget._parameterNode
    source = params.resultTable.GetNodeReference("SoftCAM.source")
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


#: one session of the module in a modelled Slicer release (its own process: a Slicer restart is a new
#: one on the same package state): load the bundle, run it in-process, report what the user saw
_RELEASE_SESSION = r"""
import json, sys, time
import numpy as np
import slicer_stubs
release, state, installed, folder, preset = sys.argv[1:]
fakes = slicer_stubs.install(release=release, state_file=state, installed=json.loads(installed))
import SoftCAM
scene, util = fakes.slicer.mrmlScene, fakes.slicer.util
node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chest")
node.array = np.full((1, 40, 64), 0.2, np.float32)
node.array[..., 10:25, 30:50] = 0.9
node.matrix = np.diag([0.5, 0.7, 1.0, 1.0])
widget = SoftCAM.SoftCAMWidget()
widget.setup()
widget.ui.bundlePathLineEdit.currentPath = folder
widget.ui.presetLineEdit.text = preset
widget.ui.subprocessCheckBox.checked = False
widget.onLoadBundle()
report = {"loaded": widget._bundle is not None}
if report["loaded"]:
    widget.onApplyButton()
    deadline = time.time() + 120
    while widget._job is not None and time.time() < deadline:
        time.sleep(0.1)
        widget.onPoll()
    table = widget._parameterNode.resultTable
    report["probabilities"] = table.GetTable().columns[1].values if table is not None else None
report.update(
    asked=[c.args[0] for c in util.confirmOkCancelDisplay.call_args_list],
    pip=fakes.pip_calls,
    restart=util.restart.called,
    errors=[c.args[0] for c in util.errorDisplay.call_args_list],
    status=widget.ui.statusLabel.text,
)
print("REPORT " + json.dumps(report))
"""


# ---------------------------------------------------------------------------------------- issue 31
def _scene_census(scene):
    """How many nodes of each class the scene holds."""
    import collections

    return collections.Counter(n.GetClassName() for n in scene.nodes)


def test_region_refreshes_leave_no_scene_nodes_behind(slicer_env, tmp_path):
    """Issue 31, defect 4: ExportSegmentsToLabelmapNode creates a display node and a visible
    "<segmentation>_ColorTable" besides the labelmap; removing the labelmap removed neither, and the
    table refreshes on every Segment Editor stroke. Ten refreshes: the scene holds what it held."""
    fakes, _ = slicer_env
    widget, _ = _shown_result(slicer_env, tmp_path)
    scene = fakes.slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segments")
    segmentation.CreateDefaultDisplayNodes()  # as Slicer's Segment Editor makes it
    mask = np.zeros((1, 40, 64), bool)
    mask[..., 5:20, 5:30] = True
    segment = segmentation.GetSegmentation().AddSegment("blob", mask)
    widget.ui.regionsSelector.setCurrentNode(segmentation)
    regions = widget._parameterNode.regionsTable
    assert regions is not None
    before, names = _scene_census(scene), sorted(n.GetName() for n in scene.nodes)
    for stroke in range(10):
        mask[..., 20 + stroke, 5:30] = True
        segmentation.GetSegmentation().SetMask(segment, mask)  # each stroke: the table is made again
    assert _scene_census(scene) == before and sorted(n.GetName() for n in scene.nodes) == names
    assert not scene.GetNodesByClass("vtkMRMLColorTableNode") and not scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode")
    blob = [v for v, c in zip(*(c.values for c in regions.GetTable().columns[:2])) if v == "blob"]
    assert blob and not fakes.slicer.util.errorDisplay.called

    # the stand-in makes what Slicer's export makes (so the test above would see a leak)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = fakes.vtk.vtkStringArray()
    ids.InsertNextValue(segment)
    source = widget._parameterNode.resultTable.GetNodeReference("SoftCAM.source")
    logic = fakes.slicer.modules.segmentations.logic()
    assert logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, source)
    color = labelmap.GetDisplayNode().GetColorNode()
    assert color.GetName() == "segments_ColorTable" and not getattr(color, "hidden", True)
    assert labelmap.array.shape == (1, 15 + 10, 25)  # the default extent: the segments' own (cropped)
    scene.RemoveNode(labelmap)
    assert labelmap.GetDisplayNode() is None and color.GetScene() is scene  # left behind


def _post_clicks(fakes, widget):
    """Clicks queued while a handler runs: on the buttons, and straight to the handlers (a click
    queued before the button was disabled)."""
    ui = widget.ui
    for event in (ui.applyButton.click, ui.loadBundleButton.click, widget.onApplyButton, widget.onLoadBundle):
        fakes.events.post(event)


def test_a_second_click_while_packages_install_or_a_run_goes_starts_nothing(slicer_env, monkeypatch, tmp_path):
    """Issue 31, defect 5: pip's output (logProcessOutput on 5.10, PyTorchUtils on both) and the
    in-process progress call processEvents(), which delivers queued clicks. The GUI is disabled and
    the job recorded before that: one install, one run."""
    fakes, SoftCAM = slicer_env
    from SoftCAMLib.testing import write_test_bundle

    scene, util = fakes.slicer.mrmlScene, fakes.slicer.util
    folder = write_test_bundle(str(tmp_path / "bundle"), [KNOWN_2D])
    _volume_node(scene, "chest", (1, 40, 64), np.diag([0.5, 0.7, 1.0, 1.0]))
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    params, ui = widget._parameterNode, widget.ui
    params.bundlePath, params.presetConfigs, params.runInSubprocess = pathlib.Path(folder), KNOWN_2D, False
    missing = ["monai>=1.4"]
    monkeypatch.setattr(SoftCAM, "missing_requirements", lambda: list(missing))
    seen, installs = [], []

    def installing(requirements):  # pip through slicer.util.logProcessOutput: processEvents() per line
        installs.append(list(requirements))
        seen.append({name: getattr(ui, name).enabled for name in ("applyButton", "loadBundleButton", "inputSelector")})
        _post_clicks(fakes, widget)
        fakes.slicer.app.processEvents()
        missing.clear()
        return []  # nothing to restart for

    widget.logic.installRequirements = installing
    starts = []
    real_start = widget.logic.startInference

    def counting_start(*args, **kwargs):
        starts.append(args)
        _post_clicks(fakes, widget)  # delivered by the in-process run's progress (_showProgress)
        return real_start(*args, **kwargs)

    widget.logic.startInference = counting_start
    calls = fakes.events.calls
    ui.applyButton.click()
    assert installs == [["monai>=1.4"]]  # one pip, not two side by side
    assert seen == [{"applyButton": False, "loadBundleButton": False, "inputSelector": False}]
    assert len(starts) == 1 and fakes.events.calls > calls + 1  # the run's progress processed events too
    assert widget._job is None and params.resultTable is not None and not util.errorDisplay.called
    assert not fakes.events.queue
    assert ui.applyButton.enabled and ui.loadBundleButton.enabled and ui.inputSelector.enabled  # all back


def test_a_running_job_disables_the_gui_and_refuses_a_second_start(slicer_env, tmp_path):
    fakes, SoftCAM = slicer_env
    widget, _ = _shown_result(slicer_env, tmp_path)
    job = types.SimpleNamespace(state="running", message="running", poll=lambda: False, cancel=lambda: None)
    widget._job, widget._jobSource = job, widget._parameterNode.inputVolume
    widget._setBusy("running")
    ui = widget.ui
    assert not any(getattr(ui, n).enabled for n in ("applyButton", "loadBundleButton", "exportButton", "inputSelector"))
    assert ui.cancelButton.enabled
    starts = []
    widget.logic.startInference = lambda *a, **k: starts.append(a)
    widget.onApplyButton()
    widget.onLoadBundle()
    assert not starts and widget._job is job


def _finished_job(result):
    return types.SimpleNamespace(
        state="done", message="done", poll=lambda: True, result=lambda: result, cancel=lambda: None
    )


@pytest.mark.parametrize("entered", [True, False], ids=["module-shown", "module-closed"])
def test_a_run_that_finishes_after_the_scene_closed_is_dropped(slicer_env, tmp_path, entered):
    """Issue 31, defect 6: vtkMRMLScene::Clear resets its unique IDs, so a new volume gets the
    closed one's ID; a result finishing then must not attach to it (nor raise, with the module
    closed: no parameter node)."""
    fakes, _ = slicer_env
    widget, maps = _shown_result(slicer_env, tmp_path)
    scene, util = fakes.slicer.mrmlScene, fakes.slicer.util
    table = widget._parameterNode.resultTable
    source = table.GetNodeReference("SoftCAM.source")
    result = widget.logic.resultFromNodes(table)
    old_id = source.GetID()
    widget._job, widget._jobSource = _finished_job(result), source  # a run started on it
    widget._setBusy("running")
    widget.parent.isEntered = entered
    scene.Clear()
    other = _volume_node(scene, "other", (1, 40, 64), np.eye(4))
    assert other.GetID() == old_id  # the ID is given again
    count = len(scene.nodes)
    widget.onPoll()  # the run ends
    assert len(scene.nodes) == count and not _map_nodes(scene, other)
    assert "dropped" in widget.ui.statusLabel.text and not util.errorDisplay.called
    assert widget._job is None and widget._busy is None
    with pytest.raises(ValueError, match="no longer in the scene"):  # a script calling the logic
        widget.logic.showResult(result, source)


def test_results_refer_to_their_source_and_table_by_node_references(slicer_env, tmp_path):
    """Issue 31, defect 6: the links are MRML node references; removing the source drops them
    (vtkMRMLScene::RemoveNode -> UpdateReferences), and after a scene close a node with a reused
    ID is never taken for the old source or table."""
    fakes, _ = slicer_env
    widget, maps = _shown_result(slicer_env, tmp_path)
    scene = fakes.slicer.mrmlScene
    table = widget._parameterNode.resultTable
    source = table.GetNodeReference("SoftCAM.source")
    assert all(m.GetNodeReference("SoftCAM.table") is table for m in maps.values())
    assert all(m.GetNodeReference("SoftCAM.source") is source for m in maps.values())
    assert not any(k.startswith("SoftCAM.") and k != "SoftCAM.class" for m in maps.values() for k in m.attributes)
    scene.RemoveNode(source)
    assert (
        maps["lesion"].GetNodeReferenceID("SoftCAM.source") is None
        and table.GetNodeReferenceID("SoftCAM.source") is None
    )
    with pytest.raises(ValueError, match="source volume is no longer in the scene"):
        widget.logic.regionEvidence(table, scene.AddNewNodeByClass("vtkMRMLSegmentationNode"))
    scene.Clear()
    new_table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    new_map = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    assert new_table.GetID() == table.GetID() and new_map.GetID() in {m.GetID() for m in maps.values()} | {
        source.GetID()
    }
    assert widget.logic.mapNodes(table) == {} and widget.logic.mapNodes(new_table) == {}


def test_the_path_box_input_selector_and_class_list_show_only_what_applies(slicer_env, tmp_path):
    """Issue 31, defect 7: no "." in the path box (Browse opened in Slicer's working directory);
    the input selector offers images, not evidence maps or labelmaps; a scene close clears the
    class list."""
    fakes, SoftCAM = slicer_env
    fakes.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    widget = SoftCAM.SoftCAMWidget()
    widget.setup()
    assert widget._parameterNode.inputVolume is None  # a labelmap is not preselected as the input
    line, dialog = widget.ui.bundlePathLineEdit, fakes.qt.QFileDialog
    assert line.currentPath == "" and widget._parameterNode.bundlePath == pathlib.Path(".")
    line.browse()
    assert dialog.getExistingDirectory.call_args.args[2] == ""  # ctkPathLineEdit's last folder, not "."
    slicer_stubs.uninstall()

    fakes = slicer_stubs.install()
    SoftCAM = importlib.import_module("SoftCAM")
    widget, maps = _shown_result((fakes, SoftCAM), tmp_path)
    scene, ui = fakes.slicer.mrmlScene, widget.ui
    assert ui.bundlePathLineEdit.currentPath == str(widget._parameterNode.bundlePath)
    source = widget._parameterNode.inputVolume
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    offered = [ui.inputSelector.nodeFromIndex(i) for i in range(ui.inputSelector.nodeCount())]
    assert offered == [source]
    assert ui.classComboBox.count == 2
    scene.Clear()
    assert ui.classComboBox.count == 0 and ui.classComboBox.currentText == ""
    assert ui.bundlePathLineEdit.currentPath == ""  # the reset parameter node has no bundle


def test_the_self_test_skips_with_a_message_before_packages_are_installed(slicer_env, monkeypatch, capsys):
    """Issue 31, defect 7: Reload and Test and the registered ctest imported torch through
    write_test_bundle before anything had installed it."""
    fakes, SoftCAM = slicer_env
    monkeypatch.setattr(SoftCAM, "missing_requirements", lambda: ["torch>=2.3", "monai>=1.4"])
    monkeypatch.setattr(SoftCAM, "write_test_bundle", mock.MagicMock(side_effect=ImportError("torch")))
    SoftCAM.SoftCAMTest().runTest()
    assert "skipped" in capsys.readouterr().out and not SoftCAM.write_test_bundle.called


def test_stand_ins_behave_as_slicer(slicer_env):
    """Issue 31, stand-in corrections: observer warnings, CreateDefaultDisplayNodes without a
    scene, setSliceViewerLayers with views, RemoveNode and references."""
    import warnings

    fakes, SoftCAM = slicer_env
    scene = fakes.slicer.mrmlScene
    observer = fakes.slicer.util.VTKObservationMixin()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "a")
    method = mock.MagicMock()
    observer.addObserver(node, 33, method, group="g", priority=1.0)
    with pytest.warns(UserWarning, match="already has observer"):
        observer.addObserver(node, 33, method)
    assert observer.getObserver(node, 33, method)[::2] == ("g", 1.0)
    observer.removeObserver(node, 33, method)
    with pytest.warns(UserWarning, match="does not have observer"):
        observer.removeObserver(node, 33, method)

    loose = fakes.slicer.vtkMRMLScalarVolumeNode("loose")
    loose.CreateDefaultDisplayNodes()  # logs, returns
    assert loose.GetDisplayNode() is None and "scene is invalid" in fakes.errors[-1]

    manager = slicer_stubs.with_views(fakes)
    fakes.slicer.util.setSliceViewerLayers(background=node, foreground=node.GetID(), rotateToVolumePlane=True, fit=True)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    assert len(composites) == 3 and all(
        c.GetBackgroundVolumeID() == node.GetID() == c.GetForegroundVolumeID() for c in composites
    )
    assert [k for k, _ in manager.log] == ["rotate"] * 3 + ["fit"] * 3

    # a module that enters, exits, re-enters and sees a scene close warns about no observer
    widget = SoftCAM.SoftCAMWidget()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*observer")
        widget.setup()
        widget.exit()
        widget.enter()
        scene.Clear()
        widget.cleanup()


def _release_session(release, state, installed, folder):
    env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + REPO_ROOT)
    argv = [sys.executable, "-c", _RELEASE_SESSION, release, str(state), json.dumps(installed), folder, KNOWN_2D]
    proc = subprocess.run(argv, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


@pytest.mark.parametrize(
    "release, installed",
    [("5.10", {}), ("5.12", {"monai": "1.3.2"})],  # 5.12: a monai below the floor, installed by another extension
    ids=["slicer-5.10", "slicer-5.12"],
)
def test_a_bundle_loads_and_runs_on_each_slicer_release(release, installed, tmp_path, monkeypatch):
    """Issue 31: Slicer 5.10 bundles pydicom 2.4.4 (no pydicom.pixels, which monai_softcam.data
    imports) and 5.12 may hold a monai older than the floor: the module compares versions, asks
    once, upgrades through the release's own pip API and, when the upgraded package was already
    imported (Slicer's DICOM plugins import pydicom at start-up), asks for a restart before use.
    tests/fixtures/slicer_releases.json holds each release's bundled versions (file and tag)."""
    monkeypatch.syspath_prepend(slicer_stubs.MODULE_DIR)
    from SoftCAMLib.testing import write_test_bundle

    folder = write_test_bundle(str(tmp_path / "bundle"), [KNOWN_2D])
    state = tmp_path / "site-packages.json"
    first = _release_session(release, state, installed, folder)
    assert first["errors"] == [], first["errors"]  # before the fix, 5.10: "No module named 'pydicom.pixels'"
    shortfall = {"5.10": ("pydicom>=3.0", "2.4.4"), "5.12": ("monai>=1.4", "1.3.2")}[release]
    assert len(first["asked"]) == 1 and all(s in first["asked"][0] for s in shortfall), first["asked"]
    assert first["pip"] == [["install", shortfall[0]]]
    if release == "5.10":  # pydicom 2.4.4 stays loaded in this Slicer: restart before the bundle runs
        assert first["restart"] and not first["loaded"] and "restart" in first["status"].lower()
        after = _release_session(release, state, installed, folder)  # Slicer restarted
    else:  # monai was not imported yet: the bundle runs at once
        assert not first["restart"]
        after = first
    assert after["loaded"] and after["errors"] == [] and after["probabilities"], after
    if after is not first:
        assert after["asked"] == [] and after["pip"] == []  # installed once, not asked again
