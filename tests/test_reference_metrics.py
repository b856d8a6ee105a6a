"""The paper's explanation metrics as its reference evaluation code computes them (github:kdjoumessi/SoftCAM at
b5e9048, ``utils/.ipynb_checkpoints/tools-checkpoint.py`` and ``fully_convnet_tools-checkpoint.py``): numbers that the
reference's own functions produced on fixed maps, masks and a fixed network (``fixtures/reference_metrics_b5e9048.json``,
which gives each function's file and line, the environment and the modules stubbed to import it), reproduced by
this project's functions."""

import json
import os

import numpy as np
import pytest
import torch

from monai_softcam.metrics.faithfulness import deletion_curve
from monai_softcam.metrics.paper import (
    paper_activation_precision,
    paper_activation_sensitivity,
    paper_consistency,
    paper_topk_curve,
    paper_topk_points,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "reference_metrics_b5e9048.json")


@pytest.fixture(scope="module")
def reference():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def _maps(spec, names=None):
    names = names or spec["order"]
    return torch.stack([torch.as_tensor(np.asarray(spec["values"][n], dtype=np.float32)) for n in names])


def _masks(spec, names):
    masks = torch.zeros(len(names), *spec["size"], dtype=torch.bool)
    for i, name in enumerate(names):
        for row0, col0, row1, col1 in spec["boxes"][name]:
            masks[i, row0:row1, col0:col1] = True
    return masks


def test_the_fixture_names_the_reference_and_what_was_stubbed(reference):
    assert reference["reference"] == "github:kdjoumessi/SoftCAM" and reference["commit"].startswith("b5e9048")
    assert {"torchcam", "pytorch_grad_cam", "captum"} <= {m.split(".")[0] for m in reference["stubbed_modules"]}
    for part in ("activation_precision_v3", "topk_precision", "deletion", "local_to_global"):
        assert reference[part]["file"].startswith("utils/.ipynb_checkpoints/") and reference[part]["line"] > 0


def test_activation_precision_and_sensitivity_are_the_references(reference):
    """get_activation_precision_v3: the 16 x 16 map resized cubically to 512, ReLU, min-max, mass within the mask over
    the map's mass (precision) and over the mask's area (sensitivity). The reference's cubic resize goes from the map
    it is given straight to 512, so the point grid here is the map's own (no 60-point step). An empty mask is 0 there
    and NaN (left out) here."""
    part = reference["activation_precision_v3"]
    names = part["outputs"]["order"]
    maps, masks = _maps(part["inputs"]["maps"], names), _masks(part["inputs"]["masks"], names)
    precision = paper_activation_precision(maps, masks, point_grid=maps.shape[1:])
    sensitivity = paper_activation_sensitivity(maps, masks, point_grid=maps.shape[1:])
    for i, name in enumerate(names):
        expected = part["outputs"]["unrounded"][name]
        if not masks[i].any():
            assert expected["precision"] == 0.0 and torch.isnan(precision[i]) and torch.isnan(sensitivity[i])
            continue
        assert precision[i].item() == pytest.approx(expected["precision"], abs=2e-5), name
        assert sensitivity[i].item() == pytest.approx(expected["sensitivity"], abs=2e-5), name


def test_the_topk_curve_is_the_references_k_1_to_29(reference):
    """get_topk_precision with topK_patches: for k = 1..29 the same patches are chosen on every image and the pooled
    counts (all images, and the images predicted positive: the reference's ``score_tp``) are equal. The chest X-ray
    indexing (``xchest=True``, ``mask[row, col]``) is this project's; the reference reads fundus masks transposed."""
    part = reference["topk_precision"]
    spec = part["inputs"]
    names = spec["maps"]["order"]
    maps, masks = _maps(spec["maps"], names), _masks(spec["masks"], names)
    out = part["outputs"]["xchest_true"]
    assert out["k_values"] == list(range(1, 30))
    hits, found = paper_topk_curve(maps, masks, 29, spec["ps"], spec["s"], spec["thresh"])
    predicted = torch.tensor(spec["pred"], dtype=torch.bool)
    for k in range(1, 30):
        per_image = out["per_k_per_image_n_patches_n_hits"][str(k)]
        assert [[int(found[i, k - 1]), int(hits[i, k - 1])] for i in range(len(names))] == [
            per_image[n] for n in names
        ], k
        assert [int(hits[:, k - 1].sum()), int(found[:, k - 1].sum())] == out["pooled_hits_patches"][k - 1]
        tp = [int(hits[predicted, k - 1].sum()), int(found[predicted, k - 1].sum())]
        assert tp == out["pooled_hits_patches_pred1"][k - 1]
        assert round(tp[0] / tp[1], 3) == out["score_tp"][k - 1]


def test_the_patch_choice_is_the_references_wrap_around_and_chains_included(reference):
    """topK_patches on hand-made 60 x 60 point maps: the asymmetric 4 x 4 block, suppression by points that were
    visited but not chosen, blocks that wrap across a row's end (the reference suppresses flat indices), the strict
    threshold; and on the fixed maps, the 29 points chosen on each image."""
    part = reference["topk_precision"]["outputs"]
    for name, case in part["topK_patches_cases"].items():
        if name == "ties":  # equal values: the reference's order is torch.topk's, unspecified
            continue
        grid = torch.zeros(60, 60)
        for row, col, value in case["cells_row_col_value"]:
            grid[row, col] = value
        for k, result in case["result"].items():
            chosen = [divmod(i, 60) for i in paper_topk_points(grid, int(k))]
            assert [list(c) for c in chosen] == result["chosen_row_col"], (name, k)
    spec = reference["topk_precision"]["inputs"]["maps"]
    points = torch.nn.functional.interpolate(_maps(spec)[:, None], size=(60, 60), mode="bicubic", align_corners=False)
    for i, name in enumerate(spec["order"]):
        assert paper_topk_points(points[i, 0], 29) == part["topK_direct_k29"][name]["flat_indices"], name


def test_the_deletion_is_the_references(reference):
    """get_deletion_analysis: 33 px tiles deleted (set to 0 after normalisation) in the order of the reference's patch
    scores, each image scored by whether the network still assigns it to class 1; the mean over the images after i
    tiles is the reference's ``perform[i]`` (its ``perform[0]`` is a constant 1: here every image starts assigned)."""
    part = reference["deletion"]
    spec = part["inputs"]
    names = spec["order"]
    images = torch.stack(
        [
            torch.as_tensor(np.repeat(np.repeat(np.asarray(spec["low_res"][n], np.float32), 11, axis=1), 11, axis=2))
            for n in names
        ]
    )
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        network[0].weight.copy_(torch.tensor(spec["conv_weight"]))
        network[0].bias.copy_(torch.tensor(spec["conv_bias"]))
        logits = network(images)
    for i, name in enumerate(names):
        assert logits[i].tolist() == pytest.approx(part["outputs"]["unoccluded_logits"][name], abs=1e-5)
    # a map whose tile maxima rank the tiles as the reference's patch scores (tile (row, col) at its pixels)
    maps = torch.zeros(len(names), *images.shape[2:])
    for i, name in enumerate(names):
        for rank, ((row, col), _) in enumerate(spec["patch_score"][name]):
            maps[i, row : row + spec["ps"], col : col + spec["ps"]] = float(len(spec["patch_score"][name]) - rank)
    with torch.no_grad():
        curve = deletion_curve(
            network,
            images,
            maps,
            torch.ones(len(names)),
            patch=spec["ps"],
            steps=spec["k"] - 1,
            rank="max",
            score="correct",
        )
    assert curve.mean(0).tolist() == pytest.approx(part["outputs"]["perform"], abs=1e-12)


@pytest.mark.parametrize("case,positive,size", [("i1_s16", True, 16), ("i0_s16", False, 16), ("i1_s32", True, 32)])
def test_consistency_is_the_references_share_of_cells(reference, case, positive, size):
    """get_local_to_global_positive_41: the map resized cubically to s x s, the share of cells above 0 (the disease
    class's map, i = 1) or below 0 (the healthy class's, i = 0) on the diseased images; per image and its mean."""
    part = reference["local_to_global"]
    names = part["inputs"]["disease_imgs"]
    spec = part["inputs"]["disease_maps" if positive else "healthy_maps"]
    maps = _maps(spec, names)
    ours = paper_consistency(maps, torch.ones(len(names), dtype=torch.bool), grid=(size, size))
    if not positive:  # the healthy class's map on diseased images: evidence of the right sign is negative
        ours = paper_consistency(maps, torch.zeros(len(names), dtype=torch.bool), grid=(size, size))
    expected = part["outputs"]["v41"][case]
    per_image = expected["dic_img_score"]["SoftCAM"]
    assert ours.tolist() == pytest.approx([per_image[n] for n in names], abs=1e-12)
    mean, std = expected["prop_dic"]["SoftCAM"]
    assert round(float(ours.double().mean()), 3) == mean and round(float(ours.double().std(unbiased=False)), 3) == std
