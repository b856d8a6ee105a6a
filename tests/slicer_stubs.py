"""A minimal stand-in for Slicer's Python modules (``slicer``, ``qt``, ``ctk``, ``vtk``), enough to
import ``SoftCAM.py`` and drive its widget and logic without Slicer. MRML nodes and the scene are
small fakes that keep what the module puts in them (arrays, matrices, display settings), so tests
can check it; GUI widgets are MagicMocks. ``install()`` puts the fakes in ``sys.modules``."""

from __future__ import annotations

import os
import sys
import types
from unittest import mock

import numpy as np

MODULE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "slicer_extension", "SoftCAM")


class Matrix4x4:  # vtkMatrix4x4
    def __init__(self) -> None:
        self.m = np.eye(4)

    def GetElement(self, r: int, c: int) -> float:
        return float(self.m[r, c])

    def SetElement(self, r: int, c: int, v: float) -> None:
        self.m[r, c] = v

    def DeepCopy(self, other: "Matrix4x4") -> None:
        self.m = other.m.copy()


class DataArray:  # vtkStringArray / vtkDoubleArray
    def __init__(self) -> None:
        self.name, self.values = "", []

    def SetName(self, name: str) -> None:
        self.name = name

    def InsertNextValue(self, value) -> None:
        self.values.append(value)


class Table:
    def __init__(self) -> None:
        self.columns: list[DataArray] = []

    def AddColumn(self, column: DataArray) -> None:
        self.columns.append(column)


class DisplayNode:
    def __init__(self) -> None:
        self.color = None
        self.window_level = None
        self.threshold = None
        self.apply_threshold = False
        self.auto_window_level = True

    def SetAndObserveColorNodeID(self, node_id: str) -> None:
        self.color = node_id

    def AutoWindowLevelOff(self) -> None:
        self.auto_window_level = False

    def SetWindowLevel(self, window: float, level: float) -> None:
        self.window_level = (window, level)

    def SetThreshold(self, lower: float, upper: float) -> None:
        self.threshold = (lower, upper)

    def ApplyThresholdOn(self) -> None:
        self.apply_threshold = True

    def ApplyThresholdOff(self) -> None:
        self.apply_threshold = False


class Node:
    """A volume, table or parameter node."""

    count = 0

    def __init__(self, class_name: str, name: str = "") -> None:
        Node.count += 1
        self.class_name, self.name, self.id = class_name, name, f"{class_name}{Node.count}"
        self.matrix = np.eye(4)
        self.array = None
        self.attributes: dict[str, str] = {}
        self.display: DisplayNode | None = None
        self.table = Table()
        self.transform_id = None
        self.storage = None
        self.modified_since_read = False
        self.params: dict = {}

    def GetID(self) -> str:
        return self.id

    def GetName(self) -> str:
        return self.name

    def GetClassName(self) -> str:
        return self.class_name

    def GetIJKToRASMatrix(self, matrix: Matrix4x4) -> None:
        matrix.m = self.matrix.copy()

    def SetIJKToRASMatrix(self, matrix: Matrix4x4) -> None:
        self.matrix = matrix.m.copy()

    def GetTransformNodeID(self):
        return self.transform_id

    def SetAndObserveTransformNodeID(self, node_id) -> None:
        self.transform_id = node_id

    def SetAttribute(self, key: str, value: str) -> None:
        self.attributes[key] = value

    def GetAttribute(self, key: str):
        return self.attributes.get(key)

    def CreateDefaultDisplayNodes(self) -> None:
        self.display = DisplayNode()

    def GetDisplayNode(self) -> DisplayNode | None:
        return self.display

    def GetStorageNode(self):
        return self.storage

    def GetModifiedSinceRead(self) -> bool:
        return self.modified_since_read

    def GetTable(self) -> Table:
        return self.table

    def Modified(self) -> None:
        pass


class Scene:
    StartCloseEvent, EndCloseEvent = 1, 2

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def AddNewNodeByClass(self, class_name: str, name: str = "") -> Node:
        node = Node(class_name, name)
        self.nodes.append(node)
        return node

    def RemoveNode(self, node: Node) -> None:
        self.nodes.remove(node)

    def GenerateUniqueName(self, name: str) -> str:
        taken = {n.name for n in self.nodes}
        unique, k = name, 1
        while unique in taken:
            unique, k = f"{name}_{k}", k + 1
        return unique

    def GetFirstNodeByClass(self, class_name: str):
        return next((n for n in self.nodes if n.class_name == class_name), None)

    def Clear(self) -> None:
        self.nodes.clear()


def _parameter_node_wrapper(cls):
    """Like Slicer's ``@parameterNodeWrapper``: typed attributes stored on a parameter node."""
    fields = {name: getattr(cls, name, None) for name in getattr(cls, "__annotations__", {})}

    class Wrapped:
        def __init__(self, node: Node) -> None:
            object.__setattr__(self, "_node", node)
            for name, default in fields.items():
                node.params.setdefault(name, default)

        def __getattr__(self, name):
            if name in fields:
                return self._node.params[name]
            raise AttributeError(name)

        def __setattr__(self, name, value) -> None:
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            self._node.params[name] = value

        def connectGui(self, ui) -> str:
            return "gui-tag"

        def disconnectGui(self, tag) -> None:
            pass

    Wrapped.__name__ = cls.__name__
    return Wrapped


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent if parent is not None else mock.MagicMock()
        self.layout = mock.MagicMock()

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return os.path.join(MODULE_DIR, "Resources", filename)


class ScriptedLoadableModuleLogic:
    def __init__(self) -> None:
        self._parameter_node = Node("vtkMRMLScriptedModuleNode", "SoftCAM")

    def getParameterNode(self) -> Node:
        return self._parameter_node


class ScriptedLoadableModuleTest:
    def delayDisplay(self, message: str, msec: int = 0) -> None:
        print(message)


class VTKObservationMixin:
    def __init__(self) -> None:
        self.observations: list = []

    def addObserver(self, obj, event, callback) -> None:
        self.observations.append((obj, event, callback))

    def removeObservers(self) -> None:
        self.observations.clear()


class UI(types.SimpleNamespace):
    """``childWidgetVariables``: a MagicMock per widget named in the .ui file."""

    def __init__(self, ui_file: str) -> None:
        import xml.etree.ElementTree as ET

        names = [w.get("name") for w in ET.parse(ui_file).iter("widget") if w.get("name")]
        super().__init__(**{name: mock.MagicMock(name=name) for name in names})


def install() -> types.SimpleNamespace:
    """Put the fake modules in ``sys.modules`` (and the module folder on ``sys.path``); returns
    them for assertions (``slicer.util.pip_install`` is a mock, etc.)."""
    slicer = types.ModuleType("slicer")
    slicer.mrmlScene = Scene()
    slicer.app = mock.MagicMock(name="slicer.app")
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (Node,), {})
    slicer.dicomDatabase = None

    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = VTKObservationMixin
    util.loadUI = lambda path: mock.MagicMock(name=f"loadUI({os.path.basename(path)})", ui_file=path)
    util.childWidgetVariables = lambda widget: UI(widget.ui_file)
    util.arrayFromVolume = lambda node: node.array
    util.updateVolumeFromArray = lambda node, array: setattr(node, "array", np.array(array))
    for name in ("errorDisplay", "infoDisplay", "pip_install", "setSliceViewerLayers", "mainWindow"):
        setattr(util, name, mock.MagicMock(name=f"slicer.util.{name}"))
    util.confirmOkCancelDisplay = mock.MagicMock(name="slicer.util.confirmOkCancelDisplay", return_value=True)
    slicer.util = util

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(scripted, cls.__name__, cls)
    slicer.ScriptedLoadableModule = scripted

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = _parameter_node_wrapper
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    slicer.parameterNodeWrapper = wrapper

    qt = types.ModuleType("qt")
    qt.QTimer = lambda: mock.MagicMock(name="QTimer")
    qt.Qt = types.SimpleNamespace(WaitCursor=3)
    qt.QFileDialog = mock.MagicMock(name="QFileDialog")
    ctk = types.ModuleType("ctk")
    vtk = types.ModuleType("vtk")
    vtk.vtkMatrix4x4 = Matrix4x4
    vtk.vtkStringArray = DataArray
    vtk.vtkDoubleArray = DataArray

    modules = {"slicer": slicer, "slicer.util": util, "slicer.ScriptedLoadableModule": scripted,
               "slicer.parameterNodeWrapper": wrapper, "qt": qt, "ctk": ctk, "vtk": vtk}  # fmt: skip
    sys.modules.update(modules)
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    return types.SimpleNamespace(**modules)


def uninstall() -> None:
    for name in ("slicer", "slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "qt", "ctk", "vtk", "SoftCAM"):
        sys.modules.pop(name, None)
