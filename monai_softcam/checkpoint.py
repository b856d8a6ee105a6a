"""Reading, checking and writing checkpoints: the one place where this package loads a file with
``torch.load`` and the one place where it saves one.

* :func:`~monai_softcam.checkpoint.read_checkpoint` loads any checkpoint (``map_location="cpu"``,
  ``weights_only=True``); :func:`~monai_softcam.checkpoint.read_state_dict` also unwraps a model's state dict
  from it (:func:`~monai_softcam.checkpoint.unwrap_state_dict`: a ``{"state_dict"|"model"|"network": ...}``
  wrapper, the DDP ``module.`` prefix).
* :class:`~monai_softcam.checkpoint.StateMismatch` compares a state dict with a network and writes the one
  report of what does not fit (missing, unexpected and shape-mismatched keys);
  :func:`~monai_softcam.checkpoint.load_state_checked` and :func:`~monai_softcam.checkpoint.load_weights` use
  it, and so does the pretrained-backbone loader for its final message.
* :func:`~monai_softcam.checkpoint.save_checkpoint` writes a file atomically (only on rank 0) with ignite's
  ``DiskSaver``; :func:`~monai_softcam.checkpoint.portable_state_dict` gives a model's state dict that loads
  anywhere (CPU, contiguous).

A missing file raises :class:`FileNotFoundError`; anything else wrong with a file raises
:class:`~monai_softcam.checkpoint.CheckpointError` (a ``ValueError``). Both messages name the file."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import torch
from ignite.handlers import DiskSaver

from .utils import InputError, MissingInputError

__all__ = [
    "CheckpointError",
    "StateMismatch",
    "describe_network",
    "load_state_checked",
    "load_weights",
    "portable_state_dict",
    "read_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "unwrap_module",
    "unwrap_state_dict",
]

#: keys under which a checkpoint may hold the model's state dict, tried in this order
STATE_DICT_WRAPPERS = ("state_dict", "model", "network")
#: prefix that ``DistributedDataParallel`` / ``DataParallel`` put before every key
DDP_PREFIX = "module."
#: keys of each kind shown in a mismatch report
REPORT_LIMIT = 10


class CheckpointError(InputError):
    """A checkpoint file cannot be read, holds no state dict, or does not fit the network."""


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """The object saved in ``path``, loaded on the CPU with ``weights_only=True``.

    Args:
        path: the file.
        what: what the file is, for the error messages (``"weight file"``, ``"model checkpoint"``).

    Raises:
        MissingInputError: there is no such file (a FileNotFoundError).
        CheckpointError: the file is not a PyTorch file that ``weights_only`` loading accepts.
    """
    path = os.fspath(path) if path else ""
    if not path or not os.path.isfile(path):
        raise MissingInputError(f"{what} not found: {path or '(no path given)'}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, objects weights_only refuses
        raise CheckpointError(f"{path} is not a readable PyTorch {what}: {err}") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state")) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The model state dict inside a loaded checkpoint.

    Rules: a mapping whose ``state_dict``, ``model`` or ``network`` entry (the first present, in that
    order) is a mapping is replaced by that entry; then, if every key starts with the DDP prefix
    ``module.``, the prefix is removed. ``source`` names the file in the error.

    Raises:
        CheckpointError: what is left is not a mapping of names to tensors.
    """
    if isinstance(obj, Mapping):
        for wrapper in STATE_DICT_WRAPPERS:
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not _is_state_dict(obj):
        raise CheckpointError(f"{source} does not hold a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith(DDP_PREFIX) for k in obj):
        obj = {k[len(DDP_PREFIX) :]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """:func:`read_checkpoint` then :func:`unwrap_state_dict`."""
    return unwrap_state_dict(read_checkpoint(path, what), os.fspath(path))


def unwrap_module(model: Any) -> Any:
    """The network inside a ``DistributedDataParallel``/``DataParallel`` wrapper (anything else as it is)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(model, torch.nn.Module) and isinstance(inner, torch.nn.Module) else model


def describe_network(model: torch.nn.Module) -> str:
    """``SoftCAM(backbone=resnet18, num_classes=2, spatial_dims=2, in_channels=1)``: the class and
    whichever of these attributes the network has (a black box's ``head`` too: ``classic`` or ``gap``)."""
    model = unwrap_module(model)
    name = getattr(model, "backbone_name", None)
    if not isinstance(name, str):
        name = getattr(model, "name", None)
    fields = [("backbone", name if isinstance(name, str) else None)]
    fields += [(attr, getattr(model, attr, None)) for attr in ("num_classes", "spatial_dims", "in_channels")]
    fields.append(("head", getattr(model, "head_type", None)))
    shown = [f"{key}={value}" for key, value in fields if isinstance(value, (str, int)) and not isinstance(value, bool)]
    return type(model).__name__ + (f"({', '.join(shown)})" if shown else "")


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, "shape") else None


@dataclasses.dataclass
class StateMismatch:
    """What of a state dict does not fit a network: keys it lacks, keys it has in excess, and
    ``(key, checkpoint shape, network shape)`` of tensors of another shape. False when it all fits."""

    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(default_factory=list)

    @classmethod
    def compare(cls, expected: Mapping[str, Any], state: Mapping[str, Any]) -> StateMismatch:
        """Compare ``state`` with ``expected`` (the network's own state dict)."""
        shapes = []
        for key, own in expected.items():
            theirs = state.get(key)
            if theirs is not None and _shape(theirs) is not None and _shape(theirs) != _shape(own):
                shapes.append((key, _shape(theirs), _shape(own)))
        return cls(
            missing=[k for k in expected if k not in state],
            unexpected=[k for k in state if k not in expected],
            shapes=shapes,
        )

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def message(self, source: str | os.PathLike, network: torch.nn.Module, limit: int = REPORT_LIMIT) -> str:
        """The report: ``checkpoint <source> does not fit the network <description>; shape mismatch
        (n): ...; missing keys (n): ...; unexpected keys (n): ...`` (the first ``limit`` keys of each)."""

        def listed(items: list[str]) -> str:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return f"({len(items)}): " + ", ".join(items[:limit]) + more

        shapes = [f"{key}: checkpoint {theirs} vs network {own}" for key, theirs, own in self.shapes]
        parts = [f"checkpoint {os.fspath(source)} does not fit the network {describe_network(network)}"]
        sections = (("shape mismatch", shapes), ("missing keys", self.missing), ("unexpected keys", self.unexpected))
        for title, items in sections:
            if items:
                parts.append(f"{title} {listed(items)}")
        return "; ".join(parts)


def load_state_checked(model: torch.nn.Module, state: Any, source: str | os.PathLike) -> torch.nn.Module:
    """Load ``state`` (unwrapped by :func:`unwrap_state_dict`) into ``model`` (a DDP wrapper is unwrapped).

    Raises:
        CheckpointError: ``state`` is no state dict, or does not fit: :meth:`StateMismatch.message`
            names ``source`` and every mismatch.
    """
    target = unwrap_module(model)
    state = unwrap_state_dict(state, os.fspath(source))
    mismatch = StateMismatch.compare(target.state_dict(), state)
    if mismatch:
        raise CheckpointError(mismatch.message(source, target))
    target.load_state_dict(state)
    return model


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a model checkpoint file into ``model`` and return ``model``.

    The file is a state dict, possibly wrapped (see :func:`unwrap_state_dict`; a training state
    ``{"model": ..., "optimizer": ...}`` works too). A missing file raises FileNotFoundError; a
    checkpoint of another backbone or class count raises :class:`CheckpointError` naming the file
    and the mismatching keys and shapes.
    """
    return load_state_checked(model, read_checkpoint(path, "model checkpoint"), path)


def portable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict (a DDP wrapper unwrapped) as detached, contiguous CPU tensors: the file
    then loads anywhere (a CPU-only machine, ``ckpt_export``)."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap_module(model).state_dict().items()}


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a temporary file moved onto ``path``), on rank 0 only.

    A failure or SIGKILL while writing leaves the previous file. ignite's ``Checkpoint`` does not
    fit a fixed file name such as ``models/model.pt``: its ``__call__`` removes the existing file of
    that name (``save_handler.remove``) before it writes the new one, so a kill in between would lose
    the file; its ``DiskSaver`` alone is the writer here. A state holding NaN or infinite values is never
    written (a CheckpointError names the first tensors): a diverged model must not replace a good one.
    """
    bad = _non_finite(obj)
    if bad:
        raise CheckpointError(
            f"not saving {path}: {bad} hold NaN or infinite values (training diverged); the file on disk, if any, "
            f"is kept as it was"
        )
    path = os.path.abspath(os.fspath(path))
    saver = DiskSaver(os.path.dirname(path), atomic=True, create_dir=True, require_empty=False)
    saver(obj, os.path.basename(path))


def _non_finite(obj: Any, prefix: str = "", limit: int = 3) -> str:
    """The names of (at most ``limit``) floating-point tensors in ``obj`` (nested dicts, lists) holding NaN or
    infinite values, with their counts, as one text; "" when there are none."""
    found: list[str] = []

    def walk(node: Any, name: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(node, torch.Tensor):
            if node.is_floating_point() or node.is_complex():
                count = int((~torch.isfinite(node)).sum())
                if count:
                    found.append(f"{name or 'the tensor'} ({count} of {node.numel()} values)")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{name}[{i}]")

    walk(obj, prefix)
    return ", ".join(found)
