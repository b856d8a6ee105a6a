"""Evidence guidance (issue 33): known answers for the coverage, the two modes, the black box's CAM and the
input-gradient (RRR) baseline, and the run-fixed subset of annotated items."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from monai_softcam.guidance import (
    EvidenceGuidance,
    GuidanceInferer,
    black_box_cam,
    guidance_subset,
    guidance_term,
    guided_datalist,
    margin_evidence,
    mask_coverage,
    prepare_guided_batch,
)
from monai_softcam.losses import SoftCAMLoss
from monai_softcam.networks import EVIDENCE_MAPS, LOGITS, BlackBox, SoftCAM
from monai_softcam.regions import cell_coverage
from monai_softcam.settings import check_settings
from monai_softcam.transforms.spatial import map_grid_affine
from monai_softcam.utils import ConfigError


def _box_mask(shape, *spans):
    """``[1, 1, *shape]`` mask with ones on the box ``spans`` (one ``(start, stop)`` of voxels per axis)."""
    mask = torch.zeros(1, 1, *shape)
    mask[(0, 0, *(slice(a, b) for a, b in spans))] = 1
    return mask


# ---------------------------------------------------------------------------------------------- coverage


def test_coverage_of_a_box_that_cuts_cells_is_its_area_fraction_2d():
    # 32 x 32 pixels, 4 x 4 cells of 8 pixels; the box holds pixels 3..12 along the first axis (edges 3 to 13)
    # and 10..29 along the second (edges 10 to 30)
    coverage = mask_coverage(_box_mask((32, 32), (3, 13), (10, 30)), (4, 4))[0]
    # first axis: cell 0 = [0, 8) meets [3, 13) over 5 pixels, cell 1 = [8, 16) over 5, cells 2 and 3 not
    # second axis: cell 0 none, cell 1 = [8, 16) over [10, 16) = 6 pixels, cell 2 all 8, cell 3 [24, 30) = 6
    expected = torch.tensor([[0, 30, 40, 30], [0, 30, 40, 30], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64) / 64
    torch.testing.assert_close(coverage, expected, rtol=0, atol=1e-12)


def test_coverage_on_image_sizes_that_are_not_multiples_of_the_grid():
    # 30 pixels over 4 cells (7.5 pixels each, edges 0, 7.5, 15, 22.5, 30); 20 pixels over 3 cells (20/3 each)
    coverage = mask_coverage(_box_mask((30, 20), (3, 13), (5, 12)), (4, 3))[0]
    first = [4.5 / 7.5, 5.5 / 7.5, 0, 0]  # [3, 13) meets [0, 7.5) over 4.5 pixels, [7.5, 15) over 5.5
    second = [(20 / 3 - 5) / (20 / 3), (12 - 20 / 3) / (20 / 3), 0]  # [5, 12) meets [0, 6.67) and [6.67, 13.3)
    assert second == pytest.approx([0.25, 0.8, 0])
    torch.testing.assert_close(coverage, torch.tensor(np.outer(first, second)), rtol=0, atol=1e-12)


def test_coverage_of_a_box_in_3d():
    # 16 x 16 x 12 voxels, 2 x 2 x 3 cells of 8 x 8 x 4 voxels; box [2, 10) x all x [3, 9)
    coverage = mask_coverage(_box_mask((16, 16, 12), (2, 10), (0, 16), (3, 9)), (2, 2, 3))[0]
    first, second, third = [6 / 8, 2 / 8], [1, 1], [1 / 4, 4 / 4, 1 / 4]
    expected = torch.tensor(np.einsum("i,j,k->ijk", first, second, third))
    torch.testing.assert_close(coverage, expected, rtol=0, atol=1e-12)


def test_coverage_is_the_region_evidence_coverage_and_soft_masks_are_area_weighted():
    """One mechanism: the coverage of regions.cell_coverage (the label map's label 1), batched."""
    labels = (torch.rand(2, 1, 37, 29) > 0.6).long()
    coverage = mask_coverage(labels.float(), (5, 3))
    for b in range(2):
        matrix = map_grid_affine(np.eye(3), (37, 29), (5, 3)).numpy()  # identity input affine: map -> voxel index
        reference = cell_coverage(labels[b, 0].numpy(), (5, 3), matrix)[1]
        torch.testing.assert_close(coverage[b], torch.tensor(reference), rtol=0, atol=1e-12)
    soft = torch.full((1, 1, 16, 16), 0.3)
    torch.testing.assert_close(mask_coverage(soft, (4, 4)), torch.full((1, 4, 4), 0.3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- outside mode

#: 32 x 32 images, 4 x 4 cells; the lesion box covers cells (0, 1) and (0, 2) whole, cells (1, 1) and (1, 2) half
LESION = ((0, 12), (8, 24))


def test_outside_mode_gradient_is_on_positive_evidence_for_the_annotated_class_outside_the_annotation_only():
    maps = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    masks = torch.cat([_box_mask((32, 32), *LESION)] * 2)
    labels = torch.tensor([1, 0])  # image 1 has an annotation but another label: it contributes nothing
    term = guidance_term(maps, labels, masks, mode="outside", lambda_g=1.0)
    term.backward()
    coverage = mask_coverage(masks, (4, 4))[0].float()
    margin = (maps[0, 1] - maps[0, 0]).detach()  # two classes: the evidence for class 1 against class 0
    penalised = (margin > 0) & (coverage < 1)
    assert 0 < int(penalised.sum()) < 16 and int(((margin > 0) & (coverage == 1)).sum()) > 0
    expected = torch.zeros_like(maps)
    expected[0, 1] = penalised * (1 - coverage) / 16  # d/dA of (1/N) ReLU(A_1 - A_0) (1 - cov), one counted image
    expected[0, 0] = -expected[0, 1]
    torch.testing.assert_close(maps.grad, expected, rtol=0, atol=1e-7)
    # one gradient step moves evidence out of the penalised cells only, and lowers the term
    with torch.no_grad():
        stepped = maps - 0.5 * maps.grad
    moved = (stepped != maps).detach()
    assert torch.equal(moved[0, 1], penalised) and torch.equal(moved[0, 0], penalised) and not moved[1].any()
    assert ((stepped[0, 1] - stepped[0, 0])[penalised] < margin[penalised]).all()
    assert guidance_term(stepped, labels, masks) < term


def test_outside_mode_sees_evidence_against_the_other_class_and_takes_the_mean_of_several():
    """A softmax decides on logit differences: evidence *against* class 0 outside the annotation argues for class 1
    as much as evidence for class 1 does (a penalty on A_1 alone is undone that way)."""
    masks = _box_mask((32, 32), (0, 16), (0, 32))  # the first two rows of cells
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, 3, 3] = -2.0  # against class 0, outside the annotation
    assert guidance_term(maps, torch.tensor([1]), masks).item() == pytest.approx(2 / 16)
    assert margin_evidence(maps, 1)[0, 3, 3] == 2.0
    three = torch.zeros(1, 3, 4, 4)
    three[0, 2, 3, 3], three[0, 0, 3, 3], three[0, 1, 3, 3] = 3.0, 1.0, -1.0  # D_2 = 3 - (1 - 1) / 2 = 3
    assert guidance_term(three, torch.tensor([2]), masks, annotated_class=2).item() == pytest.approx(3 / 16)
    torch.testing.assert_close(
        margin_evidence(three, 2).mean(), three.mean((2, 3))[0, 2] - three.mean((2, 3))[0, :2].mean()
    )


def test_outside_mode_is_zero_when_the_evidence_lies_inside_the_annotation_or_the_image_does_not_count():
    masks = _box_mask((32, 32), *LESION)
    inside = (mask_coverage(masks, (4, 4)) == 1).float()  # cells (0, 1) and (0, 2)
    maps = torch.stack([-torch.ones(1, 4, 4), 3 * inside - (1 - inside)], dim=1)  # negative evidence outside
    assert guidance_term(maps, torch.tensor([1]), masks) == 0
    maps = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)], dim=1).requires_grad_(True)  # everywhere: penalised
    masks3 = torch.cat([masks] * 3)
    assert guidance_term(maps, torch.tensor([1, 1, 1]), masks3) > 0
    assert guidance_term(maps, torch.tensor([0, 0, 0]), masks3) == 0  # another class
    assert guidance_term(maps, torch.tensor([1, 1, 1]), masks3, eligible=torch.tensor([0, 0, 0])) == 0
    assert guidance_term(maps, torch.tensor([1, 1, 1]), torch.zeros_like(masks3)) == 0  # no annotation
    # a batch with no counted image: exactly 0, and a graph that backpropagates (zeros)
    term = guidance_term(maps, torch.tensor([0, 1, 0]), masks3, eligible=torch.tensor([True, False, True]))
    assert term.item() == 0.0 and term.requires_grad
    term.backward()
    assert torch.equal(maps.grad, torch.zeros_like(maps))
    # an uncounted image's maps never reach the term, not even as NaN
    nan_maps = torch.ones(2, 2, 4, 4)
    nan_maps[1] = float("nan")
    assert torch.isfinite(guidance_term(nan_maps, torch.tensor([1, 1]), masks3[:2], eligible=[True, False]))


def test_outside_mode_value_by_hand_and_the_mean_over_counted_images():
    maps = torch.zeros(3, 2, 2, 2)
    maps[0, 1] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    maps[1, 1] = torch.tensor([[2.0, -2.0], [2.0, 0.0]])
    maps[2, 1] = 10.0  # not eligible
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, :2, :4] = 1  # half of cell (0, 0)
    masks[1, 0, 4:, 4:] = 1  # cell (1, 1), whose evidence is 0
    masks[2] = 1
    # g_0 = (4 * 0.5) / 4 = 0.5; g_1 = (2 + 0 + 2 + 0) / 4 = 1 (negative evidence not penalised)
    term = guidance_term(maps, torch.tensor([1, 1, 1]), masks, eligible=torch.tensor([1, 1, 0]), lambda_g=0.5)
    assert term.item() == pytest.approx(0.5 * (0.5 + 1.0) / 2)
    # one output (a sigmoid model): evidence for class 1 is A_0, for class 0 it is -A_0
    single = torch.tensor([[[[1.0, -3.0], [0.0, 0.0]]]])
    corner = torch.zeros(1, 1, 8, 8)
    corner[0, 0, 4:, 4:] = 1
    assert guidance_term(single, torch.tensor([1]), corner).item() == pytest.approx(1 / 4)
    assert guidance_term(single, torch.tensor([0]), corner, annotated_class=0).item() == pytest.approx(3 / 4)


# ---------------------------------------------------------------------------------------------- avoid mode


def test_avoid_mode_gradient_is_on_any_evidence_of_any_class_inside_the_confounder_only():
    maps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    masks = torch.cat([_box_mask((32, 32), (20, 32), (26, 32)), torch.zeros(1, 1, 32, 32)])  # image 1: no mask
    term = guidance_term(maps, torch.tensor([0, 1]), masks, mode="avoid", lambda_g=1.0)
    term.backward()
    coverage = mask_coverage(masks, (4, 4))[0].float()  # cells (2, 3) one half x one quarter, (3, 3) one quarter
    assert int((coverage > 0).sum()) == 2
    expected = torch.zeros_like(maps)
    expected[0] = maps[0].sign() * coverage / (3 * 16)  # d/dA of (1/(K N)) |A| cov, for every class
    torch.testing.assert_close(maps.grad, expected, rtol=0, atol=1e-7)
    with torch.no_grad():
        stepped = maps - 0.5 * maps.grad
    moved = (stepped != maps).detach()
    assert torch.equal(moved[0], (coverage > 0).expand(3, 4, 4)) and not moved[1].any()
    assert (stepped[0].abs()[moved[0]] < maps[0].abs()[moved[0]]).all()  # evidence of either sign shrinks
    assert guidance_term(stepped, torch.tensor([0, 1]), masks, mode="avoid") < term


def test_guidance_in_3d_by_hand():
    maps = torch.stack([-2 * torch.ones(2, 2, 2), torch.ones(2, 2, 2)])[None]  # [1, 2, 2, 2, 2]
    masks = torch.zeros(1, 1, 16, 16, 8)
    masks[0, 0, :8] = 1  # the cells of first index 0: coverage 1; the others 0
    # outside, class 1: 4 uncovered cells of margin 1 - (-2) = 3 over 8 cells
    assert guidance_term(maps, torch.tensor([1]), masks).item() == pytest.approx(1.5)
    # avoid: (4 cells x |-2| + 4 cells x |1|) / (2 classes x 8 cells)
    assert guidance_term(maps, torch.tensor([0]), masks, mode="avoid").item() == pytest.approx(0.75)


def test_guidance_settings_and_input_checks():
    guidance = EvidenceGuidance.from_settings({"lambda": 0.1, "mode": "avoid", "mask_column": "m", "fraction": 0.25})
    assert (guidance.lambda_g, guidance.mode, guidance.active) == (0.1, "avoid", True)
    assert not EvidenceGuidance.from_settings(None).active
    maps, masks = torch.ones(2, 3, 2, 2), torch.ones(2, 1, 8, 8)
    assert guidance(maps, torch.tensor([0, 1]), masks).item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="mode must be one of"):
        EvidenceGuidance(1.0, mode="inside")
    with pytest.raises(ValueError, match="lambda must be a number >= 0"):
        EvidenceGuidance(-1.0)
    with pytest.raises(ValueError, match="masks must be"):
        guidance_term(maps, torch.tensor([0, 1]), torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        guidance_term(maps, torch.tensor([0, 1]), 2 * masks)
    with pytest.raises(ValueError, match="annotated_class 3"):
        guidance_term(maps, torch.tensor([0, 1]), masks, annotated_class=3)


# ---------------------------------------------------------------------------------------------- black box CAM

QUARTER = {"widen_factor": 0.25}  # output stride 32
EIGHTH_STRIDE8 = {"widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}  # output stride 8
#: (spatial_dims, backbone kwargs, input size): map grids 2 x 3 and 2 x 2 x 2
CAM_CASES = [(2, {"widen_factor": 0.125}, (64, 96)), (3, EIGHTH_STRIDE8, (16, 16, 16))]


def _twins(spatial_dims, kwargs):
    """A ResNet SoftCAM network and a black box with its backbone and class layer (tests/test_equivalence.py)."""
    softcam = SoftCAM("resnet18", spatial_dims, 2, 2, return_maps=True, backbone_kwargs=kwargs)
    with torch.no_grad():
        softcam.head.evidence.bias.copy_(torch.tensor([-0.2, 0.3]))  # class 1 ahead: a margin outside to penalise
    blackbox = BlackBox("resnet18", spatial_dims, 2, 2, backbone_kwargs=kwargs)
    blackbox.backbone.load_state_dict(softcam.backbone.state_dict())
    with torch.no_grad():
        blackbox.fc.weight.copy_(softcam.head.evidence.weight.flatten(1))
        blackbox.fc.bias.copy_(softcam.head.evidence.bias)
    return softcam, blackbox


@pytest.mark.parametrize("spatial_dims,kwargs,size", CAM_CASES)
def test_black_box_cam_guidance_equals_softcam_guidance_with_its_gradient(spatial_dims, kwargs, size):
    softcam, blackbox = _twins(spatial_dims, kwargs)
    x = torch.randn(3, 2, *size)
    masks = torch.zeros(3, 1, *size)
    masks[(0, 0, *(slice(s // 5, s // 2) for s in size))] = 1
    masks[(2, 0, *(slice(s // 3, s) for s in size))] = 1
    labels = torch.tensor([1, 1, 1])
    out, cam = softcam(x), black_box_cam(blackbox, x)
    assert not blackbox.backbone.features._forward_hooks  # the hook lived for the one forward pass
    torch.testing.assert_close(cam[LOGITS], cam[EVIDENCE_MAPS].flatten(2).mean(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(cam[EVIDENCE_MAPS], out[EVIDENCE_MAPS], rtol=1e-4, atol=1e-5)
    for mode in ("outside", "avoid"):
        term_softcam = guidance_term(out[EVIDENCE_MAPS], labels, masks, mode=mode)
        term_cam = guidance_term(cam[EVIDENCE_MAPS], labels, masks, mode=mode)
        assert term_softcam > 1e-3
        torch.testing.assert_close(term_cam, term_softcam, rtol=1e-5, atol=0)
        shared_softcam = [*softcam.backbone.parameters(), softcam.head.evidence.weight]
        shared_cam = [*blackbox.backbone.parameters(), blackbox.fc.weight]
        grads_softcam = torch.autograd.grad(term_softcam, shared_softcam, retain_graph=True)
        grads_cam = torch.autograd.grad(term_cam, shared_cam, retain_graph=True)
        assert all(g.abs().max() > 0 for g in grads_softcam[:3])  # the first convolution and batch norm
        for g_softcam, g_cam in zip(grads_softcam, grads_cam):
            torch.testing.assert_close(g_cam.reshape(g_softcam.shape), g_softcam, rtol=1e-4, atol=1e-6)


def test_black_box_cam_needs_a_linear_head_after_the_pooling():
    with pytest.raises(ValueError, match="not the mean of a map"):
        black_box_cam(BlackBox("vgg11", 2, 1, 2, backbone_kwargs={"fc_width": 8}), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="needs a BlackBox"):
        black_box_cam(SoftCAM("resnet18", 2, 1, 2, backbone_kwargs=QUARTER), torch.zeros(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------- RRR baseline


def _rrr(network, x, labels, masks, **settings):
    """The RRR term as a guided run computes it: the output of GuidanceInferer, then EvidenceGuidance."""
    guidance = EvidenceGuidance(settings.pop("lambda_g", 1.0), method="input_gradients", **settings)
    output = GuidanceInferer(guidance)(x, network)
    return guidance(output, labels, masks), output


def test_right_reasons_term_of_a_linear_model_by_hand():
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(2, 2, 4, 4)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :2] = 1
    masks[1, 0, 1:, 1:] = 1
    term, output = _rrr(net, x, torch.tensor([1, 1]), masks, lambda_g=2.0)
    with torch.no_grad():  # S = sum_k log p_k: dS/dx = sum_k v_k - K sum_j p_j v_j, with v the linear weights
        v = net[1].weight
        p = net(x).softmax(dim=1)
        d = (v.sum(0)[None] - 3 * p @ v).reshape(2, 2, 4, 4)
        outside = 1 - masks[:, 0]
        per_image = (d.pow(2).sum(1) * outside).flatten(1).sum(1) / outside.flatten(1).sum(1)
    torch.testing.assert_close(output["logits"], net(x))
    torch.testing.assert_close(term, 2.0 * per_image.mean(), rtol=1e-5, atol=0)
    # "outside" counts the annotated class only, as the evidence term does: image 0 of class 0 drops out
    term0, _ = _rrr(net, x, torch.tensor([0, 1]), masks, lambda_g=2.0)
    torch.testing.assert_close(term0, 2.0 * per_image[1], rtol=1e-5, atol=0)


def test_right_reasons_term_is_zero_for_a_whole_image_annotation_and_differentiable_otherwise():
    blackbox = BlackBox("resnet18", 2, 1, 2, backbone_kwargs={"widen_factor": 0.125})
    x = torch.randn(2, 1, 32, 32)
    labels = torch.tensor([1, 1])
    whole = torch.ones(2, 1, 32, 32)
    term, _ = _rrr(blackbox, x, labels, whole)
    assert term.item() == 0.0
    box = torch.cat([_box_mask((32, 32), (4, 20), (8, 24))] * 2)
    guidance = EvidenceGuidance(1.0, method="input_gradients")
    output = GuidanceInferer(guidance)(x, blackbox)
    term = guidance(output, labels, box, eligible=torch.tensor([True, False]))
    assert term.item() > 0 and output["logits"].shape == (2, 2)
    grads = torch.autograd.grad(term, list(blackbox.parameters()), allow_unused=True)
    grads = [g for g in grads if g is not None]
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)
    # "avoid": the gradient inside the mask; the whole image counts then, the empty mask never
    assert _rrr(blackbox, x, labels, whole, mode="avoid")[0].item() > 0
    assert _rrr(blackbox, x, labels, torch.zeros_like(whole), mode="avoid")[0].item() == 0.0
    with pytest.raises(ValueError, match="GuidanceInferer"):
        guidance({"logits": output["logits"]}, labels, box)


# ---------------------------------------------------------------------------------------------- the subset


def test_guidance_subset_is_seeded_fixed_nested_and_sized():
    items = [f"case_{i:03d}.png" for i in range(37)]
    sizes = {fraction: len(guidance_subset(items, fraction, seed=7)) for fraction in (0.05, 0.1, 0.25, 1.0)}
    assert sizes == {0.05: 2, 0.1: 4, 0.25: 9, 1.0: 37}  # round(37 f), half up: 1.85, 3.7, 9.25, 37
    assert len(guidance_subset(items, 0.01, seed=7)) == 1  # at least one when fraction > 0
    assert guidance_subset(items, 0.0, seed=7) == set() and guidance_subset([], 0.5) == set()
    chosen = guidance_subset(items, 0.25, seed=7)
    assert chosen == guidance_subset(list(reversed(items)), 0.25, seed=7) == guidance_subset(items * 2, 0.25, seed=7)
    assert chosen != guidance_subset(items, 0.25, seed=8)
    assert guidance_subset(items, 0.05, 7) <= guidance_subset(items, 0.1, 7) <= chosen <= set(items)
    for bad in (-0.1, 1.5, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="guidance#fraction"):
            guidance_subset(items, bad)


# ---------------------------------------------------------------------------------------------- in the loss


def test_softcam_loss_adds_the_guidance_of_a_dict_target_and_keeps_the_batchs_terms():
    torch.manual_seed(0)
    maps = torch.randn(4, 2, 4, 4, requires_grad=True)
    output = {LOGITS: maps.mean((2, 3)), EVIDENCE_MAPS: maps}
    labels = torch.tensor([0, 1, 1, 0])
    masks = torch.zeros(4, 1, 16, 16)
    masks[1, 0, :8, :8] = 1
    masks[2, 0, 4:12, 4:12] = 1
    loss = SoftCAMLoss(lambda1=0.01, guidance={"lambda": 0.5, "mode": "outside"})
    total = loss(output, {"label": labels, "mask": masks})
    expected = SoftCAMLoss(lambda1=0.01)(output, labels) + guidance_term(maps, labels, masks, lambda_g=0.5)
    torch.testing.assert_close(total, expected)
    assert set(loss.last_terms) == {"ce", "penalty", "guidance"}
    assert not any(t.requires_grad for t in loss.last_terms.values())
    torch.testing.assert_close(loss.last_terms["guidance"], guidance_term(maps, labels, masks, lambda_g=0.5))
    with pytest.raises(ValueError, match="target holds no masks"):
        loss(output, labels)
    # without guidance a dict target is its label, and no guidance term is added
    plain = SoftCAMLoss(lambda1=0.01)
    torch.testing.assert_close(plain(output, {"label": labels, "mask": masks}), plain(output, labels))
    assert set(plain.last_terms) == {"ce", "penalty"}


@pytest.mark.parametrize(
    "architecture, method, size",
    [
        ("SoftCAM", "evidence", [32, 32]),
        ("SoftCAM", "evidence", [32, 32, 32]),
        ("BlackBox", "evidence", [32, 32]),
        ("BlackBox", "input_gradients", [32, 32]),
    ],
)
def test_a_guided_training_step_through_monais_trainer_logs_the_guidance_term(architecture, method, size):
    """The bundle's pieces in MONAI's SupervisedTrainer: guided batches, the inferer, the loss, the logger."""
    from monai.engines import SupervisedTrainer

    from monai_softcam.handlers import LossTermsLogger
    from monai_softcam.task import Task, build_network

    torch.manual_seed(0)
    task = Task(["no", "yes"], len(size), 1, size, "stretch", [0.5], [0.1], architecture, "resnet18", QUARTER)
    network = build_network(task, return_maps=True)
    settings = {"lambda": 1.0, "mode": "outside", "method": method}
    masks = torch.zeros(4, 1, *size)
    masks[(slice(None), slice(None), *[slice(2, 10)] * len(size))] = 1
    batch = {"image": torch.randn(4, 1, *size), "label": torch.tensor([1, 1, 0, 1]), "mask": masks}
    loss = SoftCAMLoss(guidance=settings)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
        loss_function=loss,
        inferer=GuidanceInferer(settings),
        prepare_batch=prepare_guided_batch,
    )
    logged = []
    writer = type("Writer", (), {"add_scalar": lambda self, tag, value, step: logged.append((tag, value, step))})()
    LossTermsLogger(loss, writer).attach(trainer)
    trainer.run()
    tags = {tag: value for tag, value, _ in logged}
    assert set(tags) == {"train_ce", "train_penalty", "train_guidance"} and tags["train_guidance"] > 0
    assert trainer.state.output[0]["loss"] == pytest.approx(tags["train_ce"] + tags["train_guidance"], rel=1e-5)
    # the term is the method's function of this batch (the network is unchanged: lr 0)
    network.train()
    expected = EvidenceGuidance.from_settings(settings)(
        GuidanceInferer(settings)(batch["image"], network), batch["label"], masks
    )
    assert tags["train_guidance"] == pytest.approx(float(expected.detach()), rel=1e-4)


# ---------------------------------------------------------------------------------------------- the data list


def _guidance_dataset(folder, rows):
    """A split CSV (``filename, bin_target, mask, marker_mask, x, y, width, height``) with empty files for every name."""
    import csv

    header = ["filename", "bin_target", "mask", "marker_mask", "x", "y", "width", "height"]
    with open(folder / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    for row in rows:
        for name in row[0], row[2], row[3]:
            if name:
                (folder / name).touch()


def _splits(folder, **spec):
    from monai_softcam.data import CSVDataSpec
    from monai_softcam.data.datalist import SplitLists

    spec = CSVDataSpec(label_column="bin_target", **spec)
    return SplitLists(spec, str(folder), num_classes=2)


def test_guided_datalist_keeps_the_annotations_of_a_seeded_fraction_of_the_eligible_items(tmp_path):
    rows = [[f"i{k}.png", k % 2, f"m{k}.png", f"k{k}.png" if k < 4 else "", "", "", "", ""] for k in range(12)]
    _guidance_dataset(tmp_path, rows)
    splits = _splits(tmp_path, mask_column="mask")
    plain = guided_datalist(splits, {"lambda": 0.0})
    assert len(plain) == 12 and not any("mask" in item or "boxes" in item for item in plain)
    items = guided_datalist(splits, {"lambda": 0.1, "fraction": 0.5}, seed=3)
    lesion = [str(tmp_path / f"i{k}.png") for k in range(1, 12, 2)]  # the 6 images of class 1 carry masks
    chosen = guidance_subset(lesion, 0.5, seed=3)
    assert len(chosen) == 3
    assert {item["image"] for item in items if "mask" in item} == chosen
    assert all(item["boxes"] == [] for item in items)  # every item gets a mask: empty unless chosen
    assert guided_datalist(splits, {"lambda": 0.1, "fraction": 0.5}, seed=3) == items  # fixed for the run
    # avoid: another column, every row with a file there is eligible, whatever its label; the spec's boxes stay out
    splits = _splits(tmp_path, mask_column="mask", box_columns=["x", "y", "width", "height"])
    items = guided_datalist(splits, {"lambda": 0.1, "mode": "avoid", "mask_column": "marker_mask", "fraction": 1.0})
    assert sorted(os.path.basename(item["mask"]) for item in items if "mask" in item) == [f"k{k}.png" for k in range(4)]


def test_guided_datalist_refuses_a_run_with_nothing_to_guide_by_name(tmp_path):
    rows = [[f"i{k}.png", 0, f"m{k}.png", "", "", "", "", ""] for k in range(4)]
    _guidance_dataset(tmp_path, rows)
    guided = {"lambda": 0.1}
    with pytest.raises(
        ConfigError,
        match=r"^guidance#mask_column: .* the annotation column 'lesion_mask', which .*train\.csv does not have",
    ):
        guided_datalist(_splits(tmp_path, mask_column="mask"), {**guided, "mask_column": "lesion_mask"})
    with pytest.raises(ConfigError, match=r"^guidance#mask_column: .* needs annotations, and none is set"):
        guided_datalist(_splits(tmp_path), guided)
    with pytest.raises(
        ConfigError, match=r"^guidance#mask_column: .* no training image of class 1 carries an annotation"
    ):
        guided_datalist(_splits(tmp_path, mask_column="mask"), guided)  # every image is of class 0


def test_guidance_settings_are_checked_by_key():
    check_settings(
        {"guidance": {"lambda": 0.1, "mode": "avoid", "fraction": 0.05, "mask_column": "m", "method": "evidence"}}
    )
    with pytest.raises(
        ConfigError,
        match=r"^--guidance#lamda: guidance has no such setting; its settings are annotated_class, fraction, lambda",
    ):
        check_settings({"guidance": {"lamda": 0.1}})
    with pytest.raises(ConfigError, match=r"^--guidance#fraction: 1.5 is not allowed"):
        check_settings({"guidance": {"fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"^--guidance#mode: 'inside' is not allowed"):
        check_settings({"guidance": {"mode": "inside"}})


# ---------------------------------------------------------------------------------------------- the bundle


def test_the_bundle_refuses_a_missing_annotation_column_then_trains_guided_and_records_it(tmp_path):
    import json

    from bundle_helpers import TINY, TRAIN, last_line, run_bundle, train
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, data = tmp_path / "b", str(tmp_path / "data")
    proc = train(root, "--demo_dir", data, "--guidance#lambda", "0.1", "--guidance#mask_column", "lesion", check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr).startswith(
        "error: guidance#mask_column: guidance (guidance#lambda 0.1, mode 'outside') needs the annotation column "
        f"'lesion', which {os.path.join(data, 'train.csv')} does not have; its columns are ["
    )
    assert not os.path.exists(root / "models")  # refused before the folder was claimed
    guidance = ["--guidance#lambda", "0.1", "--guidance#fraction", "0.5"]
    run_bundle("training", [TRAIN, TINY], "--bundle_root", root, "--demo_dir", data, *guidance)
    with open(root / "models" / "task.json") as f:
        recorded = json.load(f)["trained_with"]["settings"]["guidance"]
    assert recorded == {
        "lambda": 0.1,
        "mode": "outside",
        "mask_column": None,
        "fraction": 0.5,
        "annotated_class": 1,
        "method": "evidence",
    }
    events = EventAccumulator(str(root / "eval" / "tensorboard"))
    events.Reload()
    steps = [(s.step, s.value > 0) for s in events.Scalars("train_guidance")]
    assert [step for step, _ in steps] == [1, 2] and any(positive for _, positive in steps)
