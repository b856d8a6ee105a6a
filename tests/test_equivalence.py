"""What SoftCAM changes and what it does not, shown on untrained networks (lambda = 0, no training).

For a backbone whose trunk feeds the head directly (ResNet: ``backbone.neck`` is the identity), with
``A_k(u)`` the trunk's feature ``k`` at cell ``u`` of its output grid (``N`` cells), and
``w_ck, b_c`` the class layer:

* SoftCAM's evidence map ``M_c(u) = sum_k w_ck A_k(u) + b_c`` (a 1x1 convolution) and its logit
  ``mean_u M_c(u) = sum_k w_ck mean_u A_k(u) + b_c``: the black box's global average pooling and
  linear layer. With the same weights the two networks give the same logits, and ``M_c`` *is* the
  CAM of the black box (Zhou et al., 2016), bias included.
* Grad-CAM of that black box at the trunk's output (``backbone.features``, the tensor the head
  pools): ``dy_c / dA_k(u) = w_ck / N`` at every cell, so its channel weights are
  ``alpha_ck = mean_u dy_c / dA_k(u) = w_ck / N`` and its map is
  ``ReLU(sum_k alpha_ck A_k(u)) = ReLU(M_c(u) - b_c) / N``: CAM without its bias, clipped at 0 and
  divided by the number of grid cells (exactly, up to float rounding). On the image grid the
  explainer shows ``upsample(ReLU(M_c - b_c)) / N`` (MONAI and ``upsample_map`` interpolate alike:
  bi/trilinear, align_corners=False); the ReLU acts on the grid, so this is not exactly
  ``ReLU(upsample(M_c) - b_c) / N`` near the zero crossings.

For VGG, SoftCAM applies FC6/FC7 (1x1 convolutions with ReLU) at every cell before the spatial
mean, a black box after pooling: the networks are not the same function of the same weights.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_softcam.explain import GradCAMExplainer, SoftCAMExplainer
from monai_softcam.networks import EVIDENCE_MAPS, LOGITS, BlackBox, SoftCAM, upsample_map

QUARTER = {"widen_factor": 0.25}  # output stride 32
STRIDE8 = {"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True}  # output stride 8
#: (spatial_dims, backbone kwargs, input size, feature grid)
CASES = [(2, QUARTER, (96, 128), (3, 4)), (3, STRIDE8, (16, 24, 32), (2, 3, 4))]
IN_CHANNELS, NUM_CLASSES = 2, 3


def _randomise_batch_norms(net, seed=1):
    """Non-trivial batch-norm statistics and affine parameters (eval mode then uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return net


#: class biases of the scale of the maps, so that the bias visibly matters where it should
BIAS = [0.8, -1.2, 0.5]


def _twins(backbone, spatial_dims, kwargs, copy_head=True, head="gap", prepare=None):
    """A SoftCAM network and a black box with its backbone and (``copy_head``) its class layer;
    ``prepare(softcam)`` may change the SoftCAM network's weights first."""
    softcam = _randomise_batch_norms(
        SoftCAM(backbone, spatial_dims, IN_CHANNELS, NUM_CLASSES, return_maps=True, backbone_kwargs=kwargs)
    ).eval()
    with torch.no_grad():
        softcam.head.evidence.bias.copy_(torch.tensor(BIAS))
    if prepare is not None:
        prepare(softcam)
    blackbox = BlackBox(backbone, spatial_dims, IN_CHANNELS, NUM_CLASSES, backbone_kwargs=kwargs, head=head).eval()
    blackbox.backbone.load_state_dict(softcam.backbone.state_dict())
    if copy_head:
        with torch.no_grad():  # conv1x1 weight [C, K, 1, (1)] <-> linear weight [C, K]; the same bias
            blackbox.fc.weight.copy_(softcam.head.evidence.weight.flatten(1))
            blackbox.fc.bias.copy_(softcam.head.evidence.bias)
    return softcam, blackbox


def _hand_cam(blackbox, x):
    """CAM of a GAP + linear black box, by hand: ``sum_k w_ck A_k(u) + b_c`` on the trunk's output."""
    assert isinstance(blackbox.backbone.neck, nn.Identity)  # the trunk's output is what the head pools
    with torch.no_grad():
        features = blackbox.backbone.features(x)
    weight, bias = blackbox.fc.weight, blackbox.fc.bias
    cam = torch.einsum("ck,bk...->bc...", weight, features)
    return cam + bias.reshape(1, -1, *([1] * (features.dim() - 2))), features


# ---------------------------------------------------------------------------------------------- a) same logits


@pytest.mark.parametrize("spatial_dims,kwargs,size,grid", CASES)
def test_resnet_softcam_and_black_box_with_the_same_weights_give_the_same_logits(spatial_dims, kwargs, size, grid):
    softcam, blackbox = _twins("resnet18", spatial_dims, kwargs)
    x = torch.randn(2, IN_CHANNELS, *size)
    with torch.no_grad():
        out, logits = softcam(x), blackbox(x)
    assert tuple(out[EVIDENCE_MAPS].shape[2:]) == grid
    assert logits.std() > 1e-2  # logits that differ between samples and classes: a real comparison
    torch.testing.assert_close(logits, out[LOGITS], rtol=0, atol=1e-5)
    # the identity needs the head weights: the same backbone with a fresh class layer differs
    _, fresh = _twins("resnet18", spatial_dims, kwargs, copy_head=False)
    with torch.no_grad():
        assert (fresh(x) - out[LOGITS]).abs().max() > 1e-2


def test_vgg_softcam_and_black_box_are_not_the_same_function_of_the_same_weights():
    """Control: with VGG, FC6/FC7 act per cell in SoftCAM and after the pooling in the black box."""
    kwargs = {"fc_width": 32}

    def he_init_neck(softcam):  # FC6/FC7 of the scale of a trained layer (their N(0, 0.01) start is near 0)
        with torch.no_grad():
            for m in softcam.backbone.neck.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.normal_(0.0, (2.0 / m.in_channels) ** 0.5)
                    m.bias.normal_(0.0, 0.1)

    # the gap black box: the one that can take every weight of the SoftCAM network
    softcam, blackbox = _twins("vgg11", 2, kwargs, head="gap", prepare=he_init_neck)
    for name, value in softcam.backbone.neck.state_dict().items():  # the 1x1 FC6/FC7 were copied too
        torch.testing.assert_close(blackbox.backbone.neck.state_dict()[name], value)
    x = torch.randn(2, IN_CHANNELS, 96, 96) * torch.linspace(0, 4, 96)  # a 3 x 3 grid of unlike cells
    with torch.no_grad():
        out, logits = softcam(x), blackbox(x)
    assert tuple(out[EVIDENCE_MAPS].shape[2:]) == (3, 3)
    bias = blackbox.fc.bias.detach()
    assert (out[LOGITS] - bias).std() > 1e-2  # the logits are more than the bias: a real comparison
    difference = (logits - out[LOGITS]).abs().max()
    # ReLU(mean) != mean(ReLU): far beyond the 1e-5 of the ResNet identity
    assert difference > 1e-3 and difference > 0.05 * (out[LOGITS] - bias).abs().max()
    # on a one-cell grid, pooling first or last is the same: the difference is where FC6/FC7 act
    one_cell = torch.randn(2, IN_CHANNELS, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(blackbox(one_cell), softcam(one_cell)[LOGITS], rtol=0, atol=1e-5)
    # the default (classic) VGG black box has no place for SoftCAM's FC6/FC7 at all
    classic = BlackBox("vgg11", 2, IN_CHANNELS, NUM_CLASSES, backbone_kwargs=kwargs)
    assert classic.head_type == "classic" and isinstance(classic.backbone.neck, nn.Identity)
    assert classic.classifier[0].weight.shape == (32, 512 * 7 * 7)
    assert softcam.backbone.neck[0].weight.shape == (32, 512, 1, 1)


# ---------------------------------------------------------------------------------------------- b) SoftCAM map = CAM


@pytest.mark.parametrize("spatial_dims,kwargs,size,grid", CASES)
def test_softcam_evidence_map_is_the_cam_of_the_black_box(spatial_dims, kwargs, size, grid):
    softcam, blackbox = _twins("resnet18", spatial_dims, kwargs)
    x = torch.randn(2, IN_CHANNELS, *size)
    cam, _ = _hand_cam(blackbox, x)
    with torch.no_grad():
        maps, logits = softcam(x)[EVIDENCE_MAPS], blackbox(x)
    assert tuple(cam.shape[2:]) == grid and cam.std() > 1e-2
    torch.testing.assert_close(maps, cam, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, cam.flatten(2).mean(-1), rtol=0, atol=1e-5)  # CAM's mean is the logit
    # what SoftCAMExplainer shows: the same map on the image grid
    classes = torch.tensor([2, 0])
    shown = SoftCAMExplainer(softcam)(x, classes)
    expected = torch.stack([upsample_map(cam[i, c][None], size)[0] for i, c in enumerate(classes.tolist())])
    torch.testing.assert_close(shown, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- c) Grad-CAM = ReLU(CAM - b) / N


def test_gradcam_target_layer_is_the_tensor_the_black_box_head_pools():
    _, blackbox = _twins("resnet18", 2, QUARTER)
    seen = {}
    hooks = [
        blackbox.backbone.features.register_forward_hook(lambda m, i, o: seen.__setitem__("features", o)),
        blackbox.pool.register_forward_pre_hook(lambda m, i: seen.__setitem__("pooled", i[0])),
        blackbox.fc.register_forward_pre_hook(lambda m, i: seen.__setitem__("fc", i[0])),
    ]
    try:
        with torch.no_grad():
            blackbox(torch.randn(1, IN_CHANNELS, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert seen["pooled"] is seen["features"]  # no layer between the trunk and the pooling
    assert isinstance(blackbox.backbone.neck, nn.Identity) and isinstance(blackbox.classifier, nn.Identity)
    torch.testing.assert_close(seen["fc"], seen["features"].mean((2, 3)))  # fc reads the spatial mean


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # MONAI's hooks, inputs need no grad
@pytest.mark.parametrize("spatial_dims,kwargs,size,grid", CASES)
def test_gradcam_of_the_black_box_is_relu_of_cam_minus_bias_over_n(spatial_dims, kwargs, size, grid):
    softcam, blackbox = _twins("resnet18", spatial_dims, kwargs)
    x = torch.randn(2, IN_CHANNELS, *size)
    cam, _ = _hand_cam(blackbox, x)
    n = int(torch.tensor(grid).prod())
    bias = blackbox.fc.bias.detach()
    without_bias = cam - bias.reshape(1, -1, *[1] * spatial_dims)
    assert (without_bias > 0).any() and (without_bias < 0).any()  # the ReLU matters
    explainer = GradCAMExplainer(blackbox)  # target_layer "backbone.features": the trunk's last stage
    for c in range(NUM_CLASSES):
        expected = F.relu(cam[:, c] - bias[c]) / n
        # on the feature grid (MONAI's Grad-CAM before its upsampling)
        on_grid = explainer.cam.compute_map(x, class_idx=c)[:, 0].detach()
        torch.testing.assert_close(on_grid, expected, rtol=1e-4, atol=1e-6)
        # neither CAM with its bias nor CAM without the 1/N factor
        assert (on_grid - F.relu(cam[:, c]) / n).abs().max() > 0.1 * abs(BIAS[c]) / n
        if expected.max() > 0:
            assert (on_grid - F.relu(cam[:, c] - bias[c])).abs().max() > 0.5 * expected.max()
    # on the image grid: the explainer's maps are the same relation, upsampled as SoftCAM's maps are
    classes = torch.tensor([1, 2])
    maps = explainer(x, classes)
    expected = torch.stack(
        [upsample_map((F.relu(cam[i, c] - bias[c]) / n)[None], size)[0] for i, c in enumerate(classes.tolist())]
    )
    assert maps.shape == (2, *size)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    # the last stage by name, and Grad-CAM of the SoftCAM network itself (the same function), agree
    torch.testing.assert_close(GradCAMExplainer(blackbox, target_layer="backbone.features.layer4")(x, classes), maps)
    torch.testing.assert_close(GradCAMExplainer(softcam)(x, classes), maps, rtol=1e-4, atol=1e-6)
