"""Export of SoftCAM networks: eager, TorchScript and ONNX agree; input checks give clear errors."""

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from monai_softcam.export import export_onnx, run_onnx
from monai_softcam.networks import EVIDENCE_MAPS, LOGITS, BlackBox, SoftCAM

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the ONNX extra: pip install 'monai_softcam[onnx]'",
)

QUARTER = {"widen_factor": 0.25}  # output stride 32
STRIDE8 = {"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True}  # output stride 8 (the bundle's)
SMALL_VGG = {"fc_width": 64}  # narrow FC6/FC7: the trunk is VGG-11's own
ATOL = 1e-4


def _with_running_stats(net):
    """Batch norms with non-trivial running statistics, so that eval-mode arithmetic is really compared."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net.eval()


def _scripted_round_trip(net, path):
    torch.jit.save(torch.jit.script(net), str(path))
    return torch.jit.load(str(path))


def _max_diff(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@needs_onnx
@pytest.mark.parametrize(
    "backbone,spatial_dims,size,kwargs,grid",
    [
        ("resnet18", 2, (64, 96), QUARTER, (2, 3)),
        ("resnet18", 3, (32, 40, 24), STRIDE8, (4, 5, 3)),
        ("vgg11", 2, (64, 64), SMALL_VGG, (2, 2)),
        ("vgg11", 3, (32, 32, 64), SMALL_VGG, (1, 1, 2)),
    ],
)
def test_eager_torchscript_and_onnx_agree(backbone, spatial_dims, size, kwargs, grid, tmp_path):
    net = _with_running_stats(
        SoftCAM(
            backbone, spatial_dims=spatial_dims, in_channels=2, num_classes=3, return_maps=True, backbone_kwargs=kwargs
        )
    )
    scripted = _scripted_round_trip(net, tmp_path / "model.ts")
    report = export_onnx(net, tmp_path / "model.onnx", spatial_size=size)
    assert report["outputs"] == [LOGITS, EVIDENCE_MAPS] and report["input"] == "image"
    assert all(v <= ATOL for v in report["max_abs_diff"].values()) and set(report["max_abs_diff"]) == {
        LOGITS,
        EVIDENCE_MAPS,
    }
    assert all(v > 0 for v in report["max_abs_value"].values())

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOGITS, EVIDENCE_MAPS]
    assert [i.name for i in session.get_inputs()] == ["image"]
    batch, *fixed = session.get_inputs()[0].shape
    assert isinstance(batch, str) and fixed == [2, *size]  # dynamic batch, fixed channels and spatial size

    x = torch.randn(3, 2, *size)  # a batch of another size than the export's example (dynamic batch axis)
    with torch.no_grad():
        eager = net(x)
        ts = scripted(x)
    onnx = run_onnx(tmp_path / "model.onnx", x)
    assert set(ts) == set(onnx) == {LOGITS, EVIDENCE_MAPS}
    assert tuple(eager[EVIDENCE_MAPS].shape) == (3, 3, *grid) and tuple(eager[LOGITS].shape) == (3, 3)
    for name in (LOGITS, EVIDENCE_MAPS):
        assert ts[name].shape == eager[name].shape and onnx[name].shape == tuple(eager[name].shape)
        assert _max_diff(ts[name], eager[name]) <= ATOL, name
        assert _max_diff(onnx[name], eager[name]) <= ATOL, name
        assert _max_diff(onnx[name], ts[name].numpy()) <= ATOL, name
    assert eager[EVIDENCE_MAPS].std() > 0  # a non-trivial comparison
    # completeness survives the export: each logit is the mean of its map
    assert _max_diff(onnx[LOGITS], onnx[EVIDENCE_MAPS].reshape(3, 3, -1).mean(-1)) <= 1e-5


@pytest.mark.parametrize("cls", [SoftCAM, BlackBox])
def test_scripted_logits_only_form_and_black_box(cls, tmp_path):
    net = _with_running_stats(cls("resnet18", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=QUARTER))
    x = torch.randn(2, 1, 64, 64)
    scripted = _scripted_round_trip(net, tmp_path / "plain.ts")  # return_maps=False: a plain classifier
    with torch.no_grad():
        logits = net(x)
        assert isinstance(scripted(x), torch.Tensor)
        torch.testing.assert_close(scripted(x), logits, atol=ATOL, rtol=0)
        net.return_maps = True
        out = _scripted_round_trip(net, tmp_path / "maps.ts")(x)
    assert set(out) == ({LOGITS, EVIDENCE_MAPS} if cls is SoftCAM else {LOGITS})
    torch.testing.assert_close(out[LOGITS], logits, atol=ATOL, rtol=0)


@needs_onnx
def test_black_box_onnx_has_logits_only_and_network_is_left_as_it_was(tmp_path):
    net = _with_running_stats(
        BlackBox("resnet18", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=QUARTER)
    )
    net.train()
    report = export_onnx(net, tmp_path / "sub" / "bb.onnx", spatial_size=(64, 64))
    assert report["outputs"] == [LOGITS] and report["max_abs_diff"][LOGITS] <= ATOL
    assert net.training and net.return_maps is False  # export switched to eval and maps, and back
    assert sorted(os.listdir(tmp_path / "sub")) == ["bb.onnx"]  # nothing else left behind
    # an export that fails its check writes nothing: the previous file stays as it was
    before = (tmp_path / "sub" / "bb.onnx").read_bytes()
    with pytest.raises(RuntimeError, match=r"differ from the network's by more than .*atol=-1.0.*nothing was written"):
        export_onnx(net, tmp_path / "sub" / "bb.onnx", spatial_size=(64, 64), atol=-1.0)
    assert sorted(os.listdir(tmp_path / "sub")) == ["bb.onnx"] and (tmp_path / "sub" / "bb.onnx").read_bytes() == before
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        expected = net.eval()(x)
    got = run_onnx(tmp_path / "sub" / "bb.onnx", x)
    assert list(got) == [LOGITS] and _max_diff(got[LOGITS], expected) <= ATOL


@needs_onnx
def test_onnx_dynamic_spatial_axes(tmp_path):
    net = _with_running_stats(
        SoftCAM("resnet18", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=STRIDE8)
    )
    export_onnx(net, tmp_path / "any_size.onnx", spatial_size=(32, 32), dynamic_spatial=True)
    x = torch.randn(1, 1, 40, 72)  # another size than the export's example
    net.return_maps = True
    with torch.no_grad():
        eager = net(x)
    got = run_onnx(tmp_path / "any_size.onnx", x)
    assert got[EVIDENCE_MAPS].shape == (1, 2, 5, 9)
    assert _max_diff(got[EVIDENCE_MAPS], eager[EVIDENCE_MAPS]) <= ATOL and _max_diff(got[LOGITS], eager[LOGITS]) <= ATOL
    import onnxruntime as ort

    batch, channels, *spatial = ort.InferenceSession(str(tmp_path / "any_size.onnx")).get_inputs()[0].shape
    assert channels == 1 and all(isinstance(s, str) for s in [batch, *spatial])


# ---------------------------------------------------------------------------------------------- unsupported cases


def test_onnx_export_refuses_torchscript_and_other_modules(tmp_path):
    net = SoftCAM("resnet18", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=QUARTER)
    with pytest.raises(TypeError, match="not a TorchScript module"):
        export_onnx(torch.jit.script(net), tmp_path / "m.onnx", spatial_size=(64, 64))
    with pytest.raises(TypeError, match="SoftCAM or BlackBox networks, got Linear"):
        export_onnx(nn.Linear(2, 2), tmp_path / "m.onnx", spatial_size=(64, 64))
    with pytest.raises(
        ValueError, match=r"spatial_size must have spatial_dims=2 entries \(the network's\), got \[64, 64, 64\]"
    ):
        export_onnx(net, tmp_path / "m.onnx", spatial_size=(64, 64, 64))
    with pytest.raises(ValueError, match=r"too small for resnet18: every spatial size must be >= 32, got \(16, 64\)"):
        export_onnx(net, tmp_path / "m.onnx", spatial_size=(16, 64))
    assert not os.path.exists(tmp_path / "m.onnx")


class _DataDependentTrunk(nn.Module):
    """A custom trunk with Python control flow on tensor values: eager works, torch.export cannot trace it."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=32, padding=1)

    def forward(self, x):
        if x.mean() > 0:
            return self.conv(x)
        return self.conv(-x)


@needs_onnx
def test_onnx_export_of_an_untraceable_backbone_is_a_clear_error(tmp_path):
    net = SoftCAM("resnet18", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=QUARTER)
    net.backbone.features = _DataDependentTrunk(1, net.backbone.out_channels)
    assert net.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 2)  # eager is fine
    with pytest.raises(
        RuntimeError, match=r"ONNX export of SoftCAM\(resnet18, spatial_dims=2\) failed: .*traceable by torch.export"
    ):
        export_onnx(net, tmp_path / "m.onnx", spatial_size=(64, 64))
    assert not os.path.exists(tmp_path / "m.onnx")


# ---------------------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("cls", [SoftCAM, BlackBox])
def test_wrong_channel_count_names_expected_and_got(cls):
    net = cls("resnet18", spatial_dims=2, in_channels=3, num_classes=2, backbone_kwargs=QUARTER).eval()
    match = (
        r"expects input x of shape \[B, 3, H, W\] \(4 dimensions\), got \(2, 1, 64, 64\): 1 input channels, expected 3"
    )
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(2, 1, 64, 64))
    # the same message from the TorchScript model (TorchScript re-raises it as torch.jit.Error)
    with pytest.raises(torch.jit.Error, match=r"ValueError: SoftCAM\(|ValueError: BlackBox\("):
        torch.jit.script(net)(torch.zeros(2, 1, 64, 64))
    with pytest.raises(torch.jit.Error, match=match):
        torch.jit.script(net)(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"got \(2, 3, 64, 64, 64\): 5 dimensions, expected 4"):
        net(torch.zeros(2, 3, 64, 64, 64))


@pytest.mark.parametrize(
    "backbone,spatial_dims,kwargs,shape,match",
    [
        ("resnet18", 2, QUARTER, (1, 1, 31, 64), r"every spatial size must be >= 32, got \(31, 64\)"),
        ("resnet18", 3, STRIDE8, (1, 1, 8, 7, 8), r"every spatial size must be >= 8, got \(8, 7, 8\)"),
        (
            "resnet18",
            3,
            {**STRIDE8, "conv1_t_stride": (1, 1, 2)},
            (1, 1, 8, 8, 8),
            r"the spatial sizes must be >= \(8, 8, 16\), got \(8, 8, 8\)",
        ),
        ("vgg11", 2, SMALL_VGG, (1, 1, 64, 31), r"every spatial size must be >= 32, got \(64, 31\)"),
        ("densenet121", 2, {}, (1, 1, 28, 28), r"every spatial size must be >= 32, got \(28, 28\)"),
    ],
)
@pytest.mark.parametrize("cls", [SoftCAM, BlackBox])
def test_input_below_minimum_size_names_size_and_minimum(cls, backbone, spatial_dims, kwargs, shape, match):
    net = cls(backbone, spatial_dims=spatial_dims, in_channels=1, num_classes=2, backbone_kwargs=kwargs).eval()
    with pytest.raises(ValueError, match=f"input x is too small for {backbone}: " + match):
        net(torch.zeros(shape))
    # at the minimum size the network runs, and its grid has at least one cell per axis
    minimum = net.backbone.min_input_shape()
    with torch.no_grad():
        out = net(torch.zeros(2, 1, *minimum))
    assert out.shape == (2, 2)
    if cls is SoftCAM:
        net.return_maps = True
        with torch.no_grad():
            assert all(s >= 1 for s in net(torch.zeros(1, 1, *minimum))[EVIDENCE_MAPS].shape[2:])


def test_minimum_size_check_is_scriptable_and_the_backbones_really_fail_below_it():
    net = SoftCAM("vgg11", spatial_dims=2, in_channels=1, num_classes=2, backbone_kwargs=SMALL_VGG).eval()
    with pytest.raises(
        torch.jit.Error, match=r"ValueError: input x is too small for vgg11: every spatial size must be >= 32"
    ):
        torch.jit.script(net)(torch.zeros(1, 1, 31, 31))
    # without the check, the trunks themselves fail just below their minimum: VGG's five pools empty the grid,
    # DenseNet's three transitions after a stride-4 stem do so below 29 px
    with pytest.raises(RuntimeError):
        net.backbone(torch.zeros(1, 1, 31, 31))
    dense = SoftCAM("densenet121", spatial_dims=2, in_channels=1, num_classes=2).eval()
    with pytest.raises(RuntimeError), torch.no_grad():
        dense.backbone(torch.zeros(1, 1, 28, 28))
