"""Export of SoftCAM (and black-box) networks to ONNX, with the evidence maps as a named output.

TorchScript needs nothing from here: :class:`~monai_softcam.networks.softcam.SoftCAM` and
:class:`~monai_softcam.networks.softcam.BlackBox` compile with ``torch.jit.script`` as they are, so MONAI's
``python -m monai.bundle ckpt_export`` writes ``models/model.ts`` (see the bundle's ``docs/README.md``). ONNX
goes through :func:`~monai_softcam.export.export_onnx`, which the bundle runs as ``python -m monai.bundle run
export_onnx --config_file "['configs/inference.yaml','configs/export.yaml']"``.

The ONNX model has one input, ``image`` ``[B, C, *spatial]``, and the outputs ``logits`` ``[B, classes]``
and (SoftCAM only) ``evidence_maps`` ``[B, classes, *grid]``; the batch axis is dynamic, and so are
the spatial axes with ``dynamic_spatial=True``. It is written with PyTorch's ``torch.export``-based
exporter (the default since PyTorch 2.9; it needs the ``onnx`` and ``onnxscript`` packages) and
checked with ``onnxruntime`` against the eager network (``pip install onnx onnxscript onnxruntime``;
the package's ``onnx`` extra, declared in a bundle's ``configs/metadata.json``).

Example::

    >>> from monai_softcam.networks import SoftCAM
    >>> from monai_softcam.export import export_onnx, run_onnx
    >>> net = SoftCAM("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    >>> report = export_onnx(net, "model.onnx", spatial_size=(96, 96))   # doctest: +SKIP
    >>> run_onnx("model.onnx", image)["evidence_maps"].shape              # doctest: +SKIP
    (4, 2, 3, 3)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .networks.softcam import EVIDENCE_MAPS, LOGITS, BlackBox, SoftCAM
from .utils import as_flag

__all__ = ["INPUT_NAME", "export_onnx", "onnx_output_names", "run_onnx"]

logger = logging.getLogger("monai_softcam")

#: name of the ONNX model's input
INPUT_NAME = "image"

#: what to install, in the package and in a packaged Zoo bundle alike (declared in its configs/metadata.json)
_EXTRA_HINT = "pip install onnx onnxscript onnxruntime"


def onnx_output_names(network: nn.Module) -> list[str]:
    """Names of the exported outputs: ``["logits", "evidence_maps"]`` for SoftCAM, ``["logits"]`` for a black box."""
    if isinstance(network, SoftCAM):
        return [LOGITS, EVIDENCE_MAPS]
    if isinstance(network, BlackBox):
        return [LOGITS]
    if isinstance(network, torch.jit.ScriptModule):
        raise TypeError(
            f"export_onnx needs the eager network ({__package__}.networks.SoftCAM or BlackBox), not a TorchScript "
            "module: build it from the bundle config and load the checkpoint (models/model.pt) instead"
        )
    raise TypeError(
        f"export_onnx exports {__package__}.networks.SoftCAM or BlackBox networks, got {type(network).__name__}; "
        "use torch.onnx.export for other modules"
    )


class _NamedOutputs(nn.Module):
    """The network with ``return_maps=True``, its dictionary output as a tuple in ``names`` order."""

    def __init__(self, network: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.network = network
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(x)
        return tuple(out[name] for name in self.names)


def _eager_outputs(network: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = _NamedOutputs(network, names)(x)
    return {name: value.detach().cpu().numpy() for name, value in zip(names, out, strict=True)}


def _onnxruntime() -> Any:
    try:
        import onnxruntime  # optional: the onnx extra
    except ImportError as err:
        raise ImportError(f"running an ONNX model needs onnxruntime: {_EXTRA_HINT}") from err
    return onnxruntime


def run_onnx(filepath: str | os.PathLike, image: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Run an ONNX model with onnxruntime (CPU) on ``image``; returns ``{output name: array}``."""
    filepath = os.fspath(filepath)
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"ONNX model not found: {filepath}")
    ort = _onnxruntime()
    session = ort.InferenceSession(filepath, providers=["CPUExecutionProvider"])
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: array.astype(np.float32, copy=False)})
    return dict(zip(names, values, strict=True))


def _check_spatial_size(network: nn.Module, spatial_size: Sequence[int]) -> list[int]:
    size = [int(s) for s in spatial_size]
    if len(size) != network.spatial_dims:
        raise ValueError(
            f"spatial_size must have spatial_dims={network.spatial_dims} entries (the network's), got {list(spatial_size)}"
        )
    network._check_input(torch.zeros(1, network.in_channels, *size))  # a ValueError below the minimum size
    return size


def export_onnx(
    network: nn.Module,
    filepath: str | os.PathLike,
    spatial_size: Sequence[int],
    dynamic_spatial: bool = False,
    opset_version: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, Any]:
    """Write ``network`` as an ONNX model and check it against the eager network.

    Args:
        network: a :class:`~monai_softcam.networks.softcam.SoftCAM` (outputs ``logits`` and ``evidence_maps``) or a
            :class:`~monai_softcam.networks.softcam.BlackBox` (``logits``), with its weights loaded. It is exported in
            eval mode on the CPU; its ``return_maps`` and ``maps_only`` settings do not matter and are left as
            they were (the ONNX model always has both named outputs).
        filepath: the ``.onnx`` file, written atomically once checked (folders are created).
        spatial_size: the input's spatial size, e.g. the bundle's ``image_size``; it must reach the
            network's minimum size (a ValueError otherwise).
        dynamic_spatial: (a yes/no value) also leave the spatial axes dynamic (any size from the network's minimum up);
            the batch axis always is.
        opset_version: ONNX opset; None: the exporter's default.
        verify: run the model with onnxruntime on random inputs (a batch of another size than the
            one exported, and another spatial size when ``dynamic_spatial``) and compare every output
            with the eager network's: each must satisfy ``max|ONNX - eager| <= atol + rtol * max|eager|``
            (float32 rounding grows with the outputs' magnitude), else a RuntimeError names the output
            and the differences, and nothing is written (a previous file stays as it was).
        atol: absolute part of the tolerance of ``verify``.
        rtol: part of the tolerance of ``verify`` relative to the largest absolute value of the output.

    Returns:
        ``{"path", "input", "outputs", "max_abs_diff", "max_abs_value"}``: the file, the input name, the
        output names, and per output the largest absolute difference measured by ``verify`` and the
        largest absolute value of the eager output (both empty without ``verify``).

    Raises:
        TypeError: ``network`` is not a SoftCAM or BlackBox network (e.g. a TorchScript module).
        ImportError: ``onnx``/``onnxscript`` (or, with ``verify``, ``onnxruntime``) are missing.
        RuntimeError: PyTorch's exporter rejects the network (e.g. a custom backbone with data-dependent
            control flow); the message names the backbone.
    """
    dynamic_spatial = as_flag(dynamic_spatial, "onnx_dynamic_spatial")
    names = onnx_output_names(network)
    size = _check_spatial_size(network, spatial_size)
    filepath = os.path.abspath(os.fspath(filepath))
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as err:
            raise ImportError(f"ONNX export needs the {module} package: {_EXTRA_HINT}") from err
    if verify:
        _onnxruntime()

    was_training, device = network.training, next(network.parameters()).device
    return_maps, maps_only = network.return_maps, getattr(network, "maps_only", False)
    network.eval().cpu()
    network.return_maps, network.maps_only = True, False  # the dict: the named outputs
    try:
        wrapper = _NamedOutputs(network, names).eval()
        example = torch.randn(2, network.in_channels, *size)  # batch 2: torch.export specialises a batch of 1
        axes: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
        if dynamic_spatial:
            for i, minimum in enumerate(network.backbone.min_input_shape()):
                axes[2 + i] = torch.export.Dim(f"spatial{i}", min=int(minimum))
        try:
            with torch.no_grad(), _quiet_exporter():
                program = torch.onnx.export(
                    wrapper,
                    (example,),
                    None,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_shapes=(axes,),
                    opset_version=opset_version,
                    dynamo=True,
                    verbose=False,
                )
        except Exception as err:
            raise RuntimeError(
                f"ONNX export of {type(network).__name__}({network.backbone_name}, spatial_dims={network.spatial_dims}) "
                f"failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}. "
                "Every registered backbone exports (see the bundle's docs/README.md); a custom backbone must be "
                "traceable by torch.export (no data-dependent Python control flow)"
            ) from err
        folder = os.path.dirname(filepath)
        os.makedirs(folder, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".onnx-", dir=folder)  # complete and checked, or not there at all
        try:
            staged = os.path.join(staging, os.path.basename(filepath))
            program.save(staged)  # past 2 GB, the weights go to a .data file beside it
            max_diff, max_value = (
                _verify(network, staged, names, size, dynamic_spatial, atol, rtol) if verify else ({}, {})
            )
            for name in sorted(os.listdir(staging), key=lambda n: n == os.path.basename(filepath)):  # the model last
                os.replace(os.path.join(staging, name), os.path.join(folder, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        network.return_maps, network.maps_only = return_maps, maps_only
        network.train(was_training).to(device)
    logger.info("exported %s (outputs %s; max |ONNX - eager| %s)", filepath, names, max_diff or "not measured")
    return {
        "path": filepath,
        "input": INPUT_NAME,
        "outputs": names,
        "max_abs_diff": max_diff,
        "max_abs_value": max_value,
    }


def _verify(
    network: nn.Module, path: str, names: list[str], size: list[int], dynamic_spatial: bool, atol: float, rtol: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Compare the ONNX model at ``path`` with the eager network; ``(max |difference|, max |output|)`` per output."""
    checks = [torch.randn(3, network.in_channels, *size)]  # another batch size than the exported example's
    if dynamic_spatial:
        larger = [s + 2 * m for s, m in zip(size, network.backbone.min_input_shape(), strict=True)]
        checks.append(torch.randn(1, network.in_channels, *larger))
    max_diff: dict[str, float] = {}
    max_value: dict[str, float] = {}
    for x in checks:
        expected = _eager_outputs(network, x, names)
        got = run_onnx(path, x)
        for name in names:
            if got[name].shape != expected[name].shape:
                raise RuntimeError(
                    f"ONNX output {name!r} has shape {got[name].shape}, the network's {expected[name].shape} "
                    f"for an input of shape {tuple(x.shape)}; nothing was written"
                )
            max_diff[name] = max(max_diff.get(name, 0.0), float(np.abs(got[name] - expected[name]).max()))
            max_value[name] = max(max_value.get(name, 0.0), float(np.abs(expected[name]).max()))
    bad = {k: v for k, v in max_diff.items() if not v <= atol + rtol * max_value[k]}
    if bad:
        raise RuntimeError(
            f"ONNX outputs differ from the network's by more than atol + rtol * max|output| (atol={atol}, rtol={rtol}): "
            f"max |difference| {bad}, max |output| {max_value}; nothing was written"
        )
    return max_diff, max_value


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's per-pass INFO logs and its internal deprecation warnings (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
