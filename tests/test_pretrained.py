import os

import pytest
import torch
import torch.nn.functional as F
from torchvision_reference import make_weights, reference_input

from monai_softcam.networks import BlackBox, PretrainedWeightsError, SoftCAM, build_backbone, load_pretrained_backbone

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision_reference.pt")


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE, weights_only=True)["archs"]


def _save(state, tmp_path, name="weights.pth"):
    path = str(tmp_path / name)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg16", "vgg16_bn", "densenet121"])
def test_torchvision_state_dict_gives_torchvision_features(arch, reference, tmp_path):
    """Keys and shapes were recorded from torchvision; the trunk output must equal torchvision's."""
    spec = reference[arch]["spec"]
    path = _save(make_weights(spec), tmp_path)
    backbone = build_backbone(arch, spatial_dims=2, in_channels=3).eval()
    report = load_pretrained_backbone(backbone, path)
    assert report["ignored"] and all(k.split(".")[0] in {"fc", "classifier"} for k in report["ignored"])
    assert len(report["loaded"]) + len(report["ignored"]) == len(spec)
    with torch.no_grad():
        features = backbone.features(reference_input())
    torch.testing.assert_close(features, reference[arch]["features"], rtol=1e-4, atol=1e-5)


def test_pretrained_argument_and_ddp_wrapped_file(reference, tmp_path):
    state = {f"module.{k}": v for k, v in make_weights(reference["resnet18"]["spec"]).items()}
    path = _save({"state_dict": state}, tmp_path)
    net = SoftCAM("resnet18", num_classes=2, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            net.backbone.features(reference_input()), reference["resnet18"]["features"], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("cls", [SoftCAM, BlackBox])
def test_own_checkpoint_round_trips(cls, tmp_path):
    small = {"fc_width": 64}  # the classic black-box head's FC6 would hold 103 M weights at the default width
    src = cls("vgg11_bn", spatial_dims=2, in_channels=1, num_classes=3, backbone_kwargs=small).eval()
    path = _save(src.state_dict(), tmp_path)
    dst = cls("vgg11_bn", spatial_dims=2, in_channels=1, num_classes=3, pretrained=path, backbone_kwargs=small).eval()
    src_bb, dst_bb = src.backbone.state_dict(), dst.backbone.state_dict()
    assert src_bb.keys() == dst_bb.keys()
    for key in src_bb:
        torch.testing.assert_close(dst_bb[key], src_bb[key])
    # the class layer is always initialised fresh
    head = "head.evidence.weight" if cls is SoftCAM else "fc.weight"
    assert not torch.equal(src.state_dict()[head], dst.state_dict()[head])


def test_wrong_architecture_lists_offending_keys(reference, tmp_path):
    path = _save(make_weights(reference["resnet18"]["spec"]), tmp_path, "resnet18.pth")
    with pytest.raises(PretrainedWeightsError) as err:
        SoftCAM("resnet50", num_classes=2, pretrained=path)
    msg = str(err.value)
    assert "resnet18.pth does not fit the network Backbone(backbone=resnet50, spatial_dims=2, in_channels=3)" in msg
    assert (
        "shape mismatch" in msg and "layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs network (64, 64, 1, 1)" in msg
    )
    assert "missing keys" in msg and "features.layer1.0.conv3.weight" in msg


def test_unrelated_file_lists_unexpected_keys(reference, tmp_path):
    path = _save(make_weights(reference["densenet121"]["spec"]), tmp_path)
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys \(\d+\): features\.conv0\.weight"):
        load_pretrained_backbone(build_backbone("vgg11"), path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found: .*nope.pth"):
        SoftCAM("resnet18", pretrained=str(tmp_path / "nope.pth"))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(PretrainedWeightsError, match="corrupt.pth is not a readable PyTorch weight file"):
        SoftCAM("resnet18", pretrained=str(bad))
    not_state = _save({"epoch": 3}, tmp_path, "meta.pth")
    with pytest.raises(PretrainedWeightsError, match="meta.pth does not hold a state dict"):
        SoftCAM("resnet18", pretrained=not_state)


def test_inflation_to_3d_reproduces_2d_response(reference, tmp_path):
    state = make_weights(reference["resnet18"]["spec"])
    path = _save(state, tmp_path)
    backbone = build_backbone("resnet18", spatial_dims=3, in_channels=3).eval()
    report = load_pretrained_backbone(backbone, path)
    assert "features.conv1.weight" in report["inflated"]
    image = torch.rand(1, 3, 40, 40)
    volume = image.unsqueeze(2).repeat(1, 1, 9, 1, 1)  # identical slices along depth
    with torch.no_grad():
        out3d = backbone.features.conv1(volume)
    out2d = F.conv2d(image, state["conv1.weight"], stride=2, padding=3)
    # output slice 2 (stride 2) is centred on input slice 4 and its 7-tap kernel sees no depth padding
    torch.testing.assert_close(out3d[:, :, 2], out2d, rtol=1e-4, atol=1e-5)


def test_grey_input_adapts_first_convolution(reference, tmp_path):
    path = _save(make_weights(reference["resnet18"]["spec"]), tmp_path)
    grey = build_backbone("resnet18", spatial_dims=2, in_channels=1).eval()
    rgb = build_backbone("resnet18", spatial_dims=2, in_channels=3).eval()
    assert "features.conv1.weight" in load_pretrained_backbone(grey, path)["adapted"]
    load_pretrained_backbone(rgb, path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


def test_a_file_named_as_torchvision_names_it_must_have_that_hash(reference, tmp_path):
    """torchvision's file names carry the first digits of the file's SHA-256 (resnet18-f37072fd.pth); a file so named
    that has another hash (a partial download) is refused, by the loader and the training's check alike."""
    from monai_softcam.networks import checked_weight_file
    from monai_softcam.utils import sha256_file

    state = make_weights(reference["resnet18"]["spec"])
    good = tmp_path / "weights.pth"
    torch.save(state, good)
    named = tmp_path / f"resnet18-{sha256_file(good)[:8]}.pth"
    named.write_bytes(good.read_bytes())
    SoftCAM("resnet18", num_classes=2, pretrained=str(named))  # its name's hash: loaded
    partial = tmp_path / "resnet18-f37072fd.pth"
    partial.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(
        PretrainedWeightsError,
        match=r"resnet18-f37072fd.pth is not resnet18-f37072fd.pth: its SHA-256 starts with [0-9a-f]{8}, not f37072fd",
    ):
        SoftCAM("resnet18", num_classes=2, pretrained=str(partial))
    # the preset's expected file, under another name: checked against the expected name's hash
    assert checked_weight_file(str(named), expected=named.name) == str(named)
    with pytest.raises(PretrainedWeightsError, match=r"weights.pth is not resnet18-f37072fd.pth"):
        checked_weight_file(str(good), expected="resnet18-f37072fd.pth")
    assert checked_weight_file("none", expected="resnet18-f37072fd.pth") is None
    assert checked_weight_file(None) is None
