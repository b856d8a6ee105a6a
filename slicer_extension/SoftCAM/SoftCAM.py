"""SoftCAM: see where a trained SoftCAM bundle finds evidence for each class, on the image itself.

A thin Slicer shell over :mod:`SoftCAMLib` (which needs no Slicer and is tested with pytest): the
widget collects the choices, the logic turns volume nodes into :class:`SoftCAMLib.Volume` and
results back into nodes. Importing this file imports no torch/MONAI and installs nothing.
"""

import importlib
import logging
import pathlib
import shutil
import sys
import tempfile
from typing import Annotated, Optional

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SoftCAMLib import (
    TORCH_REQUIREMENT,
    BundleInfo,
    InferenceJob,
    InferenceResult,
    Volume,
    describe_requirements,
    export_result,
    loaded_requirements,
    missing_requirements,
    overlay_display,
    region_table,
)
from SoftCAMLib.testing import write_test_bundle

DEVICES = ("auto", "cpu", "cuda")
#: vtkSegmentation events (Libs/vtkSegmentationCore/vtkSegmentation.h): SourceRepresentationModified,
#: SegmentAdded, SegmentRemoved, SegmentModified; the region table follows them
SEGMENT_EVENTS = (62100, 62102, 62103, 62104)
REGION_COLUMNS = (
    ("region", "region"),
    ("class", "class"),
    ("evidence_sum", "evidence sum"),
    ("share_of_logit", "share of the logit"),
    ("mean_density", "mean evidence density"),
    ("size_mm", "area (mm2) or volume (mm3)"),
    ("in_view", "fraction in the map"),
)


class SoftCAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SoftCAM"
        self.parent.categories = ["Explainable AI"]
        self.parent.dependencies = []
        self.parent.contributors = ["monai_softcam developers"]
        self.parent.helpText = (
            "Runs a trained SoftCAM bundle (monai_softcam) on the selected volume and shows, for each class, "
            "the model's signed evidence map as an overlay: red where the image argues for the class, blue "
            "against it. A SoftCAM logit is the mean of its map, so the map is the model's own reasoning, "
            "not a post-hoc estimate. Needs Slicer 5.10 or newer (Python 3.10+).\n\n"
            "Security: loading a bundle runs the Python expressions in its configs ($...) and the classes "
            "they name (_target_), as every MONAI bundle does, in Slicer's Python or the inference "
            "subprocess; a TorchScript export (.ts) runs its embedded configs the same way, and its network "
            "code is TorchScript. Open only bundles you trust."
        )
        self.parent.acknowledgementText = (
            "SoftCAM: Djoumessi K, Berens P. Making black box models self-explainable for medical image "
            "analysis. MIDL 2026."
        )


@parameterNodeWrapper
class SoftCAMParameterNode:
    """The module's choices, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    bundlePath: pathlib.Path  # Path(".") (the serializer's default) until one is chosen
    presetConfigs: str = ""  # preset files merged after the bundle's inference config, ';'-separated
    runInSubprocess: bool = True
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    resultTable: vtkMRMLTableNode  # the latest result's probability table; its map nodes refer to it
    regionsSegmentation: vtkMRMLSegmentationNode  # segments whose evidence the region table gives
    regionsTable: vtkMRMLTableNode  # per segment and class: evidence sum, share of the logit, ...


def ijkToRas(volumeNode) -> np.ndarray:
    """A volume node's IJK-to-RAS matrix as a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def isInputImage(volumeNode) -> bool:
    """An image SoftCAM can take: a scalar (or colour) volume, not a labelmap, not an evidence map."""
    return not volumeNode.IsA("vtkMRMLLabelMapVolumeNode") and not volumeNode.GetAttribute("SoftCAM.class")


def bundlePathProblem(path) -> Optional[str]:
    """Why ``path`` (a pathlib.Path from the parameter node) cannot be a bundle, or None if it can:
    a folder with ``configs/metadata.json`` or a ``.ts`` file. ``Path(".")`` means none chosen."""
    if path is None or str(path) in ("", "."):
        return "choose a bundle folder or a TorchScript export (.ts) first"
    path = pathlib.Path(path).expanduser()
    if path.is_file() and path.suffix == ".ts":
        return None
    if path.is_dir():
        if (path / "configs" / "metadata.json").is_file():
            return None
        return f"{path} is not a MONAI bundle (no configs/metadata.json)"
    return f"{path} is neither a bundle folder nor a .ts file"


class SoftCAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The scripted-module template's widget: the GUI is bound to the parameter node
    (``connectGui``), and the widget reacts to the node's ModifiedEvent, so that every handler reads
    values the node already holds. Results live in MRML nodes (the table in ``resultTable``)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobSource = None
        self._busy = None  # "installing", "loading" or "running": set before anything can process events
        self._bundle = None
        self._bundleKey = None
        self._timer = None
        self._shownDisplay = None  # (table ID, opacity, threshold) last applied to the overlays
        self._regionsKey = None  # (result table ID, segmentation ID) of the region table shown
        self._observedSegmentation = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SoftCAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SoftCAMLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # the path box is connected by hand: the Path connector would show Path(".") as "." (and
        # Browse would open in Slicer's working directory); an empty box opens the last folder used
        self.ui.bundlePathLineEdit.connect("currentPathChanged(QString)", self.onBundlePathChanged)
        self.ui.loadBundleButton.connect("clicked(bool)", self.onLoadBundle)
        self.ui.torchScriptButton.connect("clicked(bool)", self.onChooseTorchScript)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.classComboBox.connect("currentIndexChanged(int)", self.onClassSelected)
        # opacity and threshold: bound to the parameter node by connectGui; applied on its ModifiedEvent

        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self._observedSegmentation = None
        if self._job is not None:
            self._job.cancel(block=True)  # no timer polls after this: wait until its processes are gone
        if self._timer is not None:
            self._timer.stop()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self._parameterNode and self.hasObserver(
            self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified
        ):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._observeSegmentation(None)
        self.setParameterNode(None)
        self._showClasses([])  # the result goes with the scene
        self.ui.probabilityTableView.setMRMLTableNode(None)
        self.ui.regionsTableView.setMRMLTableNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            images = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if isInputImage(n)]
            if images:
                self._parameterNode.inputVolume = images[0]

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        self._shownDisplay = self._regionsKey = None
        if self._parameterNode:
            # each GUI element carries a "SlicerParameterName" dynamic property in the .ui file
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """The node changed (a widget, a script, a scene load): Apply's state and the overlays."""
        self._checkCanApply()
        params = self._parameterNode
        self._showBundlePath()
        self._hideMapsFromInput()
        if params is None or params.resultTable is None:
            return
        shown = (params.resultTable.GetID(), params.opacity, params.threshold)
        if shown != self._shownDisplay:
            self._shownDisplay = shown
            self.logic.updateDisplay(params.resultTable, params.opacity, params.threshold)
        segmentation = params.regionsSegmentation
        key = (params.resultTable.GetID(), segmentation.GetID() if segmentation else None)
        if key != self._regionsKey:
            self._regionsKey = key
            self._observeSegmentation(segmentation)
            self.onSegmentsChanged()

    def _showBundlePath(self) -> None:
        """The parameter's path in the box, or an empty box for none (Path("."))."""
        path = self._parameterNode.bundlePath if self._parameterNode is not None else None
        text = "" if path is None or str(path) in ("", ".") else str(path)
        if self.ui.bundlePathLineEdit.currentPath != text:
            self.ui.bundlePathLineEdit.currentPath = text

    def onBundlePathChanged(self, path: str) -> None:
        if self._parameterNode is not None and path:
            self._parameterNode.bundlePath = pathlib.Path(path)

    def _hideMapsFromInput(self) -> None:
        """The input selector offers images only: evidence maps are hidden from it (labelmaps are,
        by hideChildNodeTypes in the .ui file)."""
        volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
        hidden = [n.GetID() for n in volumes if n.GetAttribute("SoftCAM.class")]
        proxy = self.ui.inputSelector.sortFilterProxyModel()
        if list(proxy.hiddenNodeIDs) != hidden:
            proxy.hiddenNodeIDs = hidden

    def _showClasses(self, classNames, current: Optional[str] = None) -> None:
        self.ui.classComboBox.blockSignals(True)
        self.ui.classComboBox.clear()
        self.ui.classComboBox.addItems(list(classNames))
        if current is not None:
            self.ui.classComboBox.setCurrentIndex(list(classNames).index(current))
        self.ui.classComboBox.blockSignals(False)

    def _observeSegmentation(self, segmentationNode) -> None:
        if self._observedSegmentation is not None:
            for event in SEGMENT_EVENTS:
                self.removeObserver(self._observedSegmentation, event, self.onSegmentsChanged)
        self._observedSegmentation = segmentationNode.GetSegmentation() if segmentationNode else None
        if self._observedSegmentation is not None:
            for event in SEGMENT_EVENTS:
                self.addObserver(self._observedSegmentation, event, self.onSegmentsChanged)

    def onSegmentsChanged(self, caller=None, event=None) -> None:
        """The region table of the shown result and the chosen segmentation, made again."""
        params = self._parameterNode
        if params is None or params.resultTable is None or params.regionsSegmentation is None:
            return
        try:
            table = self.logic.updateRegionTable(params.resultTable, params.regionsSegmentation, params.regionsTable)
        except Exception as err:
            self._error(f"Cannot compute the region evidence:\n{err}")
            return
        if table is not params.regionsTable:
            params.regionsTable = table
        self.ui.regionsTableView.setMRMLTableNode(table)

    BUSY_WIDGETS = (
        "loadBundleButton",
        "torchScriptButton",
        "bundlePathLineEdit",
        "presetLineEdit",
        "inputSelector",
        "subprocessCheckBox",
        "deviceComboBox",
    )

    def _setBusy(self, state: Optional[str]) -> None:
        """Installing, loading or running (or None): while busy, Apply, Load and the choices they
        read are disabled, and every handler that starts something refuses."""
        self._busy = state
        self._checkCanApply()

    def _checkCanApply(self) -> None:
        """Apply is enabled only for an input volume and a usable bundle path, and nothing going
        (no install, load or run)."""
        params = self._parameterNode
        running = self._job is not None or self._busy is not None
        for name in self.BUSY_WIDGETS:
            getattr(self.ui, name).enabled = not running
        problem = None
        if params is None:
            problem = "no parameter node"
        elif params.inputVolume is None:
            problem = "select an input volume"
        else:
            problem = bundlePathProblem(params.bundlePath)
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = "Run the bundle on the input volume" if problem is None else problem
        self.ui.cancelButton.enabled = self._job is not None
        table = params.resultTable if params is not None else None
        self.ui.exportButton.enabled = table is not None and not running

    # ------------------------------------------------------------------ actions
    def _error(self, message: str) -> None:
        logging.error(message)
        self.ui.statusLabel.text = message.splitlines()[0]
        slicer.util.errorDisplay(message, windowTitle="SoftCAM")

    def _ensureRequirements(self) -> bool:
        """Install the packages that are missing or older than needed on first use, after asking
        once (never at import). An upgraded package that Slicer had already imported (pydicom, which
        Slicer's DICOM plugins import at start-up) works only after a restart: offer it, and stop."""
        missing = self.logic.missingRequirements()
        if not missing:
            return True
        listing = ", ".join(missing)
        if not slicer.util.confirmOkCancelDisplay(
            "SoftCAM needs these Python packages, missing or older than it needs in Slicer's Python:\n"
            f"{describe_requirements(missing)}\n\nInstall or upgrade them in Slicer's Python environment now?",
            windowTitle="SoftCAM",
        ):
            self.ui.statusLabel.text = "missing packages: " + listing
            return False
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            restart = self.logic.installRequirements(missing)
        except Exception as err:
            self._error(f"Failed to install {listing}:\n{err}")
            return False
        finally:
            slicer.app.restoreOverrideCursor()
        if restart:
            upgraded = ", ".join(restart)
            self.ui.statusLabel.text = f"restart Slicer to use the upgraded {upgraded}"
            if slicer.util.confirmYesNoDisplay(
                f"Upgraded {upgraded}, but Slicer had already loaded the old version, which stays in use "
                "until Slicer restarts.\n\nRestart Slicer now?",
                windowTitle="SoftCAM",
            ):
                slicer.util.restart()
            return False
        return True

    def _loadedBundle(self):
        """The chosen bundle, read again when its path or presets changed."""
        problem = bundlePathProblem(self._parameterNode.bundlePath)
        if problem is not None:
            raise ValueError(problem)
        key = (str(self._parameterNode.bundlePath), self._parameterNode.presetConfigs)
        if self._bundle is None or key != self._bundleKey:
            self._bundle = self.logic.loadBundle(*key)
            self._bundleKey = key
            self.ui.bundleInfoLabel.text = self._bundle.summary()
            for warning in self._bundle.warnings:
                logging.warning("SoftCAM: %s", warning)
        return self._bundle

    def onChooseTorchScript(self) -> None:
        if self._busy is not None:
            return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "TorchScript export of a SoftCAM bundle", "", "TorchScript export (*.ts)"
        )
        if path:  # through the widget: the GUI connector writes it to the parameter node
            self.ui.bundlePathLineEdit.currentPath = path

    def onLoadBundle(self) -> None:
        if self._busy is not None or self._job is not None:
            return  # a click queued while packages install or a run goes
        self._setBusy("loading")  # before anything can process events (pip's output does)
        try:
            self._loadBundle()
        finally:
            self._setBusy(None)

    def _loadBundle(self) -> None:
        if not self._ensureRequirements():
            return
        self._bundle = None
        try:
            bundle = self._loadedBundle()
            if not self._parameterNode.runInSubprocess:
                bundle.check_weights()
        except Exception as err:
            self._bundle = None
            self.ui.bundleInfoLabel.text = ""
            self._error(f"Cannot use this bundle:\n{err}")
            return
        self.ui.statusLabel.text = "bundle loaded"

    def onApplyButton(self) -> None:
        if self._busy is not None or self._job is not None:
            return  # a click queued while packages install or a run goes: nothing starts
        self._setBusy("running")  # recorded before anything can process events (pip, _showProgress)
        try:
            self._startRun()
        finally:
            if self._job is None:  # failed, or finished in-process (onJobFinished ran)
                self._setBusy(None)

    def _startRun(self) -> None:
        if not self._ensureRequirements() or self._parameterNode is None:
            return
        volumeNode = self._parameterNode.inputVolume
        if volumeNode is None:
            self._error("Select an input volume first.")
            return
        try:
            bundle = self._loadedBundle()
            job = self.logic.startInference(
                bundle,
                volumeNode,
                subprocess=self._parameterNode.runInSubprocess,
                device=self._parameterNode.device,
                progress=self._showProgress,
            )
        except Exception as err:
            self._bundle = None
            self._error(f"Cannot run SoftCAM on '{volumeNode.GetName()}':\n{err}")
            return
        self._job, self._jobSource = job, volumeNode
        self.ui.progressBar.setRange(0, 0)  # busy: the bundle reports no fraction for one image
        self._checkCanApply()
        if job.poll():
            self.onJobFinished()
        else:
            self._timer.start()

    def _showProgress(self, message: str) -> None:
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def onPoll(self) -> None:
        if self._job is None:
            self._timer.stop()
            return
        finished = self._job.poll()
        self.ui.statusLabel.text = self._job.message
        if finished:
            self._timer.stop()
            self.onJobFinished()

    def onJobFinished(self) -> None:
        job, source = self._job, self._jobSource
        self._job = self._jobSource = None
        self._busy = None
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(1 if job.state == "done" else 0)
        params = self._parameterNode
        if params is None or source is None or source.GetScene() is None:
            # the scene was closed (or the input removed) during the run: its volume is gone, and a
            # node with its ID may be another one now (vtkMRMLScene::Clear reuses IDs)
            message = "SoftCAM result dropped: its input volume left the scene while it ran"
            logging.warning(message)
            self.ui.statusLabel.text = message
            self._checkCanApply()
            return
        try:
            result = job.result()
            table = self.logic.showResult(result, source, params.opacity, params.threshold)
        except Exception as err:
            if job.state == "cancelled":
                self.ui.statusLabel.text = "cancelled"
            else:
                self._error(f"SoftCAM failed on '{source.GetName()}':\n{err}")
            self._checkCanApply()
            return
        self._shownDisplay = (table.GetID(), params.opacity, params.threshold)  # showResult applied them
        params.resultTable = table
        self.ui.probabilityTableView.setMRMLTableNode(table)  # (the region table follows the node's change)
        self._showClasses(result.class_names, result.predicted_class)
        self._hideMapsFromInput()
        self.ui.statusLabel.text = (
            f"{result.predicted_class} ({result.probabilities[result.predicted_class]:.3f}) in {result.seconds:.1f} s"
        )
        self._checkCanApply()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.onPoll()

    def onClassSelected(self, index: int) -> None:
        table = self._parameterNode.resultTable if self._parameterNode else None
        if table is not None and index >= 0:
            self.logic.selectClass(table, self.ui.classComboBox.itemText(index), self._parameterNode.opacity)

    def onExportButton(self) -> None:
        if self._busy is not None or self._job is not None or self._parameterNode is None:
            return
        table = self._parameterNode.resultTable
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export evidence maps to")
        if not folder or table is None:
            return
        fileFormat = "nii.gz" if "NIfTI" in self.ui.exportFormatComboBox.currentText else "nrrd"
        try:
            paths = self.logic.exportResult(table, folder, fileFormat)
        except Exception as err:
            self._error(f"Export failed:\n{err}")
            return
        self.ui.statusLabel.text = f"wrote {len(paths)} files to {folder}"


#: MRML node reference roles of a result: its map nodes refer to the table and the source volume,
#: the table to the source (references, not IDs in attributes: vtkMRMLScene::Clear reuses IDs, and
#: vtkMRMLScene::RemoveNode drops the references to a removed node)
SOURCE_ROLE = "SoftCAM.source"
TABLE_ROLE = "SoftCAM.table"


class SoftCAMLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, callable from Slicer's Python console or a script. It holds no
    GUI state: a result is its MRML nodes (a table node and one map node per class, which refer to
    the table and the source volume by MRML node references), so it goes with the scene."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SoftCAMParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ packages
    @staticmethod
    def missingRequirements() -> list[str]:
        return missing_requirements()

    @staticmethod
    def installRequirements(missing) -> list:
        """Install or upgrade ``missing`` (requirement strings: absent, or below their floor) in
        Slicer's Python, through the running Slicer's own API: torch through Slicer's PyTorch
        extension (with its version floor) when it is installed; the rest with
        ``slicer.packaging.pip_ensure`` (Slicer 5.12+; it re-checks the versions itself) or
        ``slicer.util.pip_install`` with a list (Slicer 5.10; a string would be split by shlex, which
        breaks Windows paths and paths with spaces). pip upgrades a package whose installed version
        is outside the requirement. Returns those of ``missing`` that this Python had already
        imported: they take effect after a restart of Slicer."""
        missing = list(missing)
        restart = loaded_requirements(missing)
        if "monai_softcam" in missing:
            raise RuntimeError(
                "monai_softcam's source is not beside the module: reinstall the SoftCAM extension, or add "
                "slicer_extension/SoftCAM of a monai_softcam source tree to the additional module paths"
            )
        if TORCH_REQUIREMENT in missing:
            try:
                import PyTorchUtils  # optional: Slicer's PyTorch extension, when installed
            except ImportError:
                slicer.util.pip_install([TORCH_REQUIREMENT])
            else:
                floor = TORCH_REQUIREMENT[len("torch") :]
                if (
                    PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=floor)
                    is None
                ):
                    raise RuntimeError("PyTorch was not installed")
        others = [m for m in missing if m != TORCH_REQUIREMENT]
        if others:
            try:
                packaging = importlib.import_module("slicer.packaging")  # Slicer 5.12 and later
            except ImportError:
                slicer.util.pip_install(others)
            else:
                packaging.pip_ensure(
                    others,
                    prompt_install=False,  # the widget asked, listing the versions
                    prompt_restart=False,  # the widget offers the restart, for both APIs
                    requester="SoftCAM",
                    skip_in_testing=False,
                )
        importlib.invalidate_caches()
        return restart

    @staticmethod
    def pythonExecutable() -> str:
        """The Python that runs inference subprocesses: Slicer's own (``PythonSlicer``)."""
        return shutil.which("PythonSlicer") or sys.executable

    # ------------------------------------------------------------------ bundle and volume
    @staticmethod
    def loadBundle(path: str, presetConfigs: str = "") -> BundleInfo:
        """The bundle at ``path``; preset files (``;``-separated) given relative are read from the
        bundle's folder, never from Slicer's working directory."""
        if not path or path == ".":
            raise ValueError("choose a bundle folder or a TorchScript export (.ts) first")
        base = path if pathlib.Path(path).is_dir() else str(pathlib.Path(path).parent)
        presets = []
        for preset in (p.strip() for p in presetConfigs.split(";")):
            if preset:
                presets.append(
                    preset if pathlib.Path(preset).expanduser().is_absolute() else str(pathlib.Path(base) / preset)
                )
        return BundleInfo.read(path, presets)

    @staticmethod
    def sourceFile(volumeNode) -> Optional[str]:
        """The single file ``volumeNode`` was loaded from, if it is unchanged since: its storage
        node's file, or its one DICOM instance (a 2D X-ray)."""
        storage = volumeNode.GetStorageNode()
        if storage is not None and storage.GetFileName() and not volumeNode.GetModifiedSinceRead():
            if storage.GetNumberOfFileNames() <= 1:
                return storage.GetFileName()
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        if len(uids) == 1 and not volumeNode.GetModifiedSinceRead() and getattr(slicer, "dicomDatabase", None):
            return slicer.dicomDatabase.fileForInstance(uids[0]) or None
        return None

    def volumeFromNode(self, volumeNode) -> Volume:
        return Volume(
            slicer.util.arrayFromVolume(volumeNode).copy(),
            ijkToRas(volumeNode),
            name=volumeNode.GetName(),
            source_file=self.sourceFile(volumeNode),
        )

    def startInference(
        self, bundle: BundleInfo, volumeNode, subprocess: bool = True, device: str = "auto", progress=None
    ):
        """Start an :class:`SoftCAMLib.InferenceJob` (a subprocess run returns at once: poll it)."""
        volume = self.volumeFromNode(volumeNode)
        mode = "subprocess" if subprocess else "inprocess"
        job = InferenceJob(bundle, volume, mode=mode, device=device, python=self.pythonExecutable(), progress=progress)
        return job.start()

    def process(
        self, bundle: BundleInfo, volumeNode, subprocess: bool = True, device: str = "auto", opacity=0.5, threshold=0.0
    ):
        """Run to the end (blocking) and show the result: for scripts and tests. Returns
        ``(result, table node)``."""
        result = self.startInference(bundle, volumeNode, subprocess, device).wait()
        return result, self.showResult(result, volumeNode, opacity, threshold)

    # ------------------------------------------------------------------ results as nodes
    def showResult(self, result: InferenceResult, sourceNode, opacity: float = 0.5, threshold: float = 0.0):
        """One scalar volume per class on ``sourceNode``'s geometry and a probability table; made
        all together or not at all. Returns the table node, which stands for the result."""
        if sourceNode is None or sourceNode.GetScene() is None:
            raise ValueError("the input volume is no longer in the scene (was the scene closed?)")
        created = []
        try:
            matrix = vtk.vtkMatrix4x4()
            sourceNode.GetIJKToRASMatrix(matrix)
            table = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(f"{sourceNode.GetName()} SoftCAM probabilities")
            )
            created.append(table)
            table.SetNodeReferenceID(SOURCE_ROLE, sourceNode.GetID())
            table.SetAttribute("SoftCAM.volumeName", result.volume_name)
            self._fillTable(table, result)
            for name in result.class_names:
                node = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLScalarVolumeNode",
                    slicer.mrmlScene.GenerateUniqueName(f"{sourceNode.GetName()} evidence {name}"),
                )
                created.append(node)
                node.SetIJKToRASMatrix(matrix)
                node.SetAndObserveTransformNodeID(sourceNode.GetTransformNodeID())
                slicer.util.updateVolumeFromArray(node, result.maps[name])
                node.SetAttribute("SoftCAM.class", name)
                node.SetNodeReferenceID(SOURCE_ROLE, sourceNode.GetID())
                node.SetNodeReferenceID(TABLE_ROLE, table.GetID())
                node.CreateDefaultDisplayNodes()
                created.append(node.GetDisplayNode())
            created += self._addGridNodes(result, sourceNode, table)
        except Exception:
            for node in reversed(created):  # display nodes too: removing a volume may leave them
                if node is not None:
                    slicer.mrmlScene.RemoveNode(node)
            raise
        self.updateDisplay(table, opacity, threshold)
        self.selectClass(table, result.predicted_class, opacity, reorient=True)
        return table

    @staticmethod
    def _fillTable(tableNode, result: InferenceResult) -> None:
        names, probabilities, logits = vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkDoubleArray()
        names.SetName("class")
        probabilities.SetName("probability")
        logits.SetName("logit (mean evidence)")
        for name in result.class_names:
            names.InsertNextValue(name)
            probabilities.InsertNextValue(result.probabilities[name])
            logits.InsertNextValue(result.logits[name])
        table = tableNode.GetTable()
        for column in (names, probabilities, logits):
            table.AddColumn(column)
        tableNode.Modified()

    @staticmethod
    def _addGridNodes(result: InferenceResult, sourceNode, table) -> list:
        """The maps at the network's own resolution (what the bundle saved), one hidden volume per
        class placed on the source in world space: IJK-to-RAS = the source's @ map-to-voxel matrix.
        Region evidence is summed on them, where it is exact."""
        if not result.grid_maps or result.map_to_input_index is None:
            return []
        placed = ijkToRas(sourceNode) @ result.map_to_input_index
        matrix = vtk.vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                matrix.SetElement(r, c, float(placed[r, c]))
        nodes = []
        for name in result.class_names:
            grid = np.asarray(result.grid_maps[name], dtype=np.float32)
            node = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode",
                slicer.mrmlScene.GenerateUniqueName(f"{sourceNode.GetName()} evidence {name} (map grid)"),
            )
            nodes.append(node)
            node.SetIJKToRASMatrix(matrix)
            node.SetAndObserveTransformNodeID(sourceNode.GetTransformNodeID())
            slicer.util.updateVolumeFromArray(node, grid.T[None] if grid.ndim == 2 else np.transpose(grid, (2, 1, 0)))
            node.SetAttribute("SoftCAM.class", name)
            node.SetNodeReferenceID(TABLE_ROLE, table.GetID())
            node.SetAttribute("SoftCAM.grid", "1")
            node.SetHideFromEditors(True)
        return nodes

    @staticmethod
    def mapNodes(tableNode, grid: bool = False) -> dict:
        """class name -> map node of the result ``tableNode`` stands for (nodes still in the scene;
        none once the table has left the scene): on the source's voxels, or (``grid``) on the map grid."""
        if tableNode is None or tableNode.GetScene() is None:
            return {}
        nodes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
        mine = {}
        for n in nodes:
            table = n.GetNodeReference(TABLE_ROLE)
            if (
                table is not None
                and table.GetID() == tableNode.GetID()
                and (n.GetAttribute("SoftCAM.grid") == "1") == grid
            ):
                mine[n.GetAttribute("SoftCAM.class")] = n
        return mine

    def resultFromNodes(self, tableNode) -> InferenceResult:
        """The result ``tableNode`` stands for, read back from its nodes (for export)."""
        maps = self.mapNodes(tableNode)
        if not maps:
            raise ValueError("nothing to export: run SoftCAM first (its nodes are no longer in the scene)")
        table = tableNode.GetTable()
        names = [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())]
        probabilities = {n: table.GetValue(r, 1).ToDouble() for r, n in enumerate(names)}
        logits = {n: table.GetValue(r, 2).ToDouble() for r, n in enumerate(names)}
        sourceMatrix = ijkToRas(next(iter(maps.values())))
        grids = self.mapNodes(tableNode, grid=True)
        gridMaps, toInput = {}, None
        if sorted(grids) == sorted(names):
            toInput = np.linalg.inv(sourceMatrix) @ ijkToRas(grids[names[0]])
            for n in names:  # back to the bundle's (I, J[, K]) order
                kji = slicer.util.arrayFromVolume(grids[n])
                twoD = slicer.util.arrayFromVolume(maps[n]).shape[0] == 1  # a 2D image: a single slice
                gridMaps[n] = kji[0].T if twoD else np.transpose(kji, (2, 1, 0))
        return InferenceResult(
            volume_name=tableNode.GetAttribute("SoftCAM.volumeName") or "volume",
            class_names=names,
            probabilities=probabilities,
            logits=logits,
            maps={n: slicer.util.arrayFromVolume(maps[n]) for n in names},
            ijk_to_ras=sourceMatrix,
            grid_maps=gridMaps,
            map_to_input_index=toInput,
        )

    def regionEvidence(self, tableNode, segmentationNode) -> list:
        """Per segment and class (plus the outside): evidence sum, share of the logit, mean evidence
        density, area or volume (:func:`SoftCAMLib.region_table`). The segments are exported to a
        labelmap on the source volume's whole grid (vtkSlicerSegmentationsModuleLogic::
        ExportSegmentsToLabelmapNode with EXTENT_REFERENCE_GEOMETRY: segment i gets label i + 1;
        where segments overlap, the later one wins, so the regions partition the image and the
        shares add up to each logit). The export adds scene nodes besides the labelmap (its display
        node and a visible "<segmentation>_ColorTable" colour table); all are removed again, since
        this runs on every Segment Editor stroke."""
        source = tableNode.GetNodeReference(SOURCE_ROLE) if tableNode.GetScene() is not None else None
        if source is None:
            raise ValueError("the result's source volume is no longer in the scene")
        ids = vtk.vtkStringArray()
        segmentation = segmentationNode.GetSegmentation()
        segmentation.GetSegmentIDs(ids)
        names = {i + 1: segmentation.GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())}
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmap, source, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            ):
                raise ValueError(f"cannot export the segments of '{segmentationNode.GetName()}' to a labelmap")
            labels = slicer.util.arrayFromVolume(labelmap).copy()
        finally:
            self._removeExported(labelmap)
        return region_table(self.resultFromNodes(tableNode), labels, names)

    @staticmethod
    def _removeExported(labelmap) -> None:
        """Remove a temporary labelmap with what ExportSegmentsToLabelmapNode made for it: its
        display node and that node's colour table (the labelmap was new, so both are the export's)."""
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        for node in (color, display, labelmap):
            if node is not None and node.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(node)

    def updateRegionTable(self, tableNode, segmentationNode, regionsTable=None):
        """Fill ``regionsTable`` (a new table node if None or gone) with :meth:`regionEvidence`."""
        rows = self.regionEvidence(tableNode, segmentationNode)
        if regionsTable is None or regionsTable.GetScene() is None:
            regionsTable = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode",
                slicer.mrmlScene.GenerateUniqueName(f"{segmentationNode.GetName()} SoftCAM region evidence"),
            )
        table = regionsTable.GetTable()
        table.Initialize()
        for key, title in REGION_COLUMNS:
            column = vtk.vtkStringArray() if key in ("region", "class") else vtk.vtkDoubleArray()
            column.SetName(title)
            for row in rows:
                value = row.get(key)
                column.InsertNextValue(
                    str(value) if key in ("region", "class") else float("nan") if value is None else float(value)
                )
            table.AddColumn(column)
        regionsTable.Modified()
        return regionsTable

    def updateDisplay(self, tableNode, opacity: float, threshold: float) -> None:
        """Diverging colours centred at 0, one scale for all classes, optional threshold (nothing
        to do once the result has left the scene)."""
        nodes = self.mapNodes(tableNode)
        if not nodes:
            return
        display = overlay_display({n: slicer.util.arrayFromVolume(node) for n, node in nodes.items()}, threshold)
        for node in nodes.values():
            displayNode = node.GetDisplayNode()
            if displayNode is None:
                continue
            displayNode.SetAndObserveColorNodeID(display.color_node_id)
            displayNode.AutoWindowLevelOff()
            displayNode.SetWindowLevel(display.window, display.level)
            if display.threshold is None:
                displayNode.ApplyThresholdOff()
            else:
                displayNode.SetThreshold(*display.threshold)
                displayNode.ApplyThresholdOn()
        slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def selectClass(self, tableNode, className: str, opacity: float = 0.5, reorient: bool = False) -> None:
        """Show ``className``'s map over its source. ``reorient`` (a new result): also rotate the
        slice views to the volume's plane (oblique images in their own plane) and fit them; never
        without views (``--no-main-window``: ``slicer.app.layoutManager()`` is None)."""
        nodes = self.mapNodes(tableNode)
        if className not in nodes:
            return
        source = tableNode.GetNodeReference(SOURCE_ROLE)
        views = slicer.app.layoutManager() is not None
        slicer.util.setSliceViewerLayers(
            background=source if source is not None else "keep-current",
            foreground=nodes[className],
            foregroundOpacity=opacity,
            fit=reorient and views,
            rotateToVolumePlane=reorient and views,
        )

    def exportResult(self, tableNode, folder: str, fileFormat: str = "nrrd") -> list[str]:
        return export_result(self.resultFromNodes(tableNode), folder, fileFormat)


class SoftCAMTest(ScriptedLoadableModuleTest):
    """Run inside Slicer: Reload and Test, or headless (see the extension's README)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        missing = missing_requirements()
        if missing:  # a fresh Slicer: nothing installed yet; the test needs torch and MONAI
            message = (
                "SoftCAM test skipped: these Python packages are not installed yet: "
                + ", ".join(missing)
                + ". Open the SoftCAM module and click Apply (or Load bundle) to install them, then run the test again."
            )
            logging.warning(message)
            self.delayDisplay(message)
            return
        self.setUp()
        self.test_SoftCAM_maps_on_an_oblique_slice()

    def test_SoftCAM_maps_on_an_oblique_slice(self) -> None:
        self.delayDisplay("Making a test bundle (untrained SoftCAM) and an oblique 2D image")
        bundleDir = write_test_bundle(tempfile.mkdtemp(prefix="softcam_bundle_"))
        logic = SoftCAMLogic()
        bundle = logic.loadBundle(bundleDir)
        rng = np.random.default_rng(0)
        image = rng.uniform(0.3, 0.7, size=(1, 80, 120)).astype(np.float32)
        image[0, 20:40, 70:100] = 1.0
        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "softcam_test_image")
        slicer.util.updateVolumeFromArray(volumeNode, image)
        volumeNode.SetSpacing(0.7, 0.3, 2.0)
        volumeNode.SetOrigin(10.0, -5.0, 3.0)
        angle = np.deg2rad(25)
        volumeNode.SetIJKToRASDirections(
            [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        )

        self.delayDisplay("Inference in a subprocess, then in-process")
        first, _ = logic.process(bundle, volumeNode, subprocess=True)
        second, table = logic.process(bundle, volumeNode, subprocess=False)
        for name in bundle.class_names:
            self.assertAlmostEqual(first.probabilities[name], second.probabilities[name], places=5)
        self.assertAlmostEqual(sum(first.probabilities.values()), 1.0, places=4)

        source, mapMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(source)
        mapNodes = logic.mapNodes(table)
        self.assertEqual(sorted(mapNodes), sorted(bundle.class_names))
        for name, node in mapNodes.items():
            node.GetIJKToRASMatrix(mapMatrix)
            for r in range(4):
                for c in range(4):
                    self.assertAlmostEqual(mapMatrix.GetElement(r, c), source.GetElement(r, c), places=6)
            array = slicer.util.arrayFromVolume(node)
            self.assertEqual(array.shape, image.shape)
            np.testing.assert_allclose(array, second.maps[name], atol=1e-6)
            # completeness: the class logit is the mean of its map (up to the resampling to the image)
            self.assertAlmostEqual(
                float(array.mean()), second.logits[name], delta=0.05 * (abs(second.logits[name]) + 1)
            )
        logic.updateDisplay(table, 0.7, 0.2)  # a slider change; then a scene close leaves nothing to update
        slicer.mrmlScene.Clear()
        logic.updateDisplay(table, 0.5, 0.0)
        self.assertEqual(logic.mapNodes(table), {})
        self.delayDisplay("SoftCAM test passed")
