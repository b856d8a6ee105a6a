import importlib.util
import os

import pytest
import torch
import torch.nn as nn

from monai_softcam.networks import EVIDENCE_MAPS, LOGITS, BlackBox, SoftCAM, available_backbones, build_backbone

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision_reference.pt")
ALL = available_backbones()
EXPECTED = {
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet169",
    "densenet201",
    "seresnet50",
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnet-b2",
    "efficientnet-b3",
    "efficientnet-b4",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
}


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
    # the black-box twin is built from the same registry (a narrow classic VGG head: at the default
    # width its FC6 alone has 103 M weights in 2D, 719 M in 3D)
    kwargs = {"fc_width": 64} if name.startswith("vgg") else None
    bb = BlackBox(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=3, backbone_kwargs=kwargs)
    bb.eval()
    assert bb.head_type == ("classic" if name.startswith("vgg") else "gap")
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
        "resnet18",
        spatial_dims=3,
        in_channels=1,
        num_classes=2,
        return_maps=True,
        backbone_kwargs={"conv1_t_stride": 1, "no_max_pool": True, "widen_factor": 0.25},
    ).eval()
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


def test_vgg_black_box_with_gap_head_applies_fc_layers_after_pooling():
    bb = BlackBox("vgg11", num_classes=2, head="gap", backbone_kwargs={"fc_width": 64}).eval()
    assert bb.head_type == "gap" and isinstance(bb.classifier, nn.Identity) and bb.fc.in_features == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = bb.backbone.features(x).mean((2, 3), keepdim=True)
        expected = bb.fc(bb.backbone.neck(pooled).flatten(1))
        torch.testing.assert_close(bb(x), expected)


@pytest.mark.parametrize("spatial_dims,size", [(2, (64, 160)), (3, (32, 64, 96))])
def test_vgg_black_box_default_is_the_classic_head(spatial_dims, size):
    """7x7 (3D: 7x7x7) adaptive average pool -> flatten -> FC6 -> ReLU -> Dropout -> FC7 -> ReLU -> Dropout -> FC8."""
    bb = BlackBox("vgg11", spatial_dims=spatial_dims, in_channels=1, num_classes=3, backbone_kwargs={"fc_width": 16})
    assert bb.head_type == "classic"
    linear = [m for m in bb.classifier if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linear] == [(16, 512 * 7**spatial_dims), (16, 16)]
    assert tuple(bb.fc.weight.shape) == (3, 16)
    assert [type(m).__name__ for m in bb.classifier] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert isinstance(bb.backbone.neck, nn.Identity) and bb.backbone.out_channels == 512  # no 1x1 FC6/FC7 left
    assert not any(k.startswith("backbone.neck.") for k in bb.state_dict())
    bb.eval()
    x = torch.randn(2, 1, *size)  # a grid of 2 x 5 (2D) or 1 x 2 x 3 (3D) cells, not a multiple of 7
    pool = nn.functional.adaptive_avg_pool2d if spatial_dims == 2 else nn.functional.adaptive_avg_pool3d
    with torch.no_grad():
        pooled = pool(bb.backbone.features(x), 7)
        expected = bb.fc(bb.classifier(pooled.flatten(1)))
        torch.testing.assert_close(bb(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.jit.script(bb)(x), bb(x), rtol=1e-5, atol=1e-6)
    bb.train()  # dropout acts in training only
    assert not torch.equal(bb(x), bb(x))


@pytest.mark.parametrize(
    "spatial_dims,shapes",
    [
        (2, [(2, 3, 1, 1), (1, 2, 5, 9), (1, 2, 7, 7), (1, 2, 16, 30), (1, 1, 224, 100)]),
        (3, [(2, 3, 1, 1, 1), (1, 2, 2, 5, 9), (1, 2, 7, 7, 7), (1, 2, 15, 16, 30)]),
    ],
)
def test_classic_pool_equals_torch_adaptive_average_pool(spatial_dims, shapes):
    from monai_softcam.networks.vgg import AdaptiveAvgPool

    pool = AdaptiveAvgPool(7, spatial_dims)
    scripted = torch.jit.script(pool)
    reference = nn.functional.adaptive_avg_pool2d if spatial_dims == 2 else nn.functional.adaptive_avg_pool3d
    for shape in shapes:
        x = torch.randn(shape)
        torch.testing.assert_close(pool(x), reference(x, 7), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scripted(x), pool(x))


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the ONNX extra: pip install 'monai_softcam[onnx]'",
)
def test_classic_black_box_exports_to_onnx(tmp_path):
    """In 3D too (torch's ONNX exporter has no 7x7x7 adaptive pool; AdaptiveAvgPool is matrix
    products), and in 2D with free spatial axes (where an exported ``nn.AdaptiveAvgPool2d(7)`` is
    off by 6e-4 at 300 x 200 after an export at 64 x 96, and fails to export at 224 x 224)."""
    from monai_softcam.export import export_onnx, run_onnx

    for spatial_dims, size, other in [(3, (32, 32, 64), None), (2, (64, 96), (300, 200))]:
        bb = BlackBox(
            "vgg11", spatial_dims=spatial_dims, in_channels=1, num_classes=2, backbone_kwargs={"fc_width": 16}
        )
        path = tmp_path / f"bb{spatial_dims}d.onnx"
        report = export_onnx(bb.eval(), path, spatial_size=size, dynamic_spatial=other is not None)
        assert report["outputs"] == [LOGITS] and report["max_abs_diff"][LOGITS] <= 1e-4
        if other is not None:
            x = torch.randn(1, 1, *other)  # a 9 x 6 grid: windows unlike the 2 x 3 grid's
            with torch.no_grad():
                expected = bb(x)
            torch.testing.assert_close(torch.as_tensor(run_onnx(path, x)[LOGITS]), expected, rtol=1e-4, atol=1e-5)


def test_black_box_head_choices():
    assert BlackBox("resnet18", backbone_kwargs={"widen_factor": 0.25}).head_type == "gap"
    with pytest.raises(
        ValueError, match=r"head='classic' \(7x7 pool \+ FC6/FC7/FC8\) needs a VGG backbone, got 'resnet18'"
    ):
        BlackBox("resnet18", head="classic")
    with pytest.raises(ValueError, match=r"head must be one of \['classic', 'gap'\] or None, got 'fc'"):
        BlackBox("vgg11", head="fc")


def test_classic_head_keys_are_torchvision_vgg_keys():
    """torchvision's VGG-16 state dict (keys and shapes recorded from torchvision) fits the classic
    black box key for key, with torchvision's FC8 ``classifier.6`` as ``fc``: checked on the meta device."""
    spec = torch.load(FIXTURE, weights_only=True)["archs"]["vgg16"]["spec"]
    renamed = {}
    for key, shape, _ in spec:
        if key.startswith("features."):
            renamed[f"backbone.{key}"] = shape
        else:
            renamed["fc." + key.rsplit(".", 1)[1] if key.startswith("classifier.6.") else key] = shape
    assert {"classifier.0.weight", "classifier.3.weight", "fc.weight"} <= set(renamed)
    with torch.device("meta"):
        bb = BlackBox("vgg16", num_classes=1000)
        state = {k: torch.empty(shape) for k, shape in renamed.items()}
    assert {k: tuple(v.shape) for k, v in bb.state_dict().items()} == {k: tuple(v) for k, v in renamed.items()}
    bb.load_state_dict(state, strict=True, assign=True)


def test_classic_black_box_with_a_torchvision_file_loads_the_trunk_and_a_fresh_head(tmp_path):
    """As in the paper's reference code: ImageNet features, FC6/FC7/FC8 initialised fresh (the loader
    ignores a file's ``classifier.*`` keys)."""
    from torchvision_reference import make_weights, reference_input

    reference = torch.load(FIXTURE, weights_only=True)["archs"]["vgg16"]
    trunk = [entry for entry in reference["spec"] if entry[0].startswith("features.")]
    state = make_weights(trunk)
    for key, shape, _ in reference["spec"]:
        if key.startswith("classifier."):  # torchvision's shapes, stored as one value (a stride-0 view)
            state[key] = torch.full((1,), 7.0).expand(shape)
    path = str(tmp_path / "vgg16_imagenet.pth")
    torch.save(state, path)
    bb = BlackBox("vgg16", num_classes=2, pretrained=path, backbone_kwargs={"fc_width": 64}).eval()
    with torch.no_grad():
        features = bb.backbone.features(reference_input())
    torch.testing.assert_close(features, reference["features"], rtol=1e-4, atol=1e-5)
    for name in ("classifier.0.weight", "classifier.3.weight", "fc.weight"):
        assert not (bb.state_dict()[name] == 7.0).any()


def test_softcam_checkpoint_initialises_the_classic_black_box_trunk(tmp_path):
    softcam = SoftCAM("vgg11", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs={"fc_width": 16})
    path = str(tmp_path / "softcam.pt")
    torch.save(softcam.state_dict(), path)  # backbone.neck.* (the 1x1 FC6/FC7) have no place in the black box
    bb = BlackBox(
        "vgg11", spatial_dims=2, in_channels=1, num_classes=2, pretrained=path, backbone_kwargs={"fc_width": 16}
    )
    for key, value in softcam.backbone.features.state_dict().items():
        torch.testing.assert_close(bb.backbone.features.state_dict()[key], value)


def test_gap_head_checkpoint_in_a_classic_black_box_is_a_clear_error(tmp_path):
    """A VGG black box saved with the global-pooling head (the default before the classic head) and
    loaded into the classic one: the message names the missing and the unexpected head keys."""
    from monai_softcam.checkpoint import CheckpointError, load_weights

    kwargs = {"fc_width": 16}
    old = BlackBox("vgg11", spatial_dims=2, in_channels=1, num_classes=2, head="gap", backbone_kwargs=kwargs)
    path = str(tmp_path / "model.pt")
    torch.save(old.state_dict(), path)
    classic = BlackBox("vgg11", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=kwargs)
    with pytest.raises(CheckpointError) as err:
        load_weights(classic, path)
    message = str(err.value)
    network = "BlackBox(backbone=vgg11, num_classes=2, spatial_dims=2, in_channels=1, head=classic)"
    assert f"does not fit the network {network}" in message
    assert "missing keys (4): classifier.0.weight, classifier.0.bias, classifier.3.weight, classifier.3.bias" in message
    assert "unexpected keys (4): backbone.neck.0.weight, backbone.neck.0.bias, backbone.neck.3.weight" in message
    load_weights(
        BlackBox("vgg11", spatial_dims=2, in_channels=1, num_classes=2, head="gap", backbone_kwargs=kwargs), path
    )


def test_classic_head_runs_from_the_output_backwards_in_layer_groups():
    from monai_softcam.metrics.sanity import layer_groups

    bb = BlackBox("vgg11", in_channels=1, num_classes=2, backbone_kwargs={"fc_width": 16})
    names = [n for n, _ in layer_groups(bb)]
    assert names[:2] == ["fc", "classifier"] and names[2].startswith("backbone.features.")
    assert "backbone.neck" not in names


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
    from monai_softcam.networks import Backbone, backbones, get_backbone_spec, register_backbone

    def tiny(spatial_dims, in_channels, width=4):
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        return Backbone(conv(in_channels, width, 3, stride=4, padding=1), width, min_input_size=4)

    register_backbone("Tiny_Test", tiny, "a 1-layer test trunk")
    try:
        assert get_backbone_spec("tiny_test").description == "a 1-layer test trunk"
        with pytest.raises(ValueError, match="backbone 'tiny_test' is already registered"):
            register_backbone("tiny_test", tiny)
        net = SoftCAM(
            "tiny_test", spatial_dims=3, in_channels=2, num_classes=3, backbone_kwargs={"width": 5}, return_maps=True
        )
        assert (net.backbone.name, net.backbone.spatial_dims, net.backbone.in_channels) == ("tiny_test", 3, 2)
        out = net(torch.zeros(1, 2, 8, 8, 8))
        assert out[LOGITS].shape == (1, 3) and out[EVIDENCE_MAPS].shape == (1, 3, 2, 2, 2)
    finally:
        backbones._REGISTRY.pop("tiny_test", None)  # other tests build every registered backbone
