"""The two recipes the bundle composes: the deterministic preprocessing of a task's inputs and the
postprocessing of the network's output into probabilities, logits and maps."""

from __future__ import annotations

from typing import Sequence

from monai.transforms import Activationsd, Compose, CopyItemsd, FlattenSubKeysd

from ..data.rules import InputRules
from .evidence import CheckFinited
from .input import load_input
from .intensity import normalize_input

__all__ = ["output_postprocessing", "preprocessing"]


def output_postprocessing(num_classes: int) -> Compose:
    """The network's output ``{"logits", "evidence_maps"}`` as the engines' ``pred`` (class
    probabilities: softmax, or sigmoid for one class), ``logits`` and ``evidence_maps``; non-finite logits
    are refused, naming the input (:class:`~monai_softcam.transforms.evidence.CheckFinited`)."""
    return Compose(
        [
            FlattenSubKeysd(keys="pred"),
            CheckFinited(keys="logits", ref_key="image"),
            CopyItemsd(keys="logits", names="pred"),
            Activationsd(keys="pred", softmax=int(num_classes) > 1, sigmoid=int(num_classes) == 1),
        ]
    )


def preprocessing(
    image_size: Sequence[int],
    in_channels: int = 1,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    resize: str = "stretch",
    allow_rgb_to_grey: bool = False,
    frame: int | None = None,
    window: bool = False,
    rules: InputRules | None = None,
) -> Compose:
    """The whole deterministic preparation (evaluation, inference):
    :func:`~monai_softcam.transforms.input.load_input` then
    :func:`~monai_softcam.transforms.intensity.normalize_input`. Training puts its augmentations between the
    two. ``rules``: the checks every input passes (:class:`~monai_softcam.data.rules.InputRules`)."""
    return Compose(
        [
            load_input(image_size, resize, frame=frame, window=window, rules=rules),
            normalize_input(mean, std, in_channels, len(image_size), allow_rgb_to_grey=allow_rgb_to_grey),
        ]
    )
