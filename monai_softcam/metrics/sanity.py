"""The randomisation sanity check of explanation methods: cascading model-parameter randomisation
(Adebayo et al., 2018), from the output layer down, scored by the Spearman rank correlation of each
map with the original model's."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["cascading_randomization", "layer_groups", "spearman"]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of ``[B, ...]`` tensors (ties broken by position)."""

    def ranks(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).double()
        return flat.argsort(dim=1).argsort(dim=1).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)
    return ((ra * rb).sum(1) / den).float()


def layer_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's parameterised blocks from the output backwards: the class layer (SoftCAM's
    ``head`` or BlackBox's ``fc``), the backbone's ``neck`` (VGG's FC6/FC7), then the stages of
    ``backbone.features`` in reverse; for other models their top-level children in reverse."""

    def has_params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "features"):
        return [(n, m) for n, m in reversed(list(model.named_children())) if has_params(m)]
    groups = [(n, m) for n, m in model.named_children() if n not in ("backbone",) and has_params(m)]
    if has_params(backbone.neck):
        groups.append(("backbone.neck", backbone.neck))
    stages = [(f"backbone.features.{n}", m) for n, m in backbone.features.named_children() if has_params(m)]
    return groups + list(reversed(stages))


def _maps_of(
    explainer: Callable[[torch.Tensor, Any], torch.Tensor], images: torch.Tensor, class_idx: Any
) -> torch.Tensor:
    """The explainer's maps; then it is closed (its hooks leave the model), if it can be."""
    try:
        return explainer(images, class_idx)
    finally:
        getattr(explainer, "close", lambda: None)()


def cascading_randomization(
    model: nn.Module,
    make: Callable[[nn.Module], Callable[[torch.Tensor, Any], torch.Tensor]],
    images: torch.Tensor,
    class_idx: Any,
    absolute: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomisation (Adebayo et al., 2018).

    A copy of ``model`` has its :func:`layer_groups` re-initialised one after the other, from the
    output backwards (each step keeps the earlier randomisations). After each step the maps of
    ``make(randomised_model)`` are compared with those of the original model by the Spearman rank
    correlation per image (of ``|map|`` when ``absolute``, as Adebayo et al.'s main figures).

    Returns one row per step: ``{"layer", "spearman_mean", "spearman_std"}``, starting with
    ``"original"`` (1.0). For a map that depends on the model, the correlation drops as more
    layers are randomised; one that stays high is explaining the image, not the model.
    """
    original_maps = _maps_of(make(model), images, class_idx)
    randomised = copy.deepcopy(model).eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rows = [{"layer": "original", "spearman_mean": 1.0, "spearman_std": 0.0}]
    try:
        for name, block in layer_groups(randomised):
            for module in block.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            maps = _maps_of(make(randomised), images, class_idx)
            a, b = (original_maps.abs(), maps.abs()) if absolute else (original_maps, maps)
            rho = spearman(a, b)
            rows.append(
                {"layer": name, "spearman_mean": float(rho.mean()), "spearman_std": float(rho.std(unbiased=False))}
            )
    finally:
        torch.random.set_rng_state(generator_state)
    return rows
