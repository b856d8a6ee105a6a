"""The trained task: what a model classifies and how its input is prepared, saved beside the model.

Training writes ``<ckpt_dir>/task.json``; evaluation, the explanation report, inference, export and
the Slicer module read it, so a model trained with any preset runs without that preset::

    python -m monai.bundle run inference --config_file bundle/configs/inference.yaml --ckpt_dir X --input_path Y

The task is: the class names, spatial dims, input channels, image size, resize rule, intensity
statistics (as used in training, ``auto`` resolved to the measured values), the architecture
(SoftCAM or BlackBox), the backbone and its keyword arguments, whether DICOM files are mapped to
[0, 1] by their own VOI LUT/window (``dicom_window``), and, for the record (``trained_with``), the
settings that shaped the model (epochs, batch size, learning rate, penalty, seed) and, when it was
trained from the command line, its config files and overrides. It is also a valid MONAI config file whose
top-level keys are those of the bundle configs: give it as a config file to ``python -m
monai.bundle ckpt_export`` and it is embedded in the TorchScript export.

Reading a task checks it against what the user asked for explicitly (:func:`~monai_softcam.task.load_task`'s
``explicit``): a value that contradicts the saved one is an error naming both values. The bundle's configs give
the keys they set (:func:`monai_softcam.bundle.trained_task`); this module never reads the command line:
:func:`~monai_softcam.task.load_task` is a function of its folder and its arguments only.

The task file is data: nothing in it is executed. The architecture must be one of
:data:`~monai_softcam.task.ARCHITECTURES`, and every value is checked for its type when read."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from monai.transforms import Compose

from .data.datasets import intensity_stats
from .data.rules import InputRules
from .networks import BlackBox, SoftCAM
from .networks.backbones import build_backbone
from .transforms import load_input, normalize_input, preprocessing
from .transforms.spatial import FIT_MODES
from .utils import ConfigError, as_flag, atomic_open, is_main_process

__all__ = ["ARCHITECTURES", "TASK_FILE", "TASK_KEYS", "Task", "TaskError", "build_network", "load_task"]

TASK_FILE = "task.json"
#: architecture name -> network class; nothing else can be named in a task file
ARCHITECTURES = {"SoftCAM": SoftCAM, "BlackBox": BlackBox}
#: the config keys a task holds, in the order the file lists them
TASK_KEYS = (
    "class_names",
    "spatial_dims",
    "in_channels",
    "image_size",
    "resize",
    "intensity_mean",
    "intensity_std",
    "architecture",
    "backbone",
    "backbone_kwargs",
    "dicom_window",
)
#: task keys added after the first task files were written; a file without them has these values
OPTIONAL_TASK_KEYS = {"dicom_window": False}


class TaskError(ConfigError):
    """A task file that cannot be read, or an explicit setting that contradicts it; the message names both."""


def _floats(value: Any, key: str) -> list[float] | str:
    if value == "auto":
        return "auto"
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TaskError(f"{key} must be a number, a list of numbers or 'auto', got {value!r}") from err


@dataclass(frozen=True)
class Task:
    """What a model classifies and how its input is prepared (see the module docstring).

    ``intensity_mean``/``intensity_std`` may be ``"auto"`` only before training resolves them
    (:meth:`with_intensity`); a saved task always holds numbers.
    """

    class_names: list[str]
    spatial_dims: int
    in_channels: int
    image_size: list[int]
    resize: str = "stretch"
    intensity_mean: list[float] | str = field(default_factory=lambda: [0.0])
    intensity_std: list[float] | str = field(default_factory=lambda: [1.0])
    architecture: str = "SoftCAM"
    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    dicom_window: bool = False
    trained_with: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.class_names, (list, tuple)) or not self.class_names:
            raise TaskError(f"class_names must be a non-empty list, got {self.class_names!r}")
        set_("class_names", [str(c) for c in self.class_names])
        if self.spatial_dims not in (2, 3):
            raise TaskError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        set_("spatial_dims", int(self.spatial_dims))
        set_("in_channels", int(self.in_channels))
        try:
            set_("image_size", [int(s) for s in self.image_size])
        except (TypeError, ValueError) as err:
            raise TaskError(f"image_size must be a list of integers, got {self.image_size!r}") from err
        if len(self.image_size) != self.spatial_dims:
            raise TaskError(f"image_size {self.image_size} needs spatial_dims={self.spatial_dims} entries")
        if self.resize not in FIT_MODES:
            raise TaskError(f"resize must be one of {', '.join(FIT_MODES)}, got {self.resize!r}")
        set_("intensity_mean", _floats(self.intensity_mean, "intensity_mean"))
        set_("intensity_std", _floats(self.intensity_std, "intensity_std"))
        if self.architecture not in ARCHITECTURES:
            raise TaskError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        if not isinstance(self.backbone, str):
            raise TaskError(f"backbone must be a registered backbone's name, got {self.backbone!r}")
        if not isinstance(self.backbone_kwargs, Mapping):
            raise TaskError(f"backbone_kwargs must be a mapping, got {self.backbone_kwargs!r}")
        set_("backbone_kwargs", dict(self.backbone_kwargs))
        try:
            set_("dicom_window", as_flag(self.dicom_window, "dicom_window"))
        except ConfigError as err:
            raise TaskError(str(err)) from err

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ the recipes
    def with_intensity(self, mean: Any, std: Any) -> "Task":
        """The same task with measured intensity statistics (training's ``auto``)."""
        return replace(self, intensity_mean=mean, intensity_std=std)

    def with_measured_intensity(self, data: Sequence[dict[str, Any]], load: Callable) -> "Task":
        """The same task with ``auto`` intensity statistics measured on ``data`` as ``load`` reads
        them (with a progress bar; printed); a task with numbers is returned as it is."""
        if "auto" not in (self.intensity_mean, self.intensity_std):
            return self
        mean, std = intensity_stats(data, load)
        print(f"intensity statistics of the training split ({len(data)} images): mean {mean}, std {std}")
        return self.with_intensity(
            mean if self.intensity_mean == "auto" else self.intensity_mean,
            std if self.intensity_std == "auto" else self.intensity_std,
        )

    def with_record(self, trained_with: Mapping[str, Any]) -> "Task":
        """The same task with a record of its training run (``trained_with``)."""
        return replace(self, trained_with=dict(trained_with))

    def input_rules(self, max_pixels: int | None = None) -> InputRules:
        """The checks every input of this task passes (:class:`~monai_softcam.data.rules.InputRules`): its
        spatial dimensions, the network's smallest input (one cell of its output grid, read from the backbone
        built on the meta device: no memory, no weights) and ``max_pixels`` (the configs' ``max_image_pixels``;
        None: the default of the task's dimensions). A TaskError if the task's own ``image_size`` is below that
        smallest input."""
        with torch.device("meta"):
            backbone = build_backbone(
                self.backbone, self.spatial_dims, self.in_channels, **(self.backbone_kwargs or {})
            )
        minimum = backbone.min_input_shape()
        if any(s < m for s, m in zip(self.image_size, minimum)):
            raise TaskError(
                f"image_size {self.image_size} is smaller than the smallest input of backbone {self.backbone!r} "
                f"({' x '.join(map(str, minimum))}: one cell of its output grid); give image_size of at least that"
            )
        return InputRules(self.spatial_dims, max_pixels, minimum)

    def load_input(self, resize: str | None = None, frame: int | None = None, max_pixels: int | None = None) -> Compose:
        """Read, check (:meth:`input_rules`) and bring to the network's grid
        (:func:`~monai_softcam.transforms.input.load_input`); ``resize="none"`` keeps the input's own size (sliding
        window); ``frame``: the frame a 2D task takes from multi-frame DICOM files, ``max_pixels``: the largest
        image read (input options, not part of the task)."""
        return load_input(
            self.image_size,
            resize or self.resize,
            frame=frame,
            window=self.dicom_window,
            rules=self.input_rules(max_pixels),
        )

    def _intensity(self) -> tuple[list[float], list[float]]:
        if "auto" in (self.intensity_mean, self.intensity_std):
            raise TaskError("intensity_mean/std are still 'auto': measure them first (Task.with_intensity)")
        return self.intensity_mean, self.intensity_std  # type: ignore[return-value]

    def normalize(self) -> Compose:
        """Channels for the network, then ``(x - mean) / std``
        (:func:`~monai_softcam.transforms.intensity.normalize_input`)."""
        return normalize_input(*self._intensity(), self.in_channels, self.spatial_dims)

    def preprocessing(
        self,
        resize: str | None = None,
        frame: int | None = None,
        sliding_window: Any = False,
        max_pixels: int | None = None,
    ) -> Compose:
        """The whole deterministic preparation of every split and of inference
        (:func:`~monai_softcam.transforms.pipelines.preprocessing`: load, then normalise; training puts its
        augmentations between :meth:`~monai_softcam.transforms.input.load_input` and :meth:`normalize`). With
        ``sliding_window`` (a yes/no value) inputs keep their own size (``resize="none"``)."""
        if as_flag(sliding_window, "sliding_window"):
            resize = "none"
        mean, std = self._intensity()
        return preprocessing(
            self.image_size,
            self.in_channels,
            mean,
            std,
            resize or self.resize,
            frame=frame,
            window=self.dicom_window,
            rules=self.input_rules(max_pixels),
        )

    def network(self, return_maps: bool = True, pretrained: str | None = None, maps_only: bool = False) -> Any:
        """A fresh network of this task (see :func:`build_network`)."""
        return build_network(self, return_maps=return_maps, pretrained=pretrained, maps_only=maps_only)

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict[str, Any]:
        """The task's fields as a plain dict (``dataclasses.asdict``)."""
        return asdict(self)

    def save(self, path: str, trained_with: Mapping[str, Any] | None = None) -> "Task":
        """Write the task to ``path`` (JSON, atomically, main process only); returns the saved task."""
        task = self if trained_with is None else replace(self, trained_with=dict(trained_with))
        if "auto" in (task.intensity_mean, task.intensity_std):
            raise TaskError("a task is saved with measured intensity statistics, not 'auto'")
        if is_main_process():
            with atomic_open(path, "w") as f:
                json.dump(task.to_dict(), f, indent=4)  # as the Model Zoo's pre-commit formats JSON
                f.write("\n")
        return task

    @classmethod
    def read(cls, path: str) -> "Task":
        """Read a task file; a TaskError names the file and what is wrong."""
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f)
        except OSError as err:
            raise TaskError(f"cannot read the task file {path}: {err}") from err
        except ValueError as err:
            raise TaskError(f"{path} is not a JSON task file: {err}") from err
        if not isinstance(content, dict):
            raise TaskError(f"{path} is not a task file (a JSON object with the keys {', '.join(TASK_KEYS)})")
        known = {f.name for f in fields(cls)}
        missing = [k for k in TASK_KEYS if k not in content and k not in OPTIONAL_TASK_KEYS]
        if missing:
            raise TaskError(f"{path} lacks the task key(s) {missing}")
        try:
            return cls(**{k: v for k, v in content.items() if k in known})
        except TaskError as err:
            raise TaskError(f"{path}: {err}") from err

    # ------------------------------------------------------------------ explicit settings
    def check(self, explicit: Mapping[str, tuple[Any, str]], source: str) -> None:
        """Raise a TaskError for every explicit ``{key: (value, where)}`` that contradicts this task
        (``source`` names the task file). ``auto`` intensity statistics agree with any values."""
        problems = []
        for key, (value, where) in explicit.items():
            saved = getattr(self, key)
            if key.startswith("intensity_") and value == "auto":
                continue
            try:
                wanted = getattr(replace(self, **{key: value}), key)  # the same normalisation as the saved value
            except (TaskError, TypeError, ValueError):
                wanted = value
            if wanted != saved:
                problems.append(f"{where} sets {key} to {value!r}, but the trained model's {key} is {saved!r}")
        if problems:
            raise TaskError(
                f"{'; '.join(problems)} ({source}). Drop the setting to use the trained model's task, "
                "or point --ckpt_dir at a model trained with it"
            )


def build_network(task: Task, return_maps: bool = True, pretrained: str | None = None, maps_only: bool = False) -> Any:
    """The network of ``task``: its architecture over its backbone, with one output per class.

    The bundle configs' ``network_def`` is this call, so training, inference and export build the
    same network from the same task. ``maps_only`` (inference's ``network_def``): a SoftCAM network
    returns its evidence maps as one tensor, whose spatial mean is the logits."""
    return ARCHITECTURES[task.architecture](
        backbone=task.backbone,
        spatial_dims=task.spatial_dims,
        in_channels=task.in_channels,
        num_classes=task.num_classes,
        pretrained=pretrained,
        return_maps=return_maps,
        backbone_kwargs=task.backbone_kwargs,
        maps_only=maps_only,
    )


def load_task(ckpt_dir: str, explicit: Mapping[str, tuple[Any, str]] | None = None) -> Task:
    """The task of the model in ``ckpt_dir`` (``<ckpt_dir>/task.json``), checked against the
    ``explicit`` settings ``{key: (value, where)}`` (:meth:`Task.check`).

    Without a task file, the explicit settings must name every task key (a model trained before
    tasks were saved, with its preset); otherwise a TaskError says to train first.
    """
    path = os.path.join(ckpt_dir, TASK_FILE)
    explicit = dict(explicit or {})
    if not os.path.isfile(path):
        missing = [k for k in TASK_KEYS if k not in explicit and k not in OPTIONAL_TASK_KEYS]
        if missing:
            raise TaskError(
                f"no trained model in {ckpt_dir}: {TASK_FILE} not found. Train first (python -m monai.bundle run "
                "training --config_file bundle/configs/train.yaml, plus your preset), or point --ckpt_dir at the "
                "folder of a trained model; to run on your own images, also give --input_path"
            )
        return Task(**{k: v for k, (v, _) in explicit.items()})
    task = Task.read(path)
    task.check(explicit, path)
    return task
