"""Region evidence: a label map's regions share every SoftCAM logit exactly (sums on the map grid,
each cell weighted by the part of it a region covers), in the bundle (``--regions``, regions.csv)
and in SoftCAMLib (``region_table``), in 2D and 3D, oblique and anisotropic, stretched and cropped."""

from __future__ import annotations

import csv
import os
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import INFERENCE, bundle
from conftest import REPO_ROOT, TESTS_DIR
from PIL import Image

from monai_softcam.data.datalist import pair_regions
from monai_softcam.regions import BEYOND_INPUT, axis_overlap, cell_coverage, region_evidence, shares_by_class
from monai_softcam.transforms import EvidenceGridd, LoadLabelMapd, RegionEvidenced, load_input
from monai_softcam.utils import ConfigError, InputError

sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))

from SoftCAMLib import BundleInfo, Volume, VolumeError, geometry_matrix, region_table, run_inference  # noqa: E402
from SoftCAMLib.testing import write_test_bundle  # noqa: E402

KNOWN_2D = os.path.join(TESTS_DIR, "configs", "known_evidence_2d.yaml")
KNOWN_3D = os.path.join(TESTS_DIR, "configs", "known_evidence_3d.yaml")


@pytest.fixture
def subprocess_env(monkeypatch):
    """Child processes import the known-evidence network from tests/."""
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


def _known_bundle(tmp_path, config):
    """A bundle of the known-evidence network (tests/known_evidence.py: the evidence for 'lesion' is
    the local mean intensity minus an offset)."""
    return BundleInfo.read(write_test_bundle(str(tmp_path / "bundle"), [config]), [config])


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _stretch(shape, grid):
    """Map index -> input index of a map grid stretched over an input grid (as the bundle places it)."""
    matrix = np.eye(len(shape) + 1)
    for axis, (n, m) in enumerate(zip(shape, grid)):
        matrix[axis, axis], matrix[axis, -1] = n / m, 0.5 * n / m - 0.5
    return matrix


def test_cell_coverage_by_hand_when_cells_do_not_divide_the_voxels():
    # 10 voxels, 3 cells: cell j spans input indices [j 10/3 - 1/2, (j+1) 10/3 - 1/2]
    w = axis_overlap(3, 10, 10 / 3, 5 / 3 - 0.5)
    np.testing.assert_allclose(w[0, :4], [0.3, 0.3, 0.3, 0.1])
    np.testing.assert_allclose(w[1, 3:7], [0.2, 0.3, 0.3, 0.2])
    np.testing.assert_allclose(w.sum(0), 0.3 * np.ones(10))  # every voxel is shared out whole
    labels = np.zeros((10, 4), int)
    labels[2:7, 1:3] = 1  # voxels 2-6 along x, 1-2 along y
    labels[9, :] = 2
    coverage = cell_coverage(labels, (3, 2), _stretch((10, 4), (3, 2)))
    assert sorted(coverage) == [0, 1, 2]
    np.testing.assert_allclose(sum(coverage.values()), np.ones((3, 2)), atol=1e-12)
    # x: cell 0 gets 0.3 (voxel 2) + 0.1 (voxel 3), cell 1 all of voxels 3-6 (1.0), cell 2 0.1 (voxel 6);
    # y: each of the 2 cells gets one of voxels 1-2, i.e. half of it
    np.testing.assert_allclose(coverage[1], [[0.2, 0.2], [0.5, 0.5], [0.05, 0.05]], atol=1e-12)
    np.testing.assert_allclose(coverage[2], [[0, 0], [0, 0], [0.3, 0.3]], atol=1e-12)

    rng = np.random.default_rng(0)
    labels3 = rng.integers(0, 4, (11, 7, 5))
    coverage3 = cell_coverage(labels3.astype(np.float32), (4, 3, 2), _stretch((11, 7, 5), (4, 3, 2)))
    np.testing.assert_allclose(sum(coverage3.values()), np.ones((4, 3, 2)), atol=1e-12)

    maps = {"a": rng.normal(size=(4, 3, 2)), "b": rng.normal(size=(4, 3, 2))}
    rows = region_evidence(maps, labels3, _stretch((11, 7, 5), (4, 3, 2)), {2: "lesion"}, voxel_volume=0.5)
    assert [r["region"] for r in rows[::2]] == ["outside", "label_1", "lesion", "label_3"]
    totals = shares_by_class(rows)
    for name, values in maps.items():
        assert totals[name] == pytest.approx(values.mean(), rel=1e-6, abs=1e-12)
    assert sum(r["cells"] for r in rows[::2]) == pytest.approx(24)
    assert sum(r["voxels"] for r in rows[::2]) == labels3.size
    lesion = rows[4]
    assert lesion["size_mm"] == pytest.approx(0.5 * (labels3 == 2).sum()) and lesion["in_view"] == pytest.approx(1)
    assert lesion["mean_density"] == pytest.approx(lesion["evidence_sum"] / lesion["cells"])


def test_cells_beyond_the_input_and_bad_geometry_are_reported():
    # 4 cells of 3 voxels centred on voxels 0, 3, 6, 9 of 10: cells 0 and 3 reach one voxel beyond the input
    to_input = np.diag([3.0, 1.0, 1.0])
    labels = np.zeros((10, 2), int)
    labels[4:8] = 5
    coverage = cell_coverage(labels, (4, 2), to_input)
    total = sum(coverage.values())
    np.testing.assert_allclose(total[:, 0], [2 / 3, 1, 1, 2 / 3])  # the part beyond the input is in no label
    maps = {"a": np.arange(8.0).reshape(4, 2)}
    rows = region_evidence(maps, labels, to_input)
    assert [r["region"] for r in rows] == ["outside", "label_5", BEYOND_INPUT]
    assert rows[-1]["label"] is None and rows[-1]["cells"] == pytest.approx(4 / 3) and rows[-1]["voxels"] == 0
    assert shares_by_class(rows)["a"] == pytest.approx(maps["a"].mean(), rel=1e-9)

    with pytest.raises(ValueError, match="not diagonal"):
        cell_coverage(labels, (4, 2), [[3.0, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"shape \(10, 2\) is not on the input's voxel grid of shape \(10, 3\)"):
        cell_coverage(labels, (4, 2), to_input, input_shape=(10, 3))
    with pytest.raises(ValueError, match=r"\(10, 2\) \(2D\) and map grid of shape \(4, 2, 2\) \(3D\)"):
        cell_coverage(labels, (4, 2, 2), np.eye(4))
    with pytest.raises(ValueError, match="fractional"):
        cell_coverage(labels + 0.5, (4, 2), to_input)


def test_crop_resize_leaves_part_of_the_input_out_of_view(tmp_path):
    """The bundle's own transforms with a "crop" resize: the map sees the centre of a 20 x 12 input
    only. A region in the cropped border is out of view (no cells), one across its edge partly;
    the shares still add up to the logits. The label map is a PNG: its values stay the labels."""
    image = np.random.default_rng(1).uniform(0, 1, (20, 12)).astype(np.float32)
    path = str(tmp_path / "case.nii.gz")
    nib.save(nib.Nifti1Image(image, np.diag([0.4, 0.6, 1.0, 1.0])), path)
    labels = np.zeros((20, 12), np.uint8)
    labels[0:6, :] = 1  # across the cropped border
    labels[17:20, :] = 2  # inside it
    Image.fromarray(labels.T).save(tmp_path / "case.png")  # PNG rows are y: the x, y grid as read

    prepare = load_input([8, 8], "crop")
    x = prepare({"image": path})["image"]
    maps = torch.randn(2, 4, 4)
    d = EvidenceGridd(keys="evidence_maps", ref_key="image")({"image": x, "evidence_maps": maps})
    d["image"] = prepare.inverse({"image": d["image"]})["image"]
    assert tuple(d["image"].shape[1:]) == (20, 12)
    (item,) = pair_regions([{"image": path}], str(tmp_path / "case.png"))
    assert item == {"image": path, "regions": str(tmp_path / "case.png")}
    read = LoadLabelMapd("regions")
    rows = RegionEvidenced("evidence_maps", ["a", "b"])(read({**d, "regions": item["regions"]}))["region_rows"]
    by_region = {(r["region"], r["class"]): r for r in rows}
    assert {r["region"] for r in rows} == {"outside", "label_1", "label_2"} and all(r["image"] == path for r in rows)
    for c, name in enumerate(["a", "b"]):
        total = sum(r["share_of_logit"] for r in rows if r["class"] == name)
        assert total == pytest.approx(float(maps[c].double().mean()), rel=1e-6)
    # x: 20 voxels scaled to 13, 8 of them kept from index 2: the map sees x in [2 * 20/13 - 0.5, 10 * 20/13 - 0.5]
    low, high = 2 * 20 / 13 - 0.5, 10 * 20 / 13 - 0.5
    assert by_region["label_1", "a"]["in_view"] == pytest.approx((5.5 - low) / 6)  # x in [-0.5, 5.5]
    assert by_region["outside", "a"]["in_view"] == pytest.approx((high - 5.5) / 11)  # x in [5.5, 16.5]
    assert by_region["label_2", "a"]["cells"] == 0 and by_region["label_2", "a"]["in_view"] == 0
    assert np.isnan(by_region["label_2", "a"]["mean_density"]) and by_region["label_2", "a"]["share_of_logit"] == 0
    assert sum(by_region[r, "a"]["cells"] for r in ("outside", "label_1", "label_2")) == pytest.approx(16)
    assert by_region["outside", "a"]["size_mm"] == pytest.approx((labels == 0).sum() * 0.4 * 0.6)

    # bad label maps: named, with both shapes; a missing one named with its folder before anything runs
    nib.save(nib.Nifti1Image(np.zeros((20, 11), np.int16), np.eye(4)), tmp_path / "wrong.nii.gz")
    with pytest.raises(InputError, match=r"(?s)wrong.nii.gz of shape \(20, 11\).*case.nii.gz of shape \(20, 12\)"):
        RegionEvidenced("evidence_maps", ["a", "b"])(read({**d, "regions": str(tmp_path / "wrong.nii.gz")}))
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "other.nii.gz").write_bytes((tmp_path / "wrong.nii.gz").read_bytes())
    with pytest.raises(InputError, match=f"no label map for input {path} in the regions folder {folder}"):
        pair_regions([{"image": path}], str(folder))
    with pytest.raises(ConfigError, match="one label map .* but the input has 2 images"):
        pair_regions([{"image": path}, {"image": "b"}], str(tmp_path / "case.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read label map .*broken.png"):
        read({**d, "regions": str(tmp_path / "broken.png")})


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_against_predictions(out, image_name):
    """regions.csv against predictions.csv: per class, the shares of all regions are the logit."""
    (prediction,) = _read(out / "predictions.csv")
    rows = _read(out / "regions.csv")
    assert all(os.path.basename(r["image"]) == image_name for r in rows)
    for name in ("no_lesion", "lesion"):
        logit = float(prediction[f"logit_{name}"])
        mine = [r for r in rows if r["class"] == name]
        assert sum(float(r["share_of_logit"]) for r in mine) == pytest.approx(logit, abs=1e-5)
        assert all(float(r["logit"]) == pytest.approx(logit, abs=1e-5) for r in mine)
    return rows


def _same_rows(csv_rows, table):
    assert len(csv_rows) == len(table)
    for row, mine in zip(csv_rows, table):
        assert (row["region"], row["class"], row["label"]) == (mine["region"], mine["class"], str(mine["label"]))
        assert int(row["voxels"]) == mine["voxels"]
        for key in ("evidence_sum", "share_of_logit", "mean_density", "cells", "size_mm", "in_view"):
            assert float(row[key]) == pytest.approx(mine[key], rel=1e-6, abs=1e-9, nan_ok=True), key


def test_3d_oblique_anisotropic_regions_share_the_logits_exactly(tmp_path, subprocess_env):
    """A 3D NIfTI volume (oblique, 0.7 x 1.1 x 2.5 mm, 40 x 30 x 24 voxels on an 8^3 map grid: no
    axis a multiple of the grid) with a label map on it: the shares of the cube, a box and the
    outside add up to each logit; the cube holds the largest positive share of 'lesion'; and
    SoftCAMLib's table from the in-process result is regions.csv."""
    info = _known_bundle(tmp_path, KNOWN_3D)
    image = np.full((40, 30, 24), 0.1, np.float32)
    image[8:16, 18:26, 5:12] = 1.0
    labels = np.zeros(image.shape, np.int16)
    labels[8:16, 18:26, 5:12] = 1  # the bright cube
    labels[25:35, 2:10, 14:22] = 2  # a box of background
    ijk_to_ras = geometry_matrix([-30.0, 12.0, -8.0], [0.7, 1.1, 2.5], _rotation([0.2, -1, 0.4], 35))
    path, label_path = str(tmp_path / "ct.nii.gz"), str(tmp_path / "ct_labels.nii.gz")
    nib.save(nib.Nifti1Image(image, ijk_to_ras), path)
    nib.save(nib.Nifti1Image(labels, ijk_to_ras), label_path)

    out = tmp_path / "cli"
    bundle(
        "inference",
        [INFERENCE, KNOWN_3D],
        "--bundle_root",
        info.path,
        "--input_path",
        path,
        "--output_dir",
        str(out),
        "--regions",
        label_path,
    )
    rows = _check_against_predictions(out, "ct.nii.gz")
    assert [r["region"] for r in rows[::2]] == ["outside", "label_1", "label_2"]
    lesion = {r["region"]: float(r["share_of_logit"]) for r in rows if r["class"] == "lesion"}
    assert max(lesion, key=lesion.get) == "label_1" and lesion["label_1"] > 0 > lesion["label_2"]
    cube = next(r for r in rows if r["region"] == "label_1")
    assert int(cube["voxels"]) == 8 * 8 * 7
    assert float(cube["size_mm"]) == pytest.approx(8 * 8 * 7 * 0.7 * 1.1 * 2.5, rel=1e-6)  # mm³
    assert sum(float(r["cells"]) for r in rows[::2]) == pytest.approx(8**3)

    result = run_inference(info, Volume(np.transpose(image, (2, 1, 0)), ijk_to_ras, name="ct", source_file=path))
    assert result.grid_maps["lesion"].shape == (8, 8, 8)
    _same_rows(rows, region_table(result, np.transpose(labels, (2, 1, 0))))
    named = region_table(result, np.transpose(labels, (2, 1, 0)), {0: "background", 1: "cube"})
    assert [r["region"] for r in named[::2]] == ["background", "cube", "label_2"]
    with pytest.raises(VolumeError, match=r"\(K, J, I\) shape \(24, 30, 39\) .* shape \(24, 30, 40\)"):
        region_table(result, np.zeros((24, 30, 39), int))


def test_2d_oblique_slice_regions_share_the_logits_exactly(tmp_path, subprocess_env):
    """A 2D NIfTI image (80 x 60 px of 0.5 x 0.8 mm, rotated; a 16 x 16 map grid: 60 is no multiple
    of 16): the square's share, a corner's and the outside's add up to each logit, the square holds
    the largest positive 'lesion' share, and SoftCAMLib gives the same table."""
    info = _known_bundle(tmp_path, KNOWN_2D)
    image = np.full((80, 60), 0.2, np.float32)  # (I, J)
    image[48:72, 20:36] = 0.9
    labels = np.zeros(image.shape, np.uint8)
    labels[48:72, 20:36] = 1
    labels[:10, :7] = 3
    ijk_to_ras = geometry_matrix([12.0, -7.0, 40.0], [0.5, 0.8, 3.0], _rotation([1, 1, 1], 20))
    path = str(tmp_path / "slice.nii.gz")
    nib.save(nib.Nifti1Image(image, ijk_to_ras), path)
    folder = tmp_path / "labels"
    folder.mkdir()
    nib.save(nib.Nifti1Image(labels, ijk_to_ras), str(folder / "slice.nii.gz"))  # a folder: named after the input

    out = tmp_path / "cli"
    bundle(
        "inference",
        [INFERENCE, KNOWN_2D],
        "--bundle_root",
        info.path,
        "--input_path",
        path,
        "--output_dir",
        str(out),
        "--regions",
        str(folder),
    )
    rows = _check_against_predictions(out, "slice.nii.gz")
    lesion = {r["region"]: float(r["share_of_logit"]) for r in rows if r["class"] == "lesion"}
    assert set(lesion) == {"outside", "label_1", "label_3"}
    assert max(lesion, key=lesion.get) == "label_1" and lesion["label_1"] > 0
    square = next(r for r in rows if r["region"] == "label_1")
    assert float(square["size_mm"]) == pytest.approx(24 * 16 * 0.5 * 0.8, rel=1e-6)
    assert float(square["in_view"]) == pytest.approx(1)

    result = run_inference(info, Volume(image.T[None], ijk_to_ras, name="slice", source_file=path))
    assert result.grid_maps["lesion"].shape == (16, 16)
    _same_rows(rows, region_table(result, labels.T[None]))


def test_regions_are_off_unless_asked_for(tmp_path):
    """``regions: null`` (the default): the region transform passes every case through untouched and
    the writer writes nothing."""
    from monai.bundle import ConfigParser

    from monai_softcam.handlers import RegionsWriter

    info = _known_bundle(tmp_path, KNOWN_2D)
    parser = ConfigParser()
    parser.read_config([INFERENCE, KNOWN_2D])
    parser["bundle_root"] = info.path
    parser["input_path"] = path = str(tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), path)
    assert parser["regions"] is None
    transforms = parser.get_parsed_content("postprocessing").transforms
    regions = [t for t in transforms if isinstance(t, (LoadLabelMapd, RegionEvidenced))]
    case = {"image": torch.zeros(1, 20, 20), "evidence_maps": torch.zeros(2, 5, 5)}
    assert len(regions) == 2 and all(t(case).keys() == case.keys() for t in regions)
    assert all("regions" not in item for item in parser.get_parsed_content("datalist"))
    writers = [h for h in parser.get_parsed_content("handlers") if isinstance(h, RegionsWriter)]
    for writer in writers:
        writer._write(None)  # the run completes: no case carried region rows
        assert not os.path.exists(writer.path)
