"""The dataset presets in configs/ read the paper's real split CSVs (first rows, from ../shared) with
small generated images standing in for the real files (same names, sizes and formats)."""

import csv
import os
import re
from collections import Counter

import pytest
import torch
from conftest import REPO_ROOT
from data_helpers import UPSTREAM, fundus_photo, head_csv, oct_scan, write_csv, write_dicom, write_png, xray_with_boxes

from monai_softcam.__main__ import main as cli
from monai_softcam.data.check import check_data

TRAIN = os.path.join(REPO_ROOT, "bundle", "configs", "train.yaml")
INFERENCE = os.path.join(REPO_ROOT, "bundle", "configs", "inference.yaml")
PRESETS = os.path.join(REPO_ROOT, "configs")

if not os.path.isdir(UPSTREAM):
    pytest.skip(f"the shared split CSVs are not at {UPSTREAM}", allow_module_level=True)


def _pick(source, target, label, per_class):
    """The first ``per_class`` rows of each class of ``source`` (by ``label``), in file order."""
    counts = Counter()

    def keep(row):
        counts[row[label]] += 1
        return counts[row[label]] <= per_class[row[label]] if row[label] in per_class else False

    return head_csv(source, target, sum(per_class.values()), keep)


# split CSVs: (folder in upstream_csv, {split: file}, label column, rows taken per class)
SOURCES = {
    "fundus": (
        "kaggle",
        {
            "train": "kaggle_gradable_train_reduce.csv",
            "val": "kaggle_gradable_val.csv",
            "test": "kaggle_gradable_test.csv",
        },
        "onset1",
        {"0": 3, "1": 2},
    ),
    "fundus_grades": (
        "kaggle",
        {
            "train": "kaggle_gradable_train_reduce.csv",
            "val": "kaggle_gradable_val.csv",
            "test": "kaggle_gradable_test.csv",
        },
        "level",
        {"0": 1, "1": 1, "2": 1, "3": 1, "4": 1},
    ),
    "oct": ("Retinal_OCT", {s: f"{s}.csv" for s in ("train", "val", "test")}, "drusen", {"0": 3, "1": 2}),
    "oct_4class": (
        "Retinal_OCT",
        {s: f"multiclass/{s}.csv" for s in ("train", "val", "test")},
        "level",
        {"0": 1, "1": 1, "2": 1, "3": 1},
    ),
    "rsna": ("RSNA", {s: f"{s}.csv" for s in ("train", "val", "test")}, "bin_target", {"0": 2, "1": 3}),
}
# the config files merged after train.yaml / inference.yaml for each variant
VARIANTS = {
    "fundus": ["fundus.yaml"],
    "fundus_grades": ["fundus.yaml", "fundus_grades.yaml"],
    "oct": ["oct.yaml"],
    "oct_4class": ["oct.yaml", "oct_4class.yaml"],
    "rsna": ["rsna.yaml"],
}


def make_dataset(root, variant):
    """Copy the first rows of the variant's real split CSVs into ``root`` and write a stand-in image
    for every row, at the path, size and format the preset expects. Returns {split: rows}."""
    folder, files, label, per_class = SOURCES[variant]
    picked = {}
    for split, name in files.items():
        rows = _pick(os.path.join(UPSTREAM, folder, name), os.path.join(root, name), label, per_class)
        picked[split] = rows
        for i, row in enumerate(rows):
            if variant.startswith("fundus"):
                write_png(os.path.join(root, row["filename"]), fundus_photo(i))
            elif variant == "oct":
                write_png(os.path.join(root, row["filename"]), oct_scan(496, 512, i))
            elif variant == "oct_4class":
                size = (
                    (int(row["height"]), int(row["width"])) if "height" in row else (496, 512)
                )  # test.csv has no size
                write_png(os.path.join(root, row["filename"]), oct_scan(*size, i))
            else:  # RSNA: the challenge's 1024 x 1024 8-bit MONOCHROME2 DICOMs, named by patientId
                boxes = [[float(row[k]) for k in ("x", "y", "width", "height")]] if row["x"] else []
                stem = os.path.splitext(row["filename"])[0]
                write_dicom(os.path.join(root, "stage_2_train_images", stem + ".dcm"), xray_with_boxes(boxes, seed=i))
    return picked


def parse(configs, dataset_dir, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=list(configs))
    for key, value in (
        ("bundle_root", tmp_path / "bundle"),
        ("dataset_dir", dataset_dir),
        ("output_dir", tmp_path / "bundle" / "eval"),
        ("ckpt_dir", tmp_path / "bundle" / "models"),
    ):
        if key in parser:
            parser[key] = str(value)
    parser["device"] = "$torch.device('cpu')"
    return parser


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def preset_data(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    data = root / "data"
    picked = make_dataset(str(data), request.param)
    return request.param, root, str(data), picked


def test_preset_reads_the_real_split_csvs(preset_data):
    variant, tmp_path, dataset_dir, picked = preset_data
    _, _, label, per_class = SOURCES[variant]
    configs = [TRAIN] + [os.path.join(PRESETS, name) for name in VARIANTS[variant]]
    parser = parse(configs, dataset_dir, tmp_path)
    class_names = parser.get_parsed_content("class_names")
    assert len(class_names) == len(per_class)
    spec = parser.get_parsed_content("data")
    for split, rows in picked.items():
        items = spec.datalist(split, dataset_dir, num_classes=len(class_names))
        assert [item["label"] for item in items] == [int(row[label]) for row in rows]
        assert [item["row"] for item in items] == list(range(2, len(rows) + 2))
        assert all(os.path.isfile(item["image"]) for item in items)
        if variant == "oct_4class":  # the class names follow the CSVs' numbering (folder = class)
            assert [class_names[i["label"]].upper() for i in items] == [r["filename"].split("/")[1] for r in rows]
        if variant == "rsna":  # the CSV names converted PNGs; the preset reads the challenge's DICOMs
            assert [os.path.basename(i["image"]) for i in items] == [r["filename"][:-4] + ".dcm" for r in rows]
            assert [len(i["boxes"]) for i in items] == [1 if r["x"] else 0 for r in rows]
    size = tuple(parser.get_parsed_content("image_size"))
    expected = {"fundus": (512, 512), "oct": (496, 496), "rsna": (512, 512)}[variant.split("_")[0]]
    assert size == expected and parser.get_parsed_content("in_channels") == 3
    # the real pipelines: training (with the paper's augmentation) and validation
    mean = torch.tensor(parser.get_parsed_content("intensity_mean"))
    for key in ("train#dataset", "validate#dataset"):
        dataset = parser.get_parsed_content(key)
        item = dataset[0]
        assert tuple(item["image"].shape) == (3, *size), key
        assert item["image"].dtype == torch.float32 and torch.isfinite(item["image"]).all()
    # a validation image is the loaded image, replicated to 3 channels where grey, normalised with the preset's statistics
    std = torch.tensor(parser.get_parsed_content("intensity_std"))
    item = parser.get_parsed_content("validate#datalist")[0]
    loaded = parser.get_parsed_content("load_input")(dict(item))["image"]
    assert loaded.shape[0] == (3 if variant.startswith("fundus") else 1) and 0 <= loaded.min() and loaded.max() <= 1
    image = parser.get_parsed_content("validate#dataset")[0]["image"]
    expected = (loaded.expand(3, *size) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    assert torch.allclose(image, expected, atol=1e-5)
    # the data check finds nothing wrong
    assert check_data(list(configs[1:]), dataset_dir, progress=False, out=lambda s: None) == 0


def test_preset_test_csv_is_valid_inference_input(preset_data):
    """inference.yaml + the same preset (for its data section) reads the preset's test CSV (names,
    root, template) and preprocesses as training did, with the task training saved for the preset."""
    variant, tmp_path, dataset_dir, picked = preset_data
    presets = [os.path.join(PRESETS, name) for name in VARIANTS[variant]]
    trained = parse([TRAIN, *presets], dataset_dir, tmp_path)  # the task as training saves it
    trained.get_parsed_content("task").save(str(tmp_path / "bundle" / "models" / "task.json"))
    parser = parse([INFERENCE, *presets], dataset_dir, tmp_path)
    datalist = parser.get_parsed_content("datalist")
    assert len(datalist) == len(picked["test"]) and all(os.path.isfile(i["image"]) for i in datalist)
    size = tuple(parser.get_parsed_content("image_size"))
    item = parser.get_parsed_content("preprocessing")(datalist[0])
    assert tuple(item["image"].shape) == (3, *size)


def _iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


def test_rsna_boxes_stay_on_the_opacity_after_the_preset_resize(tmp_path):
    """The real RSNA boxes (first positive rows) drawn bright on 1024 px DICOMs stay under the mask
    after the preset's 1024 -> 512 resize; a non-square OCT-like scan checks the centre crop."""
    data = str(tmp_path / "data")
    make_dataset(data, "rsna")
    parser = parse([TRAIN, os.path.join(PRESETS, "rsna.yaml")], data, tmp_path)
    load = parser.get_parsed_content("load_input")
    items = [i for i in parser.get_parsed_content("data").datalist("val", data, num_classes=2) if i["boxes"]]
    assert items
    for item in items:
        out = load(dict(item))
        bright, mask = out["image"][0] > 0.8, out["mask"][0] > 0.5
        assert out["image"].shape[1:] == (512, 512) and mask.any()
        assert _iou(bright, mask) > 0.97
        x, y, w, h = item["boxes"][0]  # x is the image column: the first spatial axis in MONAI's layout
        xs, ys = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min().item() * 2 - x) <= 2 and abs(ys.min().item() * 2 - y) <= 2
        assert abs((xs.max().item() + 1) * 2 - (x + w)) <= 2 and abs((ys.max().item() + 1) * 2 - (y + h)) <= 2

    # OCT preset geometry (496 x 512 -> 496 x 496, 8 columns cut on each side) with a box near the edge
    pixels = oct_scan(496, 512, 0)
    pixels[100:200, 440:500] = 250
    path = write_png(str(tmp_path / "scan.png"), pixels)
    parser = parse([TRAIN, os.path.join(PRESETS, "oct.yaml")], data, tmp_path)
    out = parser.get_parsed_content("load_input")({"image": path, "boxes": [[440.0, 100.0, 60.0, 100.0]]})
    bright, mask = out["image"][0] > 0.8, out["mask"][0] > 0.5
    assert out["image"].shape[1:] == (496, 496)
    xs, ys = torch.nonzero(mask, as_tuple=True)
    assert (xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()) == (432, 491, 100, 199)
    assert _iou(bright, mask) > 0.97


def test_rsna_challenge_label_file_merges_boxes_and_splits_by_patient(tmp_path):
    """stage_2_train_labels.csv layout: one row per box; an image's boxes become one mask; patients
    are split 80/10/10 by a stable hash, no patient in two splits."""
    data = tmp_path / "data"
    source = list(csv.DictReader(open(os.path.join(UPSTREAM, "RSNA", "train.csv"))))[:60]
    rows, boxes_of = [], {}
    for i, row in enumerate(source):
        pid = row["filename"][:-4]
        boxes = [[float(row[k]) for k in ("x", "y", "width", "height")]] if row["x"] else []
        if boxes and i % 3 == 0:  # a second opacity in the other lung
            x, y, w, h = boxes[0]
            boxes.append([min(1024 - w - 1, 1024 - x - w), y, w, h])
        boxes_of[pid] = boxes
        rows += [[pid, *b, 1] for b in boxes] or [[pid, "", "", "", "", 0]]
        write_dicom(str(data / "stage_2_train_images" / f"{pid}.dcm"), xray_with_boxes(boxes, seed=i))
    write_csv(str(data / "stage_2_train_labels.csv"), ["patientId", "x", "y", "width", "height", "Target"], rows)
    configs = [os.path.join(PRESETS, n) for n in ("rsna.yaml", "rsna_challenge.yaml")]
    parser = parse([TRAIN, *configs], str(data), tmp_path)
    spec = parser.get_parsed_content("data")
    splits = {s: spec.datalist(s, str(data), num_classes=2) for s in ("train", "val", "test")}
    ids = {s: [os.path.basename(i["image"])[:-4] for i in items] for s, items in splits.items()}
    assert sorted(sum(ids.values(), [])) == sorted(boxes_of)  # every patient once
    assert all(len(ids[s]) >= 2 for s in ("val", "test")) and len(ids["train"]) >= 40
    merged = [i for items in splits.values() for i in items if len(i["boxes"]) == 2]
    assert merged
    for items in splits.values():
        for item in items:
            pid = os.path.basename(item["image"])[:-4]
            assert item["boxes"] == boxes_of[pid] and item["label"] == int(bool(boxes_of[pid]))
    out = parser.get_parsed_content("load_input")(dict(merged[0]))
    bright, mask = out["image"][0] > 0.8, out["mask"][0] > 0.5
    assert _iou(bright, mask) > 0.97
    assert _components(mask) == 2  # both opacities in the one mask
    assert check_data(configs, str(data), progress=False, out=lambda s: None) == 0


def _components(mask):
    """Number of 4-connected foreground regions of a 2D boolean tensor."""
    todo, count = {tuple(p) for p in mask.nonzero().tolist()}, 0
    while todo:
        count, stack = count + 1, [todo.pop()]
        while stack:
            y, x = stack.pop()
            for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if n in todo:
                    todo.remove(n)
                    stack.append(n)
    return count


# ----------------------------------------------------------------------------------- check-data


def test_check_data_command_reports_every_planted_problem(tmp_path, capsys):
    data = tmp_path / "data"
    picked = make_dataset(str(data), "rsna")
    config = os.path.join(PRESETS, "rsna.yaml")
    assert cli(["check-data", "--config", config, "--dataset_dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "train: 5 images" in out and "normal: 2 (40.0 %), lung_opacity: 3 (60.0 %)" in out
    assert "no problems found" in out

    images = data / "stage_2_train_images"
    stem = lambda row: row["filename"][:-4]  # noqa: E731
    os.remove(images / f"{stem(picked['train'][0])}.dcm")  # missing file
    (images / f"{stem(picked['train'][1])}.dcm").write_bytes(b"DICM but not really")  # corrupt file
    val = list(csv.DictReader(open(data / "val.csv")))
    val[0]["bin_target"] = "2"  # label outside the classes
    positive = next(r for r in val if r["x"])
    positive["x"], positive["width"] = "900", "300"  # box reaching outside the 1024 px image
    val.append(dict(val[1]))  # duplicate row
    test = list(csv.DictReader(open(data / "test.csv")))
    test.append(dict(picked["train"][2]))  # an image of the train split in the test split too
    for name, rows in (("val.csv", val), ("test.csv", test)):
        with open(data / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    report = tmp_path / "problems.csv"
    assert cli(["check-data", "--config", config, "--dataset_dir", str(data), "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert f"file not found: {images / stem(picked['train'][0])}.dcm" in out
    assert f"cannot use image {images / stem(picked['train'][1])}.dcm" in out
    assert f"{data / 'val.csv'} row 2 column 'bin_target': label 2 is not one of the classes" in out
    assert (
        f"{data / 'val.csv'} row {val.index(positive) + 2}: box [x=900" in out
        and "lies outside the image of 1024 x 1024" in out
    )
    assert (
        f"{data / 'val.csv'} row {len(val) + 1}: image {val[1]['filename']!r} is listed again (first at row 3)" in out
    )
    assert f"{data / 'test.csv'} row {len(test) + 1}: image is also in the train split" in out
    listed = list(csv.DictReader(open(report)))
    assert len(listed) == 6 and {r["split"] for r in listed} == {"train", "val", "test"}
    assert "6 problem(s) found" in out

    # a CSV without the label column, and an empty split
    with open(data / "val.csv", "w", newline="") as f:
        csv.writer(f).writerow(["filename", "x", "y", "width", "height"])
    with open(data / "test.csv", "w", newline="") as f:
        csv.writer(f).writerow(["filename", "x", "y", "width", "height", "type", "bin_target", "target"])
    assert (
        cli(["check-data", "--config", config, "--dataset_dir", str(data), "--splits", "val", "test", "--no-images"])
        == 1
    )
    out = capsys.readouterr().out
    assert f"{data / 'val.csv'}: no column 'bin_target'" in out
    assert f"{data / 'test.csv'}: the test split is empty" in out


def test_preset_without_dataset_dir_names_the_key(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=[TRAIN, os.path.join(PRESETS, "rsna.yaml")])
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("dataset_dir")
    assert "set dataset_dir: the folder with the RSNA split CSVs" in str(err.value.__cause__)


@pytest.mark.parametrize(
    "preset,augmentation",
    [
        (
            "fundus.yaml",
            ["RandResizedCropd", "RandFlipd", "RandFlipd", "RandColorJitterd", "RandRotated", "RandAffined"],
        ),
        ("oct.yaml", ["RandResizedCropd", "RandFlipd", "RandFlipd", "RandColorJitterd", "RandRotated", "RandAffined"]),
        ("rsna.yaml", ["RandFlipd", "RandFlipd", "RandRotated", "RandColorJitterd"]),
    ],
)
def test_presets_reference_the_papers_optimiser_schedule_and_augmentation(preset, augmentation, tmp_path):
    """The paper's protocol is spelled once (train.yaml's optimizers and augmentations) and the
    presets pick it by reference: SGD with Nesterov momentum 0.9, weight decay 5e-4, the clipped
    cosine towards 0 over 50 epochs held at 1e-4, drop_last, and each dataset's augmentation."""
    parser = parse([TRAIN, os.path.join(PRESETS, preset)], str(tmp_path), tmp_path)
    parser["network_def"] = "$torch.nn.Linear(2, 2)"  # the optimiser needs parameters, not the preset's ResNet/VGG
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (1e-3, 0.9, True, 5e-4)
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert (scheduler.t_max, scheduler.eta_min, scheduler.cosine_end) == (50, 1e-4, 0.0)  # the reference's
    assert parser.get_parsed_content("drop_last") is True
    assert [type(t).__name__ for t in parser.get_parsed_content("augmentation")] == augmentation
    demo = parse([TRAIN], str(tmp_path), tmp_path)  # the demo keeps Adam and its own flips
    demo["network_def"] = "$torch.nn.Linear(2, 2)"
    assert isinstance(demo.get_parsed_content("optimizer"), torch.optim.Adam)


def test_a_paper_preset_needs_the_papers_weights_or_none_on_purpose(tmp_path):
    """configs/rsna.yaml trains VGG-16 from torchvision's IMAGENET1K_V1 weights, as the paper did: without a weight
    file training stops before any work, saying where to get it; a file of that name that is not it is refused by
    its SHA-256; --pretrained none trains from scratch on purpose (stand-in RSNA data, a tiny budget)."""
    from bundle_helpers import bundle, last_line

    data = tmp_path / "data"
    make_dataset(str(data), "rsna")
    configs = [TRAIN, os.path.join(PRESETS, "rsna.yaml")]
    small = ["--dataset_dir", str(data), "--epochs", "1", "--batch_size", "2", "--image_size", "[64,64]"]
    root = tmp_path / "b"
    proc = bundle("training", configs, "--bundle_root", str(root), *small, check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr) == (
        "error: pretrained: this configuration trains from the ImageNet weights vgg16-397923af.pth (torchvision's "
        "VGG16_Weights.IMAGENET1K_V1 (https://download.pytorch.org/models/vgg16-397923af.pth), as the paper did), and "
        "none were given: download the file on a machine with internet and give --pretrained "
        "/path/to/vgg16-397923af.pth, or train from a random initialisation on purpose with --pretrained none "
        "(nothing is downloaded)"
    )
    assert not (root / "models").exists()  # stopped before any work

    fake = tmp_path / "vgg16-397923af.pth"  # the right name, not the file: a partial download
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, fake)
    proc = bundle("training", configs, "--bundle_root", str(root), *small, "--pretrained", str(fake), check=False)
    assert proc.returncode != 0
    assert re.fullmatch(
        rf"error: pretrained: {re.escape(str(fake))} is not vgg16-397923af.pth: its SHA-256 starts with [0-9a-f]{{8}}, "
        r"not 397923af \(a partial download, or another file\)",
        last_line(proc.stderr),
    )

    proc = bundle("training", configs, "--bundle_root", str(root), *small, "--pretrained", "none")
    assert "training from a random initialisation, not from vgg16-397923af.pth" in proc.stdout + proc.stderr
    assert (root / "models" / "model.pt").is_file()
    # evaluating the trained model needs no ImageNet file: its own weights are loaded
    evaluate = [TRAIN, os.path.join(REPO_ROOT, "bundle", "configs", "evaluate.yaml"), configs[1]]
    bundle("evaluate", evaluate, "--bundle_root", str(root), "--dataset_dir", str(data), "--image_size", "[64,64]")
    assert list((root / "eval").rglob("metrics_test.json"))
