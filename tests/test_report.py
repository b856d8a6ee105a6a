"""The explanation report called from Python, on 3D volumes (the bundle test covers 2D)."""

import json
import os

import torch

from monai_softcam.networks import BlackBox, SoftCAM
from monai_softcam.report import explanation_report


def test_report_on_3d_volumes_with_two_models(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(4, 1, 24, 24, 24)
    masks = torch.zeros(4, 1, 24, 24, 24)
    masks[:2, :, 4:10, 4:10, 4:10] = 1  # two "lesion" volumes, two healthy ones (empty masks)
    images[:2] += masks[:2]
    loader = [{"image": images[:3], "label": torch.tensor([1, 1, 0]), "mask": masks[:3]},
              {"image": images[3:], "label": torch.tensor([0]), "mask": masks[3:]}]  # fmt: skip
    kwargs = {"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True}
    models = [
        {"name": "softcam", "network": SoftCAM("resnet10", 3, 1, 2, return_maps=True, backbone_kwargs=kwargs),
         "methods": ["softcam", "gradcam"]},
        {"name": "blackbox", "network": BlackBox("resnet10", 3, 1, 2, backbone_kwargs=kwargs), "methods": ["gradcam++"]},
    ]  # fmt: skip
    report = explanation_report(models, loader, str(tmp_path), ["healthy", "lesion"], explained_class=1, topk=2,
                                topk_patch=6, topk_stride=3, pointing_tolerance=1, deletion_patch=8, deletion_steps=3,
                                gallery_cases=2, sanity_cases=2, progress=False)  # fmt: skip
    assert report["images"] == 4
    ap = report["explanation"]["softcam"]["softcam"]["activation_precision"]
    assert (ap["n"], ap["n_excluded"]) == (2, 2)
    assert set(report["explanation"]["blackbox"]) == {"gradcam++"}
    assert len(report["curves"]["softcam/softcam"]["deletion"]) in (0, 4)  # 3 steps + the start
    assert json.load(open(tmp_path / "report.json"))["images"] == 4
    for name in ("gallery.png", "faithfulness.png", "sanity.png", "index.html", "table.md"):
        assert os.path.getsize(tmp_path / name) > 100
