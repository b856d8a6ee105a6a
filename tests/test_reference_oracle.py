"""The paper's training as its reference implementation does it (github:kdjoumessi/SoftCAM at b5e9048): numbers
that the reference's own code produced on fixed inputs (``fixtures/reference_softcam_b5e9048.json``, which says
how and from which file and line), reproduced by this project's functions."""

import json
import os

import numpy as np
import pytest
import torch

from monai_softcam.losses import EvidencePenalty, SoftCAMLoss
from monai_softcam.optim import ClippedCosineLR
from monai_softcam.transforms import RandResizedCropd

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "reference_softcam_b5e9048.json")


@pytest.fixture(scope="module")
def reference():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def test_the_fixture_names_the_reference_commit(reference):
    assert reference["reference"] == "github:kdjoumessi/SoftCAM"
    assert reference["commit"].startswith("b5e9048")


def test_the_penalty_is_the_references_term_per_sample(reference):
    maps = torch.tensor(reference["penalty"]["maps"], dtype=torch.float64)
    terms = reference["penalty"]["per_sample"]
    lambda1, lambda2 = 5e-5, 7e-5
    for b, term in enumerate(terms):  # one image: exactly the reference's lambda1*||A||_1 + lambda2*||A||_2
        ours = EvidencePenalty(lambda1=lambda1, lambda2=lambda2)(maps[b : b + 1])
        assert ours.item() == pytest.approx(lambda1 * term["l1"] + lambda2 * term["l2"], rel=1e-12)
        assert EvidencePenalty(lambda2=1.0)(maps[b : b + 1]).item() == pytest.approx(term["l2"], rel=1e-12)
    # a batch: the mean of each sample's reference term, i.e. the reference's first-sample term in expectation
    expected = sum(lambda1 * t["l1"] + lambda2 * t["l2"] for t in terms) / len(terms)
    assert EvidencePenalty(lambda1=lambda1, lambda2=lambda2)(maps).item() == pytest.approx(expected, rel=1e-12)
    # the loss uses the same default; the squared (ridge) form is an option on another scale
    assert SoftCAMLoss(lambda2=1.0).penalty(maps[:1]).item() == pytest.approx(terms[0]["l2"], rel=1e-12)
    squared = EvidencePenalty(lambda2=1.0, squared_l2=True)(maps[:1]).item()
    assert squared == pytest.approx(terms[0]["l2"] ** 2, rel=1e-12) and squared > 10 * terms[0]["l2"]


def test_the_paper_presets_schedule_is_the_references_epoch_by_epoch(reference):
    ref = reference["lr_per_epoch"]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=ref["lr0"], momentum=0.9, nesterov=True)
    schedule = ClippedCosineLR(optimizer, t_max=ref["t_max"], eta_min=ref["min_lr"], cosine_end=0.0)
    ours = []
    for _ in ref["values"]:
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert ours == pytest.approx(ref["values"], rel=1e-9)
    # the bundle's default (a cosine that ends at eta_min) is another schedule: it differs from the reference's
    default = ClippedCosineLR(torch.optim.SGD([param], lr=ref["lr0"]), t_max=ref["t_max"], eta_min=ref["min_lr"])
    assert default.get_last_lr()[0] == ref["values"][0]
    default.last_epoch = 25
    assert default.get_lr()[0] != pytest.approx(ref["values"][25], rel=1e-3)


def test_the_schedule_refuses_an_end_above_its_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match=r"cosine_end must be in \[0, eta_min = 0.0001\], got 0.001"):
        ClippedCosineLR(optimizer, t_max=50, eta_min=1e-4, cosine_end=1e-3)


def test_the_fundus_border_crop_is_the_references_on_a_fixed_image(tmp_path):
    """The EyePACS preprocessing of the paper (github:kdjoumessi/interpretable-sparse-activation at 2b3731f,
    external/crop.py): the same box on a generated fundus-like photograph with a black border, and the same
    picture after the 512-px resize up to the two resamplers (its LANCZOS, the bilinear anti-aliased one here)."""
    from data_helpers import fundus_with_border, write_png

    from monai_softcam.transforms import load_input
    from monai_softcam.transforms.spatial import fundus_border_box

    with open(os.path.join(os.path.dirname(__file__), "fixtures", "reference_fundus_crop_2b3731f.json")) as f:
        reference = json.load(f)
    assert reference["commit"].startswith("2b3731f")
    pixels = fundus_with_border()
    assert list(pixels.shape) == reference["input_shape"]
    path = write_png(str(tmp_path / "fundus.png"), pixels)
    image = load_input([512, 512], resize="none")({"image": path})["image"]  # [3, columns, rows] in [0, 1]
    assert fundus_border_box(image) == tuple(reference["box"])
    # the preset's resize: that box, stretched to 512 x 512
    out = load_input([512, 512], resize="border")({"image": path})["image"]
    picture = out.permute(2, 1, 0).numpy() * 255  # rows, columns, channel
    blocks = picture.reshape(16, 32, 16, 32, 3).mean(axis=(1, 3))
    assert abs(blocks - torch.tensor(reference["block_means"]).numpy()).max() < 2.0  # grey levels of 255
    # a photograph that is not wider than 1.2 x its height: the centred square of its height, as the reference
    square = torch.zeros(3, 700, 600)
    assert fundus_border_box(square) == (50, 0, 650, 600)
    assert fundus_border_box(torch.zeros(3, 500, 600)) == (0, 0, 500, 600)  # higher than wide: all of it


def test_the_border_crop_is_inverted_onto_the_input(tmp_path):
    """Maps come back on the input's own grid through the border crop (Invertd): the window in place, zeros on the
    border, and the affine of each output cell on the input."""
    from data_helpers import fundus_with_border, write_png
    from monai.transforms import Invertd

    from monai_softcam.transforms import load_input

    path = write_png(str(tmp_path / "fundus.png"), fundus_with_border())
    load = load_input([64, 64], resize="border")
    item = load({"image": path})
    out = item["image"]
    source = load_input([64, 64], resize="none")({"image": path})["image"]
    left, upper = 89, 31  # the box of the fixture: columns 89-588, rows 31-531
    # output cell (i, j) at input index (left + (i + 0.5) * 500 / 64 - 0.5, upper + (j + 0.5) * 501 / 64 - 0.5)
    index = torch.linalg.solve(source.affine, out.affine)
    expected = torch.eye(4, dtype=index.dtype)
    expected[0, 0], expected[0, 3] = 500 / 64, left + 0.5 * 500 / 64 - 0.5
    expected[1, 1], expected[1, 3] = 501 / 64, upper + 0.5 * 501 / 64 - 0.5
    assert torch.allclose(index, expected)
    back = Invertd(keys="image", transform=load, orig_keys="image")({"image": out.clone()})["image"]
    assert tuple(back.shape) == (3, 720, 540)
    assert float(back[:, :left].abs().max()) == 0.0 and float(back[:, :, :upper].abs().max()) == 0.0
    assert float(back[:, 300, 280].min()) > 0.1  # inside the disc


CROP_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "reference_random_resized_crop_tv0291.json")


def test_the_random_resized_crop_draws_torchvisions_windows():
    """The window statistics of ``RandResizedCropd`` match torchvision's ``RandomResizedCrop.get_params`` (the
    reference's first augmentation) on a square image (a fundus photograph after the border crop), a wide OCT
    B-scan (where no try fits and the centre part of aspect 1.3 is always taken) and a tall image."""
    with open(CROP_FIXTURE, encoding="utf-8") as f:
        reference = json.load(f)
    crop = RandResizedCropd(keys="image", scale=reference["scale"], ratio=reference["ratio"])
    crop.set_random_state(7)
    n = 20000
    for shape, ref in reference["shapes"].items():
        height, width = (int(v) for v in shape.split("x"))
        windows = np.array([crop.window(width, height) for _ in range(n)], dtype=np.float64)
        left, top, w, h = windows[:, 0] / width, windows[:, 1] / height, windows[:, 2] / width, windows[:, 3] / height
        ours = {
            "height_fraction": h,
            "width_fraction": w,
            "area_fraction": h * w,
            "top_fraction": top,
            "left_fraction": left,
        }
        for name, values in ours.items():
            std = ref.get(f"{name}_std", values.std())
            tolerance = 5 * np.hypot(std / np.sqrt(ref["n"]), values.std() / np.sqrt(n)) + 1e-9
            assert abs(values.mean() - ref[f"{name}_mean"]) <= tolerance, (shape, name)
        whole = np.mean((w == 1.0) & (h == 1.0))
        rate = ref["whole_image_rate"]
        assert abs(whole - rate) <= 5 * np.sqrt(max(rate * (1 - rate), 1e-12) * (1 / n + 1 / ref["n"])) + 1e-9, shape
    # the draw decides the content: the window, resampled to the image's size, every key alike
    image = torch.arange(64 * 48, dtype=torch.float32).reshape(1, 64, 48)
    both = RandResizedCropd(keys=["image", "mask"], prob=1.0, mode=["bilinear", "nearest"])
    both.set_random_state(3)
    out = both({"image": image, "mask": image.clone()})
    assert out["image"].shape == image.shape and out["mask"].shape == image.shape
    assert torch.allclose(out["image"].mean(), out["mask"].mean(), rtol=0.02)
    assert not torch.equal(out["image"], image)
    # MONAI's 2D layout is [C, columns, rows]: a wide B-scan of 768 columns x 496 rows never fits a try and keeps
    # its centre 645 columns (aspect 1.3), all rows
    columns = torch.arange(768, dtype=torch.float32).reshape(1, 768, 1).expand(1, 768, 496).clone()
    wide = RandResizedCropd(keys="image", prob=1.0)
    out = wide({"image": columns})["image"]
    assert out.shape == columns.shape
    assert out[0, 0, 0].item() == pytest.approx(61.0, abs=0.5) and out[0, -1, 0].item() == pytest.approx(705.0, abs=0.5)
