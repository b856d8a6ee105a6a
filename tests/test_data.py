"""Data handling: the CSV data spec, image readers, input transforms, sampling, caching, intensity statistics."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from data_helpers import write_csv, write_dicom, write_png

from monai_softcam.data import (
    BalancedSampler,
    CSVDataSpec,
    DataListError,
    DicomReader,
    SimpleITKReader,
    intensity_stats,
    make_dataset,
    make_sampler,
)
from monai_softcam.transforms import BoxesToMaskd, RandColorJitterd, load_input, preprocessing

PYDICOM_FILES = os.path.join(os.path.dirname(__import__("pydicom").data.__file__), "test_files")


def _touch(*paths):
    for p in paths:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").close()


# ---------------------------------------------------------------------------------------- CSV spec


def test_spec_reads_labels_masks_boxes_and_templates(tmp_path):
    root = str(tmp_path)
    _touch(f"{root}/img/a.dcm", f"{root}/img/b.dcm", f"{root}/img/m.png")
    write_csv(
        f"{root}/train.csv",
        ["filename", "label", "mask", "x", "y", "w", "h"],
        [["a.png", "1", "m.png", "10", "20", "30", "40"], ["b.png", "0", "", "", "", "", ""]],
    )
    spec = CSVDataSpec(
        mask_column="mask", box_columns=["x", "y", "w", "h"], image_root="img", image_template="{stem}.dcm"
    )
    items = spec.datalist("train", root, num_classes=2)
    assert items == [
        {
            "image": f"{root}/img/a.dcm",
            "row": 2,
            "label": 1,
            "mask": f"{root}/img/m.png",
            "boxes": [[10.0, 20.0, 30.0, 40.0]],
        },
        {"image": f"{root}/img/b.dcm", "row": 3, "label": 0, "boxes": []},
    ]
    assert spec.datalist("train", root, annotations=False)[0] == {"image": f"{root}/img/a.dcm", "row": 2, "label": 1}


def test_spec_reports_every_problem_with_file_row_column(tmp_path):
    root = str(tmp_path)
    _touch(f"{root}/a.png")
    rows = [
        ["a.png", "1", "0", "0", "5", "5"],  # fine
        ["a.png", "0", "", "", "", ""],  # the same image again
        ["", "1", "", "", "", ""],  # no image
        ["gone.png", "1", "", "", "", ""],  # missing file
        ["a2.png", "7", "", "", "", ""],  # label outside the classes (and missing)
        ["a3.png", "x", "", "", "", ""],  # not a number
        ["../../etc/passwd", "1", "", "", "", ""],  # escapes the root
        ["a4.png", "1", "3", "", "", ""],  # incomplete box
        ["a5.png", "1", "1", "1", "-2", "4"],  # negative width
    ]
    csv_path = write_csv(f"{root}/train.csv", ["filename", "label", "x", "y", "w", "h"], rows)
    spec = CSVDataSpec(box_columns=["x", "y", "w", "h"])
    items, problems = spec.scan("train", root, num_classes=2)
    text = "\n".join(map(str, problems))
    assert f"{csv_path} row 3: image 'a.png' is listed again (first at row 2)" in text
    assert f"{csv_path} row 4 column 'filename': empty image name" in text
    assert f"{csv_path} row 5: file not found: {root}/gone.png" in text
    assert f"{csv_path} row 6 column 'label': label 7 is not one of the classes [0, 1]" in text
    assert f"{csv_path} row 7 column 'label': label 'x' is not a number" in text
    assert f"{csv_path} row 8 column 'filename': path '../../etc/passwd' resolves outside the data root" in text
    assert f"{csv_path} row 9 columns ['x', 'y', 'w', 'h']: incomplete box" in text
    assert f"{csv_path} row 10 columns ['x', 'y', 'w', 'h']: box" in text and "width, height > 0" in text
    # the duplicate's image 'a.png' is affected, so nothing is kept; all problems are raised together
    assert items == []
    with pytest.raises(DataListError, match=r"problem\(s\) in the train split \(fix them, or set skip_bad"):
        spec.datalist("train", root, num_classes=2)


def test_skip_bad_keeps_good_rows_and_lists_every_skipped_one(tmp_path):
    root = str(tmp_path)
    _touch(f"{root}/a.png", f"{root}/b.png")
    write_csv(f"{root}/val.csv", ["filename", "label"], [["a.png", "0"], ["b.png", "5"], ["c.png", "1"]])
    spec = CSVDataSpec()
    items = spec.datalist("val", root, num_classes=2, skip_bad=True, report_dir=str(tmp_path / "out"))
    assert [os.path.basename(i["image"]) for i in items] == ["a.png"]
    report = list(csv.DictReader(open(tmp_path / "out" / "skipped_val.csv")))
    assert [(r["where"].rsplit(" ", 2)[-2:], r["problem"].split(":")[0]) for r in report] == [
        (["row", "3 column 'label'"], "label 5 is not one of the classes [0, 1]"),
        (["row", "4"], "file not found"),
    ] or len(report) == 2
    assert {os.path.basename(r["image"]) for r in report} == {"b.png", "c.png"}


def test_missing_column_empty_split_missing_csv(tmp_path):
    root = str(tmp_path)
    write_csv(f"{root}/train.csv", ["filename"], [["a.png"]])
    with pytest.raises(DataListError, match=r"train.csv: no column 'label'; the columns are \['filename'\]"):
        CSVDataSpec().datalist("train", root)
    write_csv(f"{root}/val.csv", ["filename", "label"], [])
    with pytest.raises(DataListError, match="the val split is empty"):
        CSVDataSpec().datalist("val", root)
    with pytest.raises(DataListError, match="CSV file not found for the test split"):
        CSVDataSpec().datalist("test", root)
    with pytest.raises(ValueError, match="box_columns must name 4 columns"):
        CSVDataSpec(box_columns=["x", "y"])
    with pytest.raises(ValueError, match="image_template may use"):
        CSVDataSpec(image_template="{patient}.dcm")


def test_rows_per_box_are_merged_and_holdout_splits_are_stable(tmp_path):
    root = str(tmp_path)
    rows = []
    for i in range(60):
        _touch(f"{root}/imgs/p{i}.dcm")
        if i % 3 == 0:
            rows += [[f"p{i}", "10", "10", "5", "5", "1"], [f"p{i}", "50", "60", "7", "8", "1"]]
        else:
            rows.append([f"p{i}", "", "", "", "", "0"])
    write_csv(f"{root}/labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)
    spec = CSVDataSpec(
        train_csv="labels.csv",
        val_csv="labels.csv",
        test_csv="labels.csv",
        image_column="patientId",
        group_column="patientId",
        label_column="Target",
        box_columns=["x", "y", "width", "height"],
        image_root="imgs",
        image_template="{value}.dcm",
        holdout={"val": 0.2, "test": 0.2},
    )
    parts = {s: spec.datalist(s, root, num_classes=2) for s in ("train", "val", "test")}
    names = [{i["image"] for i in parts[s]} for s in parts]
    assert sum(map(len, names)) == 60 and len(set.union(*names)) == 60  # disjoint, complete
    assert 20 <= len(parts["train"]) <= 50 and parts["val"] and parts["test"]
    merged = next(i for s in parts.values() for i in s if i["image"].endswith("/p0.dcm"))
    assert merged["boxes"] == [[10.0, 10.0, 5.0, 5.0], [50.0, 60.0, 7.0, 8.0]] and merged["label"] == 1
    assert parts == {s: spec.datalist(s, root, num_classes=2) for s in ("train", "val", "test")}  # stable
    # inconsistent labels of one image are a problem
    rows.append(["p0", "", "", "", "", "0"])
    write_csv(f"{root}/labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)
    problems = [str(p) for s in ("train", "val", "test") for p in spec.scan(s, root, 2)[1]]
    assert any("label 0 differs from row 2 of the same image (1)" in p for p in problems)


# ---------------------------------------------------------------------------------------- readers


def _read(reader, path):
    return reader.get_data(reader.read(path))


def test_dicom_bundled_files_of_pydicom():
    reader = DicomReader()
    ct, meta = _read(reader, os.path.join(PYDICOM_FILES, "CT_small.dcm"))
    assert ct.shape == (128, 128) and ct.dtype == np.float32
    assert ct.min() < -800 and ct.max() > 1000  # rescale applied: Hounsfield units
    np.testing.assert_allclose(np.abs(np.diag(meta["affine"])[:2]), [0.661468, 0.661468], rtol=1e-5)
    mr, _ = _read(reader, os.path.join(PYDICOM_FILES, "MR_small.dcm"))
    assert 0 <= mr.min() and mr.max() <= 1  # no rescale: [0, 1] by stored bits
    ybr, _ = _read(reader, os.path.join(PYDICOM_FILES, "SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL JPEG
    rgb, _ = _read(reader, os.path.join(PYDICOM_FILES, "SC_rgb_dcmtk_+eb+cr.dcm"))  # same picture, RGB JPEG
    assert ybr.shape == (100, 100, 3) and np.abs(ybr - rgb).max() < 0.05
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0], atol=0.01)  # top-left is red
    rle16, _ = _read(reader, os.path.join(PYDICOM_FILES, "SC_rgb_rle_16bit.dcm"))
    assert rle16.shape == (100, 100, 3) and rle16.max() <= 1
    with pytest.raises(ValueError, match=r"rtdose.dcm: multi-frame DICOM \(15 frames\) cannot be used as a 2D image"):
        _read(reader, os.path.join(PYDICOM_FILES, "rtdose.dcm"))
    volume, _ = _read(DicomReader(spatial_dims=3), os.path.join(PYDICOM_FILES, "rtdose.dcm"))
    assert volume.shape == (10, 15, 15) or volume.ndim == 3


def test_dicom_written_monochrome_bits_rescale_rgb(tmp_path):
    reader = DicomReader()
    stored = (np.arange(12 * 20).reshape(12, 20) * 17 % 4096).astype(np.uint16)  # 12-bit in 16-bit words
    m2, meta = _read(reader, write_dicom(str(tmp_path / "m2.dcm"), stored, bits_stored=12, spacing=(0.2, 0.1)))
    np.testing.assert_allclose(m2, stored.T / 4095.0, rtol=1e-6)  # (x = column, y = row), [0, 1] by BitsStored
    np.testing.assert_allclose(np.diag(meta["affine"])[:2], [-0.1, -0.2])  # column spacing along x; LPS -> RAS
    m1, _ = _read(reader, write_dicom(str(tmp_path / "m1.dcm"), 4095 - stored, "MONOCHROME1", bits_stored=12))
    np.testing.assert_allclose(m1, m2, atol=1e-6)  # MONOCHROME1 looks like MONOCHROME2
    ct, _ = _read(
        reader, write_dicom(str(tmp_path / "ct.dcm"), stored, bits_stored=12, slope=0.5, intercept=-1024, modality="CT")
    )
    np.testing.assert_allclose(ct, stored.T * 0.5 - 1024, rtol=1e-6)  # CT keeps Hounsfield units
    colour = np.zeros((8, 10, 3), np.uint8)
    colour[..., 1] = 255
    rgb, meta = _read(reader, write_dicom(str(tmp_path / "rgb.dcm"), colour, "RGB"))
    assert rgb.shape == (10, 8, 3) and meta["original_channel_dim"] == -1
    np.testing.assert_allclose(rgb[0, 0], [0, 1, 0])
    (tmp_path / "bad.dcm").write_bytes(b"DICM" * 10)
    with pytest.raises(ValueError, match="bad.dcm: not a readable DICOM file"):
        _read(reader, str(tmp_path / "bad.dcm"))


@pytest.mark.parametrize(
    "name,shape,dtype",
    [
        ("g8.png", (30, 40), np.uint8),
        ("g16.png", (30, 40), np.uint16),
        ("rgb8.png", (30, 40, 3), np.uint8),
        ("rgb16.png", (30, 40, 3), np.uint16),
    ],
)
def test_png_8_16_bit_grey_rgb_through_load_input(tmp_path, name, shape, dtype):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    path = write_png(str(tmp_path / name), pixels)
    out = load_input([40, 30])({"image": path})["image"]  # (x, y) = (cols, rows): no resizing needed
    expected = np.moveaxis(pixels, (0, 1), (1, 0)) / np.iinfo(dtype).max  # x, y [, c]
    if pixels.ndim == 3:
        expected = np.moveaxis(expected, -1, 0)
    else:
        expected = expected[None]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)  # 16-bit colour keeps its precision


def test_every_listed_extension_has_a_reader(tmp_path):
    """IMAGE_EXTENSIONS (what list_images takes) is the readers' own list: each has a reader, in any case."""
    from monai.data import NibabelReader

    from monai_softcam.data import IMAGE_EXTENSIONS, default_readers

    readers = default_readers(2) + [NibabelReader()]
    assert {".bmp", ".nhdr", ".dcm", ".dicom", ".nii.gz"} <= set(IMAGE_EXTENSIONS)
    for ext in IMAGE_EXTENSIONS:
        for name in (f"x{ext}", f"x{ext.upper()}"):
            assert any(r.verify_suffix(str(tmp_path / name)) for r in readers), name


def test_jpeg_and_nrrd_geometry(tmp_path):
    import SimpleITK

    reader = SimpleITKReader()
    write_png(str(tmp_path / "a.jpg"), np.full((12, 16, 3), 200, np.uint8))
    arr, meta = _read(reader, str(tmp_path / "a.jpg"))
    assert arr.shape == (16, 12, 3) and abs(float(arr.mean()) - 200 / 255) < 0.01  # photographs: [0, 1]
    volume = SimpleITK.GetImageFromArray(np.zeros((4, 5, 6), np.int16))  # z, y, x
    volume.SetSpacing((0.5, 0.8, 2.0))
    volume.SetOrigin((10.0, 20.0, 30.0))
    SimpleITK.WriteImage(volume, str(tmp_path / "v.nrrd"))
    arr, meta = _read(reader, str(tmp_path / "v.nrrd"))
    assert arr.shape == (6, 5, 4)
    np.testing.assert_allclose(meta["affine"], [[-0.5, 0, 0, -10], [0, -0.8, 0, -20], [0, 0, 2, 30], [0, 0, 0, 1]])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        _read(reader, str(tmp_path / "broken.png"))


# ---------------------------------------------------------------------------------------- transforms


def test_box_follows_the_image_through_crop_resize_and_augmentation(tmp_path):
    """A bright box drawn on a non-square image stays under its mask after the preset's resize + centre
    crop, and after random rotations and flips applied to both."""
    from monai.transforms import Compose, RandFlipd, RandRotated

    rows, cols = 300, 400
    pixels = np.full((rows, cols), 30, np.uint8)
    box = [260.0, 40.0, 60.0, 90.0]  # x (column), y (row), width, height
    pixels[40:130, 260:320] = 250
    path = write_png(str(tmp_path / "x.png"), pixels)
    item = {"image": path, "boxes": [box]}
    loaded = load_input([128, 128], resize="crop")(dict(item))
    image, mask = loaded["image"][0], loaded["mask"][0] > 0.5
    assert image.shape == mask.shape == (128, 128)
    bright = image > 0.5
    iou = (bright & mask).sum() / (bright | mask).sum()
    assert iou > 0.9, iou
    augment = Compose(
        [
            RandRotated(keys=["image", "mask"], range_x=3.14, prob=1.0, mode=["bilinear", "nearest"]),
            RandFlipd(keys=["image", "mask"], spatial_axis=0, prob=1.0),
        ]
    )
    augment.set_random_state(3)
    moved = augment(dict(loaded))
    bright, mask = moved["image"][0] > 0.5, moved["mask"][0] > 0.5
    assert (bright & mask).sum() / (bright | mask).sum() > 0.8


def test_box_outside_image_and_mask_size_mismatch_are_named(tmp_path):
    path = write_png(str(tmp_path / "small.png"), np.zeros((20, 30), np.uint8))
    with pytest.raises(RuntimeError) as err:
        load_input([16, 16])({"image": path, "boxes": [[25.0, 5.0, 10.0, 5.0]]})
    assert "small.png: box [x=25, y=5, width=10, height=5] lies outside the image of 30 x 20 pixels" in str(
        err.value.__cause__
    )
    image = torch.zeros(1, 30, 20)
    with pytest.raises(ValueError, match="does not match the image"):
        BoxesToMaskd()({"image": image, "mask": torch.zeros(1, 10, 10), "boxes": []})


def test_colour_jitter():
    img = torch.rand(3, 8, 8)
    same = RandColorJitterd("image", prob=1.0)({"image": img})["image"]
    torch.testing.assert_close(same, img)
    brighter = RandColorJitterd("image", prob=1.0, brightness=[1.5, 1.5])({"image": img * 0.5})["image"]
    torch.testing.assert_close(brighter, (img * 0.75).clamp(0, 1))
    grey = torch.rand(1, 8, 8)
    jitter = RandColorJitterd("image", prob=1.0, saturation=0.5, hue=0.3)
    torch.testing.assert_close(jitter({"image": grey})["image"], grey)  # colour only
    grey_rgb = grey.repeat(3, 1, 1)
    torch.testing.assert_close(jitter({"image": grey_rgb})["image"], grey_rgb, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="hue must be in"):
        RandColorJitterd("image", hue=0.7)


def test_grey_is_replicated_after_normalisation_step(tmp_path):
    path = write_png(str(tmp_path / "g.png"), np.full((10, 10), 51, np.uint8))
    out = preprocessing([10, 10], in_channels=3, mean=[0.1], std=[0.5])({"image": path})["image"]
    assert out.shape == (3, 10, 10)
    np.testing.assert_allclose(out.numpy(), (0.2 - 0.1) / 0.5, atol=1e-5)


# ---------------------------------------------------------------------------------------- sampling, caching, statistics


def test_class_and_progressive_sampling():
    labels = [0] * 90 + [1] * 10
    data = [{"label": v} for v in labels]
    # instance: every item once per epoch, in the order a shuffling data loader draws from the same seed
    torch.manual_seed(3)
    instance = [int(i) for i in torch.utils.data.DataLoader(list(range(100)), sampler=make_sampler("instance", data))]
    torch.manual_seed(3)
    shuffled = [int(i) for i in torch.utils.data.DataLoader(list(range(100)), shuffle=True)]
    assert sorted(instance) == list(range(100)) and instance == shuffled
    sampler = make_sampler("class", data)
    sampler.set_epoch(1)
    drawn = torch.tensor(labels)[list(iter(sampler))]
    assert len(drawn) == 100 and 0.35 < drawn.float().mean() < 0.65
    progressive = BalancedSampler(labels, mode="progressive", decay=0.9)
    torch.testing.assert_close(progressive.weights(1), sampler.weights(1))
    late = progressive.weights(200)
    torch.testing.assert_close(late, torch.full_like(late, 0.01), atol=1e-9, rtol=0)
    w5 = progressive.weights(5)
    alpha = 0.9**4
    torch.testing.assert_close(w5, alpha * sampler.weights() + (1 - alpha) * torch.full_like(w5, 0.01))
    progressive.set_epoch(2)
    assert list(iter(progressive)) == list(iter(progressive))  # a function of (seed, epoch, rank)
    with pytest.raises(ValueError, match="sampling must be one of"):
        make_sampler("balanced", data)


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_cached_datasets_give_the_same_items(tmp_path, cache):
    paths = [write_png(str(tmp_path / f"{i}.png"), np.full((6, 6), 40 * i, np.uint8)) for i in range(3)]
    data = [{"image": p, "label": i} for i, p in enumerate(paths)]
    ds = make_dataset(data, load_input([4, 4]), cache=cache, cache_dir=str(tmp_path / "cache"))
    values = [float(ds[i]["image"].mean()) for i in range(3)]
    np.testing.assert_allclose(values, [0.0, 40 / 255, 80 / 255], atol=1e-6)
    if cache == "disk":
        assert len(os.listdir(tmp_path / "cache")) == 3
    with pytest.raises(ValueError, match="cache must be one of"):
        make_dataset(data, load_input([4, 4]), cache="ram")


def test_intensity_statistics_auto(tmp_path, capsys):
    """'auto' statistics are measured on the training list when training starts and kept in the task
    (task.json) only; a task with numbers is not measured, and reads no data."""
    from monai_softcam.task import Task, TaskError

    paths = [write_png(str(tmp_path / f"{i}.png"), np.full((4, 4), v, np.uint8)) for i, v in enumerate((0, 255))]
    data = [{"image": p} for p in paths]
    mean, std = intensity_stats(data, load_input([4, 4]), progress=False)
    assert mean == [0.5] and std == [0.5]
    task = Task(["a", "b"], 2, 1, [4, 4], intensity_mean="auto", intensity_std=[0.25])
    with pytest.raises(TaskError, match="still 'auto'"):
        task.normalize()
    measured = task.with_measured_intensity(data, load_input([4, 4]))
    assert (measured.intensity_mean, measured.intensity_std) == ([0.5], [0.25])
    assert "intensity statistics of the training split (2 images): mean [0.5], std [0.5]" in capsys.readouterr().out
    fixed = Task(["a", "b"], 2, 1, [4, 4], intensity_mean=[0.1], intensity_std=[0.2])
    assert fixed.with_measured_intensity([{"image": str(tmp_path / "missing.png")}], load_input([4, 4])) is fixed
    saved = measured.save(str(tmp_path / "models" / "task.json"))
    assert json.load(open(tmp_path / "models" / "task.json"))["intensity_mean"] == [0.5] == saved.intensity_mean
    assert os.listdir(tmp_path / "models") == ["task.json"]  # stored once: no second statistics file
