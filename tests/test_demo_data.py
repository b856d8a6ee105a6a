import csv
import json
import os
import warnings

import numpy as np
import pytest
from conftest import REPO_ROOT

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

    assert (
        main(
            ["demo-data", str(tmp_path / "d"), "--size", "40", "--num_train", "2", "--num_val", "1", "--num_test", "1"]
        )
        == 0
    )
    assert os.path.isfile(tmp_path / "d" / "test.csv")
    assert main(["demo-data", str(tmp_path / "d")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["backbones"]) == 0
    assert "vgg16_bn" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- variants

VARIANT_PRESETS = {"small": "demo_small.yaml", "multifocal": "demo_multifocal.yaml", "shortcut": "demo_shortcut.yaml"}


def _digest(*parts):
    import hashlib

    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()[:16]


def _sample_digest(cfg, indices):
    parts = []
    for i in indices:
        s = render_sample(cfg, i)
        parts += [
            np.round(s.image * 255).astype(np.uint8).tobytes(),
            s.mask.tobytes(),
            s.box,
            s.label,
            s.target,
            s.distractors,
        ]
    return _digest(*parts)


def test_default_variant_is_unchanged(tmp_path):
    """Regression anchor: digests taken from the generator before the variants were added (8-bit
    quantised pixels, masks, boxes, CSVs and demo.json), and the fingerprints of existing datasets."""
    from PIL import Image

    from monai_softcam.data.demo import _fingerprint

    out = tmp_path / "demo"
    generate_demo_dataset(str(out), DemoDataConfig(**SMALL), progress=False)
    parts = []
    for root, _, files in sorted(os.walk(out)):
        for name in sorted(files):
            path = os.path.join(root, name)
            parts += [os.path.relpath(path, out)]
            parts += [np.asarray(Image.open(path)).tobytes() if name.endswith(".png") else open(path, "rb").read()]
    assert _digest(*parts) == "336515b5feac9c85"
    assert not os.path.exists(out / "markers")
    assert _fingerprint(DemoDataConfig()) == "ae4feb7f5440598f"
    assert _fingerprint(DemoDataConfig(**SMALL)) == "b7ff444a43727ba6"
    # parameters the default variant does not read leave it (and its fingerprint) alone
    ignored = DemoDataConfig(**SMALL, variant="default", map_stride=4, max_lesions=2, shortcut_correlation=0.5)
    assert _fingerprint(ignored) == "b7ff444a43727ba6"
    assert _sample_digest(DemoDataConfig(), range(6)) == "3ddb0d1567a8e4a0"
    assert _sample_digest(DemoDataConfig(spatial_dims=3, size=40, radius=(3.0, 6.0)), range(3)) == "0119cf28d87cf972"


@pytest.mark.parametrize("variant", ["small", "multifocal", "shortcut"])
def test_variants_are_deterministic_and_keep_the_shared_content(variant, tmp_path):
    cfg = DemoDataConfig(variant=variant, size=48, num_train=8, num_val=4, num_test=4, radius=(3.0, 6.0))
    a = generate_demo_dataset(str(tmp_path / "a"), cfg, progress=False)
    generate_demo_dataset(str(tmp_path / "b"), cfg, progress=False)
    for root, _, files in os.walk(tmp_path / "a"):
        for name in files:
            path = os.path.join(root, name)
            twin = os.path.join(tmp_path / "b", os.path.relpath(path, tmp_path / "a"))
            assert open(path, "rb").read() == open(twin, "rb").read(), path  # same seed -> same bytes
    other = DemoDataConfig(**{**vars(cfg), "seed": 1})
    assert not np.array_equal(render_sample(cfg, 0).image, render_sample(other, 0).image)
    # background, distractors, label, target and noise are the default variant's
    default = DemoDataConfig(**{**vars(cfg), "variant": "default"})
    for i in range(16):
        s, d = render_sample(cfg, i, with_lesion=False, with_marker=False), render_sample(default, i, with_lesion=False)
        np.testing.assert_array_equal(s.image, d.image)
        assert (s.label, s.target, s.distractors) == (d.label, d.target, d.distractors)
    assert json.load(open(tmp_path / "a" / "demo.json"))["config"]["variant"] == variant
    assert len(list(csv.DictReader(open(a["train"])))) == 8


def _cells_touched(box, dims, stride):
    starts, sizes = box[:dims], box[dims:]
    return [(s + n - 1) // stride - s // stride + 1 for s, n in zip(starts, sizes)]


@pytest.mark.parametrize("stride", [8, 4])
def test_small_lesions_span_one_to_three_map_cells(stride, tmp_path):
    from PIL import Image

    cfg = DemoDataConfig(variant="small", map_stride=stride, size=64, num_train=24, num_val=8, num_test=8)
    paths = generate_demo_dataset(str(tmp_path / "small"), cfg, progress=False)
    rows = [r for split in ("train", "val", "test") for r in csv.DictReader(open(paths[split]))]
    lo, hi = cfg.small_diameter
    extents = []
    for i, row in enumerate(rows):
        sample = render_sample(cfg, i)
        if not sample.label:
            continue
        mask = np.asarray(Image.open(tmp_path / "small" / row["mask"])) > 0
        np.testing.assert_array_equal(mask, sample.mask)
        assert sample.n_lesions == 1 and int(row["bin_target"]) == 1
        extent = [float(row["width"]), float(row["height"])]
        extents += extent
        # per-axis diameter 0.8-1.2 times the nominal 0.5-1.5 cells, +-1 px for the pixel grid
        assert all(0.8 * lo * stride - 1 <= e <= 1.2 * hi * stride + 1 for e in extent), (i, extent)
        assert all(1 <= n <= 3 for n in _cells_touched(sample.box, 2, stride)), (i, sample.box)
        lesion = sample.image - render_sample(cfg, i, with_lesion=False).image
        assert lesion[sample.mask].sum() > 0.6 * lesion.sum()  # the mask holds the lesion
    assert len(extents) >= 20
    assert max(extents) > 1.0 * stride and min(extents) < 0.75 * stride  # the range is used
    # 3D: the same rule in voxels
    cfg3 = DemoDataConfig(spatial_dims=3, size=32, variant="small", radius=(3.0, 6.0))
    boxes = [s.box for s in (render_sample(cfg3, i) for i in range(10)) if s.label]
    assert boxes and all(1 <= n <= 3 for b in boxes for n in _cells_touched(b, 3, 8))


def test_small_lesions_take_their_contrast_from_small_contrast():
    """The small lesion's intensity scales with small_contrast (and not with contrast, which the
    distractors keep): doubling a fixed small_contrast doubles the lesion wherever nothing clips."""
    one = DemoDataConfig(variant="small", size=64, small_contrast=(1.5, 1.5))
    two = DemoDataConfig(variant="small", size=64, small_contrast=(3.0, 3.0))
    brighter_distractors = DemoDataConfig(variant="small", size=64, small_contrast=(1.5, 1.5), contrast=(3.0, 4.0))
    checked = 0
    for i in range(12):
        a, b = render_sample(one, i), render_sample(two, i)
        np.testing.assert_array_equal(
            render_sample(one, i, with_lesion=False).image, render_sample(two, i, with_lesion=False).image
        )
        if not a.label:
            continue
        base = render_sample(one, i, with_lesion=False).image
        la, lb = a.image - base, b.image - base
        free = (b.image < 1.0) & (b.image > 0.0) & (base > 0.0) & (a.image < 1.0) & a.mask
        np.testing.assert_allclose(lb[free], 2 * la[free], atol=2e-6)
        assert la[a.mask].max() <= 1.5 * one.background_std + 1e-6
        c = render_sample(brighter_distractors, i)
        cb = render_sample(brighter_distractors, i, with_lesion=False).image
        np.testing.assert_allclose(
            (c.image - cb)[free & (cb < 1.0) & (c.image < 1.0)], la[free & (cb < 1.0) & (c.image < 1.0)], atol=2e-6
        )
        checked += 1
    assert checked >= 3


def test_multifocal_masks_are_the_union_and_boxes_parse(tmp_path):
    from PIL import Image

    from monai_softcam.data import CSVDataSpec

    cfg = DemoDataConfig(
        variant="multifocal", size=64, num_train=24, num_val=8, num_test=8, radius=(3.0, 6.0), lesion_fraction=0.7
    )
    out = tmp_path / "multi"
    paths = generate_demo_dataset(str(out), cfg, progress=False)
    rows = [r for split in ("train", "val", "test") for r in csv.DictReader(open(paths[split]))]
    assert list(rows[0])[-3:] == ["mask", "n_lesions", "boxes"]
    counts = []
    for i, row in enumerate(rows):
        sample = render_sample(cfg, i)
        boxes = json.loads(row["boxes"])
        assert int(row["n_lesions"]) == sample.n_lesions == len(boxes) == len(sample.lesion_masks)
        if not sample.label:
            assert boxes == [] and row["x"] == "" and not sample.mask.any()
            continue
        counts.append(sample.n_lesions)
        union = np.logical_or.reduce(sample.lesion_masks)
        np.testing.assert_array_equal(sample.mask, union)
        np.testing.assert_array_equal(np.asarray(Image.open(out / row["mask"])) > 0, union)
        assert sum(m.sum() for m in sample.lesion_masks) == union.sum()  # the lesions do not overlap
        lesion = sample.image - render_sample(cfg, i, with_lesion=False).image
        for m, box in zip(sample.lesion_masks, boxes):  # each box is its lesion's, RSNA convention
            cols, rows_ = np.nonzero(m.T)
            assert box == [cols.min(), rows_.min(), np.ptp(cols) + 1, np.ptp(rows_) + 1]
            assert lesion[m].mean() > 0.02  # every listed lesion is in the image
        cols, rows_ = np.nonzero(union.T)  # x, y, width, height: the union's bounding box
        union_box = [cols.min(), rows_.min(), np.ptp(cols) + 1, np.ptp(rows_) + 1]
        assert [float(row[k]) for k in ("x", "y", "width", "height")] == union_box
    assert set(counts) == {1, 2, 3, 4}
    # the data spec reads the CSVs (extra columns are ignored), the single box columns too
    spec = CSVDataSpec(
        train_csv="train.csv",
        val_csv="val.csv",
        test_csv="test.csv",
        image_column="filename",
        label_column="bin_target",
        mask_column="mask",
        box_columns=["x", "y", "width", "height"],
    )
    items = spec.datalist("train", str(out), num_classes=2)
    assert [len(item["boxes"]) for item in items] == [1 if r["x"] else 0 for r in rows[:24]]
    assert all(os.path.isfile(item["mask"]) for item in items)
    # 3D: ellipsoids, a box of 6 numbers per lesion
    cfg3 = DemoDataConfig(spatial_dims=3, size=32, variant="multifocal", radius=(3.0, 6.0), lesion_fraction=1.0)
    samples = [render_sample(cfg3, i) for i in range(6)]
    assert (
        all(1 <= s.n_lesions <= 4 and len(s.boxes[0]) == 6 for s in samples) and max(s.n_lesions for s in samples) > 1
    )


def test_shortcut_marker_follows_the_label_in_train_and_val_only(tmp_path):
    cfg = DemoDataConfig(variant="shortcut", size=48, num_train=400, num_val=200, num_test=400, radius=(3.0, 6.0))
    samples = [render_sample(cfg, i) for i in range(1000)]
    split = np.array([s.split for s in samples])
    label = np.array([s.label for s in samples])
    marker = np.array([s.marker for s in samples])
    for name, tolerance in (("train", 0.07), ("val", 0.1)):
        sel = split == name
        assert abs(marker[sel & (label == 1)].mean() - 0.9) < tolerance, name
        assert abs(marker[sel & (label == 0)].mean() - 0.1) < tolerance, name
    test = split == "test"
    assert abs(marker[test & (label == 1)].mean() - 0.5) < 0.1 and abs(marker[test & (label == 0)].mean() - 0.5) < 0.1
    assert abs(marker[test & (label == 1)].mean() - marker[test & (label == 0)].mean()) < 0.15
    # the marker: a flat square of one map cell in a corner, apart from the lesion; nothing else changes
    for i in range(40):
        s = samples[i]
        if not s.marker:
            assert not s.marker_mask.any()
            continue
        rows_, cols = np.nonzero(s.marker_mask)
        assert s.marker_mask.sum() == 64 and np.ptp(rows_) == np.ptp(cols) == 7
        assert rows_.min() in (4, 48 - 12) and cols.min() in (4, 48 - 12)
        assert np.all(s.image[s.marker_mask] == np.float32(0.95))
        assert not (s.marker_mask & s.mask).any()
        plain = render_sample(cfg, i, with_marker=False).image
        np.testing.assert_array_equal(s.image[~s.marker_mask], plain[~s.marker_mask])
    # correlation 1: the marker tells the label in train and val
    exact = DemoDataConfig(**{**vars(cfg), "shortcut_correlation": 1.0})
    assert all(render_sample(exact, i).marker == render_sample(exact, i).label for i in range(0, 600, 7))
    # the split (not the index alone) sets the rule: rendered for another split, only the marker may change
    s_train, s_test = render_sample(cfg, 3, split="train"), render_sample(cfg, 3, split="test")
    outside = ~(s_train.marker_mask | s_test.marker_mask)
    np.testing.assert_array_equal(s_train.image[outside], s_test.image[outside])


def test_shortcut_dataset_writes_marker_masks(tmp_path):
    import nibabel as nib
    from PIL import Image

    cfg = DemoDataConfig(variant="shortcut", size=48, num_train=20, num_val=10, num_test=10, radius=(3.0, 6.0))
    out = tmp_path / "shortcut"
    paths = generate_demo_dataset(str(out), cfg, progress=False)
    for split in ("train", "val", "test"):
        rows = list(csv.DictReader(open(paths[split])))
        assert list(rows[0])[-3:] == ["mask", "marker", "marker_mask"]
        for row in rows:
            i = int(row["filename"][len("images/demo_") : -4])
            sample = render_sample(cfg, i)
            assert sample.split == split and int(row["marker"]) == sample.marker
            marker = np.asarray(Image.open(out / row["marker_mask"])) > 0
            np.testing.assert_array_equal(marker, sample.marker_mask)
            image = np.asarray(Image.open(out / row["filename"]))
            assert np.all(image[marker] == 242)  # round(0.95 * 255)
            assert bool(marker.any()) == bool(sample.marker)
    # 3D: a cube of map_stride voxels in one of the 8 corners
    cfg3 = DemoDataConfig(
        spatial_dims=3, size=32, variant="shortcut", radius=(3.0, 6.0), num_train=4, num_val=1, num_test=1
    )
    paths = generate_demo_dataset(str(tmp_path / "shortcut3d"), cfg3, progress=False)
    rows = list(csv.DictReader(open(paths["train"])))
    for row in rows:
        marker = nib.load(str(tmp_path / "shortcut3d" / row["marker_mask"])).get_fdata() > 0
        assert int(row["marker"]) == int(marker.any())
        if marker.any():
            starts = [int(w.min()) for w in np.nonzero(marker)]
            assert marker.sum() == 8**3 and all(s in (4, 20) for s in starts)
    assert any(int(r["marker"]) for r in rows)


def test_variant_fingerprints_and_reuse(tmp_path):
    from monai_softcam.data.demo import _fingerprint

    base = DemoDataConfig(**SMALL)
    prints = {
        v: _fingerprint(DemoDataConfig(**SMALL, variant=v)) for v in ("default", "small", "multifocal", "shortcut")
    }
    assert len(set(prints.values())) == 4
    shortcut = DemoDataConfig(**SMALL, variant="shortcut")
    assert _fingerprint(DemoDataConfig(**SMALL, variant="shortcut", shortcut_correlation=0.7)) != prints["shortcut"]
    assert _fingerprint(DemoDataConfig(**SMALL, variant="shortcut", max_lesions=2)) == prints["shortcut"]  # not read
    out = str(tmp_path / "demo")
    ensure_demo_dataset(out, base, progress=False)
    with pytest.raises(ValueError, match="does not hold the demo data for these parameters"):
        ensure_demo_dataset(out, shortcut, progress=False)  # a variant never reuses the default data
    ensure_demo_dataset(str(tmp_path / "s"), shortcut, progress=False)
    ensure_demo_dataset(str(tmp_path / "s"), shortcut, progress=False)  # reused
    saved = json.load(open(tmp_path / "s" / "demo.json"))
    assert _fingerprint(DemoDataConfig(**saved["config"])) == saved["fingerprint"] == prints["shortcut"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"variant": "tiny"}, "variant must be one of default, small, multifocal, shortcut, got 'tiny'"),
        ({"shortcut_correlation": 1.5}, r"shortcut_correlation must be a number in \[0, 1\], got 1.5"),
        ({"shortcut_correlation": -0.1}, r"shortcut_correlation must be a number in \[0, 1\], got -0.1"),
        ({"shortcut_correlation": "high"}, r"shortcut_correlation must be a number in \[0, 1\], got 'high'"),
        ({"map_stride": 0}, "map_stride must be an integer >= 1, got 0"),
        ({"max_lesions": 0}, "max_lesions must be an integer >= 1, got 0"),
        ({"small_diameter": (2.0, 1.0)}, "small_diameter must be a range"),
        ({"small_diameter": 1.0}, "small_diameter must be a range"),
        ({"small_contrast": (3.0, 2.0)}, "small_contrast must be a range"),
        ({"small_contrast": "bright"}, "small_contrast must be a range"),
        ({"variant": "small", "map_stride": 32}, "size must be >= 4 \\* the largest small-lesion radius"),
        ({"variant": "shortcut", "map_stride": 40}, "size must be >= 3 \\* map_stride"),
    ],
)
def test_bad_variant_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemoDataConfig(**kwargs)
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'dev'"):
        render_sample(DemoDataConfig(size=48, variant="shortcut"), 0, split="dev")


@pytest.mark.parametrize("variant", sorted(VARIANT_PRESETS))
def test_variant_presets_make_their_own_demo_data(variant, tmp_path):
    """Each variant preset, merged after train.yaml (and after demo3d.yaml), sets its variant and a
    demo_dir of its own (never the default demo data's) that prepare_data fills and the data spec reads."""
    from monai.bundle import ConfigParser

    train = os.path.join(REPO_ROOT, "bundle", "configs", "train.yaml")
    preset = os.path.join(REPO_ROOT, "configs", VARIANT_PRESETS[variant])
    default = ConfigParser()
    default.read_config(f=[train])
    default["bundle_root"] = str(tmp_path)
    demo3d = os.path.join(REPO_ROOT, "configs", "demo3d.yaml")
    for extra, dims, folder in (([], 2, f"demo_{variant}"), ([demo3d], 3, f"demo_{variant}3d")):
        parser = ConfigParser()
        parser.read_config(f=[train, *extra, preset])
        parser["bundle_root"] = str(tmp_path)
        demo_dir = parser.get_parsed_content("demo_dir")
        assert demo_dir == os.path.join(str(tmp_path), "data", folder) != default.get_parsed_content("demo_dir")
        assert parser.get_parsed_content("dataset_dir") == demo_dir
        config = parser.get_parsed_content("demo_data")
        assert isinstance(config, DemoDataConfig) and config.variant == variant and config.spatial_dims == dims
        assert config.size == parser.get_parsed_content("image_size")[0]
        # prepare_data makes it (a few images here) and the bundle's data spec reads it
        parser["demo_data#num_train"], parser["demo_data#num_val"], parser["demo_data#num_test"] = 4, 2, 2
        parser.get_parsed_content("prepare_data")()
        items = parser.get_parsed_content("data").datalist("train", demo_dir, num_classes=2)
        assert len(items) == 4 and all(os.path.isfile(i["image"]) and os.path.isfile(i["mask"]) for i in items)
        assert json.load(open(os.path.join(demo_dir, "demo.json")))["config"]["variant"] == variant
    assert not os.path.exists(default.get_parsed_content("demo_dir"))
    # merged after evaluate.yaml or inference.yaml (which have no demo generator) it reads as well
    for configs in (
        [train, os.path.join(REPO_ROOT, "bundle", "configs", "evaluate.yaml"), preset],
        [os.path.join(REPO_ROOT, "bundle", "configs", "inference.yaml"), preset],
    ):
        parser = ConfigParser()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI: "+demo_data ... copying instead" without train.yaml
            parser.read_config(f=configs)
        assert parser.get("demo_data")["variant"] == variant
