"""What a SoftCAM network returns, and how its evidence maps reach the input grid.

A SoftCAM model with ``return_maps=True`` returns ``{LOGITS: [B, C], EVIDENCE_MAPS: [B, C, *grid]}``, with
``maps_only=True`` the maps alone (one tensor whose spatial mean is the logits: the bundle's ``network_def``,
what the Model Zoo's checks and a TorchScript export see), which
:class:`~monai_softcam.networks.outputs.EvidenceOutputs` turns back into the dict; a black box returns logits.
:func:`~monai_softcam.networks.outputs.split_output` reads either;
:func:`~monai_softcam.networks.outputs.upsample_maps` (a batch) and
:func:`~monai_softcam.networks.outputs.upsample_map` (one case) bring maps from the network's grid to an image
grid (the one interpolation every consumer uses); :func:`~monai_softcam.networks.outputs.probabilities` turns
logits into class probabilities (the one rule every consumer uses)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "EVIDENCE_MAPS",
    "LOGITS",
    "EvidenceOutputs",
    "probabilities",
    "split_output",
    "upsample_map",
    "upsample_maps",
]

#: keys of the dictionary a SoftCAM model returns when ``return_maps=True``
LOGITS = "logits"
EVIDENCE_MAPS = "evidence_maps"


def split_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, evidence_maps or None)`` from a model output: a dict, a ``(logits, maps)`` tuple or logits."""
    if isinstance(output, dict):
        if LOGITS not in output:
            raise ValueError(f"model output dict must have a {LOGITS!r} key, got keys {sorted(output)}")
        return output[LOGITS], output.get(EVIDENCE_MAPS)
    if isinstance(output, (tuple, list)):
        if len(output) != 2:
            raise ValueError(f"model output tuple must be (logits, evidence_maps), got {len(output)} items")
        return output[0], output[1]
    return output, None


class EvidenceOutputs(nn.Module):
    """The dict form of a network's output, for the consumers (inference, sliding window): a
    network that returns the evidence maps alone (``SoftCAM(maps_only=True)``, its TorchScript
    export) gives ``{LOGITS: spatial mean of the maps, EVIDENCE_MAPS: the maps}``; logits ``[B, C]``
    (a black box) give ``{LOGITS: logits}``; a dict passes through. It holds no weights of its own:
    load them into the wrapped network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the network and return its output in the dict form."""
        out = self.network(x, *args, **kwargs)
        if isinstance(out, dict):
            return out
        if out.dim() == 2:
            return {LOGITS: out}
        return {LOGITS: out.flatten(2).mean(-1), EVIDENCE_MAPS: out}


def upsample_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Interpolate a batch of ``[B, C, *grid]`` maps to ``[B, C, *size]`` (bi/trilinear by the length
    of ``size``, cell centres aligned as in the network). The maps are interpolated as the channels of
    a single sample (``[1, B * C, *grid]``), as the explanation metrics always did: PyTorch's CPU kernel
    vectorises over channels, so another layout rounds differently (by about 1e-7, enough to move the
    arg-max of the pointing game)."""
    if maps.dim() != len(size) + 2 or len(size) not in (2, 3):
        raise ValueError(
            f"maps must be [B, C, *grid] with a 2D or 3D grid like size {tuple(size)}, got {tuple(maps.shape)}"
        )
    mode = "bilinear" if len(size) == 2 else "trilinear"
    size = tuple(int(s) for s in size)
    planes = maps.float().reshape(1, -1, *maps.shape[2:])
    return F.interpolate(planes, size=size, mode=mode, align_corners=False).reshape(*maps.shape[:2], *size)


def upsample_map(evidence: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Interpolate one case's ``[C, *grid]`` maps to ``[C, *size]`` (:func:`upsample_maps`)."""
    return upsample_maps(evidence[None], size)[0]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``[B, C]`` from logits ``[B, C]``: the softmax over the classes, or the
    sigmoid for a single output (``[B, 1]``, the probability of the positive class)."""
    if logits.dim() != 2:
        raise ValueError(f"probabilities expects logits [B, C], got shape {tuple(logits.shape)}")
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)
