"""The explanation report called from Python (the bundle test covers it through the bundle, in 2D):
its three steps on 3D volumes, the same per-image values as the bundle's ExplanationMetrics, and
the gallery renderer it shares with the evaluation's picture."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import metric_settings
from ignite.engine import Engine

from monai_softcam.explanation_report import aggregate, collect, explanation_report
from monai_softcam.metrics.explanation import CURVE_METRICS, ExplanationMetrics, explanation_values
from monai_softcam.networks import BlackBox, SoftCAM
from monai_softcam.visualize import GalleryCase, evidence_gallery, render_gallery


def test_report_on_3d_volumes_with_two_models(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(4, 1, 24, 24, 24)
    masks = torch.zeros(4, 1, 24, 24, 24)
    masks[:2, :, 4:10, 4:10, 4:10] = 1  # two "lesion" volumes, two healthy ones (empty masks)
    images[:2] += masks[:2]
    loader = [
        {"image": images[:3], "label": torch.tensor([1, 1, 0]), "mask": masks[:3]},
        {"image": images[3:], "label": torch.tensor([0]), "mask": masks[3:]},
    ]
    kwargs = {"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True}
    models = [
        {
            "name": "softcam",
            "network": SoftCAM("resnet10", 3, 1, 2, return_maps=True, backbone_kwargs=kwargs),
            "methods": ["softcam", "gradcam"],
        },
        {
            "name": "blackbox",
            "network": BlackBox("resnet10", 3, 1, 2, backbone_kwargs=kwargs),
            "methods": ["gradcam++"],
        },
    ]
    report = explanation_report(
        models,
        loader,
        str(tmp_path),
        ["healthy", "lesion"],
        settings=metric_settings(explained_class=1, topk=2, patch=6, stride=3, pointing_tolerance=1, deletion_steps=3),
        gallery_cases=2,
        sanity_cases=2,
        progress=False,
    )
    assert report["images"] == 4
    ap = report["explanation"]["softcam"]["softcam"]["activation_precision"]
    assert (ap["n"], ap["n_excluded"]) == (2, 2)
    assert set(report["explanation"]["blackbox"]) == {"gradcam++"}
    assert report["settings"]["topk"] == 2 and "topk_precision" in report["explanation"]["softcam"]["gradcam"]
    assert len(report["curves"]["softcam/softcam"]["deletion"]) in (0, 4)  # 3 steps + the start
    assert json.load(open(tmp_path / "report.json"))["images"] == 4
    for name in ("gallery.png", "faithfulness.png", "sanity.png", "index.html", "table.md", "paired.md", "paired.csv"):
        assert os.path.getsize(tmp_path / name) > 100
    # paired differences: SoftCAM's maps against each other model/method, image by image
    paired = {(r["versus"], r["metric"]): r for r in report["paired"] if r["softcam"] == "softcam/softcam"}
    assert {v for v, _ in paired} == {"softcam/gradcam", "blackbox/gradcam++"}
    ap = paired[("softcam/gradcam", "activation_precision")]
    assert ap["n"] == 2 and 0 < ap["p_value"] <= 1 and ap["ci_low"] <= ap["mean"] <= ap["ci_high"]


class FullResolutionSoftCAM(nn.Module):
    """A SoftCAM-style model whose evidence maps are on the image grid (logit = the map's mean), so
    that the report's ``softcam`` maps and the evaluation's maps are the very same tensors."""

    def __init__(self):
        super().__init__()
        self.evidence = nn.Conv2d(1, 2, 5, padding=2)

    def forward(self, x):
        maps = self.evidence(x)
        return {"logits": maps.flatten(2).mean(2), "evidence_maps": maps}


SETTINGS = metric_settings(explained_class=1, topk=2, patch=7, stride=3, pointing_tolerance=2, deletion_steps=2)


@pytest.mark.parametrize("coarse", [False, True])
def test_report_and_evaluation_metric_give_the_same_per_image_values(coarse):
    torch.manual_seed(0)
    images = torch.rand(5, 1, 32, 32)
    masks = torch.zeros(5, 1, 32, 32)
    masks[:3, :, 6:18, 8:20] = 1
    images[:3] += masks[:3]
    labels = torch.tensor([1, 1, 1, 0, 0])
    loader = [
        {"image": images[:3], "label": labels[:3], "mask": masks[:3]},
        {"image": images[3:], "label": labels[3:], "mask": masks[3:]},
    ]
    if coarse:
        network = SoftCAM("resnet18", 2, 1, 2, return_maps=True, backbone_kwargs={"widen_factor": 0.25})
    else:
        network = FullResolutionSoftCAM()
    network.eval()
    collected = collect(
        [{"name": "m", "network": network, "methods": ["softcam"]}],
        loader,
        SETTINGS,
        gallery_cases=0,
        sanity_cases=0,
        progress=False,
    )
    report_values = collected.values[("m", "softcam")]

    metric = ExplanationMetrics(settings=replace(SETTINGS, protocol="both"))
    engine = Engine(lambda e, batch: {"label": batch["label"], **network(batch["image"])})
    metric.attach(engine, "activation_precision")
    engine.run(loader, max_epochs=1)

    assert set(metric.values) == set(report_values) | {"completeness_error", "mean_abs_evidence"}
    assert report_values["activation_precision"].isnan().sum() == 2  # the two healthy images
    # SoftCAM's coarse maps: the evaluation measures consistency and Gini on the network's grid,
    # the report on the image grid; the localisation metrics see the same upsampled maps
    same = [n for n in report_values if not coarse or n not in ("consistency", "gini")]
    for name in same:
        torch.testing.assert_close(metric.values[name], report_values[name], rtol=0, atol=0, equal_nan=True, msg=name)
    assert metric.values["completeness_error"].max() < 1e-5
    aggregated = aggregate(collected, ["healthy", "lesion"])
    assert set(aggregated.per_case[("m", "softcam")]) == set(report_values) | {
        "deletion_auc",
        "insertion_auc",
        "paper_deletion_auc",
    }
    curve = {f"{n}@{k}" for n in CURVE_METRICS for k in range(1, SETTINGS.topk_curve + 1)}
    assert {n for n in report_values if n.startswith("paper_")} == {
        "paper_consistency",
        "paper_activation_precision",
        "paper_activation_sensitivity",
        "paper_topk_precision",
        "paper_topk_precision_tp",
        "paper_topk_patches",
    } | curve
    for k in (SETTINGS.topk,):  # the curve's point at the reported k is the reported top-k
        for n in CURVE_METRICS:
            torch.testing.assert_close(report_values[f"{n}@{k}"], report_values[n], equal_nan=True)
    # both are explanation_values of the explained class's maps
    with torch.no_grad():
        out = network(images)
    direct = explanation_values(
        out["evidence_maps"][:, 1], masks, labels == 1, metric_settings(topk=2, patch=7, stride=3, pointing_tolerance=2)
    )
    for name in direct:
        torch.testing.assert_close(metric.values[name], direct[name], rtol=0, atol=0, equal_nan=True, msg=name)


def _tile(picture, case_row, column, tile, caption_h=14, gap=6):
    a = np.asarray(picture)
    top = case_row * (tile + caption_h + gap) + caption_h
    return a[top : top + tile, column * tile : (column + 1) * tile]


def test_gallery_groups_share_a_colour_scale_and_3d_shows_the_first_groups_strongest_slice():
    image = torch.zeros(1, 8, 8, 8)
    strong = torch.zeros(8, 8, 8)
    strong[2, 3, 5] = 2.0  # the first group's evidence: slice 5
    half = torch.zeros(8, 8, 8)
    half[2, 3, 5] = 1.0
    other = torch.zeros(8, 8, 8)
    other[4, 4, 1] = 9.0  # the second group's evidence: slice 1, not shown
    mask = torch.zeros(8, 8, 8, dtype=torch.bool)
    mask[5:7, 5:7, 5] = True
    case = GalleryCase(
        image, "a very long title indeed", [[("strong", strong), ("half", half)], [("other", other)]], mask
    )
    picture = render_gallery([case, GalleryCase(image[..., 0], "2D", [])], tile=None, caption_chars=4)
    assert picture.size == (4 * 8, 2 * (8 + 14) + 6)
    s, h, o = (_tile(picture, 0, k, 8) for k in (1, 2, 3))
    # (x, y) arrays are drawn transposed: pixel [y, x]
    assert s[3, 2, 0] > 2 * h[3, 2, 0] - 5 > 0  # red, half the opacity at half the value (one scale)
    plain = _tile(picture, 0, 0, 8)  # the image: black, with the mask's outline of slice 5
    assert (plain[5, 5] == (255, 220, 0)).all() and plain[3, 2].max() == 0
    assert np.array_equal(o, plain)  # the other group has no evidence on slice 5: nothing drawn
    assert render_gallery([]).size == (160, 160)


def test_evidence_gallery_is_the_renderer_with_one_group_of_class_maps():
    torch.manual_seed(0)
    image, maps = torch.rand(1, 16, 16), torch.randn(2, 4, 4)
    mask = torch.zeros(1, 16, 16)
    mask[0, 2:9, 3:7] = 1
    picture = evidence_gallery(
        [image], [maps], ["a", "b"], labels=[1], probs=[torch.tensor([0.25, 0.75])], masks=[mask], tile=32
    )
    up = torch.nn.functional.interpolate(maps[None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    case = GalleryCase(image, "label: b", [[("a p=0.25", up[0]), ("b p=0.75", up[1])]], mask[0] > 0)
    assert np.array_equal(np.asarray(picture), np.asarray(render_gallery([case], tile=32)))
