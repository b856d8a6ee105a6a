"""Explanation metrics on hand-built maps whose right answer is known, in 2D and 3D."""

import math
import warnings

import pytest
import torch
from conftest import metric_settings
from ignite.engine import Engine

from monai_softcam.metrics.explanation import (
    HIGHER_IS_BETTER,
    ExplanationMetrics,
    ExplanationSettings,
    explanation_values,
)
from monai_softcam.metrics.faithfulness import curve_auc, deletion_curve
from monai_softcam.metrics.localisation import (
    _empty_to_nan,
    activation_consistency,
    activation_precision,
    activation_sensitivity,
    completeness_error,
    energy_pointing_game,
    gini,
    pointing_game,
    topk_localisation_precision,
)
from monai_softcam.metrics.statistics import summarize
from monai_softcam.networks import SoftCAM, upsample_map

LOCALISATION = [activation_precision, activation_sensitivity, energy_pointing_game, pointing_game]


def _box(shape, lo, hi):
    """[1, *shape] bool mask, True in the box [lo, hi) on every axis."""
    mask = torch.zeros(1, *shape, dtype=torch.bool)
    mask[(slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


@pytest.mark.parametrize("shape", [(40, 48), (24, 22, 28)])
def test_map_on_the_mask_scores_best_and_off_the_mask_worst(shape):
    dims = len(shape)
    mask = _box(shape, [4] * dims, [14] * dims)
    elsewhere = _box(shape, [18] * dims, [24] * dims)
    on = mask.float() * 3.0 - 0.5  # signed: negative outside
    off = elsewhere.float() * 3.0 - 0.5
    for metric in LOCALISATION:
        assert metric(on, mask).item() == pytest.approx(1.0), metric.__name__
        assert metric(off, mask).item() == pytest.approx(0.0), metric.__name__
    # half the evidence inside: precision 1/2, the whole annotation covered: sensitivity 1
    both = mask.float() + elsewhere.float() * (mask.sum() / elsewhere.sum())  # equal mass in and out
    assert activation_precision(both, mask).item() == pytest.approx(0.5, abs=1e-5)
    assert energy_pointing_game(both, mask).item() == pytest.approx(0.5, abs=1e-5)
    assert activation_sensitivity(on, mask).item() == pytest.approx(1.0)
    # a map at half strength over half the annotation: sensitivity 1/4 when min-max makes the peak 1
    half = torch.zeros(1, *shape)
    half[(slice(None), slice(4, 9)) + tuple(slice(4, 14) for _ in range(dims - 1))] = 0.5
    half[(0,) + tuple([19] * dims)] = 1.0  # the peak, outside the mask
    assert activation_sensitivity(half, mask).item() == pytest.approx(0.25)
    size = 5
    assert topk_localisation_precision(on, mask, k=1, patch=size, stride=2)[0, 0] == 1.0
    assert topk_localisation_precision(off, mask, k=1, patch=size, stride=2)[0, 0] == 0.0


def test_topk_ranks_patches_and_suppresses_overlaps():
    mask = _box((64, 64), (0, 0), (20, 64))  # the first 20 rows are annotated
    heat = torch.zeros(1, 64, 64)
    heat[0, 2:10, 2:10] = 3.0  # strongest, inside
    heat[0, 40:48, 40:48] = 2.0  # outside
    heat[0, 5:13, 40:48] = 1.0  # inside
    precision = topk_localisation_precision(heat, mask, k=3, patch=8, stride=2)
    assert precision[0].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    # more patches requested than fit: the precision of all that fit
    many = topk_localisation_precision(heat, mask, k=80, patch=8, stride=8)  # only 8 x 8 = 64 patches fit
    assert many.shape == (1, 80) and many[0, -1] == many[0, 63] == pytest.approx(24 / 64)
    with pytest.raises(ValueError, match="patch 80 is larger"):
        topk_localisation_precision(heat, mask, patch=80)


def test_pointing_game_tolerance():
    mask = _box((20, 20), (5, 5), (10, 10))
    near = torch.zeros(1, 20, 20)
    near[0, 11, 7] = 1.0  # two pixels below the box
    assert pointing_game(near, mask).item() == 0.0
    assert pointing_game(near, mask, tolerance=2).item() == 1.0


def test_empty_masks_are_excluded_and_counted_bad_input_is_named():
    mask = torch.stack([_box((16, 16), (2, 2), (6, 6))[0], torch.zeros(16, 16, dtype=torch.bool)])
    maps = torch.rand(2, 16, 16)
    for metric in LOCALISATION:
        values = metric(maps, mask)
        assert math.isfinite(values[0].item()) and math.isnan(values[1].item()), metric.__name__
    assert torch.isnan(topk_localisation_precision(maps, mask, k=2, patch=4)[1]).all()
    summary = summarize(activation_precision(maps, mask))
    assert (summary["n"], summary["n_excluded"]) == (1, 1)
    assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
    with pytest.raises(ValueError, match=r"masks of shape \(2, 8, 8\) do not match the maps of shape \(2, 16, 16\)"):
        activation_precision(maps, torch.ones(2, 8, 8))
    broken = maps.clone()
    broken[1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] contain NaN or inf"):
        activation_precision(broken, mask)
    # a map without positive evidence points at nothing: the worst value, not NaN
    assert activation_precision(-torch.ones(1, 16, 16), mask[:1]).item() == 0.0
    assert activation_precision(torch.zeros(1, 16, 16), mask[:1]).item() == 0.0


def test_empty_to_nan_blanks_whole_rows_of_one_or_k_values():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 1, 1] = masks[2, 3, 3] = True
    one = _empty_to_nan(torch.tensor([0.5, 0.25, 1.0]), masks)
    assert one[0] == 0.5 and math.isnan(one[1]) and one[2] == 1.0
    values = torch.arange(6.0).reshape(3, 2)
    k = _empty_to_nan(values, masks)
    assert torch.equal(k[[0, 2]], values[[0, 2]]) and torch.isnan(k[1]).all()
    assert not torch.isnan(values).any()  # the input is left as it was


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("shape", [(20, 24), (12, 14, 10)])
def test_explanation_values_is_every_metric_under_one_name(shape):
    torch.manual_seed(0)
    dims = len(shape)
    maps = torch.randn(3, *shape)
    masks = torch.cat(
        [
            _box(shape, [2] * dims, [8] * dims),
            _box(shape, [6] * dims, [10] * dims),
            torch.zeros(1, *shape, dtype=torch.bool),
        ]
    )
    positive = torch.tensor([True, False, True])
    values = explanation_values(
        maps, masks[:, None], positive, metric_settings(topk=3, patch=5, stride=2, pointing_tolerance=1)
    )
    expected = {
        "consistency": activation_consistency(maps, positive),
        "gini": gini(maps),
        "activation_precision": activation_precision(maps, masks),
        "activation_sensitivity": activation_sensitivity(maps, masks),
        "energy_pointing_game": energy_pointing_game(maps, masks),
        "pointing_game": pointing_game(maps, masks, 1),
        "topk_precision": topk_localisation_precision(maps, masks, 3, 5, 2)[:, -1],
    }
    assert list(values) == list(expected) and set(values) <= set(HIGHER_IS_BETTER)
    for name, v in values.items():
        assert v.shape == (3,) and v.dtype == torch.float32, name
        _same(v, expected[name])
    assert all(math.isnan(values[n][2]) for n in expected if n not in ("consistency", "gini"))  # empty mask
    assert list(explanation_values(maps, None, positive, metric_settings())) == ["consistency", "gini"]
    # maps on a coarser grid: consistency and Gini as given, localisation on the masks' grid
    coarse = torch.randn(3, *[s // 4 for s in shape])
    values = explanation_values(coarse, masks, positive, metric_settings(topk=3, patch=5, stride=2))
    up = upsample_map(coarse, shape)
    _same(values["gini"], gini(coarse))
    _same(values["consistency"], activation_consistency(coarse, positive))
    _same(values["activation_precision"], activation_precision(up, masks))
    _same(values["topk_precision"], topk_localisation_precision(up, masks, 3, 5, 2)[:, -1])
    # a patch larger than the maps is reduced to their smallest side
    big = explanation_values(maps, masks, positive, metric_settings(topk=1, patch=1000, stride=2))["topk_precision"]
    _same(big, topk_localisation_precision(maps, masks, 1, min(shape), 2)[:, -1])
    with pytest.raises(ValueError, match=r"maps of shape \(3, 5\) cannot be brought to the grid of the masks"):
        explanation_values(torch.randn(3, 5), masks, positive, metric_settings())


def test_ignite_metric_reports_the_means_of_explanation_values():
    torch.manual_seed(1)
    maps = torch.randn(4, 2, 6, 6)
    masks = torch.zeros(4, 1, 24, 24)
    masks[:2, :, 4:12, 4:12] = 1
    labels = torch.tensor([1, 0, 1, 0])
    metric = ExplanationMetrics(
        output_transform=lambda out: out,
        settings=metric_settings(explained_class=1, topk=2, patch=5, stride=3, pointing_tolerance=2),
    )
    metric.reset()
    metric.update((maps[:3], masks[:3], labels[:3], None))
    metric.update((list(maps[3:]), list(masks[3:]), labels[3:], None))
    results = metric.compute()
    expected = explanation_values(
        maps[:, 1], masks, labels == 1, metric_settings(topk=2, patch=5, stride=2 + 1, pointing_tolerance=2)
    )
    expected["mean_abs_evidence"] = maps[:, 1].abs().flatten(1).mean(1)  # the maps' size, beside the metrics
    assert list(metric.values) == list(expected)
    for name, v in expected.items():
        _same(metric.values[name], v)
        assert results[name] == summarize(v)["mean"] or math.isnan(results[name])
    assert results["explanation_excluded"] == 2


def test_gini_consistency_completeness():
    assert gini(torch.ones(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = -5.0
    assert gini(one_hot).item() == pytest.approx(1 - 1 / 16)
    assert gini(torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])).item() == pytest.approx(0.5)
    assert gini(torch.zeros(1, 3, 3)).item() == 0.0

    signed = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]])
    maps = torch.cat([torch.ones(1, 2, 2), torch.ones(1, 2, 2), signed])
    consistency = activation_consistency(maps, torch.tensor([True, False, True]))
    assert consistency.tolist() == pytest.approx([1.0, 0.0, 0.5])

    net = SoftCAM("resnet10", in_channels=1, num_classes=3, return_maps=True).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 64))
    assert completeness_error(out["logits"], out["evidence_maps"]).max() < 1e-5
    assert completeness_error(out["logits"] + 0.1, out["evidence_maps"]).min() == pytest.approx(0.1, abs=1e-5)


class OneRegionModel(torch.nn.Module):
    """Reads only the mean of the tile [8:16, 8:16]: class 1 when it is bright."""

    def forward(self, x):
        region = x[:, :, 8:16, 8:16].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(region), 20 * region - 5], dim=1)


def test_deletion_and_insertion_on_a_model_that_reads_one_region():
    images = torch.zeros(2, 1, 64, 64)
    images[:, :, 8:16, 8:16] = 1.0
    images[1, :, 40:48, 40:48] = 1.0  # a bright distractor the model ignores
    right = torch.zeros(2, 64, 64)
    right[:, 8:16, 8:16] = 1.0
    wrong = torch.zeros(2, 64, 64)
    wrong[:, 40:48, 40:48] = 1.0
    wrong[:, 8:16, 8:16] = -1.0  # ranked last
    target = torch.tensor([1, 1])
    model = OneRegionModel()
    good = deletion_curve(model, images, right, target, patch=8, steps=5)
    bad = deletion_curve(model, images, wrong, target, patch=8, steps=5)
    assert good.shape == (2, 6) and torch.allclose(good[:, 0], torch.ones(2))
    p0 = torch.sigmoid(torch.tensor(15.0))
    assert good[:, 1:].max() == pytest.approx(float(torch.sigmoid(torch.tensor(-5.0)) / p0), rel=1e-4)
    assert torch.allclose(bad, torch.ones(2, 6))
    assert (curve_auc(good) < 0.15).all() and (curve_auc(bad) == 1).all()
    inserted = deletion_curve(model, images, right, target, patch=8, steps=5, insertion=True)
    missed = deletion_curve(model, images, wrong, target, patch=8, steps=5, insertion=True)
    assert torch.allclose(inserted[:, 1:], torch.ones(2, 5)) and (curve_auc(inserted) > 0.85).all()
    assert (curve_auc(missed) < 0.05).all()
    # 3D: the same with a cube
    volume = torch.zeros(1, 1, 16, 16, 16)
    volume[..., :8, :8, :8] = 1.0
    cube = torch.zeros(1, 16, 16, 16)
    cube[:, :8, :8, :8] = 1.0

    def reads_cube(x):
        return torch.stack([torch.zeros(x.shape[0]), 20 * x[:, :, :8, :8, :8].mean(dim=(1, 2, 3, 4)) - 5], 1)

    curve = deletion_curve(reads_cube, volume, cube, torch.tensor([1]), patch=8, steps=2)
    assert curve[0, 1] < 0.01


def test_ignite_metric_over_batches():
    metric = ExplanationMetrics(
        output_transform=lambda out, batch: out, settings=metric_settings(explained_class=1, topk=1, patch=4, stride=2)
    )
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "activation_precision")
    mask = _box((32, 32), (0, 0), (16, 16))[0]
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 1, :2, :2] = 1.0  # lesion image: the lesion class's evidence in the annotated quarter
    maps[1, 1] = -1.0  # healthy image: evidence against the lesion everywhere
    logits = maps.flatten(2).mean(2)
    batches = [(maps, torch.stack([mask, torch.zeros_like(mask)])[:, None], torch.tensor([1, 0]), logits)]
    state = engine.run(batches, max_epochs=1)
    m = state.metrics
    assert 0.85 < m["activation_precision"] < 1.0  # the bilinear upsampling spills a little past the quarter
    assert m["pointing_game"] == 1.0 and m["topk_precision"] == 1.0
    assert m["consistency"] == 1.0 and m["explanation_excluded"] == 1
    assert m["completeness_error"] < 1e-6


def test_explanation_output_reads_evaluator_output_and_batch():
    from monai_softcam.metrics.explanation import explanation_output

    outputs = [
        {"evidence_maps": torch.zeros(2, 4, 4), "label": torch.tensor(i), "logits": torch.zeros(2)} for i in (0, 1)
    ]
    batch = [{"mask": torch.zeros(1, 8, 8), "image": torch.zeros(1, 8, 8)} for _ in range(2)]
    maps, masks, labels, logits = explanation_output(outputs, batch)
    assert len(maps) == len(masks) == len(logits) == 2 and [int(v) for v in labels] == [0, 1]
    maps, masks, labels, logits = explanation_output([{"label": 1, "logits": torch.zeros(2)}], [{"image": 0}])
    assert maps is None and masks is None  # a black box without annotations
    metric = ExplanationMetrics()
    metric.update((None, None, [1], None))
    assert metric.compute() == {}


def test_paired_difference_ci_and_permutation_test():
    from monai_softcam.metrics.statistics import paired_difference

    rng = torch.Generator().manual_seed(0)
    b = torch.rand(200, generator=rng)
    a = b + 0.05 + 0.01 * torch.randn(200, generator=rng)  # a is better on every image by ~0.05
    a[:3] = float("nan")  # images without a value are left out of the pairs
    shifted = paired_difference(a, b)
    assert shifted["n"] == 197 and shifted["mean"] == pytest.approx(float((a - b)[3:].mean()))
    assert shifted["ci_low"] < shifted["mean"] < shifted["ci_high"] and shifted["ci_low"] > 0.04
    assert shifted["p_value"] < 0.001
    # the paired test sees what the marginal intervals cannot: a small shift under a large spread
    assert summarize(a)["ci_low"] < summarize(b)["ci_high"]
    noise = paired_difference(b + 0.01 * torch.randn(200, generator=rng), b)
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p_value"] > 0.05
    assert math.isnan(paired_difference(torch.full((3,), float("nan")), torch.ones(3))["p_value"])
    with pytest.raises(ValueError, match="one value per image"):
        paired_difference(torch.ones(3), torch.ones(4))


def test_old_keyword_names_still_work_with_a_warning_and_settings_are_checked():
    maps, mask = torch.rand(2, 16, 16), torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    with pytest.warns(FutureWarning, match=r"topk_localisation_precision\(patch_size=...\) is deprecated: use patch="):
        old = topk_localisation_precision(maps, mask, k=2, patch_size=4, stride=2)
    torch.testing.assert_close(old, topk_localisation_precision(maps, mask, k=2, patch=4, stride=2), equal_nan=True)
    with pytest.raises(TypeError, match="got both 'patch_size' and its new name 'patch'"):
        topk_localisation_precision(maps, mask, patch_size=4, patch=4)
    with pytest.warns(FutureWarning, match=r"ExplanationMetrics\(explained_class=..., patch_size=...\) is deprecated"):
        metric = ExplanationMetrics(explained_class=1, patch_size=5)
    assert (metric.settings.explained_class, metric.settings.patch, metric.settings.dilation) == (1, 5, 1)
    with pytest.raises(TypeError, match=r"ExplanationMetrics\(\) got unexpected keyword argument\(s\) \['patchsize'\]"):
        ExplanationMetrics(patchsize=5)
    with pytest.raises(ValueError, match="topk_patch=5 contradicts patch=6|deletion_patch=6 contradicts patch=5"):
        ExplanationSettings.resolve(None, {"topk_patch": 5, "deletion_patch": 6}, "explanation_report")
    for bad, message in (
        ({"dilation": 4}, "dilation must be an odd integer >= 1, got 4"),
        ({"topk": 0}, "topk must be an integer >= 1, got 0"),
        ({"patch": 2.5}, "patch must be an integer >= 1, got 2.5"),
        ({"paper_threshold": float("nan")}, "paper_threshold must be a finite number, got nan"),
    ):
        with pytest.raises(ValueError, match=message):
            metric_settings(**bad)


def test_a_deprecated_name_passed_as_none_is_not_given():
    """A bundle config passes its deprecated keys through as null unless the user sets them
    (explain#paper_topk_threshold beside explain#paper_thresholds): null is "not given"; a value
    is renamed with a warning; both given is refused."""
    from monai_softcam.utils import renamed_keywords

    @renamed_keywords(old="new")
    def f(new=None):
        return new

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(old=None, new={"a": 1}) == {"a": 1} and f(old=None) is None
    with pytest.warns(FutureWarning, match=r"f\(old=...\) is deprecated: use new=..."):
        assert f(old=0.5, new=None) == 0.5
    with pytest.raises(TypeError, match="got both 'old' and its new name 'new'"):
        f(old=0.5, new={"a": 1})
