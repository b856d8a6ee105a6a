"""Post-hoc baselines and SoftCAM maps on one harness, against models whose answer is known; the
cascading randomisation sanity check."""

import pytest
import torch
import torch.nn as nn

from monai_softcam.explain import (
    GradCAMExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    SoftCAMExplainer,
    cascading_randomization,
    layer_groups,
    make_explainer,
    spearman,
)
from monai_softcam.metrics.explanation import deletion_curve, pointing_game
from monai_softcam.networks import BlackBox, SoftCAM, probabilities


class RegionModel(nn.Module):
    """Class 1 when the region ``region`` (a tuple of slices) is bright; reads nothing else.
    ``features`` is an identity-like convolution so that Grad-CAM has a layer to look at."""

    def __init__(self, spatial_dims, region):
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.features = conv(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            centre = (slice(None), slice(None)) + (1,) * spatial_dims
            self.features.weight[centre] = 1.0
        self.region = region

    def forward(self, x):
        f = torch.relu(self.features(x))
        score = f[(slice(None), slice(None)) + self.region].mean(dim=tuple(range(1, f.dim())))
        return torch.stack([torch.zeros_like(score), 12 * score - 4], dim=1)


def _scene(shape, region, distractor):
    g = torch.Generator().manual_seed(0)
    image = 0.05 * torch.rand(1, 1, *shape, generator=g)
    image[(0, 0) + region] = 1.0
    if distractor is not None:
        image[(0, 0) + distractor] = 1.0
    return image


@pytest.mark.parametrize("dims", [2, 3])
def test_every_method_points_at_the_only_region_the_model_reads(dims):
    shape = (32,) * dims if dims == 2 else (20,) * dims
    region = (slice(4, 10),) * dims
    distractor = (slice(shape[0] - 8, shape[0] - 2),) * dims
    mask = torch.zeros(1, *shape, dtype=torch.bool)
    mask[(0,) + region] = True
    model = RegionModel(dims, region)
    alone = _scene(shape, region, None)
    both = _scene(shape, region, distractor)
    explainers = {
        "gradcam": GradCAMExplainer(model, target_layer="features"),
        "gradcam++": GradCAMExplainer(model, target_layer="features", plus=True),
        "occlusion": OcclusionExplainer(model, mask_size=4, overlap=0.5, mode=0.0),
        "integrated_gradients": IntegratedGradientsExplainer(model, steps=16),
    }
    for name, explain in explainers.items():
        maps = explain(alone, 1)
        assert maps.shape == (1, *shape) and torch.isfinite(maps).all(), name
        assert pointing_game(maps, mask, tolerance=1).item() == 1.0, name
        assert maps[(0,) + region].mean() > 0, name  # evidence for class 1 is positive (not inverted)
    # pixel-attribution methods ignore a bright region the model does not read; Grad-CAM's channel
    # weighting cannot (it highlights every bright region of the feature map: a known limit)
    for name in ("occlusion", "integrated_gradients"):
        maps = explainers[name](both, 1)
        inside = maps[(0,) + region].abs().mean()
        assert maps[(0,) + distractor].abs().mean() < 0.02 * inside, name
    cam = explainers["gradcam"](both, 1)
    assert cam[(0,) + distractor].mean() > 0.5 * cam[(0,) + region].mean()


def test_softcam_explainer_selects_each_samples_class_and_upsamples():
    class Stub(nn.Module):
        def forward(self, x):
            maps = torch.zeros(x.shape[0], 3, 4, 4)
            maps[:, 0, 0, 0] = 1.0
            maps[:, 2, 3, 3] = 1.0
            return {"logits": maps.flatten(2).mean(2), "evidence_maps": maps}

    maps = SoftCAMExplainer(Stub())(torch.zeros(2, 1, 16, 16), torch.tensor([0, 2]))
    assert maps.shape == (2, 16, 16)
    assert maps[0, :4, :4].sum() > 0 and maps[0, 12:, 12:].sum() == 0
    assert maps[1, 12:, 12:].sum() > 0 and maps[1, :4, :4].sum() == 0
    # a real SoftCAM model: the upsampled map keeps the sign and the logit as its mean (integer factor)
    net = SoftCAM("resnet10", in_channels=1, num_classes=2, return_maps=True).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits = net(x)["logits"]
    up = SoftCAMExplainer(net)(x, 1)
    assert torch.allclose(up.flatten(1).mean(1), logits[:, 1], atol=1e-4)
    with pytest.raises(ValueError, match="needs a model that returns evidence maps"):
        SoftCAMExplainer(BlackBox("resnet10", in_channels=1, num_classes=2))(x, 1)


def test_one_probability_rule_softmax_or_sigmoid_for_one_output():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(probabilities(logits), logits.softmax(dim=1))
    torch.testing.assert_close(probabilities(torch.tensor([[0.0], [2.0]])), torch.sigmoid(torch.tensor([[0.0], [2.0]])))
    with pytest.raises(ValueError, match=r"expects logits \[B, C\], got shape \(3,\)"):
        probabilities(torch.zeros(3))
    # occlusion and the deletion curve read the model's confidence through it: a one-output model
    # is read as the sigmoid, not as a softmax over a single column (which is always 1)
    class OneOutput(nn.Module):
        def forward(self, x):
            return 8 * x[:, :, :8].mean(dim=(1, 2, 3))[:, None] - 2

    x = torch.zeros(1, 1, 16, 16)
    x[:, :, :8] = 1.0
    occlusion = make_explainer("occlusion", OneOutput(), mask_size=8, mode=0.0)(x, 0)
    assert occlusion[0, :8].mean() > 0.05 and occlusion[0, :8].mean() > occlusion[0, 8:].mean()  # a softmax: all 0
    curve = deletion_curve(OneOutput(), x, x[:, 0], torch.tensor([0]), patch_size=8, steps=2)
    p = float(torch.sigmoid(torch.tensor(6.0)))
    assert curve[0, 0] == 1.0 and curve[0, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))) / p, abs=1e-5)


def test_explainers_leave_the_models_mode_alone():
    """MONAI's CAM and occlusion restore the mode of the module they wrap; ours must report the
    model's own mode, or an evaluated model comes back in training mode (batch-dependent BatchNorm)."""
    x = torch.rand(2, 1, 64, 64)
    for training in (False, True):
        net = SoftCAM("resnet10", in_channels=1, num_classes=2).train(training)
        for name in ("gradcam", "gradcam++", "occlusion", "integrated_gradients"):
            kwargs = {"mask_size": 32} if name == "occlusion" else {}
            make_explainer(name, net, **kwargs)(x, 1)
            assert all(m.training == training for m in net.modules()), (name, training)


def test_baselines_run_on_softcam_and_black_box_models():
    x = torch.rand(2, 1, 64, 64)
    for model in (SoftCAM("resnet10", in_channels=1, num_classes=2, return_maps=True), BlackBox("resnet10", in_channels=1, num_classes=2)):
        model.eval()
        for name in ("gradcam", "gradcam++"):
            maps = make_explainer(name, model)(x, torch.tensor([0, 1]))
            assert maps.shape == (2, 64, 64) and (maps >= 0).all()
    with pytest.raises(ValueError, match="target_layer 'nope' is not a module"):
        GradCAMExplainer(BlackBox("resnet10", in_channels=1), target_layer="nope")
    with pytest.raises(ValueError, match="unknown explanation method 'lime'"):
        make_explainer("lime", BlackBox("resnet10", in_channels=1))


def test_cascading_randomisation_changes_model_maps_but_not_an_image_only_map():
    torch.manual_seed(0)
    stride8 = {"widen_factor": 0.5, "conv1_t_stride": 1, "no_max_pool": True}  # 8 x 8 maps at 64 px
    net = SoftCAM("resnet10", in_channels=1, num_classes=2, return_maps=True, backbone_kwargs=stride8).eval()
    names = [n for n, _ in layer_groups(net)]
    assert names[0] == "head" and names[-1].startswith("backbone.features.")
    x = torch.rand(4, 1, 64, 64)
    rows = cascading_randomization(net, SoftCAMExplainer, x, 1)
    assert [r["layer"] for r in rows] == ["original", *names]
    assert rows[0]["spearman_mean"] == 1.0 and all(abs(r["spearman_mean"]) < 0.5 for r in rows[1:])
    grad_rows = cascading_randomization(net, lambda m: GradCAMExplainer(m), x, 1)
    assert all(abs(r["spearman_mean"]) < 0.5 for r in grad_rows[1:])
    # a "method" that returns the image itself explains nothing about the model: the check exposes it
    image_rows = cascading_randomization(net, lambda m: (lambda images, c: images[:, 0]), x, 1)
    assert all(r["spearman_mean"] == pytest.approx(1.0) for r in image_rows)
    a = torch.arange(10.0)[None]
    assert spearman(a, a).item() == pytest.approx(1.0) and spearman(a, -a).item() == pytest.approx(-1.0)
