import pytest
import torch

from monai_softcam.losses import PENALTY_PRESETS, EvidencePenalty, SoftCAMLoss


def _maps():
    # three samples with very different maps: a first-sample-only penalty gives another value
    maps = torch.zeros(3, 2, 2, 2)
    maps[0] = 0.5
    maps[1, 0] = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    maps[2, 1, 1, 1] = -4.0
    return maps


def test_penalty_matches_hand_computed_value_on_every_sample():
    maps = _maps()
    # per-sample L1: 8 * 0.5 = 4, |1|+|-2|+|3| = 6, 4            -> mean 14/3
    # per-sample L2 (unsquared, the paper's): sqrt(2), sqrt(14), 4
    l1, l2 = 0.1, 0.01
    expected = l1 * (4 + 6 + 4) / 3 + l2 * (2**0.5 + 14**0.5 + 4) / 3
    value = EvidencePenalty(lambda1=l1, lambda2=l2)(maps)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    first_only = l1 * 4 + l2 * 2**0.5
    assert value.item() != pytest.approx(first_only, rel=1e-3)


def test_squared_l2_option():
    # per-sample squared L2 (ridge): 8 * 0.25 = 2, 1+4+9 = 14, 16
    value = EvidencePenalty(lambda2=1.0, squared_l2=True)(_maps())
    assert value.item() == pytest.approx((2 + 14 + 16) / 3, rel=1e-6)


def test_penalty_is_batch_size_invariant():
    maps = _maps()
    pen = EvidencePenalty(lambda1=0.3, lambda2=0.2)
    assert pen(torch.cat([maps, maps])).item() == pytest.approx(pen(maps).item(), rel=1e-6)


def test_presets():
    assert EvidencePenalty.preset("dense").lambda1 == 0 and EvidencePenalty.preset("dense").lambda2 > 0
    assert EvidencePenalty.preset("sparse").lambda1 > 0 and EvidencePenalty.preset("sparse").lambda2 == 0
    assert EvidencePenalty.preset("sparse", lambda1=1e-3).lambda1 == 1e-3
    assert set(PENALTY_PRESETS) == {"none", "dense", "sparse"}
    with pytest.raises(ValueError, match=r"penalty preset must be one of \['dense', 'none', 'sparse'\], got 'ridge'"):
        EvidencePenalty.preset("ridge")
    with pytest.raises(ValueError, match="lambda1 must be a number >= 0, got -1"):
        EvidencePenalty(lambda1=-1)


def test_softcam_loss_is_ce_plus_penalty_with_gradients_to_maps():
    maps = _maps().requires_grad_(True)
    logits = maps.flatten(2).mean(-1)
    target = torch.tensor([0, 1, 1])
    loss_fn = SoftCAMLoss(lambda1=0.1, lambda2=0.01)
    loss = loss_fn({"logits": logits, "evidence_maps": maps}, target)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert loss.item() == pytest.approx(ce.item() + EvidencePenalty(0.1, 0.01)(maps).item(), rel=1e-6)
    terms = loss_fn.terms({"logits": logits, "evidence_maps": maps}, target)
    assert terms["penalty"].item() > 0 and loss.item() == pytest.approx((terms["ce"] + terms["penalty"]).item())
    loss.backward()
    assert maps.grad.abs().sum() > 0
    # tuple output and [B, 1] float targets are accepted too
    same = loss_fn((logits, maps), target.float()[:, None])
    assert same.item() == pytest.approx(loss.item())


def test_softcam_loss_needs_maps_when_penalised():
    logits = torch.zeros(2, 2)
    assert SoftCAMLoss()(logits, torch.tensor([0, 1])).item() == pytest.approx(0.693147, rel=1e-5)
    with pytest.raises(ValueError, match="build the SoftCAM network with return_maps=True"):
        SoftCAMLoss(preset="dense")(logits, torch.tensor([0, 1]))


def test_softcam_loss_rejects_bad_targets():
    out = {"logits": torch.zeros(2, 3), "evidence_maps": torch.zeros(2, 3, 2, 2)}
    with pytest.raises(ValueError, match=r"target has labels \[3\] outside the classes 0..2"):
        SoftCAMLoss()(out, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        SoftCAMLoss()(out, torch.tensor([0.5, 1.0]))


def test_single_logit_uses_binary_cross_entropy():
    logits = torch.tensor([[2.0], [-1.0]])
    loss = SoftCAMLoss()(logits, torch.tensor([1, 0]))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(expected.item())


def test_loss_terms_logger_logs_the_epoch_means_of_the_terms_the_loss_kept():
    from ignite.engine import Engine

    from monai_softcam.handlers import LossTermsLogger

    torch.manual_seed(0)
    loss_fn = SoftCAMLoss(lambda1=0.1, lambda2=0.01)
    batches = []
    for _ in range(2):
        maps = torch.randn(3, 2, 4, 4)
        batches.append(({"logits": maps.flatten(2).mean(-1), "evidence_maps": maps}, torch.tensor([0, 1, 1])))

    def step(engine, batch):  # as the trainer: the loss of the batch, then ITERATION_COMPLETED
        return {"loss": loss_fn(*batch)}

    logged = []
    writer = type("Writer", (), {"add_scalar": lambda self, tag, value, step: logged.append((tag, value, step))})()
    engine = Engine(step)
    LossTermsLogger(loss_fn, writer).attach(engine)
    engine.run(batches, max_epochs=1)
    expected = {name: sum(float(loss_fn.terms(*b)[name]) for b in batches) / 2 for name in ("ce", "penalty")}
    assert {tag: (value, step) for tag, value, step in logged} == {
        "train_ce": (pytest.approx(expected["ce"]), 1),
        "train_penalty": (pytest.approx(expected["penalty"]), 1),
    }
