"""Post-hoc baselines and SoftCAM maps on one harness, against models whose answer is known; the
cascading randomisation sanity check."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import metric_settings

from monai_softcam.explain import (
    EXPLAINERS,
    GradCAMExplainer,
    GuidedBackpropExplainer,
    IntegratedGradientsExplainer,
    LayerCAMExplainer,
    OcclusionExplainer,
    ScoreCAMExplainer,
    SoftCAMExplainer,
    default_target_layer,
    make_explainer,
)
from monai_softcam.metrics.faithfulness import deletion_curve
from monai_softcam.metrics.localisation import pointing_game
from monai_softcam.metrics.sanity import cascading_randomization, layer_groups, spearman
from monai_softcam.networks import BlackBox, SoftCAM, probabilities
from monai_softcam.networks.outputs import EvidenceOutputs, upsample_map


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
        "layercam": LayerCAMExplainer(model, target_layer="features"),
        "scorecam": ScoreCAMExplainer(model, target_layer="features"),
        "guided_backprop": GuidedBackpropExplainer(model),
    }
    for name, explain in explainers.items():
        maps = explain(alone, 1)
        assert maps.shape == (1, *shape) and torch.isfinite(maps).all(), name
        assert pointing_game(maps, mask, tolerance=1).item() == 1.0, name
        assert maps[(0,) + region].mean() > 0, name  # evidence for class 1 is positive (not inverted)
    # pixel-attribution methods, and LayerCAM's element-wise gradient weights, ignore a bright region
    # the model does not read; one weight per channel (Grad-CAM, Score-CAM) cannot (it highlights
    # every bright region of the feature map: a known limit)
    for name in ("occlusion", "integrated_gradients", "layercam", "guided_backprop"):
        maps = explainers[name](both, 1)
        inside = maps[(0,) + region].abs().mean()
        assert maps[(0,) + distractor].abs().mean() < 0.02 * inside, name
    for name in ("gradcam", "scorecam"):
        cam = explainers[name](both, 1)
        assert cam[(0,) + distractor].mean() > 0.5 * cam[(0,) + region].mean(), name


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
    curve = deletion_curve(OneOutput(), x, x[:, 0], torch.tensor([0]), patch=8, steps=2)
    p = float(torch.sigmoid(torch.tensor(6.0)))
    assert curve[0, 0] == 1.0 and curve[0, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))) / p, abs=1e-5)


def test_explainers_leave_the_models_mode_alone():
    """MONAI's CAM and occlusion restore the mode of the module they wrap; ours must report the
    model's own mode, or an evaluated model comes back in training mode (batch-dependent BatchNorm)."""
    x = torch.rand(2, 1, 64, 64)
    options = {
        "occlusion": {"mask_size": 32},
        "scorecam": {"target_layer": "backbone.features.layer1", "batch_size": 64},
    }
    new_methods = ("layercam", "scorecam", "guided_backprop")
    for training in (False, True):
        net = SoftCAM("resnet10", in_channels=1, num_classes=2).train(training)
        for name in ("gradcam", "gradcam++", "occlusion", "integrated_gradients") + new_methods:
            make_explainer(name, net, **options.get(name, {}))(x[:1] if name == "scorecam" else x, 1)
            assert all(m.training == training for m in net.modules()), (name, training)
    # the new explainers restore each module's own mode (a training model with frozen BatchNorm)
    net = SoftCAM("resnet10", in_channels=1, num_classes=2).train()
    frozen = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)][::2]
    for m in frozen:
        m.eval()
    modes = [m.training for m in net.modules()]
    for name in new_methods:
        make_explainer(name, net, **options.get(name, {}))(x[:1], 1)
        assert [m.training for m in net.modules()] == modes, name


def test_baselines_run_on_softcam_and_black_box_models():
    x = torch.rand(2, 1, 64, 64)
    for model in (
        SoftCAM("resnet10", in_channels=1, num_classes=2, return_maps=True),
        BlackBox("resnet10", in_channels=1, num_classes=2),
    ):
        model.eval()
        for name in ("gradcam", "gradcam++", "layercam"):
            maps = make_explainer(name, model)(x, torch.tensor([0, 1]))
            assert maps.shape == (2, 64, 64) and (maps >= 0).all(), name
        maps = make_explainer("scorecam", model, batch_size=128)(x[:1], 1)  # one pass per channel: one image
        assert maps.shape == (1, 64, 64) and (maps >= 0).all() and maps.max() > 0
        maps = make_explainer("guided_backprop", model)(x, torch.tensor([0, 1]))
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and maps.abs().flatten(1).amax(1).gt(0).all()
        absolute = make_explainer("guided_backprop", model, absolute=True)(x, torch.tensor([0, 1]))
        assert (absolute >= maps.abs() - 1e-7).all()
    assert {"layercam", "scorecam", "guided_backprop"} <= set(EXPLAINERS)
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


class QuadraticModel(nn.Module):
    """``A = features(x)`` (stride 2), changed in place afterwards (``A += 1``: a captured tensor must
    be the layer's output, not what later in-place operations make of it), and
    ``y_c = sum(G_c * (A + 1)^2) / 2``: so ``dy_c/dA = G_c * (A + 1)``, of both signs."""

    def __init__(self, grid=(4, 4)):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.features = nn.Conv2d(1, 3, 2, stride=2)
        with torch.no_grad():
            self.features.weight.copy_(torch.randn(self.features.weight.shape, generator=g))
            self.features.bias.copy_(torch.randn(3, generator=g))
        self.register_buffer("G", torch.randn(2, 3, *grid, generator=g))

    def forward(self, x):
        a = self.features(x)
        a.add_(1.0)
        return 0.5 * (self.G[None] * a[:, None] ** 2).flatten(2).sum(2)


def test_layercam_is_relu_of_positive_gradients_times_activations():
    model = QuadraticModel().eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([0, 1])
    maps = LayerCAMExplainer(model, target_layer="features")(x, classes)
    with torch.no_grad():
        a = model.features(x)  # [2, 3, 4, 4], the layer's output
        grad = model.G[classes] * (a + 1)  # dy_c / dA by hand
        by_hand = torch.relu((torch.relu(grad) * a).sum(1))
        gradcam_like = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))
        no_inner_relu = torch.relu((grad * a).sum(1))
    torch.testing.assert_close(maps, upsample_map(by_hand, (8, 8)), rtol=1e-5, atol=1e-6)
    # the hand computation tells the formulas apart: each alternative would fail the check above
    assert not torch.allclose(by_hand, gradcam_like, atol=1e-3)
    assert not torch.allclose(by_hand, no_inner_relu, atol=1e-3)
    assert by_hand.gt(0).any() and by_hand.eq(0).any()


class TwoHalves(nn.Module):
    """Channel 0 sees the left half of the image, channel 1 the right half, channel 2 nothing
    (constant); average-pooled by 2. The class-1 logit reads channel 0 alone; class 0 is 0."""

    def __init__(self):
        super().__init__()
        self.features = _HalfSplit()
        self.forwards = []

    def forward(self, x):
        self.forwards.append(x.shape[0])
        a = self.features(x)
        score = 8 * a[:, 0, :, :2].mean(dim=(1, 2)) - 4
        return torch.stack([torch.zeros_like(score), score], 1)


class _HalfSplit(nn.Module):
    def forward(self, x):
        left = torch.zeros_like(x)
        left[..., : x.shape[-1] // 2] = 1
        channels = [3 * x * left + 0.5, 2 * x * (1 - left) - 1, torch.full_like(x, 0.7)]
        return F.avg_pool2d(torch.cat(channels, 1), 2)


def test_scorecam_weights_are_a_softmax_of_masked_input_scores_over_channels():
    model = TwoHalves()
    x = 0.2 + torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([1, 0])
    explainer = ScoreCAMExplainer(model, target_layer="features", batch_size=1)
    model.forwards.clear()
    activations, weights = explainer.channel_weights(x, classes)
    # one pass for the batch, then per image: one for the constant channel, one per other channel
    assert model.forwards[0] == 2 and max(model.forwards[1:]) == 1 and len(model.forwards) == 1 + 2 * 3
    with torch.no_grad():
        a = model.features(x)
        torch.testing.assert_close(activations, a)
        expected = []
        for b, c in enumerate(classes.tolist()):
            up = upsample_map(a[b], (8, 8))
            low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
            masks = torch.where(high > low, (up - low) / (high - low).clamp(min=1e-12), torch.zeros_like(up))
            scores = model(x[b : b + 1] * masks[:, None])[:, c]  # s_k = y_c(x * M_k)
            expected.append(scores.softmax(0))
        expected = torch.stack(expected)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)
    assert weights[0, 0] > 0.95  # the channel that carries the class evidence gets the weight
    torch.testing.assert_close(weights[1], torch.full((3,), 1 / 3))  # class 0 reads nothing: equal weights
    maps = explainer(x, classes)
    by_hand = torch.relu((expected[:, :, None, None] * a).sum(1))
    torch.testing.assert_close(maps, upsample_map(by_hand, (8, 8)), rtol=1e-5, atol=1e-6)
    # chunking changes nothing
    torch.testing.assert_close(ScoreCAMExplainer(model, target_layer="features", batch_size=64)(x, classes), maps)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ScoreCAMExplainer(model, target_layer="features", batch_size=0)
    # a layer of one cell (ResNet-50 at 32 px): every channel is constant, one pass, equal weights
    tiny = 0.2 + torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    _, weights = explainer.channel_weights(tiny, torch.tensor([1]))
    torch.testing.assert_close(weights[0], torch.full((3,), 1 / 3))


def _tiny_relu_net(inplace=True):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(2, 2, 1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -0.5]).view(2, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 0.1]))
        net[2].weight.copy_(torch.tensor([[1.0, -2.0], [-1.5, 1.0]]).view(2, 2, 1, 1))
        net[2].bias.copy_(torch.tensor([0.3, 0.2]))
    return net.eval()


def _hooks(net):
    return [
        (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for name, m in net.named_modules()
    ]


class _FunctionalReLUs(nn.Module):
    """:func:`_tiny_relu_net` with functional ReLUs (in place and not) instead of ReLU modules."""

    def __init__(self):
        super().__init__()
        net = _tiny_relu_net()
        self.conv1, self.conv2 = net[0], net[2]

    def forward(self, x):
        h = F.relu(self.conv1(x), inplace=True)
        h = torch.relu(h).relu()  # idempotent forwards; guided backwards compose to one guided ReLU
        h = self.conv2(h)
        h.relu_()
        return torch.relu_(h).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
def test_guided_backprop_zeroes_negative_gradients_and_leaves_the_model_as_it_was():
    net = _tiny_relu_net(inplace=True)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    classes = torch.tensor([0, 1])
    modules, hooks = list(net.modules()), _hooks(net)
    maps = GuidedBackpropExplainer(net)(x, classes)
    # the chain rule by hand, per pixel: plain, and with every ReLU passing back only positive gradients
    w1, b1 = net[0].weight.view(2), net[0].bias
    w2, b2 = net[2].weight.view(2, 2), net[2].bias
    p = x.view(2, -1)  # [B, P]
    z1 = w1[None, :, None] * p[:, None] + b1[None, :, None]  # [B, 2, P]
    z2 = torch.einsum("ij,bjp->bip", w2, torch.relu(z1)) + b2[None, :, None]
    guided, plain = [], []
    for b, c in enumerate(classes.tolist()):
        g_a2 = torch.zeros(2, p.shape[1])
        g_a2[c] = 1.0 / p.shape[1]
        for guide, out in ((True, guided), (False, plain)):
            g = g_a2.clamp(min=0) if guide else g_a2
            g_z2 = g * (z2[b] > 0)
            g_a1 = w2.T @ g_z2
            g_z1 = (g_a1.clamp(min=0) if guide else g_a1) * (z1[b] > 0)
            out.append((w1[:, None] * g_z1).sum(0).view(4, 4))
    guided, plain = torch.stack(guided).detach(), torch.stack(plain).detach()
    torch.testing.assert_close(maps, guided)
    assert (guided - plain).abs().max() > 1e-3  # the net is one where the two differ
    # the model is untouched: same modules, in-place ReLUs, no hooks, and plain gradients again
    assert list(net.modules()) == modules and _hooks(net) == hooks
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    x_plain = x.clone().requires_grad_(True)
    net(x_plain).gather(1, classes[:, None]).sum().backward()
    torch.testing.assert_close(x_plain.grad[:, 0], plain)
    # the same as with out-of-place ReLUs, as with Captum's GuidedBackprop (which hooks nn.ReLU modules)
    torch.testing.assert_close(GuidedBackpropExplainer(_tiny_relu_net(inplace=False))(x, classes), maps)
    torch.testing.assert_close(GuidedBackpropExplainer(_FunctionalReLUs())(x, classes), maps)
    captum = pytest.importorskip("captum.attr")
    reference = captum.GuidedBackprop(_tiny_relu_net(inplace=False)).attribute(x, target=classes)
    torch.testing.assert_close(reference[:, 0], maps)


def test_guided_backprop_on_monai_resnet_with_inplace_relus():
    torch.manual_seed(0)
    net = BlackBox("resnet10", in_channels=1, num_classes=2).eval()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in net.modules())
    out_of_place = copy.deepcopy(net)
    for m in out_of_place.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.rand(2, 1, 64, 64)
    hooks = _hooks(net)
    maps = GuidedBackpropExplainer(net)(x, 1)
    torch.testing.assert_close(maps, GuidedBackpropExplainer(out_of_place)(x, 1))
    assert _hooks(net) == hooks and all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    x_plain = x.clone().requires_grad_(True)
    net(x_plain)[:, 1].sum().backward()
    assert not torch.allclose(maps, x_plain.grad[:, 0], atol=1e-6)  # guided, not the plain gradient


def test_default_target_layer_is_layer4_for_resnet_and_the_pre_pool_block_for_vgg():
    resnet = BlackBox("resnet18", in_channels=1)
    assert default_target_layer(resnet) == "backbone.features"
    assert list(resnet.backbone.features.named_children())[-1][0] == "layer4"  # the trunk ends at layer4's output
    small = {"fc_width": 8}
    for name, index in (("vgg16", 29), ("vgg16_bn", 42), ("vgg11", 19)):
        net = SoftCAM(name, in_channels=1, backbone_kwargs=small)
        layer = default_target_layer(net)
        assert layer == f"backbone.features.{index}", name  # torchvision's index of the last ReLU
        features = net.backbone.features
        assert isinstance(features[index], nn.ReLU) and isinstance(features[index + 1], nn.MaxPool2d)
        assert index + 2 == len(features)  # ... right before the last max-pool
    assert default_target_layer(EvidenceOutputs(net)) == "network.backbone.features.19"
    with pytest.raises(ValueError, match="has no monai_softcam backbone"):
        default_target_layer(nn.Sequential(nn.Conv2d(1, 1, 1)))
    # the CAM explainers read it by default, at stride 16 on VGG (4 x 4 at 64 px, not 2 x 2)
    vgg = BlackBox("vgg11", in_channels=1, backbone_kwargs=small).eval()
    x = torch.rand(2, 1, 64, 64)
    seen = []
    handle = vgg.backbone.features[19].register_forward_hook(lambda m, i, o: seen.append(o.shape[2:]))
    try:
        for make in (GradCAMExplainer, LayerCAMExplainer, ScoreCAMExplainer):
            explainer = make(vgg)
            assert explainer.target_layer == "backbone.features.19"
        for make in (GradCAMExplainer, LayerCAMExplainer):
            maps = make(vgg)(x, 1)
            assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and (maps >= 0).all()
    finally:
        handle.remove()
    assert seen and all(tuple(s) == (4, 4) for s in seen)


def test_gradcam_takes_its_hooks_off_the_model_when_closed():
    """MONAI's CAMs keep no handle to their hooks: the explainer removes them itself, in a `with`
    block or by close(), and the explanation report and the sanity check close every explainer."""
    from monai_softcam.explanation_report import collect

    net = SoftCAM("resnet10", in_channels=1, num_classes=2, return_maps=True).eval()
    layer = dict(net.named_modules())[default_target_layer(net)]

    def hooks() -> int:
        return len(layer._forward_hooks) + len(layer._backward_hooks)

    x = torch.rand(2, 1, 32, 32)
    assert hooks() == 0
    for plus in (False, True):
        with GradCAMExplainer(net, plus=plus) as explainer:
            assert hooks() == 2  # MONAI's forward and backward hooks, while in use
            assert explainer(x, 1).shape == (2, 32, 32)
        assert hooks() == 0
    loader = [{"image": x, "label": torch.tensor([1, 0])}]
    collect(
        [{"name": "m", "network": net, "methods": ["gradcam", "gradcam++"]}],
        loader,
        metric_settings(patch=8),
        gallery_cases=0,
        sanity_cases=1,
        progress=False,
    )
    assert hooks() == 0
