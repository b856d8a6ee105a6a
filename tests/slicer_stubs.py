"""Stand-ins for Slicer's Python modules (``slicer``, ``qt``, ``ctk``, ``vtk``) that enforce the
contracts of the real ones, enough to import ``SoftCAM.py`` and drive its widget and logic without
Slicer. ``install()`` puts them in ``sys.modules``.

Each stand-in names, in a comment, the Slicer or CTK source it reproduces (Slicer ``main`` of
2026-08, identical in the parts used here to v5.10/v5.12 unless a comment says otherwise; CTK as
Slicer pins it). A fake that accepts what Slicer rejects is a defect: when in doubt, these refuse.

What is modelled: MRML nodes and the scene (IDs given by the scene and given again after a
scene close; node references resolved through the scene, so a removed node's display node is None,
and dropped by the nodes that held them when the node is removed; scene close events and singleton
reset; what ExportSegmentsToLabelmapNode adds to the scene), VTK observers (in
VTK's calling order), the parameter node wrapper (serializers, validators, defaults written at
construction, ``connectGui`` binding widgets by their ``SlicerParameterName`` property with each
connector's real signal, in Qt's connection order), the widgets of the module's .ui file
(ctkPathLineEdit with its validator, ctkSliderWidget, QComboBox, ...), ``slicer.util.pip_install``
(a string goes through ``shlex.split``; with ``install(release=...)``, the packages and pip API of
Slicer 5.10 or 5.12: tests/slicer_packages.py), ``setSliceViewerLayers`` (no layout manager headless),
``slicer.app.layoutManager()`` (None, as under ``--no-main-window``; ``with_views`` gives a main
window's, with slice views) and ``slicer.app.processEvents()`` (delivers the events queued with
``events.post``, as a click queued while pip prints). ``write_python_slicer`` writes a stand-in of
the ``PythonSlicer`` launcher (CTKAppLauncher: the real Python runs as its child, no signal forwarded).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import sys
import types
import typing
from unittest import mock
from xml.etree import ElementTree

import numpy as np

#: the folder holding SoftCAM.py: the source tree's, or (SOFTCAM_MODULE_DIR) an installed layout's
MODULE_DIR = os.environ.get("SOFTCAM_MODULE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "slicer_extension", "SoftCAM"
)
MODIFIED_EVENT = 33  # vtkCommand::ModifiedEvent


# ---------------------------------------------------------------------------------------------- VTK
class Observable:
    """vtkObject's observers. VTK/Common/Core/vtkObject.cxx, vtkSubjectHelper::AddObserver: among
    observers of equal priority a new one is inserted before the last element, so for A, B, C (added
    in that order) InvokeEvent calls B, C, A; observers added during an InvokeEvent are not called in
    that invocation."""

    def _observers(self) -> list:
        if "_obs" not in self.__dict__:
            self.__dict__["_obs"], self.__dict__["_obs_tag"] = [], 0
        return self.__dict__["_obs"]

    def AddObserver(self, event, callback, priority: float = 0.0) -> int:
        observers = self._observers()
        self.__dict__["_obs_tag"] += 1
        tag = self.__dict__["_obs_tag"]
        entry = (tag, event, callback, float(priority))
        # find the insertion point as vtkSubjectHelper does (a list ordered by calling order)
        pos = 0
        while pos < len(observers) and observers[pos][3] >= priority and pos < len(observers) - 1:
            pos += 1
        if observers and observers[pos][3] > priority:
            observers.insert(pos + 1, entry)
        elif observers:
            observers.insert(pos, entry)
        else:
            observers.append(entry)
        return tag

    def RemoveObserver(self, tag: int) -> None:
        observers = self._observers()
        observers[:] = [o for o in observers if o[0] != tag]

    def InvokeEvent(self, event, data=None) -> None:
        observers = self._observers()
        limit = self.__dict__["_obs_tag"]
        for tag, ev, callback, _ in list(observers):
            if ev == event and tag <= limit and any(o[0] == tag for o in observers):
                callback(self, event) if data is None else callback(self, event, data)


class Matrix4x4:  # vtkMatrix4x4
    def __init__(self) -> None:
        self.m = np.eye(4)

    def GetElement(self, r: int, c: int) -> float:
        return float(self.m[r, c])

    def SetElement(self, r: int, c: int, v: float) -> None:
        self.m[r, c] = v

    def DeepCopy(self, other: "Matrix4x4") -> None:
        self.m = other.m.copy()


class Variant:  # vtkVariant
    def __init__(self, value) -> None:
        self.value = value

    def ToString(self) -> str:
        return str(self.value)

    def ToDouble(self) -> float:
        return float(self.value)


class DataArray:  # vtkStringArray / vtkDoubleArray
    def __init__(self) -> None:
        self.name, self.values = "", []

    def SetName(self, name: str) -> None:
        self.name = name

    def GetName(self) -> str:
        return self.name

    def InsertNextValue(self, value) -> None:
        self.values.append(value)

    def GetValue(self, index: int):
        return self.values[index]

    def GetNumberOfValues(self) -> int:
        return len(self.values)

    def GetNumberOfTuples(self) -> int:
        return len(self.values)


class Table:  # vtkTable: the rows are the columns' tuples
    def __init__(self) -> None:
        self.columns: list[DataArray] = []

    def AddColumn(self, column: DataArray) -> None:
        self.columns.append(column)

    def Initialize(self) -> None:
        self.columns = []

    def GetNumberOfRows(self) -> int:
        return max((c.GetNumberOfTuples() for c in self.columns), default=0)

    def GetValue(self, row: int, column: int) -> Variant:
        return Variant(self.columns[column].values[row])


# --------------------------------------------------------------------------------------------- MRML
class Node(Observable):
    """An MRML node. References to other nodes are kept as IDs and resolved through the node's
    scene (Libs/MRML/Core/vtkMRMLNode.cxx, vtkMRMLNode::GetNthNodeReference): a node that is not in a
    scene (after vtkMRMLScene::RemoveNode or a scene close) resolves every reference to None, though
    it keeps the IDs (vtkMRMLNode::SetScene(nullptr) -> InvalidateNodeReferences)."""

    def __init__(self, name: str = "") -> None:
        self.name, self.id = name, None  # vtkMRMLScene::AddNode gives the ID (GenerateUniqueID)
        self.scene: Scene | None = None
        self.singleton_tag = None
        self.matrix = np.eye(4)
        self.array = None
        self.attributes: dict[str, str] = {}
        self.table = Table()
        self.transform_id = None
        self.storage = None
        self.modified_since_read = False
        self.params: dict[str, str] = {}
        self.references: dict[str, str | None] = {}
        self._modifying = 0
        self._pending = False

    def GetID(self) -> str:
        return self.id

    def GetName(self) -> str:
        return self.name

    def GetClassName(self) -> str:
        return type(self).__name__

    def IsA(self, class_name: str) -> bool:  # vtkObject::IsA: the class or a subclass of it
        return class_name in NODE_CLASSES and isinstance(self, NODE_CLASSES[class_name])

    def GetScene(self):
        return self.scene

    def Modified(self) -> None:
        if self._modifying:
            self._pending = True
        else:
            self.InvokeEvent(MODIFIED_EVENT)

    def StartModify(self) -> int:
        self._modifying += 1
        return self._modifying - 1

    def EndModify(self, previous: int) -> None:
        self._modifying = previous
        if not previous and self._pending:
            self._pending = False
            self.InvokeEvent(MODIFIED_EVENT)

    def _resolve(self, node_id):
        return None if self.scene is None or node_id is None else self.scene.GetNodeByID(node_id)

    # volume
    def GetIJKToRASMatrix(self, matrix: Matrix4x4) -> None:
        matrix.m = self.matrix.copy()

    def SetIJKToRASMatrix(self, matrix: Matrix4x4) -> None:
        self.matrix = matrix.m.copy()

    def SetSpacing(self, *spacing) -> None:  # vtkMRMLVolumeNode: directions kept, columns scaled
        directions = self.matrix[:3, :3] / np.linalg.norm(self.matrix[:3, :3], axis=0)
        self.matrix[:3, :3] = directions * np.asarray(spacing, float)[None, :]

    def SetOrigin(self, *origin) -> None:
        self.matrix[:3, 3] = origin

    def SetIJKToRASDirections(self, directions) -> None:
        spacing = np.linalg.norm(self.matrix[:3, :3], axis=0)
        self.matrix[:3, :3] = np.asarray(directions, float) * spacing[None, :]

    def GetTransformNodeID(self):
        return self.transform_id

    def SetAndObserveTransformNodeID(self, node_id) -> None:
        self.transform_id = node_id

    def SetAttribute(self, key: str, value: str) -> None:
        self.attributes[key] = value

    def GetAttribute(self, key: str):
        return self.attributes.get(key)

    def CreateDefaultDisplayNodes(self) -> None:
        """Libs/MRML/Core/vtkMRMLScalarVolumeNode.cxx and vtkMRMLLabelMapVolumeNode.cxx,
        CreateDefaultDisplayNodes (v5.10.0, v5.12.3): nothing when a display node of the class's kind
        exists; without a scene, vtkErrorMacro("... failed: scene is invalid") and return (no
        exception); else a new display node (a labelmap's with the default, non-User, colour map)."""
        display_class = DISPLAY_CLASSES.get(self.GetClassName())
        if display_class is None:
            return
        if isinstance(self.GetDisplayNode(), NODE_CLASSES[display_class]):
            return
        if self.scene is None:
            ERRORS.append(f"{self.GetClassName()}::CreateDefaultDisplayNodes failed: scene is invalid")
            return
        display = self.scene.AddNewNodeByClass(display_class)
        if display_class == "vtkMRMLLabelMapVolumeDisplayNode":  # SetDefaultColorMap
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileGenericAnatomyColors.txt")
        self.SetAndObserveDisplayNodeID(display.GetID())

    def SetAndObserveDisplayNodeID(self, node_id) -> None:  # vtkMRMLDisplayableNode: role "display"
        self.SetNodeReferenceID("display", node_id)

    def GetDisplayNode(self):
        return self.GetNodeReference("display")

    def GetDisplayNodeID(self):
        return self.references.get("display")

    def GetStorageNode(self):
        return self.storage

    def GetModifiedSinceRead(self) -> bool:
        return self.modified_since_read

    def GetTable(self) -> Table:
        return self.table

    def SetHideFromEditors(self, hide: bool) -> None:
        self.hidden = bool(hide)

    # scripted module (parameter) node: vtkMRMLScriptedModuleNode
    def SetParameter(self, name: str, value: str) -> None:  # Modified only when the value changes
        if self.params.get(name) != value:
            self.params[name] = value
            self.Modified()

    def GetParameter(self, name: str) -> str:
        return self.params.get(name, "")

    def HasParameter(self, name: str) -> bool:
        return name in self.params

    def SetNodeReferenceID(self, role: str, node_id) -> None:
        if self.references.get(role) != node_id:
            self.references[role] = node_id
            self.Modified()

    def GetNodeReference(self, role: str):
        return self._resolve(self.references.get(role))

    def GetNodeReferenceID(self, role: str):
        return self.references.get(role)

    def UpdateReferences(self) -> None:
        """Libs/MRML/Core/vtkMRMLNode.cxx, vtkMRMLNode::UpdateReferences: without a scene nothing;
        else every reference to an ID no node of the scene has is removed (RemoveNthNodeReferenceID:
        the node is Modified)."""
        if self.scene is None:
            return
        stale = [r for r, i in self.references.items() if i and self.scene.GetNodeByID(i) is None]
        for role in stale:
            del self.references[role]
        if stale:
            self.Modified()


class DisplayNode(Node):  # vtkMRMLScalarVolumeDisplayNode: what the module sets on it
    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.color, self.window_level, self.threshold = None, None, None
        self.apply_threshold, self.auto_window_level = False, True

    def SetAndObserveColorNodeID(self, node_id: str) -> None:  # vtkMRMLDisplayNode: role "colorNodeID"
        self.color = node_id
        self.SetNodeReferenceID("colorNodeID", node_id)

    def GetColorNodeID(self):
        return self.color

    def GetColorNode(self):
        return self.GetNodeReference("colorNodeID")

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


class Segment:  # vtkSegment
    def __init__(self, name: str, mask_kji: np.ndarray) -> None:
        self.name, self.mask = name, np.asarray(mask_kji, bool)

    def GetName(self) -> str:
        return self.name


class Segmentation(Observable):
    """vtkSegmentation (Libs/vtkSegmentationCore/vtkSegmentation.h): segments in ID order; events
    SourceRepresentationModified = 62100, SegmentAdded = 62102, SegmentRemoved = 62103,
    SegmentModified = 62104 (the enum's order). Here a segment's mask is given on the reference
    volume's voxel grid (Slicer resamples each segment's labelmap to the reference geometry)."""

    def __init__(self) -> None:
        self.segments: dict[str, Segment] = {}

    def GetSegmentIDs(self, ids: DataArray) -> None:
        for segment_id in self.segments:
            ids.InsertNextValue(segment_id)

    def GetSegment(self, segment_id: str) -> Segment:
        return self.segments[segment_id]

    def AddSegment(self, name: str, mask_kji) -> str:
        segment_id = f"Segment_{len(self.segments) + 1}"
        self.segments[segment_id] = Segment(name, mask_kji)
        self.InvokeEvent(62102)
        return segment_id

    def SetMask(self, segment_id: str, mask_kji) -> None:  # a Segment Editor stroke
        self.segments[segment_id].mask = np.asarray(mask_kji, bool)
        self.InvokeEvent(62100)


#: vtkSegmentation's extent modes (Libs/vtkSegmentationCore/vtkSegmentation.h, the enum's order)
EXTENT_REFERENCE_GEOMETRY, EXTENT_UNION_OF_EFFECTIVE_SEGMENTS = 0, 3


def _export_segments_to_labelmap(
    segmentation_node, ids, labelmap, reference=None, extentComputationMode=EXTENT_UNION_OF_EFFECTIVE_SEGMENTS
) -> bool:
    """Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.cxx (v5.10.0, v5.12.3),
    ExportSegmentsToLabelmapNode (the vtkStringArray overload) -> GenerateMergedLabelmapInReferenceGeometry
    -> CreateLabelmapVolumeFromOrientedImageData: on the reference volume's geometry, segment i of
    ``ids`` gets label 1 + i, later segments over earlier ones. The extent is the reference's only with
    EXTENT_REFERENCE_GEOMETRY; the default (EXTENT_UNION_OF_EFFECTIVE_SEGMENTS) crops it to the voxels
    the segments fill (CopyOrientedImageDataToVolumeNode shifts the extent to start at 0 and moves the
    origin). Scene nodes it creates: a vtkMRMLLabelMapVolumeDisplayNode for the labelmap when it has
    none (with the default, non-User colour map), the segmentation's display node when it has none,
    and then, the labelmap's colour not being User, a visible vtkMRMLColorTableNode
    "<segmentation>_ColorTable" (unique name, AddColorTableNodeForSegmentation) that the labelmap's
    display node refers to. Removing the labelmap removes none of them."""
    if segmentation_node.GetScene() is None or labelmap.GetScene() is None:
        ERRORS.append("ExportSegmentsToLabelmapNode: Invalid MRML scene of segmentation or labelmap node")
        return False
    labels = np.zeros(reference.array.shape[:3], np.int16)
    for i in range(ids.GetNumberOfValues()):
        mask = segmentation_node.GetSegmentation().GetSegment(ids.GetValue(i)).mask
        labels[mask] = 1 + i
    matrix = reference.matrix.copy()
    if extentComputationMode != EXTENT_REFERENCE_GEOMETRY:
        filled = np.argwhere(labels)
        low = filled.min(axis=0) if len(filled) else np.zeros(3, int)
        high = filled.max(axis=0) + 1 if len(filled) else np.zeros(3, int)
        labels = labels[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        matrix[:3, 3] = reference.matrix[:3, :3] @ low[::-1] + reference.matrix[:3, 3]  # (K, J, I) -> IJK
    labelmap.array, labelmap.matrix = labels, matrix
    scene = labelmap.GetScene()
    if labelmap.GetDisplayNode() is None:  # CreateLabelmapVolumeFromOrientedImageData
        display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
        labelmap.SetAndObserveDisplayNodeID(display.GetID())
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileGenericAnatomyColors.txt")
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    color = labelmap.GetDisplayNode().GetColorNode()
    if color is None or color.GetType() != ColorTableNode.User:  # AddColorTableNodeForSegmentation
        color = scene.AddNewNodeByClass(
            "vtkMRMLColorTableNode", scene.GenerateUniqueName(segmentation_node.GetName() + "_ColorTable")
        )
        color.SetHideFromEditors(False)
        color.SetTypeToUser()
        color.SetAttribute("Category", "Segmentations")
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(color.GetID())
    return True


class ColorTableNode(Node):  # vtkMRMLColorTableNode (vtkMRMLColorNode.h: User = 13)
    User = 13

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.type = None

    def SetTypeToUser(self) -> None:
        self.type = self.User

    def GetType(self):
        return self.type


#: errors vtkErrorMacro would print (Slicer logs them and goes on)
ERRORS: list = []
#: display node class of each displayable class (its CreateDefaultDisplayNodes)
DISPLAY_CLASSES = {
    "vtkMRMLScalarVolumeNode": "vtkMRMLScalarVolumeDisplayNode",
    "vtkMRMLLabelMapVolumeNode": "vtkMRMLLabelMapVolumeDisplayNode",
    "vtkMRMLSegmentationNode": "vtkMRMLSegmentationDisplayNode",
}


NODE_CLASSES = {
    name: type(name, (Node,), {})
    for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLTableNode", "vtkMRMLScriptedModuleNode")
}
NODE_CLASSES["vtkMRMLLabelMapVolumeNode"] = type(
    "vtkMRMLLabelMapVolumeNode", (NODE_CLASSES["vtkMRMLScalarVolumeNode"],), {}
)
NODE_CLASSES["vtkMRMLSegmentationNode"] = type(
    "vtkMRMLSegmentationNode",
    (Node,),
    {"GetSegmentation": lambda self: self.__dict__.setdefault("segmentation", Segmentation())},
)
NODE_CLASSES["vtkMRMLScalarVolumeDisplayNode"] = type("vtkMRMLScalarVolumeDisplayNode", (DisplayNode,), {})
NODE_CLASSES["vtkMRMLLabelMapVolumeDisplayNode"] = type("vtkMRMLLabelMapVolumeDisplayNode", (DisplayNode,), {})
NODE_CLASSES["vtkMRMLSegmentationDisplayNode"] = type("vtkMRMLSegmentationDisplayNode", (DisplayNode,), {})
NODE_CLASSES["vtkMRMLColorTableNode"] = type("vtkMRMLColorTableNode", (ColorTableNode,), {})


class Scene(Observable):
    """vtkMRMLScene (Libs/MRML/Core/vtkMRMLScene.cxx, v5.10.0 and v5.12.3). AddNode gives the node an
    ID (GenerateUniqueID: class name + the first index above the last one given for that class that
    no node has; a singleton's is class name + tag). RemoveNode detaches the node (SetScene(nullptr))
    and, unless the scene is closing, calls UpdateReferences() on the nodes that referred to it.
    Clear() (what File > Close scene calls) emits StartCloseEvent, removes every non-singleton node
    (RemoveAllNodes, no UpdateReferences: IsClosing), resets the singletons (a singleton parameter
    node survives with its parameters wiped: ResetNodes), forgets the IDs it gave (UniqueIDs.clear():
    the next nodes get the removed nodes' IDs again), then emits EndCloseEvent."""

    StartCloseEvent, EndCloseEvent = 0x2103, 0x2203  # vtkMRMLScene.h: StateEvent|Start/EndEvent|CloseState

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.unique_ids: dict[str, int] = {}
        self.closing = False

    def GenerateUniqueID(self, node: Node) -> str:
        base = node.GetClassName()
        if node.singleton_tag is not None:
            return base + node.singleton_tag
        index = self.unique_ids.get(base, 0) + 1
        while self.GetNodeByID(f"{base}{index}") is not None:
            index += 1
        self.unique_ids[base] = index
        return f"{base}{index}"

    def AddNode(self, node: Node) -> Node:
        node.id = self.GenerateUniqueID(node)
        node.scene = self
        self.nodes.append(node)
        return node

    def IsClosing(self) -> bool:
        return self.closing

    def AddNewNodeByClass(self, class_name: str, name: str = "") -> Node:
        return self.AddNode(NODE_CLASSES[class_name](name))

    def RemoveNode(self, node: Node) -> None:
        if node in self.nodes:
            self.nodes.remove(node)
            node.scene = None
            if not self.closing:  # nodes that referred to it drop the reference
                for other in [n for n in self.nodes if node.id in n.references.values()]:
                    other.UpdateReferences()

    def GetNodes(self) -> list[Node]:
        return list(self.nodes)

    def GetNumberOfNodes(self) -> int:
        return len(self.nodes)

    def GetNodeByID(self, node_id):
        return next((n for n in self.nodes if n.id == node_id), None)

    def GetSingletonNode(self, tag: str, class_name: str):
        return next((n for n in self.nodes if n.singleton_tag == tag and n.GetClassName() == class_name), None)

    def GenerateUniqueName(self, name: str) -> str:
        taken = {n.name for n in self.nodes}
        unique, k = name, 1
        while unique in taken:
            unique, k = f"{name}_{k}", k + 1
        return unique

    def GetFirstNodeByClass(self, class_name: str):
        return next((n for n in self.nodes if isinstance(n, NODE_CLASSES[class_name])), None)

    def GetNodesByClass(self, class_name: str) -> list[Node]:
        return [n for n in self.nodes if isinstance(n, NODE_CLASSES[class_name])]

    def Clear(self, removeSingletons: int = 0) -> None:
        self.InvokeEvent(self.StartCloseEvent)
        self.closing = True
        try:
            for node in list(self.nodes):
                if node.singleton_tag is None or removeSingletons:
                    self.RemoveNode(node)
        finally:
            self.closing = False
        for node in list(self.nodes):  # ResetNodes: a fresh copy's content, one ModifiedEvent
            node.params.clear()
            node.references.clear()
            node.attributes.clear()
            node.Modified()
        self.unique_ids.clear()
        self.InvokeEvent(self.EndCloseEvent)


# ----------------------------------------------------------------------------- parameterNodeWrapper
# Base/Python/slicer/parameterNodeWrapper/validators.py: checked when a value is written, never on read.
class Validator:
    def validate(self, value) -> None:
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class IsInstance(Validator):
    def __init__(self, classtype) -> None:
        self.classtype = classtype

    def validate(self, value) -> None:
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Choice(Validator):
    def __init__(self, choices) -> None:
        self.choices = choices

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class _Parameter:
    """One parameter: its serializer (serializers.py: Number/String/Bool/Path/Node serializers, each
    a ValidatedSerializer whose default validators come first) and its default."""

    def __init__(self, name: str, datatype, extras: list, default) -> None:
        self.name, self.datatype = name, datatype
        self.annotations = [v for v in extras if isinstance(v, Validator)]
        if isinstance(datatype, type) and issubclass(datatype, Node):
            self.validators = [IsInstance(datatype)] + self.annotations  # NodeSerializer: None allowed
            self.default = None if default is _MISSING else default
        else:
            base = (int, float) if datatype is float else datatype
            self.validators = [NotNone(), IsInstance(base)] + self.annotations
            if default is not _MISSING:
                self.default = default
            else:  # serializer.default(): Path() == Path("."), 0, "", False
                self.default = datatype()

    def write(self, node: Node, value) -> None:
        for validator in self.validators:
            validator.validate(value)
        if isinstance(self.datatype, type) and issubclass(self.datatype, Node):
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node: Node):
        if isinstance(self.datatype, type) and issubclass(self.datatype, Node):
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.datatype is bool:
            return text == "True"
        if self.datatype in (int, float):
            return self.datatype(text)
        return self.datatype(text)


_MISSING = object()


def parameterNodeWrapper(cls):
    """Base/Python/slicer/parameterNodeWrapper/wrapper.py: typed parameters stored on a
    vtkMRMLScriptedModuleNode; missing ones are written (validated) with their defaults at
    construction; ``connectGui`` / ``disconnectGui`` as in _connectParametersToGui (v5.10+: returns a
    tag; v5.12 also removes its ModifiedEvent observer on disconnect, modelled here)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    parameters = {}
    for name, hint in hints.items():
        extras = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
        parameters[name] = _Parameter(name, hint, extras, cls.__dict__.get(name, _MISSING))

    class Wrapped:
        def __init__(self, node: Node) -> None:
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_guis", {})
            object.__setattr__(self, "_next_tag", 0)
            object.__setattr__(self, "_updating", False)
            for parameter in parameters.values():
                if not (node.HasParameter(parameter.name) or parameter.name in node.references):
                    parameter.write(node, parameter.default)

        def __getattr__(self, name):
            if name in parameters:
                parameter, node = parameters[name], self.parameterNode
                if not (node.HasParameter(name) or name in node.references):  # _Parameter.read: default first
                    parameter.write(node, parameter.default)
                return parameter.read(node)
            raise AttributeError(name)

        def __setattr__(self, name, value) -> None:
            if name not in parameters:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            parameters[name].write(self.parameterNode, value)

        # passthroughs (wrapper.py checkedSetAttr)
        def AddObserver(self, event, callback, priority: float = 0.0) -> int:
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag: int) -> None:
            self.parameterNode.RemoveObserver(tag)

        def StartModify(self) -> int:
            return self.parameterNode.StartModify()

        def EndModify(self, previous: int) -> None:
            self.parameterNode.EndModify(previous)

        def connectGui(self, gui) -> int:
            widgets = {
                w.property("SlicerParameterName"): w
                for w in vars(gui).values()
                if isinstance(w, Widget) and w.property("SlicerParameterName")
            }
            for name in widgets:
                if name not in parameters:
                    raise ValueError(
                        f"Cannot find a param with the given name: {name}\n  Found parameters {list(parameters)}"
                    )
            connectors = {name: _connector(widget, parameters[name]) for name, widget in widgets.items()}
            tag = self._next_tag
            object.__setattr__(self, "_next_tag", tag + 1)
            for name, connector in connectors.items():
                connector.write(getattr(self, name))  # emits the widget's signals before it is connected

                def changed(*args, name=name, connector=connector):
                    previous = self.parameterNode.StartModify()  # slicer.util.NodeModify
                    try:
                        if not self._updating:
                            setattr(self, name, connector.read())
                    finally:
                        self.parameterNode.EndModify(previous)

                connector.connect(changed)
            observer = self.parameterNode.AddObserver(MODIFIED_EVENT, lambda caller, event: self._update_gui())
            self._guis[tag] = (connectors, observer)
            return tag

        def _update_gui(self) -> None:
            if self._updating:
                return
            object.__setattr__(self, "_updating", True)
            try:
                for connectors, _ in self._guis.values():
                    for name, connector in connectors.items():
                        connector.write(getattr(self, name))
            finally:
                object.__setattr__(self, "_updating", False)

        def disconnectGui(self, tag) -> None:
            if tag in self._guis:
                connectors, observer = self._guis.pop(tag)
                for connector in connectors.values():
                    connector.disconnect()
                self.parameterNode.RemoveObserver(observer)

    Wrapped.__name__ = cls.__name__
    return Wrapped


class _Connector:
    """A GUI connector (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py): exact widget type,
    the signal it listens to, and how it reads and writes the widget."""

    def __init__(self, widget, signal: str, read, write) -> None:
        self.widget, self.signal, self.read, self._write, self._slot = widget, signal, read, write, None

    def write(self, value) -> None:
        self._write(value)

    def connect(self, slot) -> None:
        self._slot = slot
        getattr(self.widget, self.signal).connect(slot)

    def disconnect(self) -> None:
        if self._slot is not None:
            getattr(self.widget, self.signal).disconnect(self._slot)
            self._slot = None


def _connector(widget, parameter: _Parameter) -> _Connector:
    kind, datatype = type(widget).__name__, parameter.datatype
    ranges = [v for v in parameter.annotations if isinstance(v, WithinRange)]
    choices = [v for v in parameter.annotations if isinstance(v, Choice)]
    if kind == "ctkPathLineEdit" and datatype in (pathlib.Path, pathlib.PosixPath, pathlib.PurePath):
        # ctkPathLineEditToPathConnector: currentPathChanged; read Path(currentPath); write currentPath = str(value)
        def write(value):
            widget.currentPath = str(value)

        return _Connector(widget, "currentPathChanged", lambda: datatype(widget.currentPath), write)
    if kind == "ctkSliderWidget" and datatype in (float, int):
        # QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector: needs bounds; sets the range from WithinRange
        if not ranges:
            raise RuntimeError("Cannot have a connection to ctkSliderWidget where the float types is unbounded.")
        widget.minimum, widget.maximum = ranges[0].minimum, ranges[0].maximum

        def write(value):
            widget.value = value

        return _Connector(widget, "valueChanged", lambda: datatype(widget.value), write)
    if kind in ("QCheckBox", "ctkCheckBox") and datatype is bool:

        def write(value):
            widget.checked = value

        return _Connector(widget, "stateChanged", lambda: bool(widget.checked), write)
    if kind in ("QComboBox", "ctkComboBox") and datatype in (int, float, str, bool):
        # QComboBoxToStringableConnector: requires Choice; fills the box with the choices
        if not choices:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        options = list(choices[0].choices)
        widget.clear()
        widget.addItems([str(c) for c in options])

        def write(value):
            if value not in options:
                raise ValueError(f"Unable to find value {value} in choices {options}")
            widget.currentIndex = options.index(value)

        return _Connector(widget, "currentIndexChanged", lambda: options[widget.currentIndex], write)
    if kind == "QLineEdit" and datatype is str:

        def write(value):
            if widget.text != value:
                widget.text = value

        return _Connector(widget, "textChanged", lambda: widget.text, write)
    if kind == "qMRMLNodeComboBox" and isinstance(datatype, type) and issubclass(datatype, Node):
        widget.nodeTypes = [datatype.__name__]
        return _Connector(widget, "currentNodeChanged", widget.currentNode, widget.setCurrentNode)
    raise RuntimeError(f"Unable to create GUI connector from datatype {datatype} to widget type {kind}")


# ------------------------------------------------------------------------------------------ widgets
class Signal:
    """A Qt signal as PythonQt exposes it: slots are called in connection order (one Qt connection per
    Python handler, PythonQtSignalReceiver::addSignalHandler); ``disconnect`` removes the first equal one."""

    def __init__(self, owner) -> None:
        self.owner, self.slots = owner, []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def disconnect(self, slot) -> None:
        self.slots.remove(slot)

    def emit(self, *args) -> None:
        if self.owner.signals_blocked:
            return
        for slot in list(self.slots):
            slot(*args[: _accepted(slot, len(args))])


def _accepted(slot, available: int) -> int:
    """How many of a signal's arguments PythonQt passes: as many as the callable takes (PythonQt
    calls a slot with fewer arguments when it accepts fewer: PythonQtSignalTarget::call)."""
    import inspect

    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class Widget:
    """A QWidget: dynamic properties (the .ui file's ``stdset="0"`` ones), ``enabled``,
    ``toolTip``, PythonQt's ``widget.connect("signal(args)", slot)``, ``blockSignals``."""

    SIGNALS: tuple[str, ...] = ()

    def __init__(self, name: str, properties: dict) -> None:
        self.objectName, self._properties = name, dict(properties)
        self.enabled, self.toolTip, self.text, self.signals_blocked = True, "", "", False
        for signal in self.SIGNALS:
            setattr(self, signal, Signal(self))

    def property(self, name: str):
        return self._properties.get(name)

    def connect(self, signature: str, slot) -> None:
        name = signature.split("(", 1)[0]
        if name not in self.SIGNALS:
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        getattr(self, name).connect(slot)

    def blockSignals(self, block: bool) -> bool:
        previous, self.signals_blocked = self.signals_blocked, bool(block)
        return previous

    def setMRMLScene(self, scene) -> None:
        self.scene = scene


def _name_filter_pattern(name_filters) -> str:
    """CTK Libs/Core/ctkUtils.cpp (nameFilterToExtensions, extensionToRegExp,
    nameFiltersToRegExpPattern): "Label (*.a *.b)" or "*.a"; each "*.<word>" becomes ".*\\.<word>?$"
    (the last letter optional: CTK's quirk); others are dropped; none left: ".+"."""
    patterns = []
    for name_filter in name_filters:
        match = re.match(r"^(.*)\(([^)]*)\)$", name_filter)
        for part in (match.group(2) if match else name_filter).split():
            ext = re.fullmatch(r"\*\.(\w+)", part)
            if ext:
                patterns.append(".*\\." + ext.group(1) + "?$")
    return "(" + "|".join(patterns) + ")" if patterns else ".+"


class ctkPathLineEdit(Widget):
    """CTK Libs/Widgets/ctkPathLineEdit.cpp. The validator is built from ``nameFilters`` only
    (ctkPathLineEditPrivate::updateFilter); ``currentPathChanged`` is emitted for every text change
    whose text the validator accepts, never for other text (updateHasValidInput), so the parameter
    connector never sees it; ``setCurrentPath`` sets the text even when invalid. ``browse()`` opens
    a file dialog when ``filters`` has Files, else a directory dialog (ctkPathLineEdit::browse)."""

    SIGNALS = ("currentPathChanged", "validInputChanged")
    Dirs, Files, Readable = 0x001, 0x002, 0x010

    current_directory = ""  # ctkPathLineEditPrivate::sCurrentDirectory: the last valid path's folder, shared

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self.filters = properties.get("filters", self.Dirs | self.Files | 0x004 | self.Readable | 0x040 | 0x1000)
        self.nameFilters = list(properties.get("nameFilters", []))
        self._text, self._valid = "", False

    def _acceptable(self, text: str) -> bool:
        return bool(text) and re.fullmatch(_name_filter_pattern(self.nameFilters), text) is not None

    @property
    def currentPath(self) -> str:
        return self._text

    @currentPath.setter
    def currentPath(self, path: str) -> None:
        if path == self._text:
            return  # QLineEdit::setText with the same text emits no textChanged
        self._text = path
        valid = self._acceptable(path)
        if valid:
            info = pathlib.Path(path)
            ctkPathLineEdit.current_directory = str(info.parent if info.is_file() else info)
            self.currentPathChanged.emit(path)
        if valid != self._valid:
            self._valid = valid
            self.validInputChanged.emit(valid)

    def setCurrentPath(self, path: str) -> None:
        self.currentPath = path

    def browse(self) -> None:  # the dialog starts at the current path, or sCurrentDirectory when empty
        dialog = sys.modules["qt"].QFileDialog
        start = self._text or ctkPathLineEdit.current_directory
        if self.filters & self.Files:
            path = dialog.getOpenFileName(self, "Open a file", start, ";;".join(self.nameFilters))
        else:
            path = dialog.getExistingDirectory(self, "Select a directory...", start)
        if path:
            self.currentPath = path


class ctkSliderWidget(Widget):
    SIGNALS = ("valueChanged",)

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self.minimum, self.maximum = float(properties.get("minimum", 0.0)), float(properties.get("maximum", 99.0))
        self.singleStep = float(properties.get("singleStep", 1.0))
        self._value = float(properties.get("value", 0.0))

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, value: float) -> None:
        value = min(max(float(value), self.minimum), self.maximum)  # clamped, as QDoubleSpinBox
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)


class QCheckBox(Widget):
    SIGNALS = ("stateChanged", "toggled")

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self._checked = bool(properties.get("checked", False))

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value: bool) -> None:
        if bool(value) != self._checked:
            self._checked = bool(value)
            self.stateChanged.emit(2 if value else 0)
            self.toggled.emit(bool(value))


class QComboBox(Widget):
    SIGNALS = ("currentIndexChanged",)

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self.items: list[str] = list(properties.get("items", []))
        self._index = 0 if self.items else -1

    def _set_index(self, index: int) -> None:
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        if not -1 <= index < len(self.items):
            index = -1
        self._set_index(index)

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def currentText(self) -> str:
        return self.items[self._index] if self._index >= 0 else ""

    def itemText(self, index: int) -> str:
        return self.items[index] if 0 <= index < len(self.items) else ""

    @property
    def count(self) -> int:
        return len(self.items)

    def addItems(self, items) -> None:
        self.items += [str(i) for i in items]
        if self._index < 0 and self.items:
            self._set_index(0)

    def clear(self) -> None:
        self.items = []
        self._set_index(-1)


class QLineEdit(Widget):
    SIGNALS = ("textChanged",)

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self._text = properties.get("text", "")

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        if value != getattr(self, "_text", None):
            self._text = value
            if hasattr(self, "textChanged"):
                self.textChanged.emit(value)


class SortFilterProxyModel:  # qMRMLSortFilterProxyModel (Libs/MRML/Widgets): the filters modelled
    def __init__(self, properties: dict) -> None:
        self.showChildNodeTypes = bool(properties.get("showChildNodeTypes", True))
        self.hideChildNodeTypes = list(properties.get("hideChildNodeTypes", []))
        self.hiddenNodeIDs: list = []


class qMRMLNodeComboBox(Widget):
    """qMRMLNodeComboBox (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx, v5.10.0/v5.12.3): offers the
    scene's nodes of ``nodeTypes`` (subclasses only with showChildNodeTypes, the default, and then
    not those of hideChildNodeTypes), none hidden from editors, none of
    ``sortFilterProxyModel().hiddenNodeIDs`` (qMRMLSortFilterProxyModel::filterAcceptsRow);
    ``nodeCount()`` / ``nodeFromIndex(i)`` list them."""

    SIGNALS = ("currentNodeChanged",)

    def __init__(self, name: str, properties: dict) -> None:
        super().__init__(name, properties)
        self.nodeTypes = list(properties.get("nodeTypes", []))
        self._node = None
        self._proxy = SortFilterProxyModel(properties)

    def sortFilterProxyModel(self) -> SortFilterProxyModel:
        return self._proxy

    def _offered(self) -> list:
        proxy, scene = self._proxy, sys.modules["slicer"].mrmlScene
        offered = []
        for node in scene.GetNodes():
            kind = node.GetClassName()
            if kind not in self.nodeTypes:
                if not proxy.showChildNodeTypes or not any(
                    isinstance(node, NODE_CLASSES[t]) for t in self.nodeTypes if t in NODE_CLASSES
                ):
                    continue
                if any(isinstance(node, NODE_CLASSES[t]) for t in proxy.hideChildNodeTypes if t in NODE_CLASSES):
                    continue
            if getattr(node, "hidden", False) or node.GetID() in proxy.hiddenNodeIDs:
                continue
            offered.append(node)
        return offered

    def nodeCount(self) -> int:
        return len(self._offered())

    def nodeFromIndex(self, index: int):
        return self._offered()[index]

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)


class QPushButton(Widget):
    SIGNALS = ("clicked", "toggled")

    def click(self) -> None:  # QAbstractButton::click: nothing when disabled
        if self.enabled:
            self.clicked.emit(False)


class QProgressBar(Widget):
    def setRange(self, low: int, high: int) -> None:
        self.range = (low, high)

    def setValue(self, value: int) -> None:
        self.value = value


class qMRMLTableView(Widget):
    def setMRMLTableNode(self, node) -> None:
        self.table_node = node


WIDGETS = {
    cls.__name__: cls
    for cls in (
        ctkPathLineEdit,
        ctkSliderWidget,
        QCheckBox,
        QComboBox,
        QLineEdit,
        qMRMLNodeComboBox,
        QPushButton,
        QProgressBar,
        qMRMLTableView,
    )
}


def _ui_properties(element) -> dict:
    """The properties of a .ui <widget> element (set, stringlist, string, double, bool) and combo items."""
    props: dict = {}
    for prop in element.findall("property"):
        name, value = prop.get("name"), list(prop)[0]
        if value.tag == "set":
            flags = 0
            for part in (value.text or "").split("|"):
                flags |= {
                    "ctkPathLineEdit::Dirs": 0x001,
                    "ctkPathLineEdit::Files": 0x002,
                    "ctkPathLineEdit::Readable": 0x010,
                }.get(part.strip(), 0)
            props[name] = flags
        elif value.tag == "stringlist":
            props[name] = [s.text or "" for s in value]
        elif value.tag == "double":
            props[name] = float(value.text)
        elif value.tag == "bool":
            props[name] = value.text == "true"
        elif value.tag == "string":
            props[name] = value.text or ""
    items = [i.find("property/string").text for i in element.findall("item") if i.find("property/string") is not None]
    if items:
        props["items"] = items
    return props


class UI(types.SimpleNamespace):
    """``slicer.util.childWidgetVariables``: one attribute per named widget of the .ui file, each a
    stand-in of its class (Widget for classes not modelled)."""

    def __init__(self, ui_file: str) -> None:
        widgets = {}
        for element in ElementTree.parse(ui_file).iter("widget"):
            name = element.get("name")
            if name:
                cls = WIDGETS.get(element.get("class"), Widget)
                widgets[name] = cls(name, _ui_properties(element))
        super().__init__(**widgets)


# ------------------------------------------------------------------------------- slicer, qt, vtk, ctk
class ScriptedLoadableModule:  # noqa: B903 (Slicer's ScriptedLoadableModule is a plain class)
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.layout = mock.MagicMock()

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(sys.modules["SoftCAM"].__file__), "Resources", filename)


class ScriptedLoadableModuleLogic:
    """Base/Python/slicer/ScriptedLoadableModule.py: getParameterNode() returns the module's singleton
    vtkMRMLScriptedModuleNode of the scene (created on first use), which survives a scene close."""

    moduleName = "SoftCAM"

    def getParameterNode(self) -> Node:
        scene = sys.modules["slicer"].mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = NODE_CLASSES["vtkMRMLScriptedModuleNode"](self.moduleName)
            node.singleton_tag = self.moduleName
            scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest:
    def delayDisplay(self, message: str, msec: int = 0) -> None:
        print(message)

    def assertAlmostEqual(self, first, second, places=None, delta=None) -> None:
        import unittest

        unittest.TestCase().assertAlmostEqual(first, second, places=places, delta=delta)

    def assertEqual(self, first, second) -> None:
        assert first == second, (first, second)


class VTKObservationMixin:
    """Base/Python/slicer/util.py VTKObservationMixin (v5.10.0, v5.12.3): observations are kept per
    object, event and method as (group, tag, priority); ``addObserver(obj, event, method,
    group="none", priority=0.0)`` warns "already has observer" and adds nothing for a method already
    observing that event of that object; ``removeObserver`` warns "does not have observer" when it
    is not; ``removeObservers(method=None)``; ``getObserver`` / ``hasObserver`` / ``observer``."""

    def __init__(self) -> None:
        self._observations: dict = {}  # {obj: {event: {method: (group, tag, priority)}}}

    @property
    def Observations(self) -> list:
        return [
            (obj, event, method, group, tag, priority)
            for obj, events in self._observations.items()
            for event, methods in events.items()
            for method, (group, tag, priority) in methods.items()
        ]

    def removeObservers(self, method=None) -> None:
        if method is None:
            for obj, _, _, _, tag, _ in self.Observations:
                obj.RemoveObserver(tag)
            self._observations.clear()
        else:
            for obj, events in self._observations.items():
                for methods in events.values():
                    if method in methods:
                        obj.RemoveObserver(methods.pop(method)[1])

    def addObserver(self, obj, event, method, group="none", priority=0.0) -> None:
        import warnings

        methods = self._observations.setdefault(obj, {}).setdefault(event, {})
        if method in methods:
            warnings.warn("already has observer")
            return
        methods[method] = group, obj.AddObserver(event, method, priority), priority

    def removeObserver(self, obj, event, method) -> None:
        import warnings

        try:
            _group, tag, _priority = self._observations[obj][event].pop(method)
            obj.RemoveObserver(tag)
        except KeyError:
            warnings.warn("does not have observer")

    def getObserver(self, obj, event, method, default=None):
        try:
            return self._observations[obj][event][method]
        except KeyError:
            return default

    def hasObserver(self, obj, event, method) -> bool:
        return self.getObserver(obj, event, method) is not None

    def observer(self, event, method, default=None):
        for obj in self._observations:
            if self.hasObserver(obj, event, method):
                return obj
        return default


_RELEASE_ENV = None  # the modelled release's packages (tests/slicer_packages.py), while installed


def _pip_install(calls: list, env=None):
    def pip_install(requirements) -> None:
        """Base/Python/slicer/util.py pip_install (<= v5.10): its arguments as
        :func:`slicer_packages.pip_args` builds them."""
        import slicer_packages

        args = slicer_packages.pip_args(requirements)
        calls.append(args)
        if env is not None:  # a modelled release: pip changes what its metadata reports
            env.pip(args)

    return pip_install


def _set_slice_viewer_layers(slicer):
    def setSliceViewerLayers(
        background="keep-current",
        foreground="keep-current",
        label="keep-current",
        foregroundOpacity=None,
        labelOpacity=None,
        fit=False,
        rotateToVolumePlane=False,
    ):
        """Base/Python/slicer/util.py setSliceViewerLayers (v5.10.0, v5.12.3): sets every
        vtkMRMLSliceCompositeNode (none without views): the background, foreground and label volume
        IDs (a node is turned into its ID) unless "keep-current", and the opacities unless None;
        rotateToVolumePlane looks the volume up by ID in the scene and dereferences
        slicer.app.layoutManager() unguarded (AttributeError when it is None); fit is guarded."""

        def node_id(node_or_id):
            return node_or_id.GetID() if isinstance(node_or_id, Node) else node_or_id

        for composite in slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
            if background != "keep-current":
                composite.SetBackgroundVolumeID(node_id(background))
            if foreground != "keep-current":
                composite.SetForegroundVolumeID(node_id(foreground))
            if foregroundOpacity is not None:
                composite.foreground_opacity = foregroundOpacity
            if label != "keep-current":
                composite.SetLabelVolumeID(node_id(label))
            if labelOpacity is not None:
                composite.label_opacity = labelOpacity
        if rotateToVolumePlane:
            chosen = next((v for v in (background, foreground, label) if v != "keep-current"), None)
            volume = slicer.mrmlScene.GetNodeByID(node_id(chosen)) if chosen is not None else None
            if volume is not None:
                manager = slicer.app.layoutManager()
                for view in manager.sliceViewNames():
                    manager.sliceWidget(view).mrmlSliceNode().RotateToVolumePlane(volume)
        if fit:
            manager = slicer.app.layoutManager()
            if manager is not None:
                logics = manager.mrmlSliceLogics()
                for i in range(logics.GetNumberOfItems()):
                    logics.GetItemAsObject(i).FitSliceToBackground()

    return mock.MagicMock(name="slicer.util.setSliceViewerLayers", side_effect=setSliceViewerLayers)


class SliceCompositeNode(Node):
    """vtkMRMLSliceCompositeNode (Libs/MRML/Core/vtkMRMLSliceCompositeNode.cxx): the layers of one
    slice view, node references "backgroundVolume", "foregroundVolume", "labelVolume"."""

    def SetBackgroundVolumeID(self, node_id) -> None:
        self.SetNodeReferenceID("backgroundVolume", node_id)

    def GetBackgroundVolumeID(self):
        return self.references.get("backgroundVolume")

    def SetForegroundVolumeID(self, node_id) -> None:
        self.SetNodeReferenceID("foregroundVolume", node_id)

    def GetForegroundVolumeID(self):
        return self.references.get("foregroundVolume")

    def SetLabelVolumeID(self, node_id) -> None:
        self.SetNodeReferenceID("labelVolume", node_id)

    def GetLabelVolumeID(self):
        return self.references.get("labelVolume")


NODE_CLASSES["vtkMRMLSliceCompositeNode"] = type("vtkMRMLSliceCompositeNode", (SliceCompositeNode,), {})


class SliceNode:  # vtkMRMLSliceNode: what setSliceViewerLayers asks of it
    def __init__(self, log: list) -> None:
        self.log = log

    def RotateToVolumePlane(self, volume) -> None:
        self.log.append(("rotate", volume))


class SliceLogic:  # vtkMRMLSliceLogic
    def __init__(self, log: list) -> None:
        self.log = log

    def FitSliceToBackground(self) -> None:
        self.log.append(("fit", None))


class Collection:  # vtkCollection
    def __init__(self, items) -> None:
        self.items = list(items)

    def GetNumberOfItems(self) -> int:
        return len(self.items)

    def GetItemAsObject(self, i: int):
        return self.items[i]


class LayoutManager:
    """qSlicerLayoutManager (Base/QTGUI/qSlicerLayoutManager.h) with slice views: sliceViewNames(),
    sliceWidget(name).mrmlSliceNode(), mrmlSliceLogics(). Each view has its singleton
    vtkMRMLSliceCompositeNode in the scene (tag = the view's name, as vtkMRMLLayoutLogic makes them).
    ``log`` records the rotations and fits asked of the views."""

    def __init__(self, scene: Scene, views=("Red", "Yellow", "Green")) -> None:
        self.views, self.log = list(views), []
        self.slice_nodes = {v: SliceNode(self.log) for v in self.views}
        for view in self.views:
            if scene.GetSingletonNode(view, "vtkMRMLSliceCompositeNode") is None:
                composite = NODE_CLASSES["vtkMRMLSliceCompositeNode"](f"vtkMRMLSliceCompositeNode{view}")
                composite.singleton_tag = view
                scene.AddNode(composite)

    def sliceViewNames(self) -> list:
        return list(self.views)

    def sliceWidget(self, name: str):
        node = self.slice_nodes[name]
        return types.SimpleNamespace(mrmlSliceNode=lambda: node)

    def mrmlSliceLogics(self) -> Collection:
        return Collection(SliceLogic(self.log) for _ in self.views)


def with_views(fakes, views=("Red", "Yellow", "Green")) -> LayoutManager:
    """A main window: slicer.app.layoutManager() returns a LayoutManager with these slice views."""
    manager = LayoutManager(fakes.slicer.mrmlScene, views)
    fakes.slicer.app.layoutManager = lambda: manager
    return manager


class EventLoop:
    """Qt's event queue as far as the module meets it: QCoreApplication::processEvents delivers the
    events posted so far (a click queued while a handler runs is delivered by the next
    processEvents call inside that handler: slicer.util.logProcessOutput (v5.10) calls
    slicer.app.processEvents() for each line pip prints, PyTorchUtils' installTorch too).
    ``post(callable)`` queues one; ``processEvents()`` delivers them, in order."""

    def __init__(self) -> None:
        self.queue: list = []
        self.calls = 0

    def post(self, event) -> None:
        self.queue.append(event)

    def processEvents(self, *args) -> None:
        self.calls += 1
        while self.queue:
            self.queue.pop(0)()


def install(release: str | None = None, state_file: str | None = None, installed: dict | None = None):
    """Put the fake modules in ``sys.modules`` (and the module folder on ``sys.path``); returns
    them for assertions (``pip_calls``: the argument lists pip was run with). With ``release``
    ("5.10", "5.12"), this Python's packages and Slicer's pip API are that release's
    (tests/slicer_packages.py: its bundled versions, ``installed`` on top, kept in ``state_file``);
    ``release_env`` is then that model."""
    global _RELEASE_ENV
    slicer = types.ModuleType("slicer")
    slicer.mrmlScene = Scene()
    slicer.app = mock.MagicMock(name="slicer.app")
    slicer.app.layoutManager = lambda: None  # qSlicerApplication::layoutManager(): None under --no-main-window
    events = EventLoop()
    slicer.app.processEvents = events.processEvents
    for name, cls in NODE_CLASSES.items():
        setattr(slicer, name, cls)
    slicer.dicomDatabase = None
    slicer.vtkSegmentation = types.SimpleNamespace(
        EXTENT_REFERENCE_GEOMETRY=EXTENT_REFERENCE_GEOMETRY,
        EXTENT_UNION_OF_EFFECTIVE_SEGMENTS=EXTENT_UNION_OF_EFFECTIVE_SEGMENTS,
    )
    segmentations_logic = types.SimpleNamespace(ExportSegmentsToLabelmapNode=_export_segments_to_labelmap)
    slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=lambda: segmentations_logic))

    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = VTKObservationMixin
    util.loadUI = lambda path: Widget("ui", {"ui_file": path})
    util.childWidgetVariables = lambda widget: UI(widget.property("ui_file"))
    util.arrayFromVolume = lambda node: node.array
    util.updateVolumeFromArray = lambda node, array: setattr(node, "array", np.array(array))
    util.getNodesByClass = lambda class_name: slicer.mrmlScene.GetNodesByClass(class_name)
    pip_calls: list = []
    env = None
    if release is not None:
        import slicer_packages

        env = _RELEASE_ENV = slicer_packages.ReleaseEnvironment(release, state_file, installed)
        slicer.app.testingEnabled = lambda: False  # a user's Slicer, not --testing
    if env is not None and env.release["slicer_packaging"]:  # 5.12: util.pip_install delegates to it
        slicer.packaging = slicer_packages.packaging_module(env, slicer, pip_calls)
        util.pip_install = mock.MagicMock(
            name="slicer.util.pip_install", side_effect=lambda r, **kw: slicer.packaging.pip_install(r, **kw)
        )
    else:
        util.pip_install = mock.MagicMock(name="slicer.util.pip_install", side_effect=_pip_install(pip_calls, env))
    util.confirmYesNoDisplay = mock.MagicMock(name="slicer.util.confirmYesNoDisplay", return_value=True)
    util.restart = mock.MagicMock(name="slicer.util.restart")  # Base/Python/slicer/util.py restart(): app.restart()
    util.setSliceViewerLayers = _set_slice_viewer_layers(slicer)
    for name in ("errorDisplay", "infoDisplay", "mainWindow"):
        setattr(util, name, mock.MagicMock(name=f"slicer.util.{name}"))
    util.confirmOkCancelDisplay = mock.MagicMock(name="slicer.util.confirmOkCancelDisplay", return_value=True)

    @contextlib.contextmanager
    def NodeModify(node):
        previous = node.StartModify()
        try:
            yield
        finally:
            node.EndModify(previous)

    util.NodeModify = NodeModify
    slicer.util = util

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(scripted, cls.__name__, cls)
    slicer.ScriptedLoadableModule = scripted

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.WithinRange, wrapper.Choice, wrapper.NotNone = WithinRange, Choice, NotNone
    slicer.parameterNodeWrapper = wrapper

    qt = types.ModuleType("qt")
    qt.QTimer = lambda: mock.MagicMock(name="QTimer")
    qt.Qt = types.SimpleNamespace(WaitCursor=3)
    qt.QFileDialog = mock.MagicMock(name="QFileDialog")
    qt.QFileDialog.getOpenFileName.return_value = ""
    qt.QFileDialog.getExistingDirectory.return_value = ""
    ctk = types.ModuleType("ctk")
    ctk.ctkPathLineEdit = ctkPathLineEdit
    vtk = types.ModuleType("vtk")
    vtk.vtkMatrix4x4 = Matrix4x4
    vtk.vtkStringArray = DataArray
    vtk.vtkDoubleArray = DataArray
    vtk.vtkCommand = types.SimpleNamespace(ModifiedEvent=MODIFIED_EVENT)

    modules = {
        "slicer": slicer,
        "slicer.util": util,
        "slicer.ScriptedLoadableModule": scripted,
        "slicer.parameterNodeWrapper": wrapper,
        "qt": qt,
        "ctk": ctk,
        "vtk": vtk,
    }
    if env is not None and env.release["slicer_packaging"]:
        modules["slicer.packaging"] = slicer.packaging
    sys.modules.update(modules)
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    del ERRORS[:]
    ctkPathLineEdit.current_directory = ""
    if env is not None:
        env.start()  # Slicer starting: its modules import what they import at start-up
    return types.SimpleNamespace(pip_calls=pip_calls, events=events, errors=ERRORS, release_env=env, **modules)


def uninstall() -> None:
    global _RELEASE_ENV
    if _RELEASE_ENV is not None:
        _RELEASE_ENV.stop()
        _RELEASE_ENV = None
    for name in (
        "slicer",
        "slicer.util",
        "slicer.ScriptedLoadableModule",
        "slicer.parameterNodeWrapper",
        "slicer.packaging",
        "qt",
        "ctk",
        "vtk",
        "SoftCAM",
    ):
        sys.modules.pop(name, None)


# ------------------------------------------------------------------- launcher (PythonSlicer), processes
#: Stand-in of Slicer's ``PythonSlicer``: a CTKAppLauncher (github:commontk/AppLauncher at dcb7a7e)
#: configured to start ``python-real``. Modelled on Base/ctkAppLauncher.cpp:
#: ``ctkAppLauncherPrivate::runProcess()`` builds the environment (``buildEnvironment``), forwards
#: the standard channels (``QProcess::ForwardedChannels``, ``ForwardedInputChannel``) and starts the
#: application as a CHILD with ``this->Process.start(ApplicationToLaunch, ...)`` (a QProcess,
#: ``ctkInteractiveProcess``: same process group, no new session); the launcher then only waits:
#: ``finished(int, QProcess::ExitStatus)`` -> ``ctkAppLauncherPrivate::applicationFinished()`` exits
#: with the child's code (NormalExit) or EXIT_FAILURE (CrashExit). Neither that file nor Main.cpp
#: (``appLauncherMain``) installs a signal handler: SIGTERM or SIGINT to the launcher take their default
#: action on it alone (no destructor runs, so QProcess never kills the child) and ``python-real`` runs
#: on, re-parented. The only path where the launcher signals its child, ``--launcher-timeout`` ->
#: ``ctkAppLauncherPrivate::terminateProcess()``, is not used by PythonSlicer's callers.
PYTHON_SLICER_SOURCE = '''#!{python}
"""Stand-in of PythonSlicer (CTKAppLauncher, see tests/slicer_stubs.py): run {python} as a child with
these arguments, wait for it, exit with its code; no signal is handled or forwarded."""
import signal
import subprocess
import sys

signal.signal(signal.SIGINT, signal.SIG_DFL)  # a C++ program: SIGINT ends it (no KeyboardInterrupt)
child = subprocess.Popen([{python!r}, *sys.argv[1:]])  # runProcess: QProcess::start, channels inherited
code = child.wait()  # finished(int, QProcess::ExitStatus) -> applicationFinished
sys.exit(code if code >= 0 else 1)  # NormalExit: the child's code; CrashExit: EXIT_FAILURE
'''


def write_python_slicer(folder: str, python: str = sys.executable) -> str:
    """Write the stand-in ``PythonSlicer`` (POSIX script, launching ``python`` as ``python-real``)
    in ``folder`` and return its path; with ``folder`` first on PATH, ``shutil.which("PythonSlicer")``
    (the module's ``SoftCAMLogic.pythonExecutable``) finds it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "PythonSlicer")
    with open(path, "w") as f:
        f.write(PYTHON_SLICER_SOURCE.format(python=python))
    os.chmod(path, 0o755)
    return path


def busy_inference(output_dir: str, seconds: float = 120.0, ignore_sigterm: bool = False) -> None:
    """A bundle step (``initialize: ["$import slicer_stubs", "$slicer_stubs.busy_inference(@output_dir)"]``)
    standing in for a long inference: writes this process's pid to ``<run folder>/child.pid`` (the
    run folder holds ``output_dir``), then writes a file into ``output_dir`` every 50 ms (recreating
    it if removed) for ``seconds``; with ``ignore_sigterm`` it outlives a SIGTERM (as a process stuck
    in a CUDA call would), so only SIGKILL ends it."""
    import signal
    import time

    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    work = os.path.dirname(os.path.abspath(output_dir))
    with open(os.path.join(work, "child.pid.part"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(work, "child.pid.part"), os.path.join(work, "child.pid"))
    end, tick = time.time() + seconds, 0
    while time.time() < end:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, f"tick-{tick % 20}"), "w") as f:
            f.write(str(tick))
        tick += 1
        time.sleep(0.05)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (Linux: a zombie, dead but not yet reaped by
    a parent that does not reap, counts as not running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return not os.path.isdir("/proc/self")
