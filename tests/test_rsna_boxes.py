"""configs/rsna.yaml with the challenge's stage_2_train_labels.csv in dataset_dir: the paper's split CSVs (one
box per image) decide the images, their splits and labels; every box of each patient in the labels file becomes
the mask (data#boxes_csv). Stand-in data: the first rows of the real split CSVs, a labels file written from them
(one patient with a second opacity) and 1024 px DICOMs with every box drawn bright."""

import csv
import logging
import os

import pytest
from bundle_helpers import TRAIN, bundle, last_line
from conftest import REPO_ROOT
from data_helpers import UPSTREAM, head_csv, write_csv, write_dicom, xray_with_boxes

from monai_softcam.__main__ import main as cli
from monai_softcam.data import CSVDataSpec, DataListError

RSNA = os.path.join(REPO_ROOT, "configs", "rsna.yaml")
LABELS = "stage_2_train_labels.csv"
BOX = ("x", "y", "width", "height")

if not os.path.isdir(os.path.join(UPSTREAM, "RSNA")):
    pytest.skip(f"the shared split CSVs are not at {UPSTREAM}", allow_module_level=True)


def _box(row):
    return [float(row[k]) for k in BOX]


def make_rsna(root):
    """Split CSVs (first 2 normal and 2 opacity rows of each real one), the labels file of their patients plus
    one patient in no split, the DICOMs. The first val opacity that stays in one lung gets a second box, mirrored
    into the other lung. Returns ({split: rows}, {patientId: boxes in the labels file}, that patientId)."""
    picked, boxes_of, second = {}, {}, None
    for split in ("train", "val", "test"):
        counts = {"0": 0, "1": 0}

        def keep(row):
            counts[row["bin_target"]] += 1
            return counts[row["bin_target"]] <= 2

        picked[split] = head_csv(
            os.path.join(UPSTREAM, "RSNA", f"{split}.csv"), os.path.join(root, f"{split}.csv"), 4, keep
        )
        for row in picked[split]:
            pid, boxes = row["filename"][:-4], [_box(row)] if row["x"] else []
            x, y, w, h = boxes[0] if boxes else (0, 0, 0, 0)
            if split == "val" and boxes and second is None and (x + w <= 500 or x >= 524):
                boxes.append([1024 - x - w, y, w, h])
                second = pid
            boxes_of[pid] = boxes
    boxes_of["0000-not-in-any-split"] = [[10.0, 10.0, 50.0, 50.0]]
    rows = [[pid, *b, 1] for pid, boxes in boxes_of.items() for b in boxes]
    rows += [[pid, "", "", "", "", 0] for pid, boxes in boxes_of.items() if not boxes]
    write_csv(os.path.join(root, LABELS), ["patientId", *BOX, "Target"], rows)
    for i, (pid, boxes) in enumerate(boxes_of.items()):
        write_dicom(os.path.join(root, "stage_2_train_images", f"{pid}.dcm"), xray_with_boxes(boxes, seed=i))
    assert second is not None
    return picked, boxes_of, second


def parse(dataset_dir, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=[TRAIN, RSNA])
    parser["dataset_dir"] = str(dataset_dir)
    parser["bundle_root"] = str(tmp_path / "bundle")
    return parser


def _mask(parser, item):
    """The mask the preset builds for ``item`` (512 x 512, x the first axis) and the image's bright pixels."""
    out = parser.get_parsed_content("load_input")(dict(item))
    return out["mask"][0] > 0.5, out["image"][0] > 0.8


def _covers(mask, box):
    """Whether ``mask`` (at 512 px) holds the centre and the inner corners of ``box`` (original 1024 px)."""
    x, y, w, h = (v / 2 for v in box)
    points = [(x + w / 2, y + h / 2), (x + 1, y + 1), (x + w - 2, y + h - 2)]
    return all(bool(mask[int(px), int(py)]) for px, py in points)


def test_the_rsna_preset_draws_every_box_of_a_patient_from_the_labels_file(tmp_path, caplog):
    data = tmp_path / "data"
    picked, boxes_of, second = make_rsna(str(data))
    caplog.set_level(logging.INFO, logger="monai_softcam")
    parser = parse(data, tmp_path)
    spec = parser.get_parsed_content("data")
    items = {s: spec.datalist(s, str(data), num_classes=2) for s in ("train", "val", "test")}
    # the split decides the images and labels; the labels file, the boxes (its extra patient is in no split)
    for split, rows in picked.items():
        assert [os.path.basename(i["image"]) for i in items[split]] == [r["filename"][:-4] + ".dcm" for r in rows]
        assert [i["label"] for i in items[split]] == [int(r["bin_target"]) for r in rows]
        assert [i["boxes"] for i in items[split]] == [boxes_of[r["filename"][:-4]] for r in rows]
    item = next(i for i in items["val"] if os.path.basename(i["image"]) == f"{second}.dcm")
    assert len(item["boxes"]) == 2
    mask, bright = _mask(parser, item)
    assert _covers(mask, item["boxes"][0]) and _covers(mask, item["boxes"][1])  # both opacities in the one mask
    assert float((mask & bright).sum()) / float((mask | bright).sum()) > 0.97
    # which boxes: said in the log when first read, and recorded in the evaluation report
    source = f"every box of each image from {LABELS} (8 boxes of 13 images; 1 with more than one)"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("annotations:")] == [
        f"annotations: {source}"
    ]
    assert parser.get_parsed_content("evaluation#handlers#2#details#annotations") == source

    # without the labels file: the split's one box
    os.remove(data / LABELS)
    parser = parse(data, tmp_path)
    spec = parser.get_parsed_content("data")
    item = next(i for i in spec.datalist("val", str(data), num_classes=2) if i["image"] == item["image"])
    assert item["boxes"] == boxes_of[second][:1]
    mask, _ = _mask(parser, item)
    x, y, w, h = (v / 2 for v in boxes_of[second][1])
    assert _covers(mask, boxes_of[second][0]) and not mask[int(x) : int(x + w), int(y) : int(y + h)].any()
    assert spec.annotation_source(str(data)) == (
        f"boxes from the split CSVs' columns ['x', 'y', 'width', 'height'] (one box per row); {LABELS} is not in {data}"
    )


def _rewrite(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_check_data_reports_split_rows_whose_boxes_disagree_with_the_labels_file(tmp_path, capsys):
    data = tmp_path / "data"
    picked, boxes_of, second = make_rsna(str(data))
    labels_path = data / LABELS
    assert cli(["check-data", "--config", RSNA, "--dataset_dir", str(data), "--no-images"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        f"annotations: every box of each image from {LABELS} (8 boxes of 13 images; 1 with more than one)"
    )
    assert last_line(out) == "no problems found"

    # a different box where the labels file has boxes: a warning listing them; the labels file's boxes are used
    labels = list(csv.DictReader(open(labels_path)))
    train = picked["train"]
    moved = next(r for r in train if r["x"])
    pid = moved["filename"][:-4]
    row = next(i for i, r in enumerate(labels) if r["patientId"] == pid)
    labels[row]["x"] = "300.0"
    _rewrite(labels_path, labels)
    assert cli(["check-data", "--config", RSNA, "--dataset_dir", str(data), "--no-images"]) == 0
    out = capsys.readouterr().out
    x, y, w, h = _box(moved)
    assert (
        f"  {data / 'train.csv'} row {train.index(moved) + 2}: warning: the box [{x:g}, {y:g}, {w:g}, {h:g}] of image "
        f"{pid!r} is not one of its boxes in {labels_path} row {row + 2}: [300, {y:g}, {w:g}, {h:g}] (those are used)"
    ) in out
    assert last_line(out) == "no problems found (1 warning(s))"

    # negative here and positive there, absent there, positive here and negative there: errors naming the row
    normal = next(r for r in train if not r["x"])
    normal_pid = normal["filename"][:-4]
    row = next(i for i, r in enumerate(labels) if r["patientId"] == normal_pid)
    labels[row].update(x="100", y="200", width="50", height="60", Target="1")
    val = picked["val"]
    absent = next(r for r in val if r["filename"][:-4] != second)
    labels = [r for r in labels if r["patientId"] != absent["filename"][:-4]]
    test = picked["test"]
    unboxed = next(r for r in test if r["x"])
    next(r for r in labels if r["patientId"] == unboxed["filename"][:-4]).update(
        x="", y="", width="", height="", Target="0"
    )
    _rewrite(labels_path, labels)
    row_of = {r["patientId"]: i + 2 for i, r in enumerate(labels)}  # the file's rows (1-based, header row 1)
    report = tmp_path / "problems.csv"
    assert (
        cli(["check-data", "--config", RSNA, "--dataset_dir", str(data), "--no-images", "--report", str(report)]) == 1
    )
    out = capsys.readouterr().out
    assert (
        f"  {data / 'train.csv'} row {train.index(normal) + 2}: image {normal_pid!r} is negative here (no box) but "
        f"positive in {labels_path} row {row_of[normal_pid]} (1 box(es): [100, 200, 50, 60])"
    ) in out
    assert (
        f"  {data / 'val.csv'} row {val.index(absent) + 2}: image {absent['filename'][:-4]!r} is not in {labels_path}: "
        "its boxes are unknown"
    ) in out
    x, y, w, h = _box(unboxed)
    unboxed_pid = unboxed["filename"][:-4]
    assert (
        f"  {data / 'test.csv'} row {test.index(unboxed) + 2}: image {unboxed_pid!r} is positive here "
        f"(box [{x:g}, {y:g}, {w:g}, {h:g}]) but negative in {labels_path} row {row_of[unboxed_pid]} (no box)"
    ) in out
    assert last_line(out) == f"3 problem(s) and 1 warning(s) found; all listed in {report}"
    listed = list(csv.DictReader(open(report)))
    assert [(r["split"], os.path.basename(r["image"])) for r in listed] == [
        ("train", f"{normal_pid}.dcm"),
        ("train", f"{pid}.dcm"),
        ("val", absent["filename"][:-4] + ".dcm"),
        ("test", f"{unboxed_pid}.dcm"),
    ]
    assert listed[1]["problem"].startswith("warning: the box") and "is not in" in listed[2]["problem"]

    # training refuses the same rows, the culprit last: the split CSV, its row and the patient
    spec = parse(data, tmp_path).get_parsed_content("data")
    with pytest.raises(DataListError) as raised:
        spec.datalist("train", str(data), num_classes=2)
    assert str(raised.value).splitlines()[-1].strip() == (
        f"{data / 'train.csv'} row {train.index(normal) + 2}: image {normal_pid!r} is negative here (no box) but "
        f"positive in {labels_path} row {row_of[normal_pid]} (1 box(es): [100, 200, 50, 60])"
    )


def test_a_bad_labels_file_is_an_error_naming_its_row(tmp_path, capsys):
    data = tmp_path / "data"
    make_rsna(str(data))
    labels_path = data / LABELS
    labels = list(csv.DictReader(open(labels_path)))
    labels[3]["width"] = ""
    _rewrite(labels_path, labels)
    assert cli(["check-data", "--config", RSNA, "--dataset_dir", str(data), "--no-images"]) == 1
    out = capsys.readouterr().out
    assert (
        f"{labels_path} row 5 columns ['x', 'y', 'width', 'height']: {labels[3]['patientId']!r}: incomplete box" in out
    )
    assert last_line(out) == "1 problem(s) found"

    # through training's command line: the run stops before any work, the bad row named last
    proc = bundle(
        "training",
        [TRAIN, RSNA],
        "--dataset_dir",
        str(data),
        "--bundle_root",
        str(tmp_path / "bundle"),
        "--pretrained",
        "none",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        check=False,
    )
    assert proc.returncode != 0
    assert (
        last_line(proc.stderr)
        .strip()
        .startswith(
            f"{labels_path} row 5 columns ['x', 'y', 'width', 'height']: {labels[3]['patientId']!r}: incomplete box"
        )
    )
    assert not os.path.exists(tmp_path / "bundle" / "models" / "model.pt")

    # a boxes_csv that is not optional must exist; group_column and boxes_csv are two ways of the same thing
    spec = CSVDataSpec(box_columns=list(BOX), boxes_csv="missing.csv", label_column="bin_target")
    with pytest.raises(DataListError, match=f"boxes_csv not found: {data / 'missing.csv'}"):
        spec.datalist("train", str(data))
    with pytest.raises(ValueError, match="set one"):
        CSVDataSpec(box_columns=list(BOX), boxes_csv=LABELS, group_column="patientId")


def test_labels_file_beside_the_challenge_preset_is_its_data_not_a_second_box_source(tmp_path):
    """configs/rsna_challenge.yaml reads the labels file as its split (boxes merged by patientId), not joined
    with itself: each patient's boxes once."""
    data = tmp_path / "data"
    _, boxes_of, second = make_rsna(str(data))
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=[TRAIN, RSNA, os.path.join(REPO_ROOT, "configs", "rsna_challenge.yaml")])
    parser["dataset_dir"] = str(data)
    spec = parser.get_parsed_content("data")
    assert spec.boxes_csv is None
    items = [i for s in ("train", "val", "test") for i in spec.datalist(s, str(data), num_classes=2)]
    assert {os.path.basename(i["image"])[:-4]: i["boxes"] for i in items} == boxes_of
    assert len(next(i for i in items if os.path.basename(i["image"]) == f"{second}.dcm")["boxes"]) == 2
