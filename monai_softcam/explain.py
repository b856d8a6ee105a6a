"""Explanation methods on one harness.

Every explainer is called as ``explainer(images, class_idx) -> maps`` with images ``[B, C, *spatial]``
(2D or 3D) and one class per sample (``[B]``, or an int for all), and returns ``[B, *spatial]``
float maps on the images' grid, where larger means more evidence for the class.
``explainer.native(images, class_idx)`` returns the same map on the grid where the method makes
it (SoftCAM's cells, the target layer's grid; the input grid for pixel attributions), from which
calling the explainer upsamples bi/trilinearly:

* :class:`~monai_softcam.explain.SoftCAMExplainer`: SoftCAM's own evidence maps (signed, raw values), upsampled
  bi/trilinearly; no extra pass: the maps come with the logits.
* :class:`~monai_softcam.explain.GradCAMExplainer`: MONAI's ``GradCAM`` / ``GradCAMpp`` on a named layer
  (default :func:`~monai_softcam.explain.default_target_layer`: ResNet's layer4 output, VGG's last block before
  its last max-pool), **raw** (non-negative) values. MONAI's default post-processing maps (min, max) to (1, 0),
  i.e. *inverts* the map; it is replaced by the identity here. Works on SoftCAM models too (their logits are
  used).
* :class:`~monai_softcam.explain.LayerCAMExplainer`: LayerCAM (Jiang et al., 2021), ``ReLU(sum_k ReLU(dy_c/dA_k)
  * A_k)`` with element-wise (not channel-averaged) positive gradients, at the same default layer.
* :class:`~monai_softcam.explain.ScoreCAMExplainer`: Score-CAM (Wang et al., 2020), gradient-free: each channel
  of the layer, upsampled and min-max normalised, masks the input; the masked inputs' class scores, softmaxed
  over the channels, weight the channels. One forward pass per channel (batched).
* :class:`~monai_softcam.explain.OcclusionExplainer`: MONAI's ``OcclusionSensitivity``, as the drop in the class
  probability when a region is occluded (``p - p_occluded``: positive where occluding hurts). The class
  probabilities are a softmax over the model's outputs (sigmoid for one output); MONAI's default activation
  chooses by the number of *image* channels, which is wrong for grey images.
* :class:`~monai_softcam.explain.IntegratedGradientsExplainer`: Captum's Integrated Gradients (optional extra:
  ``pip install captum``), summed over the image channels.
* :class:`~monai_softcam.explain.GuidedBackpropExplainer`: Guided Backpropagation (Springenberg et al., 2015),
  the input gradient of the class logit with every ReLU passing back only positive gradients at positive inputs;
  summed over the image channels. Written here (no Captum needed), for ReLU modules and functional ReLUs alike,
  in place or not; the model is not modified.

:func:`~monai_softcam.metrics.sanity.cascading_randomization`, beside the metrics, is the
randomisation sanity check of these methods.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity
from torch.overrides import TorchFunctionMode

from .networks.backbones import Backbone
from .networks.outputs import probabilities, split_output, upsample_map, upsample_maps
from .utils import ConfigError

__all__ = [
    "EXPLAINERS",
    "GradCAMExplainer",
    "GuidedBackpropExplainer",
    "IntegratedGradientsExplainer",
    "LayerCAMExplainer",
    "OcclusionExplainer",
    "ScoreCAMExplainer",
    "SoftCAMExplainer",
    "default_target_layer",
    "check_methods",
    "make_explainer",
    "on_input_grid",
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


def default_target_layer(model: nn.Module) -> str:
    """The module path of the layer the SoftCAM paper's CAM baselines read, for ``model``'s backbone
    (the default ``target_layer`` of :class:`GradCAMExplainer`, :class:`LayerCAMExplainer` and
    :class:`ScoreCAMExplainer`).

    * a trunk that ends on a max-pool (VGG): the layer *before* that last max-pool, i.e. the last
      convolution block's ReLU (output stride 16; torchvision's index, e.g. ``backbone.features.29``
      for VGG-16, ``backbone.features.42`` for VGG-16-BN);
    * any other trunk: ``backbone.features``, its output. For ResNet this *is* layer4's output (the
      trunk is conv1, bn1, act, maxpool, layer1..layer4 and nothing after); for DenseNet, SE-ResNet
      and EfficientNet the last convolutional stage.

    The backbone is found anywhere in the model (a wrapper gives e.g. ``network.backbone.features``).
    A model without a :class:`~monai_softcam.networks.backbones.Backbone` needs an explicit
    ``target_layer`` (a ValueError).
    """
    for name, module in model.named_modules():
        if isinstance(module, Backbone):
            prefix = f"{name}.features" if name else "features"
            children = list(module.features.named_children())
            if len(children) > 1 and isinstance(children[-1][1], (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
                return f"{prefix}.{children[-2][0]}"
            return prefix
    raise ValueError(f"{type(model).__name__} has no monai_softcam backbone: name the target_layer (a module path)")


def _layer(model: nn.Module, target_layer: str | None) -> tuple[str, nn.Module]:
    """``(path, module)`` of ``target_layer`` in ``model`` (default :func:`default_target_layer`)."""
    name = default_target_layer(model) if target_layer is None else target_layer
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(f"target_layer {name!r} is not a module of the model; e.g. 'backbone.features'")
    return name, modules[name]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside; every module's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _capture(layer: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append ``layer``'s output of each forward pass to ``store``; the hook is removed afterwards.
    The network continues on a copy, so that an in-place operation after the layer (an
    ``inplace`` ReLU) cannot change the captured activations, and gradients with respect to them
    are those of the layer's output itself."""

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the target layer must return a tensor, got {type(output).__name__}")
        store.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


#: the dicts where ``nn.Module`` keeps its forward and backward hooks (those MONAI's CAMs register)
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks")


def on_input_grid(maps: torch.Tensor, spatial: Any) -> torch.Tensor:
    """``[B, *grid]`` maps brought to the input grid ``spatial`` bi/trilinearly (unchanged if they are on it)."""
    if tuple(maps.shape[1:]) == tuple(spatial):
        return maps
    return upsample_maps(maps[:, None], spatial)[:, 0]


class _Explainer:
    """What every explainer shares: a context manager whose exit (or :meth:`close`) removes whatever
    the explainer left on the model (hooks), so that the model is as it was given."""

    def close(self) -> None:
        """Remove what the explainer left on the model (nothing for most methods)."""

    def __enter__(self) -> "_Explainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _CoarseMap(_Explainer):
    """An explainer whose map lives on a coarser grid (SoftCAM's cells, a layer's grid): ``native``
    gives it there, calling the explainer brings it to the input grid bi/trilinearly
    (:func:`~monai_softcam.networks.outputs.upsample_map`). The paper's protocol upsamples the
    native map its own way (:func:`~monai_softcam.metrics.explanation.paper_upsample`)."""

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        return on_input_grid(self.native(images, class_idx), images.shape[2:])


class _PixelMap(_Explainer):
    """An explainer whose map is on the input grid already: ``native`` is the map itself."""

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        return self(images, class_idx)


class SoftCAMExplainer(_CoarseMap):
    """SoftCAM's evidence maps of the requested classes (signed; ``native``: on the network's grid)."""

    name = "softcam"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        """The model's evidence map of each image's class ``[B, *grid]``, on the network's grid (no gradients)."""
        with torch.no_grad():
            logits, maps = split_output(self.model(images))
        if maps is None:
            raise ValueError(
                "SoftCAMExplainer needs a model that returns evidence maps (SoftCAM with return_maps=True)"
            )
        classes = _classes(class_idx, images.shape[0], maps.device)
        return maps[torch.arange(maps.shape[0], device=maps.device), classes].float()


class GradCAMExplainer(_CoarseMap):
    """Grad-CAM (or Grad-CAM++ with ``plus=True``) from ``monai.visualize``, raw values, on
    ``target_layer`` (default :func:`default_target_layer`).

    MONAI puts its hooks on the target layer (and switches a layer with ``inplace=True``, VGG's
    pre-pool ReLU, to ``inplace=False``: same values) and keeps no handle to remove them; this
    explainer notes what MONAI added and :meth:`close` (or leaving its ``with`` block) removes it.
    """

    def __init__(self, model: nn.Module, target_layer: str | None = None, plus: bool = False) -> None:
        wrapped = _Logits(model)
        self.target_layer, self._module = _layer(model, target_layer)
        layer = f"model.{self.target_layer}"
        self.name = "gradcam++" if plus else "gradcam"
        before = {name: set(getattr(self._module, name, {})) for name in _HOOK_DICTS}
        self._inplace = self._module.__dict__.get("inplace")
        self.cam = (GradCAMpp if plus else GradCAM)(wrapped, target_layers=layer, postprocessing=lambda x: x)
        self._added = {name: set(getattr(self._module, name, {})) - keys for name, keys in before.items()}

    def close(self) -> None:
        """Remove MONAI's hooks from the target layer and give it back its ``inplace``."""
        for name, keys in self._added.items():
            hooks = getattr(self._module, name, {})
            for key in keys:
                hooks.pop(key, None)
        self._added = {}
        if self._inplace is not None:
            self._module.__dict__["inplace"] = self._inplace

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        """MONAI's Grad-CAM (or Grad-CAM++) map of each image's class ``[B, *grid]``, on ``target_layer``'s grid."""
        classes = _classes(class_idx, images.shape[0], images.device)
        out: torch.Tensor | None = None
        with warnings.catch_warnings():  # PyTorch notes that the hooks fire on outputs when inputs need no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for c in classes.unique().tolist():  # MONAI's CAMs take one class for the whole batch
                rows = (classes == c).nonzero().flatten()
                # MONAI's Grad-CAM++ broadcasts the class score over the wrong axis for batches > 1
                for part in rows.split(1 if self.name == "gradcam++" else len(rows)):
                    cam = self.cam.compute_map(images[part], class_idx=int(c))[:, 0].detach().float()
                    if out is None:
                        out = torch.zeros(images.shape[0], *cam.shape[1:], device=images.device)
                    out[part] = cam
        assert out is not None
        return out


class OcclusionExplainer(_PixelMap):
    """Occlusion sensitivity from ``monai.visualize``: ``p(class) - p(class | region occluded)``.

    Args:
        mask_size: side of the occluding patch (pixels); None: a sixth of the image's first side, at
            least 4 (16 px at 96 px); ``overlap`` of consecutive patches;
        mode: MONAI's occlusion mode (``"gaussian"``, ``"mean_patch"``, ``"mean_img"`` or a value);
        n_batch: occluded images per forward pass.
    """

    name = "occlusion"

    def __init__(
        self,
        model: nn.Module,
        mask_size: int | None = None,
        overlap: float = 0.5,
        mode: Any = "gaussian",
        n_batch: int = 32,
    ) -> None:
        self.model = _Logits(model)
        self.mask_size, self.overlap, self.mode, self.n_batch = mask_size, overlap, mode, n_batch
        self.occlusion: OcclusionSensitivity | None = None

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        if self.occlusion is None:
            mask_size = self.mask_size if self.mask_size is not None else max(4, int(images.shape[2]) // 6)
            self.occlusion = OcclusionSensitivity(
                self.model,
                mask_size=mask_size,
                n_batch=self.n_batch,
                verbose=False,
                mode=self.mode,
                overlap=self.overlap,
                activate=probabilities,
            )
        classes = _classes(class_idx, images.shape[0], images.device)
        out = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # inside MONAI's occlusion
            for image, c in zip(images, classes.tolist()):
                p = probabilities(self.model(image[None]))[0, c]
                occluded, _ = self.occlusion(image[None])
                out.append(p - occluded[0, c].float())
        return torch.stack(out)


class IntegratedGradientsExplainer(_PixelMap):
    """Integrated Gradients (Captum, optional) from a constant ``baseline`` image in ``steps`` steps;
    attributions summed over the image channels."""

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float = 0.0, internal_batch_size: int = 16) -> None:
        try:
            from captum.attr import IntegratedGradients  # optional extra: only for this explainer
        except ImportError as err:
            raise ImportError("Integrated Gradients needs Captum: pip install captum") from err
        self.model = _Logits(model)
        self.ig = IntegratedGradients(self.model)
        self.steps, self.baseline, self.internal_batch_size = int(steps), float(baseline), int(internal_batch_size)

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        classes = _classes(class_idx, images.shape[0], images.device)
        was_training = self.model.training
        self.model.eval()
        try:
            attributions = self.ig.attribute(
                images,
                baselines=self.baseline,
                target=classes,
                n_steps=self.steps,
                internal_batch_size=self.internal_batch_size,
            )
        finally:
            self.model.train(was_training)
        return attributions.sum(dim=1).detach().float()


class LayerCAMExplainer(_CoarseMap):
    """LayerCAM (Jiang et al., 2021) on ``target_layer`` (default :func:`default_target_layer`).

    With ``A`` the layer's activations ``[K, *grid]`` and ``y_c`` the class logit,
    ``map = ReLU(sum_k ReLU(dy_c/dA_k) * A_k)`` on the layer's grid (element-wise positive
    gradients as weights, where Grad-CAM uses one spatially averaged weight per channel), upsampled
    bi/trilinearly to the input grid (:func:`~monai_softcam.networks.outputs.upsample_map`). Raw
    (non-negative) values; one forward and one backward pass for the batch, in eval mode.
    """

    name = "layercam"

    def __init__(self, model: nn.Module, target_layer: str | None = None) -> None:
        self.model = _Logits(model)
        self.target_layer, self.layer = _layer(model, target_layer)

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        """LayerCAM map of each image's class ``[B, *grid]`` on ``target_layer``'s grid: ReLU of the channel sum of
        ReLU(gradient) * activation."""
        classes = _classes(class_idx, images.shape[0], images.device)
        store: list[torch.Tensor] = []
        with _eval_mode(self.model.model), torch.enable_grad(), _capture(self.layer, store), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # other explainers' hooks
            logits = self.model(images)
            if not store:
                raise RuntimeError(f"target_layer {self.target_layer!r} was not called in the forward pass")
            activations = store[-1]
            score = logits.gather(1, classes[:, None]).sum()  # samples are independent in eval mode
            (gradients,) = torch.autograd.grad(score, activations)
        return torch.relu((torch.relu(gradients) * activations).sum(dim=1)).detach().float()


class ScoreCAMExplainer(_CoarseMap):
    """Score-CAM (Wang et al., 2020) on ``target_layer`` (default :func:`default_target_layer`); no gradients.

    For each image ``x`` and class ``c``, with ``A_k`` the layer's channels (``k = 1..K``) and
    ``y_c`` the model's class **logit**:

    * ``M_k = (U_k - min U_k) / (max U_k - min U_k)``, ``U_k`` = ``A_k`` upsampled to the input
      grid (bi/trilinear); a constant channel gives ``M_k = 0``;
    * ``s_k = y_c(x * M_k)`` (every image channel multiplied by the mask);
    * ``w = softmax_k(s_k)``, the softmax over the *channels*. Wang et al.'s Algorithm 1 softmaxes
      the increase over a baseline, ``y_c(x * M_k) - y_c(x_b)``; the baseline term is the same for
      every channel, and a softmax does not change when a constant is added, so the weights are
      identical (the baseline pass is not needed);
    * ``map = ReLU(sum_k w_k A_k)`` on the layer's grid, upsampled to the input grid (raw values).

    Args:
        target_layer: module path of the layer (default :func:`default_target_layer`).
        batch_size: masked images per forward pass (memory is bounded by ``batch_size`` images and
            masks; the masks are made chunk by chunk). Constant channels (dead ReLUs) share one pass.

    Cost: one forward pass per non-constant channel and image (2048 for a ResNet-50).
    """

    name = "scorecam"

    def __init__(self, model: nn.Module, target_layer: str | None = None, batch_size: int = 32) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.model = _Logits(model)
        self.target_layer, self.layer = _layer(model, target_layer)
        self.batch_size = int(batch_size)

    def channel_weights(self, images: torch.Tensor, class_idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(activations [B, K, *grid], weights [B, K])``: the layer's activations and the softmax weights."""
        classes = _classes(class_idx, images.shape[0], images.device)
        store: list[torch.Tensor] = []
        with _eval_mode(self.model.model), torch.no_grad():
            with _capture(self.layer, store):
                self.model(images)
            if not store:
                raise RuntimeError(f"target_layer {self.target_layer!r} was not called in the forward pass")
            activations = store[-1].float()
            size = images.shape[2:]
            weights = torch.empty(activations.shape[:2], device=activations.device)
            for b, c in enumerate(classes.tolist()):
                image = images[b : b + 1]
                flat = activations[b].flatten(1)
                constant = flat.amax(1) - flat.amin(1) <= 1e-12 * flat.abs().amax(1).clamp(min=1.0)
                scores = torch.empty(flat.shape[0], device=activations.device)
                if constant.any():  # their masks are 0: one pass for all of them
                    scores[constant] = self.model(torch.zeros_like(image))[0, c].float()
                varying = (~constant).nonzero().flatten()
                for chunk in varying.split(self.batch_size) if varying.numel() else ():  # a 1-cell layer: all constant
                    up = upsample_map(activations[b, chunk], size)  # [n, *size]
                    low = up.flatten(1).amin(1).view(-1, *([1] * len(size)))
                    high = up.flatten(1).amax(1).view(-1, *([1] * len(size)))
                    masks = (up - low) / (high - low).clamp(min=1e-12)
                    scores[chunk] = self.model(image * masks[:, None].to(image.dtype))[:, c].float()
                weights[b] = scores.softmax(dim=0)
        return activations, weights

    def native(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        """Score-CAM map of each image's class ``[B, *grid]`` on ``target_layer``'s grid: ReLU of the layer's
        channels weighted by :meth:`channel_weights`."""
        activations, weights = self.channel_weights(images, class_idx)
        return torch.relu((weights.view(*weights.shape, *([1] * (activations.dim() - 2))) * activations).sum(dim=1))


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients, and only where the input was positive."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        passed = x > 0
        ctx.save_for_backward(passed)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(min=0)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (passed,) = ctx.saved_tensors
        return grad.clamp(min=0) * passed, None


class _GuidedReLUs(TorchFunctionMode):
    """Inside, every ReLU call (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their
    in-place forms) is a :class:`_GuidedReLU`; the model itself (modules, hooks) is not touched."""

    _INPLACE = {torch.relu_, torch.Tensor.relu_}
    _OUT_OF_PLACE = {torch.relu, torch.Tensor.relu}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.relu:
            inplace = bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
            return _GuidedReLU.apply(args[0], inplace)
        if func in self._INPLACE:
            return _GuidedReLU.apply(args[0], True)
        if func in self._OUT_OF_PLACE:
            return _GuidedReLU.apply(args[0], False)
        return func(*args, **kwargs)


class GuidedBackpropExplainer(_PixelMap):
    """Guided Backpropagation (Springenberg et al., 2015): ``d y_c / d x`` where every ReLU passes
    back ``(input > 0) * max(gradient, 0)`` instead of ``(input > 0) * gradient``.

    Written here (no Captum needed) with a ``torch`` function mode: all ReLU calls of the forward
    pass are guided, modules (``nn.ReLU``, ``inplace`` or not) and functional ones alike (Captum's
    ``GuidedBackprop`` hooks ``nn.ReLU`` modules only); no module is replaced and no hook
    registered, so the model is exactly as before. Other activations (EfficientNet's swish) pass
    their plain gradient; a TorchScript model is not reached (plain gradients).

    The attributions are **summed over the image channels** (signed, as
    :class:`IntegratedGradientsExplainer`): positive where brightening the pixel raises the class
    logit; ``absolute=True`` sums their absolute values instead (the usual saliency display). For
    one-channel images the sum *is* Captum's default output (one attribution per input value).
    """

    name = "guided_backprop"

    def __init__(self, model: nn.Module, absolute: bool = False) -> None:
        self.model = _Logits(model)
        self.absolute = bool(absolute)

    def __call__(self, images: torch.Tensor, class_idx: Any) -> torch.Tensor:
        classes = _classes(class_idx, images.shape[0], images.device)
        x = images.detach().clone().requires_grad_(True)
        with _eval_mode(self.model.model), torch.enable_grad():
            with _GuidedReLUs():
                logits = self.model(x)
            score = logits.gather(1, classes[:, None]).sum()  # samples are independent in eval mode
            (gradients,) = torch.autograd.grad(score, x)
        gradients = gradients.detach().float()
        return (gradients.abs() if self.absolute else gradients).sum(dim=1)


#: explanation method name -> its class (:func:`make_explainer`)
EXPLAINERS: dict[str, Callable[..., Any]] = {
    "softcam": SoftCAMExplainer,
    "gradcam": GradCAMExplainer,
    "gradcam++": lambda model, **kw: GradCAMExplainer(model, plus=True, **kw),
    "occlusion": OcclusionExplainer,
    "integrated_gradients": IntegratedGradientsExplainer,
    "layercam": LayerCAMExplainer,
    "scorecam": ScoreCAMExplainer,
    "guided_backprop": GuidedBackpropExplainer,
}


def check_methods(methods: Any) -> Any:
    """``methods``, if it is a non-empty list of :data:`EXPLAINERS` names; else a
    :class:`~monai_softcam.utils.ConfigError` naming ``--explain#methods`` (and the wrong item). ``explain.yaml``
    calls it in its ``checked_settings``, so the check comes with the other settings' (:func:`~monai_softcam.bundle.start`),
    before any work."""
    allowed = "a list of explanation methods from " + ", ".join(EXPLAINERS)
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ConfigError(f"--explain#methods: {methods!r} is not allowed; allowed: {allowed}")
    for i, name in enumerate(methods):
        if name not in EXPLAINERS:
            raise ConfigError(f"--explain#methods#{i}: {name!r} is not allowed; allowed: {allowed}")
    return methods


def make_explainer(name: str, model: nn.Module, **kwargs: Any) -> Any:
    """An explainer by name (see :data:`EXPLAINERS`)."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explanation method {name!r}; choose from {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](model, **kwargs)
