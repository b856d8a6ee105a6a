import csv
import json
import os

import numpy as np
import pytest

from monai_softcam.data.demo import DemoDataConfig, ensure_demo_dataset, generate_demo_dataset, render_sample

SMALL = dict(size=64, num_train=6, num_val=4, num_test=4)


def test_samples_are_deterministic_per_seed():
    cfg = DemoDataConfig(**SMALL)
    for i in range(6):
        a, b = render_sample(cfg, i), render_sample(cfg, i)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (a.label, a.target, a.box, a.distractors) == (b.label, b.target, b.box, b.distractors)
    other = DemoDataConfig(**{**SMALL, "seed": 1})
    assert not np.array_equal(render_sample(cfg, 0).image, render_sample(other, 0).image)
    # a sample depends on (seed, index) only, not on how many are generated
    bigger = DemoDataConfig(**{**SMALL, "num_train": 50})
    np.testing.assert_array_equal(render_sample(cfg, 3).image, render_sample(bigger, 3).image)


@pytest.mark.parametrize("spatial_dims,size", [(2, 64), (3, 40)])
def test_masks_and_boxes_match_the_lesions(spatial_dims, size):
    cfg = DemoDataConfig(spatial_dims=spatial_dims, size=size, radius=(3.0, 6.0), lesion_fraction=0.7)
    positives = 0
    for i in range(20):
        sample = render_sample(cfg, i)
        if not sample.label:
            assert not sample.mask.any() and sample.box is None and sample.target in (0, 1)
            assert sample.target == (1 if sample.distractors else 0)
            continue
        positives += 1
        assert sample.target == 2
        lesion = sample.image - render_sample(cfg, i, with_lesion=False).image  # the lesion alone
        assert lesion.min() >= -1e-6
        # the mask is the lesion's half-maximum region: most of its added intensity lies inside
        # (less in 3D, where the soft rim of a small ball holds more volume), none far outside its box
        assert lesion[sample.mask].sum() > (0.75 if spatial_dims == 2 else 0.65) * lesion.sum()
        where = np.nonzero(sample.mask)
        starts = tuple(int(w.min()) for w in where)
        sizes = tuple(int(w.max()) - s + 1 for w, s in zip(where, starts))
        assert sample.box == starts + sizes
        grown = tuple(slice(max(0, s - 3), s + n + 3) for s, n in zip(starts, sizes))
        outside = lesion.copy()
        outside[grown] = 0
        assert outside.max() < 0.2 * lesion.max()
    assert positives >= 5


def test_lesions_are_low_contrast_and_distractors_independent_of_label():
    cfg = DemoDataConfig()
    samples = [render_sample(cfg, i) for i in range(200)]
    labels = np.array([s.label for s in samples])
    has_distractor = np.array([bool(s.distractors) for s in samples])
    assert 0.35 < labels.mean() < 0.65
    # distractors as frequent with as without a lesion (within sampling noise)
    assert abs(has_distractor[labels == 1].mean() - has_distractor[labels == 0].mean()) < 0.2
    # the lesion's peak is below the range of the textured background
    for i in np.nonzero(labels)[0][:10]:
        background = render_sample(cfg, int(i), with_lesion=False).image
        lesion_peak = (samples[i].image - background).max()
        assert lesion_peak < 0.5 * (background.max() - background.min())


def test_generated_folder_layout_and_csv(tmp_path):
    from PIL import Image

    cfg = DemoDataConfig(**SMALL)
    paths = generate_demo_dataset(str(tmp_path / "demo"), cfg, progress=False)
    assert set(paths) == {"train", "val", "test"}
    rows = list(csv.DictReader(open(paths["train"])))
    assert list(rows[0]) == ["filename", "x", "y", "width", "height", "type", "bin_target", "target", "mask"]
    assert len(rows) == 6 and {r["type"] for r in rows} == {"Train"}
    for i, row in enumerate(rows):
        sample = render_sample(cfg, i)
        image = np.asarray(Image.open(tmp_path / "demo" / row["filename"]))
        mask = np.asarray(Image.open(tmp_path / "demo" / row["mask"])) > 0
        np.testing.assert_allclose(image / 255.0, sample.image, atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(mask, sample.mask)
        assert int(row["bin_target"]) == sample.label and int(row["target"]) == sample.target
        if sample.label:  # RSNA convention: x = column, y = row
            cols, rows_ = np.nonzero(mask.T)
            assert (float(row["x"]), float(row["y"])) == (cols.min(), rows_.min())
            assert (float(row["width"]), float(row["height"])) == (np.ptp(cols) + 1, np.ptp(rows_) + 1)
        else:
            assert row["x"] == row["width"] == ""
    assert json.load(open(tmp_path / "demo" / "demo.json"))["config"]["size"] == 64
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".demo-partial")]


def test_3d_volumes_are_nifti(tmp_path):
    import nibabel as nib

    cfg = DemoDataConfig(spatial_dims=3, size=40, num_train=3, num_val=1, num_test=1, radius=(3.0, 6.0))
    paths = generate_demo_dataset(str(tmp_path / "demo3d"), cfg, progress=False)
    rows = list(csv.DictReader(open(paths["train"])))
    assert list(rows[0])[:7] == ["filename", "x", "y", "z", "width", "height", "depth"]
    vol = nib.load(str(tmp_path / "demo3d" / rows[0]["filename"]))
    assert vol.shape == (40, 40, 40) and vol.get_fdata().dtype.kind == "f"
    np.testing.assert_allclose(vol.get_fdata(), render_sample(cfg, 0).image, atol=1e-6)


def test_ensure_reuses_and_never_overwrites(tmp_path):
    cfg = DemoDataConfig(**SMALL)
    out = str(tmp_path / "demo")
    ensure_demo_dataset(out, cfg, progress=False)
    stamp = os.path.getmtime(os.path.join(out, "train.csv"))
    ensure_demo_dataset(out, cfg, progress=False)  # same parameters: reused as is
    assert os.path.getmtime(os.path.join(out, "train.csv")) == stamp
    with pytest.raises(ValueError, match="does not hold the demo data for these parameters"):
        ensure_demo_dataset(out, DemoDataConfig(**{**SMALL, "seed": 5}), progress=False)
    with pytest.raises(FileExistsError):
        generate_demo_dataset(out, cfg, progress=False)


def test_bad_config():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        DemoDataConfig(spatial_dims=4)
    with pytest.raises(ValueError, match="size must be >= 4"):
        DemoDataConfig(size=16)


def test_command_line(tmp_path, capsys):
    from monai_softcam.__main__ import main

    assert main(["demo-data", str(tmp_path / "d"), "--size", "40", "--num_train", "2", "--num_val", "1", "--num_test", "1"]) == 0
    assert os.path.isfile(tmp_path / "d" / "test.csv")
    assert main(["demo-data", str(tmp_path / "d")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["backbones"]) == 0
    assert "vgg16_bn" in capsys.readouterr().out
