"""Initialise a backbone from a LOCAL weight file (nothing is ever downloaded).

Accepted files (read by :func:`monai_softcam.checkpoint.read_state_dict`, ``weights_only=True``):

* a torchvision ImageNet ``state_dict`` of ResNet, VGG or DenseNet (as saved by
  ``torch.save(model.state_dict())``), also wrapped as ``{"state_dict": ...}``, ``{"model": ...}`` or
  ``{"network": ...}`` and with a DDP ``module.`` prefix;
* a MONAI network's ``state_dict`` of the same architecture (ResNet, DenseNet, SE-ResNet, EfficientNet);
* a checkpoint of this package's own models (``backbone.*`` keys).

Classifier weights in the file (``fc``, ``classifier``, ``class_layers``, ``last_linear``, ``_fc``,
``head``) are ignored: the class-evidence layer (or the black box's linear layer) is always
initialised fresh, and so are VGG's FC6/FC7 1x1 convolutions (as in the paper's reference code).

Two adaptations are made, and reported:

* **2D -> 3D inflation**: a 2D kernel ``w`` of size ``k x k`` loaded into a ``k x k x k`` 3D kernel
  becomes ``w / k`` repeated ``k`` times along depth, so a volume made of identical slices gives
  the 2D response.
* **input channels**: when the model's first convolution has ``c`` input channels and the file's
  ``c0``, its kernel becomes the mean over the file's channels, tiled ``c`` times and scaled by
  ``c0 / c``, so an image replicated to all channels gives the original response (``c = 1``: the
  channel sum).

Any other key or shape mismatch raises :class:`~monai_softcam.networks.pretrained.PretrainedWeightsError`,
listing the keys in the report of :class:`monai_softcam.checkpoint.StateMismatch`."""

from __future__ import annotations

import logging
import os
import re

import torch
import torch.nn as nn

from .. import checkpoint
from ..checkpoint import CheckpointError, StateMismatch
from ..utils import sha256_file

__all__ = [
    "PAPER_WEIGHTS",
    "PretrainedWeightsError",
    "checked_weight_file",
    "verify_name_hash",
    "load_pretrained_backbone",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

#: first key component of classifier layers that are never loaded into a backbone
_HEAD_PREFIXES = {"fc", "classifier", "class_layers", "last_linear", "_fc", "head", "avgpool", "_avg_pooling"}
#: torchvision DenseNet names a dense layer's modules directly; MONAI nests them under ``layers``
_TV_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+\.)(?!layers\.)(.+)$")
#: very old torchvision DenseNet files use ``norm.1`` for ``norm1``
_OLD_DENSE_NAME = re.compile(r"\.(norm|relu|conv)\.(\d)\.")


class PretrainedWeightsError(CheckpointError):
    """A weight file cannot be read or does not fit the backbone; the message names the file and
    lists the offending keys."""


#: the ImageNet weights the paper's models start from, by torchvision file name (``<arch>-<the first 8 hex digits
#: of the file's SHA-256>.pth``, torchvision 0.29's ``torchvision/models/resnet.py`` and ``vgg.py``): the weights
#: enum each is, and where torchvision downloads it
PAPER_WEIGHTS = {
    "resnet50-11ad3fa6.pth": (
        "ResNet50_Weights.IMAGENET1K_V2",
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
    "vgg16-397923af.pth": ("VGG16_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
#: the SHA-256 prefix a torchvision (torch.hub) file name carries: ``resnet50-11ad3fa6.pth``
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def checked_weight_file(pretrained: str | None, expected: str | None = None) -> str | None:
    """The weight file a training run starts from, checked before any work; None for a random initialisation.

    * ``pretrained`` ``None`` (or ``""``): random initialisation, unless ``expected`` names the weights the
      configuration trains from (a paper preset: :data:`PAPER_WEIGHTS`); then a
      :class:`PretrainedWeightsError` says where to get them, and how to train from scratch on purpose.
    * ``pretrained`` ``"none"``: random initialisation on purpose, whatever ``expected`` says.
    * a path: it must be a file. When its name carries a SHA-256 prefix as torchvision's files do
      (``resnet50-11ad3fa6.pth``), the file's hash must start with it; when ``expected`` does, the file must be
      that one (a renamed copy too). Nothing is downloaded.
    """
    if pretrained is not None and str(pretrained).strip().lower() == "none":
        if expected:
            logger.warning("pretrained none: training from a random initialisation, not from %s", expected)
        return None
    if pretrained is None or str(pretrained) == "":
        if not expected:
            return None
        enum, url = PAPER_WEIGHTS.get(os.path.basename(expected), ("", ""))
        what = f"torchvision's {enum} ({url}), " if enum else ""
        raise PretrainedWeightsError(
            f"pretrained: this configuration trains from the ImageNet weights {expected} ({what}as the paper "
            f"did), and none were given: download the file on a machine with internet and give --pretrained "
            f"/path/to/{os.path.basename(expected)}, or train from a random initialisation on purpose with "
            "--pretrained none (nothing is downloaded)"
        )
    path = os.fspath(pretrained)
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"pretrained: weight file not found: {path}")
    verify_name_hash(path, expected)
    return path


#: SHA-256 of the weight files already read by this process, by (real path, size, modification time): the
#: training's start checks the file and the network's build loads it, and a 0.5 GB file is hashed once
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: str) -> str:
    status = os.stat(path)
    key = (os.path.realpath(path), status.st_size, status.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def verify_name_hash(path: str | os.PathLike, expected: str | None = None) -> None:
    """Check a weight file against the SHA-256 prefix its name carries as torchvision's files do
    (``resnet50-11ad3fa6.pth``: the hash starts with ``11ad3fa6``), and against ``expected``'s when that name
    carries one (a renamed copy of that file passes); a file whose name carries none is not checked. A
    mismatch (a partial download, another file) raises :class:`PretrainedWeightsError`."""
    path = os.fspath(path)
    names = [os.path.basename(path)] + ([os.path.basename(expected)] if expected else [])
    wanted = [(name, m.group(1)) for name, m in ((n, _HASH_IN_NAME.search(n)) for n in names) if m]
    if not wanted:
        return
    digest = _digest(path)
    for name, prefix in wanted:
        if not digest.startswith(prefix):
            raise PretrainedWeightsError(
                f"pretrained: {path} is not {name}: its SHA-256 starts with {digest[:len(prefix)]}, not {prefix} "
                "(a partial download, or another file)"
            )
    logger.info("pretrained: %s (SHA-256 %s...)", path, digest[:12])


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a local weight file (see :func:`monai_softcam.checkpoint.read_state_dict`);
    a file that is unreadable or holds no state dict raises :class:`PretrainedWeightsError`."""
    try:
        return checkpoint.read_state_dict(path, "weight file")
    except CheckpointError as err:
        raise PretrainedWeightsError(str(err)) from err


def _backbone_key(key: str, target: dict[str, torch.Tensor]) -> str | None:
    """Name in the backbone for a key of the file, or None for a classifier key to ignore."""
    if key.startswith("backbone."):  # this package's own SoftCAM / BlackBox checkpoints
        key = key[len("backbone.") :]
    if key.split(".", 1)[0] in _HEAD_PREFIXES:
        return None
    key = _OLD_DENSE_NAME.sub(r".\1\2.", key)
    key = _TV_DENSE_LAYER.sub(r"\1layers.\2", key)
    if key in target:
        return key
    return f"features.{key}" if f"features.{key}" in target else key


def _inflate(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    depth = shape[2]
    return weight.unsqueeze(2).repeat(1, 1, depth, *([1] * (weight.dim() - 2))) / depth


def _adapt_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    source_channels = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, *([1] * (weight.dim() - 2))) * (source_channels / in_channels)


def _first_conv_key(backbone: nn.Module) -> str | None:
    for name, module in backbone.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return f"{name}.weight"
    return None


def load_pretrained_backbone(backbone: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load a local weight file into ``backbone`` (a :class:`~monai_softcam.networks.backbones.Backbone`).

    A file named as torchvision names its downloads (``resnet50-11ad3fa6.pth``) must have the SHA-256 its name
    begins (:func:`verify_name_hash`). Every parameter and buffer of the backbone's trunk must come from the file
    (VGG's FC6/FC7 neck may stay fresh); unknown keys, missing keys and shape mismatches that are not a 2D->3D
    inflation or a first-layer channel adaptation raise :class:`PretrainedWeightsError`.

    Returns:
        a report ``{"loaded": [...], "ignored": [...], "inflated": [...], "adapted": [...]}``.
    """
    verify_name_hash(path)
    state = read_state_dict(path)
    target = backbone.state_dict()
    first_conv = _first_conv_key(backbone)
    report: dict[str, list[str]] = {"loaded": [], "ignored": [], "inflated": [], "adapted": []}
    mismatch = StateMismatch()
    new_state: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _backbone_key(key, target)
        if name is None:
            report["ignored"].append(key)
            continue
        if name not in target:
            mismatch.unexpected.append(key)
            continue
        want = target[name].shape
        if value.is_floating_point() and value.dim() + 1 == len(want) and value.dim() >= 3:
            if tuple(value.shape[2:]) == tuple(want[3:]):
                value = _inflate(value, want)
                report["inflated"].append(name)
        if name == first_conv and value.dim() == len(want) and value.shape[1] != want[1]:
            value = _adapt_in_channels(value, want[1])
            report["adapted"].append(name)
        if value.shape != want:
            mismatch.shapes.append((key, tuple(value.shape), tuple(want)))
            continue
        new_state[name] = value.to(target[name].dtype)
        report["loaded"].append(name)
    mismatch.missing = [k for k in target if k not in new_state and not k.startswith("neck.")]
    if mismatch:
        raise PretrainedWeightsError(mismatch.message(path, backbone))
    backbone.load_state_dict(new_state, strict=False)
    logger.info(
        "loaded %d tensors from %s (%d classifier keys ignored, %d inflated to 3D, %d channel-adapted)",
        len(report["loaded"]),
        os.fspath(path),
        len(report["ignored"]),
        len(report["inflated"]),
        len(report["adapted"]),
    )
    return report
