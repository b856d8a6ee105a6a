"""SoftCAM: see where a trained SoftCAM bundle finds evidence for each class, on the image itself.

A thin Slicer shell over :mod:`SoftCAMLib` (which needs no Slicer and is tested with pytest): the
widget collects the choices, the logic turns volume nodes into :class:`SoftCAMLib.Volume` and
results back into nodes. Importing this file imports no torch/MONAI and installs nothing.
"""

import importlib
import logging
import tempfile
import pathlib
import shutil
import sys
from typing import Annotated, Optional

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SoftCAMLib import (
    REQUIREMENTS,
    BundleInfo,
    InferenceJob,
    InferenceResult,
    Volume,
    export_result,
    missing_requirements,
    overlay_display,
    package_source,
)
from SoftCAMLib.testing import write_test_bundle

DEVICES = ("auto", "cpu", "cuda")


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
            "not a post-hoc estimate."
        )
        self.parent.acknowledgementText = (
            "SoftCAM: Djoumessi K, Berens P. Making black box models self-explainable for medical image "
            "analysis. MIDL 2026."
        )


@parameterNodeWrapper
class SoftCAMParameterNode:
    """The module's choices, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    bundlePath: pathlib.Path
    presetConfigs: str = ""  # preset files merged after the bundle's inference config, ';'-separated
    runInSubprocess: bool = True
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.0


class SoftCAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobSource = None
        self._bundle = None
        self._bundleKey = None
        self._timer = None

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
        self.ui.loadBundleButton.connect("clicked(bool)", self.onLoadBundle)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.classComboBox.connect("currentIndexChanged(int)", self.onClassSelected)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onDisplayChanged)

        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        if self._job is not None:
            self._job.cancel()
        if self._timer is not None:
            self._timer.stop()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ actions
    def _error(self, message: str) -> None:
        logging.error(message)
        self.ui.statusLabel.text = message.splitlines()[0]
        slicer.util.errorDisplay(message, windowTitle="SoftCAM")

    def _updateButtons(self) -> None:
        running = self._job is not None
        self.ui.applyButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.exportButton.enabled = self.logic.result is not None and not running

    def _ensureRequirements(self) -> bool:
        """Install missing packages on first use, after asking (never at import)."""
        missing = self.logic.missingRequirements()
        if not missing:
            return True
        listing = ", ".join(REQUIREMENTS[m] if m != "monai_softcam" else package_source() for m in missing)
        if not slicer.util.confirmOkCancelDisplay(
            f"SoftCAM needs these Python packages, not installed in Slicer yet:\n{listing}\n\nInstall them now?",
            windowTitle="SoftCAM",
        ):
            self.ui.statusLabel.text = "missing packages: " + listing
            return False
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            self.logic.installRequirements(missing)
        except Exception as err:
            self._error(f"Failed to install {listing}:\n{err}")
            return False
        finally:
            slicer.app.restoreOverrideCursor()
        return True

    def _loadedBundle(self):
        """The chosen bundle, read again when its path or presets changed."""
        path = str(self._parameterNode.bundlePath or "")
        key = ("" if path == "." else path, self._parameterNode.presetConfigs)
        if self._bundle is None or key != self._bundleKey:
            self._bundle = self.logic.loadBundle(*key)
            self._bundleKey = key
            self.ui.bundleInfoLabel.text = self._bundle.summary()
            for warning in self._bundle.warnings:
                logging.warning("SoftCAM: %s", warning)
        return self._bundle

    def onLoadBundle(self) -> None:
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
        if self._job is not None or not self._ensureRequirements():
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
        self._updateButtons()
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
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(1 if job.state == "done" else 0)
        try:
            result = job.result()
            self.logic.showResult(result, source, self._parameterNode.opacity, self._parameterNode.threshold)
        except Exception as err:
            if job.state == "cancelled":
                self.ui.statusLabel.text = "cancelled"
            else:
                self._error(f"SoftCAM failed on '{source.GetName()}':\n{err}")
            self._updateButtons()
            return
        self.ui.probabilityTableView.setMRMLTableNode(self.logic.tableNode)
        self.ui.classComboBox.blockSignals(True)
        self.ui.classComboBox.clear()
        self.ui.classComboBox.addItems(result.class_names)
        self.ui.classComboBox.setCurrentIndex(result.class_names.index(result.predicted_class))
        self.ui.classComboBox.blockSignals(False)
        self.ui.statusLabel.text = (
            f"{result.predicted_class} ({result.probabilities[result.predicted_class]:.3f}) in {result.seconds:.1f} s"
        )
        self._updateButtons()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.onPoll()

    def onClassSelected(self, index: int) -> None:
        if self.logic.result is not None and index >= 0:
            self.logic.selectClass(self.logic.result.class_names[index], self._parameterNode.opacity)

    def onDisplayChanged(self, value=None) -> None:
        if self.logic.result is not None:
            self.logic.updateDisplay(self._parameterNode.opacity, self._parameterNode.threshold)

    def onExportButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export evidence maps to")
        if not folder:
            return
        fileFormat = "nii.gz" if "NIfTI" in self.ui.exportFormatComboBox.currentText else "nrrd"
        try:
            paths = self.logic.exportResult(folder, fileFormat)
        except Exception as err:
            self._error(f"Export failed:\n{err}")
            return
        self.ui.statusLabel.text = f"wrote {len(paths)} files to {folder}"


class SoftCAMLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, callable from Slicer's Python console or a script."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.result: Optional[InferenceResult] = None
        self.sourceNode = None
        self.mapNodes: dict = {}
        self.tableNode = None

    def getParameterNode(self):
        return SoftCAMParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ packages
    @staticmethod
    def missingRequirements() -> list[str]:
        return missing_requirements()

    @staticmethod
    def installRequirements(names) -> None:
        """torch through Slicer's PyTorch extension when it is installed, the rest with pip."""
        names = list(names)
        if "torch" in names:
            try:
                import PyTorchUtils  # optional: Slicer's PyTorch extension, when installed

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
            except ImportError:
                slicer.util.pip_install(REQUIREMENTS["torch"])
        for name in names:
            if name == "monai_softcam":
                slicer.util.pip_install(package_source())
            elif name != "torch":
                slicer.util.pip_install(REQUIREMENTS[name])
        importlib.invalidate_caches()

    @staticmethod
    def pythonExecutable() -> str:
        """The Python that runs inference subprocesses: Slicer's own (``PythonSlicer``)."""
        return shutil.which("PythonSlicer") or sys.executable

    # ------------------------------------------------------------------ bundle and volume
    @staticmethod
    def loadBundle(path: str, presetConfigs: str = "") -> BundleInfo:
        if not path:
            raise ValueError("choose a bundle folder or a TorchScript export (.ts) first")
        presets = [p.strip() for p in presetConfigs.split(";") if p.strip()]
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
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        ijkToRas = [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]
        return Volume(
            slicer.util.arrayFromVolume(volumeNode).copy(),
            ijkToRas,
            name=volumeNode.GetName(),
            source_file=self.sourceFile(volumeNode),
        )

    def startInference(self, bundle: BundleInfo, volumeNode, subprocess: bool = True, device: str = "auto", progress=None):
        """Start an :class:`SoftCAMLib.InferenceJob` (a subprocess run returns at once: poll it)."""
        volume = self.volumeFromNode(volumeNode)
        mode = "subprocess" if subprocess else "inprocess"
        job = InferenceJob(bundle, volume, mode=mode, device=device, python=self.pythonExecutable(), progress=progress)
        return job.start()

    def process(self, bundle: BundleInfo, volumeNode, subprocess: bool = True, device: str = "auto", opacity=0.5, threshold=0.0):
        """Run to the end (blocking) and show the result: for scripts and tests."""
        result = self.startInference(bundle, volumeNode, subprocess, device).wait()
        self.showResult(result, volumeNode, opacity, threshold)
        return result

    # ------------------------------------------------------------------ results as nodes
    def showResult(self, result: InferenceResult, sourceNode, opacity: float = 0.5, threshold: float = 0.0) -> dict:
        """One scalar volume per class on ``sourceNode``'s geometry and a probability table; made
        all together or not at all."""
        created = []
        try:
            matrix = vtk.vtkMatrix4x4()
            sourceNode.GetIJKToRASMatrix(matrix)
            nodes = {}
            for name in result.class_names:
                node = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLScalarVolumeNode", slicer.mrmlScene.GenerateUniqueName(f"{sourceNode.GetName()} evidence {name}")
                )
                created.append(node)
                node.SetIJKToRASMatrix(matrix)
                node.SetAndObserveTransformNodeID(sourceNode.GetTransformNodeID())
                slicer.util.updateVolumeFromArray(node, result.maps[name])
                node.SetAttribute("SoftCAM.class", name)
                node.SetAttribute("SoftCAM.source", sourceNode.GetID())
                node.CreateDefaultDisplayNodes()
                nodes[name] = node
            table = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName(f"{sourceNode.GetName()} SoftCAM probabilities")
            )
            created.append(table)
            self._fillTable(table, result)
        except Exception:
            for node in created:
                slicer.mrmlScene.RemoveNode(node)
            raise
        self.result, self.sourceNode, self.mapNodes, self.tableNode = result, sourceNode, nodes, table
        self.updateDisplay(opacity, threshold)
        self.selectClass(result.predicted_class, opacity)
        return nodes

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

    def updateDisplay(self, opacity: float, threshold: float) -> None:
        """Diverging colours centred at 0, one scale for all classes, optional threshold."""
        if not self.mapNodes:
            return
        display = overlay_display(self.result.maps, threshold)
        for node in self.mapNodes.values():
            displayNode = node.GetDisplayNode()
            displayNode.SetAndObserveColorNodeID(display.color_node_id)
            displayNode.AutoWindowLevelOff()
            displayNode.SetWindowLevel(display.window, display.level)
            if display.threshold is None:
                displayNode.ApplyThresholdOff()
            else:
                displayNode.SetThreshold(*display.threshold)
                displayNode.ApplyThresholdOn()
        slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def selectClass(self, className: str, opacity: float = 0.5) -> None:
        slicer.util.setSliceViewerLayers(
            background=self.sourceNode,
            foreground=self.mapNodes[className],
            foregroundOpacity=opacity,
            fit=True,
            rotateToVolumePlane=True,  # oblique images are shown in their own plane
        )

    def exportResult(self, folder: str, fileFormat: str = "nrrd") -> list[str]:
        if self.result is None:
            raise ValueError("nothing to export: run SoftCAM first")
        return export_result(self.result, folder, fileFormat)


class SoftCAMTest(ScriptedLoadableModuleTest):
    """Run inside Slicer: Reload and Test, or headless (see the extension's README)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
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
        first = logic.process(bundle, volumeNode, subprocess=True)
        second = logic.process(bundle, volumeNode, subprocess=False)
        for name in bundle.class_names:
            self.assertAlmostEqual(first.probabilities[name], second.probabilities[name], places=5)
        self.assertAlmostEqual(sum(first.probabilities.values()), 1.0, places=4)

        source, mapMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(source)
        for name, node in logic.mapNodes.items():
            node.GetIJKToRASMatrix(mapMatrix)
            for r in range(4):
                for c in range(4):
                    self.assertAlmostEqual(mapMatrix.GetElement(r, c), source.GetElement(r, c), places=6)
            array = slicer.util.arrayFromVolume(node)
            self.assertEqual(array.shape, image.shape)
            np.testing.assert_allclose(array, second.maps[name], atol=1e-6)
            # completeness: the class logit is the mean of its map (up to the resampling to the image)
            self.assertAlmostEqual(float(array.mean()), second.logits[name], delta=0.05 * (abs(second.logits[name]) + 1))
        self.delayDisplay("SoftCAM test passed")
