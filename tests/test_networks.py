import pytest
import torch
import torch.nn as nn

from monai_softcam.networks import (
    EVIDENCE_MAPS,
    LOGITS,
    BlackBox,
    SoftCAM,
    available_backbones,
    build_backbone,
)

ALL = available_backbones()
EXPECTED = {
    "resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet169", "densenet201", "seresnet50",
    "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "efficientnet-b4",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
}  # fmt: skip


def test_registry_has_every_required_backbone():
    assert EXPECTED <= set(ALL)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_completeness_every_backbone(name, spatial_dims):
    """logits == spatial mean of the evidence maps, for every sample and class, in 2D and 3D."""
    in_channels = {2: 4, 3: 1}[spatial_dims]
    size = (64, 48) if spatial_dims == 2 else (32, 32, 40)
    net = SoftCAM(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=3, return_maps=True).eval()
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        out = net(x)
    logits, maps = out[LOGITS], out[EVIDENCE_MAPS]
    assert logits.shape == (2, 3)
    assert maps.shape[:2] == (2, 3) and maps.dim() == spatial_dims + 2
    torch.testing.assert_close(logits, maps.flatten(2).mean(-1), rtol=0, atol=1e-5)
    assert maps.std() > 0  # maps are not constant
    net.return_maps = False
    with torch.no_grad():
        plain = net(x)
    assert isinstance(plain, torch.Tensor)
    torch.testing.assert_close(plain, logits)
    # the black-box twin is built from the same registry
    bb = BlackBox(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=3).eval()
    with torch.no_grad():
        assert bb(x).shape == (2, 3)


@pytest.mark.parametrize(
    "name,size,grid",
    [
        ("resnet50", (512, 512), (16, 16)),
        ("resnet50", (496, 496), (16, 16)),
        ("vgg16", (496, 496), (15, 15)),
        ("resnet18", (224, 160), (7, 5)),
        ("densenet121", (224, 224), (7, 7)),
    ],
)
def test_output_stride_as_in_paper(name, size, grid):
    net = SoftCAM(name, spatial_dims=2, in_channels=3, num_classes=2, return_maps=True).eval()
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, *size))[EVIDENCE_MAPS]
    assert tuple(maps.shape[2:]) == grid


def test_resnet_stride_options_3d():
    net = SoftCAM(
        "resnet18", spatial_dims=3, in_channels=1, num_classes=2, return_maps=True,
        backbone_kwargs={"conv1_t_stride": 1, "no_max_pool": True, "widen_factor": 0.25},
    ).eval()  # fmt: skip
    with torch.no_grad():
        maps = net(torch.zeros(1, 1, 32, 40, 48))[EVIDENCE_MAPS]
    assert tuple(maps.shape[2:]) == (4, 5, 6)  # output stride 8


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "densenet121", "efficientnet-b0", "seresnet50"])
def test_gradients_reach_backbone(name):
    net = SoftCAM(name, spatial_dims=2, in_channels=3, num_classes=2, return_maps=True).train()
    out = net(torch.randn(2, 3, 64, 64))
    loss = nn.functional.cross_entropy(out[LOGITS], torch.tensor([0, 1])) + out[EVIDENCE_MAPS].abs().mean()
    loss.backward()
    first_conv = next(m for m in net.backbone.features.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert net.head.evidence.weight.grad.abs().sum() > 0


def test_vgg_black_box_applies_fc_layers_after_pooling():
    bb = BlackBox("vgg11", num_classes=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = bb.backbone.features(x).mean((2, 3), keepdim=True)
        expected = bb.fc(bb.backbone.neck(pooled).flatten(1))
        torch.testing.assert_close(bb(x), expected)


def test_softcam_is_a_plain_classifier_for_monai_gradcam():
    from monai.visualize import GradCAM

    net = SoftCAM("resnet18", spatial_dims=2, in_channels=1, num_classes=2).eval()
    cam = GradCAM(nn_module=net, target_layers="backbone.features.layer4")
    heat = cam(torch.randn(1, 1, 64, 64), class_idx=1)
    assert heat.shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "resnet5"}, r"backbone must be one of \[.*'resnet50'.*\], got 'resnet5'"),
        ({"spatial_dims": 4}, r"spatial_dims must be 2 or 3, got 4"),
        ({"spatial_dims": 1}, r"spatial_dims must be 2 or 3, got 1"),
        ({"num_classes": 0}, r"num_classes must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, r"num_classes must be an integer >= 1, got 2.5"),
        ({"in_channels": 0}, r"in_channels must be an integer >= 1, got 0"),
    ],
)
@pytest.mark.parametrize("cls", [SoftCAM, BlackBox])
def test_bad_arguments_name_argument_and_allowed_values(cls, kwargs, match):
    args = {"backbone": "resnet18", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(**args)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 3, 64), r"expects input x of shape \[B, 3, H, W\] \(4 dimensions\), got \(1, 3, 64\)"),
        ((1, 3, 32, 32, 32), r"\(4 dimensions\), got \(1, 3, 32, 32, 32\)"),
        ((1, 1, 64, 64), r"expects input x of shape \[B, 3, H, W\]"),
    ],
)
def test_wrong_input_dimensionality(shape, match):
    net = SoftCAM("resnet18", spatial_dims=2, in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_input_too_small_for_vgg():
    net = SoftCAM("vgg11", spatial_dims=3, in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match=r"too small for vgg11: every spatial size must be >= 32, got \(32, 16, 32\)"):
        net(torch.zeros(1, 1, 32, 16, 32))


def test_build_backbone_reports_channels():
    assert build_backbone("resnet50").out_channels == 2048
    assert build_backbone("vgg16", spatial_dims=3, in_channels=2).out_channels == 4096
    assert build_backbone("densenet121").out_channels == 1024


def test_register_a_users_own_backbone():
    from monai_softcam.networks import Backbone, get_backbone_spec, register_backbone
    from monai_softcam.networks import backbones

    def tiny(spatial_dims, in_channels, width=4):
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        return Backbone(conv(in_channels, width, 3, stride=4, padding=1), width, min_input_size=4)

    register_backbone("Tiny_Test", tiny, "a 1-layer test trunk")
    try:
        assert get_backbone_spec("tiny_test").description == "a 1-layer test trunk"
        with pytest.raises(ValueError, match="backbone 'tiny_test' is already registered"):
            register_backbone("tiny_test", tiny)
        net = SoftCAM("tiny_test", spatial_dims=3, in_channels=2, num_classes=3, backbone_kwargs={"width": 5}, return_maps=True)
        assert (net.backbone.name, net.backbone.spatial_dims, net.backbone.in_channels) == ("tiny_test", 3, 2)
        out = net(torch.zeros(1, 2, 8, 8, 8))
        assert out[LOGITS].shape == (1, 3) and out[EVIDENCE_MAPS].shape == (1, 3, 2, 2, 2)
    finally:
        backbones._REGISTRY.pop("tiny_test", None)  # other tests build every registered backbone
