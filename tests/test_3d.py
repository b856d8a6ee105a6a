"""3D end to end (the demo3d preset through the bundle), DICOM series, and sliding-window evidence maps."""

from __future__ import annotations

import csv
import json
import os
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import CONFIGS, EVALUATE, INFERENCE, TRAIN, bundle, torchscript_export
from conftest import REPO_ROOT
from data_helpers import write_dicom_series

from monai_softcam.data import DicomSeriesReader, list_images
from monai_softcam.inferers import EvidenceSlidingWindowInferer
from monai_softcam.networks import SoftCAM, upsample_map

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.slow
def test_3d_preset_trains_evaluates_and_infers_with_the_volumes_geometry(trained_bundle_3d, tmp_path):
    """demo3d through the same bundle configs, the preset named only for training: evaluation, the
    explanation report, inference, both exports and SoftCAMLib read the trained task. Inference on
    a NIfTI volume larger than the training size (sliding window) and on a DICOM series folder:
    maps on each input's own grid with its affine, and the whole-input logit equal to the mean of
    the stitched map."""
    root, _ = trained_bundle_3d
    with open(os.path.join(root, "eval", "metrics_val.json")) as f:
        metrics = json.load(f)
    assert 0 <= metrics["metrics"]["auc"] <= 1 and "explanation_metrics" in metrics
    with open(os.path.join(root, "models", "task.json")) as f:
        task = json.load(f)
    assert (task["spatial_dims"], task["image_size"], task["backbone"]) == (3, [24, 24, 24], "resnet10")
    assert isinstance(task["intensity_mean"][0], float)  # 'auto' resolved
    data3d = ("--dataset_dir", os.path.join(root, "data", "demo3d"))
    bundle("evaluate", [TRAIN, EVALUATE], "--bundle_root", root, *data3d)
    assert os.path.isfile(os.path.join(root, "eval", "metrics_test.csv"))
    explain = os.path.join(CONFIGS, "explain.yaml")
    bundle(
        "explain_eval",
        [TRAIN, EVALUATE, explain],
        "--bundle_root",
        root,
        *data3d,
        "--explain#methods",
        "['softcam','gradcam']",
        "--explain#sanity_cases",
        "1",
    )
    with open(os.path.join(root, "eval", "explanations_test", "report.json")) as f:
        assert json.load(f)["images"] == 8
    proc = bundle("inference", [INFERENCE], "--bundle_root", root, "--spatial_dims", "2", check=False)
    assert proc.returncode != 0 and "sets spatial_dims to 2, but the trained model's spatial_dims is 3" in proc.stderr

    data = tmp_path / "inputs"
    affine = np.array([[0.0, -0.9, 0.0, 20.0], [0.8, 0.0, 0.0, -15.0], [0.0, 0.0, 2.0, 4.0], [0, 0, 0, 1]])
    volume = np.random.default_rng(0).uniform(0.3, 0.6, (50, 40, 30)).astype(np.float32)
    volume[10:20, 12:22, 8:16] += 0.3
    os.makedirs(data)
    nib.save(nib.Nifti1Image(volume, affine), str(data / "big.nii.gz"))
    series = np.random.default_rng(1).integers(0, 200, (20, 30, 28)).astype(np.int16)  # slices, rows, columns
    write_dicom_series(str(data / "series"), series, spacing=(0.8, 0.7, 2.5), origin=(-40.0, 30.0, 12.0))
    with open(data / "inputs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename"], ["big.nii.gz"], ["series"]])

    out = tmp_path / "infer"
    bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        root,
        "--dataset_dir",
        str(data),
        "--input_path",
        str(data / "inputs.csv"),
        "--output_dir",
        str(out),
        "--sliding_window",
        "true",
    )
    with open(out / "predictions.csv") as f:
        rows = {os.path.basename(r["image"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == ["big.nii.gz", "series"]
    series_affine = LPS_TO_RAS @ np.array([[0.8, 0, 0, -40.0], [0, 0.7, 0, 30.0], [0, 0, 2.5, 12.0], [0, 0, 0, 1]])
    for name, shape, expected_affine in (("big.nii.gz", (50, 40, 30), affine), ("series", (28, 30, 20), series_affine)):
        row = rows[name]
        stem = name.split(".")[0]
        grid = [int(n * 3 / 24 + 0.5) for n in shape]  # 3 cells per 24-voxel window, stretched over the input
        scale = np.diag([n / g for n, g in zip(shape, grid)] + [1.0])
        scale[:3, 3] = [0.5 * n / g - 0.5 for n, g in zip(shape, grid)]
        for cls in ("no_lesion", "lesion"):
            saved = nib.load(os.path.join(row["evidence_maps"], f"{stem}_evidence_{cls}.nii.gz"))
            assert saved.shape == tuple(grid)  # the stitched map at the network's resolution
            np.testing.assert_allclose(
                saved.affine, expected_affine @ scale, atol=1e-4
            )  # on the volume, in world space
            # completeness on the whole input: the logit is the mean of the stitched map (area-pooled
            # to cells that do not divide the input exactly: close, not equal)
            values = np.asarray(saved.dataobj, dtype=np.float64)
            assert abs(values.mean() - float(row[f"logit_{cls}"])) < 0.05 * (np.abs(values).max() + 1e-6)

    # export: ONNX (export.yaml after inference.yaml) and TorchScript with the task embedded, which SoftCAMLib reads
    models = os.path.join(root, "models")
    bundle("export_onnx", [INFERENCE, os.path.join(CONFIGS, "export.yaml")], "--bundle_root", root)
    assert os.path.isfile(os.path.join(models, "model.onnx"))
    ts = os.path.join(models, "model.ts")
    torchscript_export(ts, models, INFERENCE, os.path.join(CONFIGS, "metadata.json"), "--bundle_root", root)
    sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))
    from SoftCAMLib import BundleInfo

    info = BundleInfo.read(ts)
    assert (info.spatial_dims, info.image_size, info.class_names) == (3, [24, 24, 24], ["no_lesion", "lesion"])
    assert info.intensity == f"(x - {task['intensity_mean']}) / {task['intensity_std']}"


def test_dicom_series_reader_stacks_one_series_and_names_bad_folders(tmp_path):
    series = np.random.default_rng(0).integers(-500, 1500, (5, 12, 16)).astype(np.int16)
    write_dicom_series(str(tmp_path / "ct"), series, spacing=(0.6, 0.9, 3.0), origin=(5.0, -7.0, 100.0))
    reader = DicomSeriesReader()
    array, meta = reader.get_data(reader.read(str(tmp_path / "ct")))
    np.testing.assert_array_equal(array, np.transpose(series, (2, 1, 0)))  # (x, y, z) = (column, row, slice)
    np.testing.assert_allclose(
        meta["affine"],
        LPS_TO_RAS @ np.array([[0.6, 0, 0, 5.0], [0, 0.9, 0, -7.0], [0, 0, 3.0, 100.0], [0, 0, 0, 1]]),
        atol=1e-4,
    )
    assert list_images(str(tmp_path / "ct")) == [{"image": str(tmp_path / "ct")}]  # the folder is one volume

    with pytest.raises(ValueError, match="cannot be used as a 2D image"):
        DicomSeriesReader(spatial_dims=2).read(str(tmp_path / "ct"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty: no DICOM series"):
        reader.read(str(tmp_path / "empty"))
    write_dicom_series(str(tmp_path / "ct"), series[:2], series_uid="1.2.826.0.1.3680043.8.498.99")
    with pytest.raises(ValueError, match="2 DICOM series in one folder"):
        reader.read(str(tmp_path / "ct"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sliding_window_map_equals_the_direct_map_where_the_input_fits_one_window(spatial_dims):
    size = [64, 64] if spatial_dims == 2 else [32, 32, 32]
    net = SoftCAM(
        "resnet18",
        spatial_dims=spatial_dims,
        in_channels=1,
        num_classes=3,
        return_maps=True,
        backbone_kwargs={"widen_factor": 0.25},
    ).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        direct = net(x)
        stitched = EvidenceSlidingWindowInferer(size, sw_batch_size=2, maps="input")(x, net)
        on_grid = EvidenceSlidingWindowInferer(size, sw_batch_size=2)(x, net)
    expected = torch.stack([upsample_map(m, size) for m in direct["evidence_maps"]])
    assert stitched["evidence_maps"].shape == (2, 3, *size)
    torch.testing.assert_close(stitched["evidence_maps"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stitched["logits"], expected.flatten(2).mean(-1), atol=1e-6, rtol=1e-6)
    # at the network's resolution: the direct map and its logits exactly
    torch.testing.assert_close(on_grid["evidence_maps"], direct["evidence_maps"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on_grid["logits"], direct["logits"], atol=1e-5, rtol=1e-5)

    # two windows side by side, no overlap: each half of the stitched map is that half's own map
    wide = torch.randn(1, 1, size[0] * 2, *size[1:])
    with torch.no_grad():
        halves = [net(wide[:, :, : size[0]]), net(wide[:, :, size[0] :])]
        stitched = EvidenceSlidingWindowInferer(size, sw_batch_size=1, overlap=0.0, maps="input")(wide, net)[
            "evidence_maps"
        ]
        on_grid = EvidenceSlidingWindowInferer(size, sw_batch_size=1, overlap=0.0)(wide, net)["evidence_maps"]
    cells = halves[0]["evidence_maps"].shape[2]
    assert on_grid.shape[2:] == (2 * cells, *halves[0]["evidence_maps"].shape[3:])
    for half, grid_half, out in zip(
        (stitched[:, :, : size[0]], stitched[:, :, size[0] :]), (on_grid[:, :, :cells], on_grid[:, :, cells:]), halves
    ):
        torch.testing.assert_close(half[0], upsample_map(out["evidence_maps"][0], size), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            grid_half[0], out["evidence_maps"][0], atol=2e-4, rtol=1e-4
        )  # float32 sums of 32^3 voxels


def test_sliding_window_needs_evidence_maps():
    net = SoftCAM(
        "resnet18",
        spatial_dims=2,
        in_channels=1,
        num_classes=2,
        return_maps=False,
        backbone_kwargs={"widen_factor": 0.25},
    ).eval()
    with pytest.raises(TypeError, match="return_maps=True"):
        EvidenceSlidingWindowInferer([32, 32])(torch.randn(1, 1, 40, 40), net)
    with pytest.raises(ValueError, match="does not match a 2D window"):
        EvidenceSlidingWindowInferer([32, 32])(torch.randn(1, 1, 40, 40, 40), net)
