"""Explanation methods on one harness, and the model-randomisation sanity check.

Every explainer is called as ``explainer(images, class_idx) -> maps`` with images ``[B, C, *spatial]``
(2D or 3D) and one class per sample (``[B]``, or an int for all), and returns ``[B, *spatial]``
float maps on the images' grid, where larger means more evidence for the class:

* :class:`SoftCAMExplainer`: SoftCAM's own evidence maps (signed, raw values), upsampled
  bi/trilinearly; no extra pass: the maps come with the logits.
* :class:`GradCAMExplainer`: MONAI's ``GradCAM`` / ``GradCAMpp`` on a named layer (default the
  backbone's last convolutional stage, ``backbone.features``), **raw** (non-negative) values.
  MONAI's default post-processing maps (min, max) to (1, 0), i.e. *inverts* the map; it is
  replaced by the identity here. Works on SoftCAM models too (their logits are used).
* :class:`OcclusionExplainer`: MONAI's ``OcclusionSensitivity``, as the drop in the class
  probability when a region is occluded (``p - p_occluded``: positive where occluding hurts). The
  class probabilities are a softmax over the model's outputs (sigmoid for one output); MONAI's
  default activation chooses by the number of *image* channels, which is wrong for grey images.
* :class:`IntegratedGradientsExplainer`: Captum's Integrated Gradients (optional extra:
  ``pip install captum``), summed over the image channels.

:func:`cascading_randomization` re-initialises the model's layers from the output backwards and
reports the Spearman rank correlation between the original and the randomised maps after each
step (Adebayo et al., 2018): a map that explains the model must change as the model does.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity

from .networks.outputs import probabilities, split_output, upsample_map

__all__ = [
    "EXPLAINERS",
    "GradCAMExplainer",
    "IntegratedGradientsExplainer",
    "OcclusionExplainer",
    "SoftCAMExplainer",
    "cascading_randomization",
    "layer_groups",
    "make_explainer",
    "spearman",
]


class _Logits(nn.Module):
    """A model seen as a plain classifier: logits only (SoftCAM's dict output reduced to its logits).

    Its train/eval mode *is* the wrapped model's: MONAI's CAMs and occlusion put the module they
    are given back into the mode it reports afterwards, and a wrapper reporting its own default
    (training) would leave the wrapped model in training mode (batch-dependent BatchNorm).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def training(self) -> bool:  # type: ignore[override]
        model = self.__dict__.get("_modules", {}).get("model")
        return bool(model.training) if model is not None else False

    @training.setter
    def training(self, value: bool) -> None:  # set by nn.Module; train()/eval() reach the model itself
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_output(self.model(x))[0]


def _classes(class_idx: Any, batch: int, device: torch.device) -> torch.Tensor:
    classes = torch.as_tensor(class_idx, device=device).long().reshape(-1)
    if classes.numel() == 1:
        classes = classes.expand(batch)
    if classes.numel() != batch:
        raise ValueError(f"class_idx needs one class per image ({batch}), got {classes.numel()}")
    return classes


class SoftCAMExplainer:
    """SoftCAM's evidence maps of the requested classes, upsampled to the input grid (signed)."""

    name = "softcam"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        with torch.no_grad():
            logits, maps = split_output(self.model(images))
        if maps is None:
            raise ValueError("SoftCAMExplainer needs a model that returns evidence maps (SoftCAM with return_maps=True)")
        classes = _classes(class_idx, images.shape[0], maps.device)
        chosen = maps[torch.arange(maps.shape[0], device=maps.device), classes]
        return upsample_map(chosen, images.shape[2:])  # the samples ride in the channel axis


class GradCAMExplainer:
    """Grad-CAM (or Grad-CAM++ with ``plus=True``) from ``monai.visualize``, raw values, on ``target_layer``."""

    def __init__(self, model: nn.Module, target_layer: str = "backbone.features", plus: bool = False) -> None:
        wrapped = _Logits(model)
        names = {name for name, _ in wrapped.named_modules()}
        layer = f"model.{target_layer}"
        if layer not in names:
            raise ValueError(f"target_layer {target_layer!r} is not a module of the model; e.g. 'backbone.features'")
        self.name = "gradcam++" if plus else "gradcam"
        self.cam = (GradCAMpp if plus else GradCAM)(wrapped, target_layers=layer, postprocessing=lambda x: x)

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        classes = _classes(class_idx, images.shape[0], images.device)
        out = torch.zeros(images.shape[0], *images.shape[2:], device=images.device)
        with warnings.catch_warnings():  # PyTorch notes that the hooks fire on outputs when inputs need no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for c in classes.unique().tolist():  # MONAI's CAMs take one class for the whole batch
                rows = (classes == c).nonzero().flatten()
                # MONAI's Grad-CAM++ broadcasts the class score over the wrong axis for batches > 1
                for part in rows.split(1 if self.name == "gradcam++" else len(rows)):
                    out[part] = self.cam(images[part], class_idx=int(c))[:, 0].detach().float()
        return out


class OcclusionExplainer:
    """Occlusion sensitivity from ``monai.visualize``: ``p(class) - p(class | region occluded)``.

    Args:
        mask_size: side of the occluding patch (pixels); ``overlap`` of consecutive patches;
        mode: MONAI's occlusion mode (``"gaussian"``, ``"mean_patch"``, ``"mean_img"`` or a value);
        n_batch: occluded images per forward pass.
    """

    name = "occlusion"

    def __init__(self, model: nn.Module, mask_size: int = 16, overlap: float = 0.5, mode: Any = "gaussian",
                 n_batch: int = 32) -> None:  # fmt: skip
        self.model = _Logits(model)
        self.occlusion = OcclusionSensitivity(
            self.model, mask_size=mask_size, n_batch=n_batch, verbose=False, mode=mode, overlap=overlap,
            activate=probabilities,
        )  # fmt: skip

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        classes = _classes(class_idx, images.shape[0], images.device)
        out = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # inside MONAI's occlusion
            for image, c in zip(images, classes.tolist()):
                p = probabilities(self.model(image[None]))[0, c]
                occluded, _ = self.occlusion(image[None])
                out.append(p - occluded[0, c].float())
        return torch.stack(out)


class IntegratedGradientsExplainer:
    """Integrated Gradients (Captum, optional) from a constant ``baseline`` image in ``steps`` steps;
    attributions summed over the image channels."""

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float = 0.0, internal_batch_size: int = 16) -> None:
        try:
            from captum.attr import IntegratedGradients  # optional extra: only for this explainer
        except ImportError as err:
            raise ImportError("Integrated Gradients needs Captum: pip install captum (or pip install monai_softcam[captum])") from err
        self.model = _Logits(model)
        self.ig = IntegratedGradients(self.model)
        self.steps, self.baseline, self.internal_batch_size = int(steps), float(baseline), int(internal_batch_size)

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        classes = _classes(class_idx, images.shape[0], images.device)
        was_training = self.model.training
        self.model.eval()
        try:
            attributions = self.ig.attribute(
                images, baselines=self.baseline, target=classes, n_steps=self.steps,
                internal_batch_size=self.internal_batch_size,
            )  # fmt: skip
        finally:
            self.model.train(was_training)
        return attributions.sum(dim=1).detach().float()


EXPLAINERS: dict[str, Callable[..., Any]] = {
    "softcam": SoftCAMExplainer,
    "gradcam": GradCAMExplainer,
    "gradcam++": lambda model, **kw: GradCAMExplainer(model, plus=True, **kw),
    "occlusion": OcclusionExplainer,
    "integrated_gradients": IntegratedGradientsExplainer,
}


def make_explainer(name: str, model: nn.Module, **kwargs: Any) -> Any:
    """An explainer by name (see :data:`EXPLAINERS`)."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explanation method {name!r}; choose from {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](model, **kwargs)


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
    original_maps = make(model)(images, class_idx)
    randomised = copy.deepcopy(model).eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rows = [{"layer": "original", "spearman_mean": 1.0, "spearman_std": 0.0}]
    try:
        for name, block in layer_groups(randomised):
            for module in block.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            maps = make(randomised)(images, class_idx)
            a, b = (original_maps.abs(), maps.abs()) if absolute else (original_maps, maps)
            rho = spearman(a, b)
            rows.append({"layer": name, "spearman_mean": float(rho.mean()), "spearman_std": float(rho.std(unbiased=False))})
    finally:
        torch.random.set_rng_state(generator_state)
    return rows
