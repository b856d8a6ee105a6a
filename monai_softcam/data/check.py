"""``python -m monai_softcam check-data``: find every data problem before a long training run.

It reads a preset (or bundle config), then for each split: the CSV's columns and cells (labels
outside the classes, empty or unparsable cells, duplicate images, paths escaping the data root),
every referenced file (missing, unreadable or corrupt: each image is decoded in full), boxes that
reach outside their image, masks of another size than their image, images shared between splits,
the class balance, and, with a ``boxes_csv``, the split rows whose box disagrees with that file (an
image absent from it or with a box in one file only: an error; another box: a warning). It says first
where the masks and boxes come from. The exit status is 1 when anything is wrong (warnings do not count).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from typing import Any, Callable, Sequence

from monai.bundle import ConfigParser
from monai.transforms import LoadImage
from tqdm import tqdm

from ..utils import atomic_open
from .datalist import SPLITS, CSVDataSpec, DataListError, Problem
from .readers import default_readers, quiet_reader_setup, read_checked
from .rules import InputRules

__all__ = ["check_data", "load_check_settings"]


def load_check_settings(
    configs: Sequence[str], dataset_dir: str
) -> tuple[CSVDataSpec, list[str], InputRules, dict[str, Any]]:
    """(data spec, class names, input rules, DICOM reader options) from merged config files, with
    ``dataset_dir`` set; the rules are the configs' task's (``task.input_rules(max_image_pixels)``: the
    network's smallest input, the largest image read), else those of ``spatial_dims``; the reader options
    are the configs' ``dicom_frame`` and ``dicom_window``, so that check-data reads every file as training will."""
    for path in configs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
    parser = ConfigParser()
    parser.read_config(f=list(configs))
    parser["dataset_dir"] = dataset_dir
    if "data" not in parser:
        raise ValueError(f"{', '.join(configs)}: no 'data' section (a monai_softcam.data.CSVDataSpec)")
    spec = parser.get_parsed_content("data")
    if not isinstance(spec, CSVDataSpec):
        raise ValueError(f"'data' must be a monai_softcam.data.CSVDataSpec, got {type(spec).__name__}")
    names = parser.get_parsed_content("class_names") if "class_names" in parser else []
    dims = parser.get_parsed_content("spatial_dims") if "spatial_dims" in parser else 2
    max_pixels = parser.get_parsed_content("max_image_pixels") if "max_image_pixels" in parser else None
    task = parser.get_parsed_content("task") if "task" in parser else None
    rules = task.input_rules(max_pixels) if hasattr(task, "input_rules") else InputRules(int(dims), max_pixels)
    options = {
        "frame": parser.get_parsed_content("dicom_frame") if "dicom_frame" in parser else None,
        "window": bool(parser.get_parsed_content("dicom_window")) if "dicom_window" in parser else False,
    }
    return spec, [str(n) for n in names], rules, options


def _image_problems(item: dict[str, Any], where: str, loader: Callable) -> list[Problem]:
    """Decode and check the image (and mask); check that boxes and mask fit it."""
    try:
        image = loader(item["image"])
    except Exception as err:
        return [Problem(where, f"cannot use image {item['image']}: {_last_line(err)}", item["image"])]
    spatial = tuple(int(s) for s in image.shape[1:])
    problems = []
    for x, y, w, h in item.get("boxes", []):
        if x + w > spatial[0] + 0.5 or y + h > spatial[1] + 0.5:
            problems.append(
                Problem(
                    where,
                    f"box [x={x:g}, y={y:g}, width={w:g}, height={h:g}] lies outside the image of "
                    f"{' x '.join(map(str, spatial))} pixels",
                    item["image"],
                )
            )
    if "mask" in item:
        try:
            mask = loader(item["mask"])
            if tuple(mask.shape[1:]) != spatial:
                problems.append(
                    Problem(
                        where,
                        f"mask {item['mask']} has size {tuple(mask.shape[1:])}, the image {spatial}",
                        item["image"],
                    )
                )
        except Exception as err:
            problems.append(Problem(where, f"cannot use mask {item['mask']}: {_last_line(err)}", item["image"]))
    return problems


def _last_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def check_data(
    configs: Sequence[str],
    dataset_dir: str,
    splits: Sequence[str] = SPLITS,
    read_images: bool = True,
    report: str | None = None,
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> int:
    """Check the splits described by ``configs`` under ``dataset_dir``; print a report; return the number of
    problems (warnings not counted)."""
    spec, class_names, rules, reader_options = load_check_settings(configs, dataset_dir)
    num_classes = len(class_names) or None
    with quiet_reader_setup():
        loader = LoadImage(
            reader=default_readers(rules.spatial_dims, **reader_options), image_only=True, ensure_channel_first=True
        )

    def reader(path: str) -> Any:  # as every run reads a file: header checked, its reader, pixels checked
        return read_checked(loader, path, rules)

    all_problems: list[tuple[str, Problem]] = []
    seen: dict[str, str] = {}
    try:
        out(f"annotations: {spec.annotation_source(dataset_dir)}")
    except DataListError as err:  # the boxes CSV: every split would repeat it
        all_problems.append(("annotations", Problem("annotations", str(err))))
        out(f"annotations: {err}")
        splits = ()
    for split in splits:
        try:
            items, problems = spec.scan(split, dataset_dir, num_classes, rules=rules)
        except DataListError as err:
            all_problems.append((split, Problem(split, str(err))))
            out(f"{split}: {err}")
            continue
        if read_images:
            iterator: Any = items
            if progress:
                iterator = tqdm(items, desc=f"reading {split} images", unit="img")
            for item in iterator:
                problems += _image_problems(item, f"{spec.csv_path(split, dataset_dir)} row {item['row']}", reader)
        for item in items:
            other = seen.setdefault(item["image"], split)
            if other != split:
                problems.append(
                    Problem(
                        f"{spec.csv_path(split, dataset_dir)} row {item['row']}",
                        f"image is also in the {other} split",
                        item["image"],
                    )
                )
        counts = Counter(int(i["label"]) for i in items if i.get("label") is not None)
        balance = ", ".join(
            f"{class_names[c] if c < len(class_names) else c}: {counts[c]} ({100.0 * counts[c] / max(len(items), 1):.1f} %)"
            for c in sorted(counts)
        )
        out(f"{split}: {len(items)} images ({spec.csv_path(split, dataset_dir)}); classes: {balance or 'none'}")
        if len(counts) == 1 and (num_classes or 2) > 1:
            only = next(iter(counts))
            why = "the model cannot learn the other classes" if split == "train" else "its AUC is undefined"
            out(
                f"  warning: every image of the {split} split is of one class "
                f"({class_names[only] if only < len(class_names) else only}): {why}"
            )
        for problem in problems[:50]:
            out(f"  {problem}")
        if len(problems) > 50:
            out(f"  ... and {len(problems) - 50} more")
        all_problems += [(split, p) for p in problems]
    if report:
        with atomic_open(report, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "where", "image", "problem"])
            writer.writerows(
                [split, p.where, p.image, ("warning: " if p.warning else "") + p.message] for split, p in all_problems
            )
    warned = sum(p.warning for _, p in all_problems)
    errors = len(all_problems) - warned
    listed = f"; all listed in {report}" if report and all_problems else ""
    if errors:
        out(f"{errors} problem(s){f' and {warned} warning(s)' if warned else ''} found{listed}")
    else:
        out(f"no problems found{f' ({warned} warning(s))' if warned else ''}{listed}")
    return errors
