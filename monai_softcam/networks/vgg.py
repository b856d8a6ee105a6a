"""VGG for 2D and 3D, written for this package (MONAI has no VGG).

The convolutional part follows Simonyan & Zisserman (2015), configurations A, B, D and E
(VGG-11/13/16/19), with optional batch normalisation. Layers are numbered exactly as in the
widely used torchvision ``features`` module, so a torchvision ImageNet ``state_dict`` maps onto
it key for key (see :mod:`monai_softcam.networks.pretrained`).

The fully connected FC6/FC7 layers are replaced, as in the SoftCAM paper, by two 1x1
convolutions (:func:`vgg_fc_block`) so that the network stays fully convolutional and keeps a
spatial grid up to the class-evidence layer.
"""

from __future__ import annotations

import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm, Pool

__all__ = ["VGG_CONFIGS", "VGGFeatures", "vgg_fc_block"]

# "M" is a 2x2 max-pool; numbers are 3x3 convolution widths.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGGFeatures(nn.Sequential):
    """The convolutional trunk of VGG (output stride 32, 512 channels).

    Args:
        config: one of ``VGG_CONFIGS`` keys (``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``).
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        batch_norm: insert batch normalisation after every convolution (the ``_bn`` variants).

    Example::

        >>> import torch
        >>> trunk = VGGFeatures("vgg16", spatial_dims=2, in_channels=3)
        >>> trunk(torch.zeros(1, 3, 496, 496)).shape
        torch.Size([1, 512, 15, 15])
    """

    def __init__(self, config: str, spatial_dims: int = 2, in_channels: int = 3, batch_norm: bool = False) -> None:
        if config not in VGG_CONFIGS:
            raise ValueError(f"config must be one of {sorted(VGG_CONFIGS)}, got {config!r}")
        conv_type = Conv[Conv.CONV, spatial_dims]
        pool_type = Pool[Pool.MAX, spatial_dims]
        norm_type = Norm[Norm.BATCH, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for width in VGG_CONFIGS[config]:
            if width == "M":
                layers.append(pool_type(kernel_size=2, stride=2))
                continue
            layers.append(conv_type(channels, width, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm_type(width))
            layers.append(nn.ReLU(inplace=True))
            channels = int(width)
        super().__init__(*layers)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, conv_type):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, norm_type):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def vgg_fc_block(spatial_dims: int, in_channels: int = 512, width: int = 4096, dropout: float = 0.5) -> nn.Sequential:
    """FC6/FC7 of VGG as two 1x1 convolutions, each followed by ReLU and dropout (the paper's VGG head).

    Applied to a feature map it acts per location; applied to a globally pooled ``1x1`` map it is
    exactly the usual pair of fully connected layers, which is how the black-box baseline uses it.
    """
    conv_type = Conv[Conv.CONV, spatial_dims]
    block = nn.Sequential(
        conv_type(in_channels, width, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        conv_type(width, width, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    for m in block.modules():
        if isinstance(m, conv_type):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return block
