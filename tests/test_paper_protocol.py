"""The paper's metric protocol (``protocol: paper``) against OpenCV, which the reference's evaluation
code uses for its resizing and dilation, and against hand-built maps whose answer is known."""

import numpy as np
import pytest
import torch
from conftest import metric_settings

from monai_softcam.metrics.explanation import ExplanationMetrics, explanation_values, is_paired
from monai_softcam.metrics.faithfulness import _tile_order, deletion_curve
from monai_softcam.metrics.paper import (
    cubic_resize,
    dilate_masks,
    paper_activation_precision,
    paper_dilation,
    paper_point_grid,
    paper_topk_counts,
    paper_upsample,
    paper_values,
)
from monai_softcam.metrics.statistics import summarize

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless, in the test extra) is the reference's resizer")


def test_reference_settings_scale_with_the_image():
    assert paper_point_grid((512, 512), 33, 8) == (60, 60)  # the reference's 60 x 60 point grid
    assert paper_dilation(512) == 9 and paper_dilation(96) == 3 and paper_dilation(32) == 1
    with pytest.raises(ValueError, match="do not fit"):
        paper_point_grid((16, 16), 33, 8)


@pytest.mark.parametrize(
    "src, dst", [((16, 16), (60, 60)), ((60, 60), (512, 512)), ((96, 96), (46, 46)), ((12, 20), (33, 7))]
)
def test_cubic_resize_is_opencvs_inter_cubic(src, dst):
    maps = np.random.default_rng(0).normal(size=(2, *src)).astype(np.float32)
    ours = cubic_resize(torch.from_numpy(maps), dst).numpy()
    theirs = np.stack(
        [cv2.resize(m, (dst[1], dst[0]), interpolation=cv2.INTER_CUBIC) for m in maps]
    )  # cv2: (width, height)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # OpenCV computes its weights in float32


def test_paper_upsample_goes_through_the_point_grid_only_from_coarser_maps():
    coarse = torch.randn(1, 16, 16)
    via = cv2.resize(
        cv2.resize(coarse[0].numpy(), (60, 60), interpolation=cv2.INTER_CUBIC),
        (512, 512),
        interpolation=cv2.INTER_CUBIC,
    )
    np.testing.assert_allclose(paper_upsample(coarse, (512, 512), (60, 60))[0].numpy(), via, atol=1e-4)
    fine = torch.randn(1, 128, 128)  # finer than the point grid: straight to the image grid
    direct = cv2.resize(fine[0].numpy(), (512, 512), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(paper_upsample(fine, (512, 512), (60, 60))[0].numpy(), direct, atol=1e-4)


def test_dilation_is_opencvs_with_a_square_of_ones():
    rng = np.random.default_rng(1)
    masks = rng.random((2, 64, 70)) > 0.995
    ours = dilate_masks(torch.from_numpy(masks), 9).numpy()
    theirs = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8), iterations=1) > 0 for m in masks])
    np.testing.assert_array_equal(ours, theirs)
    assert torch.equal(dilate_masks(torch.from_numpy(masks), 1), torch.from_numpy(masks))
    volume = torch.zeros(1, 9, 9, 9, dtype=torch.bool)
    volume[0, 4, 4, 4] = True
    assert int(dilate_masks(volume, 3).sum()) == 27
    with pytest.raises(ValueError, match="odd"):
        dilate_masks(torch.from_numpy(masks), 4)


def test_paper_activation_precision_is_the_references_pipeline_on_opencv():
    """cubic 16 -> 60 -> 512, ReLU, min-max, mass inside the 9x9-dilated mask over the total mass."""
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(3, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 512, 512), np.uint8)
    masks[:, 100:180, 200:260] = 1
    masks[2] = 0  # an empty mask: NaN, as every localisation metric
    ours = paper_activation_precision(torch.from_numpy(maps), torch.from_numpy(masks), (60, 60), dilation=9)
    for b in range(2):
        up = cv2.resize(
            cv2.resize(maps[b], (60, 60), interpolation=cv2.INTER_CUBIC), (512, 512), interpolation=cv2.INTER_CUBIC
        )
        a = np.maximum(up, 0)
        a = (a - a.min()) / (a.max() - a.min())
        grown = cv2.dilate(masks[b], np.ones((9, 9), np.uint8))
        assert float(ours[b]) == pytest.approx(float((a * grown).sum() / a.sum()), rel=1e-4)
    assert torch.isnan(ours[2])


def _reference_topk(points, covered, k, threshold, p):
    """The reference's greedy selection written out plainly (border blocks cut, not wrapped)."""
    rows, cols = points.shape
    visited_blocks, chosen = set(), []
    for flat in sorted(range(points.size), key=lambda i: (-points.flat[i], i)):
        if len(chosen) >= k or not points.flat[flat] > threshold:
            break
        r, c = divmod(flat, cols)
        if (r, c) not in visited_blocks:
            chosen.append((r, c))
        for dr in range(-(p // 2), p - p // 2):
            for dc in range(-(p - p // 2 - 1), p // 2 + 1):
                visited_blocks.add((r + dr, c + dc))
    return sum(bool(covered[r, c]) for r, c in chosen), len(chosen)


def test_topk_counts_point_values_above_the_threshold_with_the_references_suppression():
    # 33 px patches on a stride of 8 in 512 px images: a 60 x 60 point grid, 4 x 4 blocks
    rng = np.random.default_rng(3)
    maps = rng.normal(scale=2.0, size=(4, 60, 60)).astype(np.float32)  # already on the point grid
    masks = np.zeros((4, 512, 512), bool)
    masks[:, 40:200, 300:420] = True
    masks[3, :] = False
    masks[3, 0, 0] = True
    covered = torch.nn.functional.max_pool2d(torch.from_numpy(masks)[:, None].float(), 33, stride=8)[:, 0].numpy() > 0
    for k, threshold in [(5, 1.0), (30, 1.0), (30, 4.0), (3, -10.0)]:
        hits, found = paper_topk_counts(torch.from_numpy(maps), torch.from_numpy(masks), k, 33, 8, threshold)
        for b in range(4):
            assert (float(hits[b]), float(found[b])) == _reference_topk(maps[b], covered[b], k, threshold, 4), (
                k,
                threshold,
                b,
            )
    # the block is the reference's asymmetric one: rows r-2..r+1, columns c-1..c+2
    one = np.zeros((1, 60, 60), np.float32)
    one[0, 30, 30] = 9.0
    for (r, c), chosen in [
        ((31, 30), False),
        ((32, 30), True),
        ((30, 32), False),
        ((30, 33), True),
        ((28, 30), False),
        ((27, 30), True),
        ((30, 29), False),
        ((30, 28), True),
    ]:
        m = one.copy()
        m[0, r, c] = 8.0
        _, found = paper_topk_counts(torch.from_numpy(m), torch.zeros(1, 512, 512, dtype=torch.bool), 5, 33, 8, 1.0)
        assert int(found[0]) == (2 if chosen else 1), (r, c)


def test_paper_values_pool_and_the_tp_variant():
    maps = torch.zeros(3, 60, 60)
    maps[0, 10, 10], maps[0, 40, 40] = 5.0, 4.0  # one patch on the lesion, one off it
    maps[1, 10, 10] = 3.0  # one patch, on the lesion
    maps[2, 10, 10] = 0.5  # below the threshold: no patch, NaN
    masks = torch.zeros(3, 512, 512, dtype=torch.bool)
    masks[:, 85:100, 85:100] = True
    values = paper_values(
        maps,
        masks,
        predicted=torch.tensor([True, False, True]),
        topk=5,
        patch=33,
        stride=8,
        paper_threshold=1.0,
        dilation=1,
    )
    assert values["paper_topk_precision"][:2].tolist() == [0.5, 1.0] and torch.isnan(values["paper_topk_precision"][2])
    assert values["paper_topk_patches"].tolist() == [2.0, 1.0, 0.0]
    pooled = summarize(values["paper_topk_precision"], weights=values["paper_topk_patches"])
    assert pooled["mean"] == pytest.approx(2 / 3)  # (1 + 1) hits over (2 + 1) patches, not the mean 0.75 of the ratios
    assert values["paper_topk_precision_tp"][0] == 0.5 and torch.isnan(values["paper_topk_precision_tp"][1:]).all()
    assert torch.isnan(paper_values(maps, masks, None)["paper_topk_precision_tp"]).all()
    # a pooled ratio and its weight have no per-image difference: the report and the benchmark table leave them unpaired
    assert not any(is_paired(n) for n in ("paper_topk_precision", "paper_topk_precision_tp", "paper_topk_patches"))
    assert all(is_paired(n) for n in ("paper_activation_precision", "paper_deletion_auc", "activation_precision"))


def test_explanation_values_protocols_and_the_ignite_metric():
    maps = torch.randn(4, 8, 8)
    masks = torch.zeros(4, 1, 64, 64)
    masks[:2, :, 10:30, 10:30] = 1
    positive = torch.tensor([True, True, False, False])
    default = explanation_values(maps, masks, positive, metric_settings(patch=9, stride=2))
    paper = explanation_values(maps, masks, positive, metric_settings(patch=9, stride=2, protocol="paper", dilation=3))
    both = explanation_values(maps, masks, positive, metric_settings(patch=9, stride=2, protocol="both", dilation=3))
    assert not any(n.startswith("paper_") for n in default) and set(both) == set(default) | set(paper)
    assert "activation_precision" not in paper and "paper_activation_precision" in paper
    with pytest.raises(ValueError, match="protocol"):
        explanation_values(maps, masks, positive, metric_settings(protocol="reference"))
    with pytest.raises(ValueError, match="protocol"):
        ExplanationMetrics(settings=metric_settings(protocol="reference"))
    metric = ExplanationMetrics(
        settings=metric_settings(explained_class=1, patch=9, stride=2, protocol="paper", dilation=3)
    )
    evidence = torch.stack([-maps, maps], dim=1)
    metric.update((evidence, masks, torch.tensor([1, 1, 0, 0]), evidence.flatten(2).mean(2)))
    result = metric.compute()
    v = metric.values
    assert result["paper_topk_precision"] == pytest.approx(
        summarize(v["paper_topk_precision"], weights=v["paper_topk_patches"])["mean"], nan_ok=True
    )
    assert "activation_precision" not in result and result["explanation_excluded"] == 2


class _BrightTile(torch.nn.Module):
    """Class 1 while the 8 x 8 tile at [8:16, 8:16] stays bright."""

    def forward(self, x):
        return torch.stack([torch.zeros(x.shape[0]), 20 * x[:, :, 8:16, 8:16].mean(dim=(1, 2, 3)) - 5], dim=1)


def test_paper_deletion_ranks_tiles_by_max_and_scores_accuracy():
    images = torch.zeros(1, 1, 32, 32)
    images[..., 8:16, 8:16] = 1.0
    maps = torch.zeros(1, 32, 32)
    maps[0, 9, 9] = 10.0  # the model's tile: one strong pixel (high max, low mean)
    maps[0, 16:24, 16:24] = 1.0  # another tile: uniform, a higher mean (1.0 > 10 / 64)
    by_max, _ = _tile_order(maps, 8, "max")
    by_mean, _ = _tile_order(maps, 8, "mean")
    assert by_max[0, 0] == 1 * 4 + 1 and by_mean[0, 0] == 2 * 4 + 2
    correct = deletion_curve(
        _BrightTile(), images, maps, torch.tensor([1]), patch=8, steps=3, rank="max", score="correct"
    )
    assert correct.tolist() == [[1.0, 0.0, 0.0, 0.0]]  # assigned to class 1 until the first tile goes
    late = deletion_curve(
        _BrightTile(), images, maps, torch.tensor([1]), patch=8, steps=3, rank="mean", score="correct"
    )
    assert late.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="score"):
        deletion_curve(_BrightTile(), images, maps, torch.tensor([1]), score="accuracy")
    with pytest.raises(ValueError, match="rank"):
        _tile_order(maps, 8, "median")


def test_paper_values_in_3d_find_the_lesion():
    maps = torch.full((2, 4, 4, 4), -1.0)
    maps[:, 1, 1, 1] = 5.0  # evidence in the cell over the lesion
    masks = torch.zeros(2, 1, 32, 32, 32, dtype=torch.bool)
    masks[0, :, 8:16, 8:16, 8:16] = True
    values = paper_values(
        maps, masks, torch.tensor([True, True]), topk=3, patch=4, stride=2, paper_threshold=1.0, dilation=3
    )
    assert values["paper_topk_precision"][0] == 1.0 and values["paper_topk_patches"][0] >= 1
    assert values["paper_activation_precision"][0] > 0.5
    assert torch.isnan(values["paper_activation_precision"][1])  # empty mask
