"""The paper's training as its reference implementation does it (github:kdjoumessi/SoftCAM at b5e9048): numbers
that the reference's own code produced on fixed inputs (``fixtures/reference_softcam_b5e9048.json``, which says
how and from which file and line), reproduced by this project's functions."""

import json
import os

import pytest
import torch

from monai_softcam.losses import EvidencePenalty, SoftCAMLoss
from monai_softcam.optim import ClippedCosineLR

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
