"""One CSV-driven description of a dataset, turned into MONAI data lists with every bad row reported.

:class:`~monai_softcam.data.datalist.CSVDataSpec` says how a dataset's split CSVs map to images, labels and
optional masks or bounding boxes. The same spec reads the paper's split CSVs (one row per image), the RSNA
challenge's ``stage_2_train_labels.csv`` (one row per box, boxes of an image merged into one mask), the paper's
split CSVs joined with that file for every box of an image (``boxes_csv``) or a plain ``filename,label`` list,
for any dataset, without code.

Problems (missing columns, empty or unparsable cells, labels outside the classes, duplicate
images, paths escaping the data root, missing or unreadable files) are collected for the whole
split and reported together, naming the CSV, the row (1-based, the header is row 1) and the
column. By default any problem stops the run; with ``skip_bad=True`` the affected images are
left out and every skipped row is written to ``skipped_<split>.csv``. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from tqdm import tqdm

from ..utils import ConfigError, InputError, MissingInputError, as_flag, atomic_open
from .dicom import is_dicom_file
from .formats import IMAGE_EXTENSIONS, image_stem
from .readers import dicom_series, probe_image
from .rules import InputRules

__all__ = [
    "CSVDataSpec",
    "DataListError",
    "Problem",
    "list_images",
    "pair_regions",
    "read_csv_datalist",
    "resolve_under_root",
]

logger = logging.getLogger("monai_softcam")

SPLITS = ("train", "val", "test")


class DataListError(InputError):
    """A CSV or folder cannot be turned into a data list; the message names the file, row and column."""


@dataclass
class Problem:
    """One bad cell or file: ``where`` is ``"<csv> row <n> column '<c>'"`` (or the file), ``image`` its image.
    A ``warning`` is reported but keeps its image (and stops nothing)."""

    where: str
    message: str
    image: str = ""
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {'warning: ' if self.warning else ''}{self.message}"


def _resolve(path: str, root: str) -> tuple[str, str]:
    """(absolute path, "") for ``path`` under ``root``, or ("", problem) when it escapes ``root``."""
    root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root:
        return "", f"path {path!r} resolves outside the data root {root}"
    return full, ""


def resolve_under_root(path: str, root: str, where: str) -> str:
    """Absolute path of ``path`` (relative paths resolve under ``root``), refusing paths that escape ``root``."""
    full, message = _resolve(path, root)
    if message:
        raise DataListError(f"{where}: {message}")
    return full


def _holdout_fraction(key: str) -> float:
    """A stable number in [0, 1) for an image id (the same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


@dataclass
class CSVDataSpec:
    """How a dataset's split CSVs map to images, labels and annotations.

    Args:
        train_csv: the training split's CSV, relative to ``dataset_dir`` (or absolute).
        val_csv: the validation split's CSV, likewise.
        test_csv: the test split's CSV, likewise.
        image_column: column naming the image.
        label_column: column holding the integer class (None: unlabelled, e.g. for inference).
        mask_column: optional column holding a mask file (empty cell: no mask).
        box_columns: optional ``[x, y, width, height]`` columns of a bounding box in pixels of the
            original image (``x`` = column from the left, ``y`` = row from the top; empty cells: no
            box). Boxes become a mask that follows the image through resizing, cropping and
            augmentation.
        group_column: rows sharing this column's value are one image (e.g. the RSNA challenge's
            ``patientId``, one row per box); their boxes are merged. Without it, an image listed
            twice is an error.
        boxes_csv: a CSV under ``dataset_dir`` (or absolute) with one row per box (``box_columns``, the
            same column names) and ``boxes_image_column``; a row with empty box cells says "no box".
            The split CSVs still decide which images are in which split, and their labels; each image's
            boxes are then *all* the rows of this file whose ``boxes_image_column`` matches the image's
            stem (``abc.png`` -> ``abc``; the file's cells may carry an extension too), e.g. the RSNA
            challenge's ``stage_2_train_labels.csv`` (``patientId``) joined with the paper's split CSVs,
            which give one box per image. The split row's own box is checked against them: an image
            absent from this file, or with a box in one file and none in the other, is an error naming
            the split CSV's row and the image; a box that is not one of this file's boxes for the image
            is a warning listing them (this file's boxes are used). Cannot be combined with
            ``group_column``.
        boxes_image_column: the column of ``boxes_csv`` naming the image (default: ``image_column``).
        boxes_csv_optional: when ``boxes_csv`` is not in ``dataset_dir``, use the split CSVs' own boxes
            (and say so in the log) instead of stopping.
        image_root: folder under ``dataset_dir`` holding the images.
        image_template: how a cell becomes a file name: ``{value}`` is the cell, ``{stem}`` the cell
            without its extension (e.g. ``"{stem}.dcm"`` for CSVs naming converted PNGs of DICOMs).
        holdout: split one CSV into train/val/test by a stable hash of the image id, e.g.
            ``{"val": 0.1, "test": 0.1}`` (then the three CSVs may be the same file).

    Example::

        spec = CSVDataSpec(train_csv="train.csv", image_column="filename", label_column="bin_target",
                           box_columns=["x", "y", "width", "height"])
        train_items = spec.datalist("train", "/data/rsna", num_classes=2)
    """

    train_csv: str = "train.csv"
    val_csv: str = "val.csv"
    test_csv: str = "test.csv"
    image_column: str = "filename"
    label_column: str | None = "label"
    mask_column: str | None = None
    box_columns: Sequence[str] | None = None
    group_column: str | None = None
    image_root: str = ""
    image_template: str = "{value}"
    holdout: dict[str, float] | None = None
    boxes_csv: str | None = None
    boxes_image_column: str | None = None
    boxes_csv_optional: bool = False
    _columns: list[str] = field(default_factory=list, init=False, repr=False)
    _box_tables: dict[str, "_BoxTable | None"] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.box_columns is not None and len(self.box_columns) != 4:
            raise ValueError(f"box_columns must name 4 columns [x, y, width, height], got {list(self.box_columns)}")
        if self.boxes_csv is not None and (self.box_columns is None or self.group_column is not None):
            raise ValueError(
                f"boxes_csv ({self.boxes_csv}) needs box_columns (its box columns and the split CSVs') and no "
                f"group_column (two ways of giving several boxes per image: set one), got box_columns="
                f"{self.box_columns}, group_column={self.group_column!r}"
            )
        if self.holdout is not None:
            unknown = set(self.holdout) - {"val", "test"}
            total = sum(float(v) for v in self.holdout.values())
            if unknown or not 0 <= total < 1:
                raise ValueError(
                    f"holdout takes fractions for 'val' and 'test' summing to less than 1, got {self.holdout}"
                )
        try:
            self.image_template.format(value="x", stem="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"image_template may use {{value}} and {{stem}} only, got {self.image_template!r}"
            ) from err

    @property
    def has_annotations(self) -> bool:
        return self.mask_column is not None or self.box_columns is not None

    def annotation_source(self, dataset_dir: str) -> str:
        """Where the images' masks and boxes come from under ``dataset_dir``, in one line (logged when
        ``boxes_csv`` is first looked for, printed by check-data, recorded in the evaluation report), e.g.
        ``every box of each image from stage_2_train_labels.csv (<n> boxes of <n> images; <n> with more than
        one)``."""
        parts = []
        if self.mask_column is not None:
            parts.append(f"masks from the split CSVs' column {self.mask_column!r}")
        if self.box_columns is not None:
            table = self._box_table(dataset_dir) if self.boxes_csv else None
            if table is not None:
                parts.append(table.describe(self.boxes_csv or ""))
            else:
                each = f"rows merged by {self.group_column!r}" if self.group_column else "one box per row"
                text = f"boxes from the split CSVs' columns {list(self.box_columns)} ({each})"
                if self.boxes_csv:
                    text += f"; {self.boxes_csv} is not in {dataset_dir}"
                parts.append(text)
        return "; ".join(parts) or "none"

    def _box_table(self, dataset_dir: str) -> "_BoxTable | None":
        """The boxes of ``boxes_csv`` (read once per spec), or None when it is absent and optional;
        :meth:`annotation_source` logged when it is first looked for."""
        path = os.path.abspath(os.path.join(dataset_dir, self.boxes_csv or ""))
        if path in self._box_tables:
            return self._box_tables[path]
        if os.path.isfile(path):
            table = _BoxTable.read(path, self.boxes_image_column or self.image_column, list(self.box_columns or []))
        elif as_flag(self.boxes_csv_optional, "boxes_csv_optional"):
            table = None
        else:
            raise DataListError(
                f"boxes_csv not found: {path} (the CSV with one row per box; with data#boxes_csv_optional "
                "true the split CSVs' own boxes are used without it)"
            )
        self._box_tables[path] = table
        logger.info("annotations: %s", self.annotation_source(dataset_dir))
        return table

    def csv_path(self, split: str, dataset_dir: str) -> str:
        """Path of ``split``'s CSV in ``dataset_dir``; a DataListError if none is configured for it."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        name = getattr(self, f"{split}_csv")
        if not name:
            raise DataListError(f"no CSV is configured for the {split} split ({split}_csv)")
        return os.path.join(dataset_dir, name)

    def scan(
        self,
        split: str,
        dataset_dir: str,
        num_classes: int | None = None,
        check_images: bool = False,
        rules: InputRules | None = None,
    ) -> tuple[list[dict[str, Any]], list[Problem]]:
        """Read one split: the data list (images with problems left out) and every problem found.

        Every referenced file must exist; with ``check_images`` its header is read too
        (:func:`~monai_softcam.data.readers.probe_image`: fast, no pixels decoded), checked by the task's
        ``rules`` (:class:`~monai_softcam.data.rules.InputRules`) when given.

        Each item has ``image`` (absolute path), ``label`` (int, unless ``label_column`` is None),
        ``mask`` (path) when given, ``boxes`` (list of ``[x, y, width, height]``, possibly empty)
        when the spec has any annotation, and ``row`` (the first CSV row of the image). The problems
        end with the warnings (``Problem.warning``: ``boxes_csv``'s differing boxes), whose images are kept.
        """
        csv_path = self.csv_path(split, dataset_dir)
        if not os.path.isfile(csv_path):
            raise DataListError(f"CSV file not found for the {split} split: {csv_path}")
        return self._scan_csv(csv_path, split, dataset_dir, num_classes, check_images, rules=rules)

    def _scan_csv(
        self,
        csv_path: str,
        split: str,
        dataset_dir: str,
        num_classes: int | None,
        check_images: bool,
        what: str = "",
        rules: InputRules | None = None,
    ) -> tuple[list[dict[str, Any]], list[Problem]]:
        """:meth:`scan` of an existing CSV; ``what`` names it in messages (default: "the <split> split")."""
        what = what or f"the {split} split"
        table = self._box_table(dataset_dir) if self.boxes_csv else None
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            wanted = [
                self.image_column,
                self.label_column,
                self.mask_column,
                self.group_column,
                *(self.box_columns or []),
            ]
            absent = [c for c in wanted if c is not None and c not in columns]
            if absent:
                raise DataListError(f"{csv_path}: no column {absent[0]!r}; the columns are {columns}")
            rows = list(reader)
        classes = None if num_classes is None else list(range(max(int(num_classes), 2)))
        root = os.path.join(dataset_dir, self.image_root)
        problems: list[Problem] = []
        warnings: list[Problem] = []
        items: dict[str, dict[str, Any]] = {}
        bad_images: set[str] = set()
        for number, row in enumerate(rows, start=2):
            cell = lambda c: (row.get(c) or "").strip()  # noqa: E731
            where = f"{csv_path} row {number}"
            value = cell(self.image_column)
            if not value:
                problems.append(Problem(f"{where} column {self.image_column!r}", "empty image name"))
                continue
            key = cell(self.group_column) if self.group_column else value
            if self.holdout is not None and self._holdout_split(key) != split:
                continue
            image, message = _resolve(self.image_template.format(value=value, stem=image_stem(value)), root)
            if message:
                problems.append(Problem(f"{where} column {self.image_column!r}", message))
                continue
            item = {"image": image, "row": number}
            issues = []
            if self.label_column is not None:
                label, message = _parse_label(cell(self.label_column), classes)
                if message:
                    issues.append(Problem(f"{where} column {self.label_column!r}", message, image))
                item["label"] = label
            if self.mask_column is not None and cell(self.mask_column):
                mask, message = _resolve(cell(self.mask_column), root)
                if message:
                    issues.append(Problem(f"{where} column {self.mask_column!r}", message, image))
                else:
                    item["mask"] = mask
            if self.has_annotations:
                item["boxes"] = []
            if self.box_columns is not None:
                box, message = _parse_box([cell(c) for c in self.box_columns])
                if message:
                    issues.append(Problem(f"{where} columns {list(self.box_columns)}", message, image))
                elif box is not None:
                    item["boxes"].append(box)
                if table is not None and not message:
                    disagreement = table.join(item, image_stem(value), where)
                    if disagreement is not None:
                        (warnings if disagreement.warning else issues).append(disagreement)
            if key in items:
                first = items[key]
                if not self.group_column:
                    issues.append(
                        Problem(where, f"image {value!r} is listed again (first at row {first['row']})", image)
                    )
                elif first.get("label") != item.get("label"):
                    issues.append(
                        Problem(
                            where,
                            f"label {item.get('label')} differs from row {first['row']} of the same image ({first.get('label')})",
                            image,
                        )
                    )
                else:
                    first["boxes"] += item.get("boxes", [])
                    if "mask" in item:
                        first.setdefault("mask", item["mask"])
            else:
                items[key] = item
            if issues:
                problems += issues
                bad_images.add(image)
        files = [(item, k) for item in items.values() for k in ("image", "mask") if k in item]
        if check_images and files:
            files = tqdm(
                files, desc=f"checking {split} images", unit="file", disable=None if len(files) > 2000 else True
            )
        for item, k in files:
            message = _file_problem(item[k], check_images, rules)
            if message:
                problems.append(Problem(f"{csv_path} row {item['row']}", f"{message}: {item[k]}", item["image"]))
                bad_images.add(item["image"])
        good = [item for item in items.values() if item["image"] not in bad_images]
        if not items and not problems:
            problems.append(Problem(csv_path, f"{what} is empty (no data rows)"))
        return good, problems + warnings

    def _holdout_split(self, key: str) -> str:
        fraction = _holdout_fraction(key)
        val = float(self.holdout.get("val", 0.0))  # type: ignore[union-attr]
        test = float(self.holdout.get("test", 0.0))  # type: ignore[union-attr]
        return "val" if fraction < val else "test" if fraction < val + test else "train"

    def datalist(
        self,
        split: str,
        dataset_dir: str,
        num_classes: int | None = None,
        skip_bad: bool = False,
        report_dir: str | None = None,
        annotations: bool = True,
        check_images: bool = False,
        rules: InputRules | None = None,
    ) -> list[dict[str, Any]]:
        """The data list of one split; see :meth:`scan`. ``annotations=False`` leaves masks and boxes
        out of the items (training does not need them).

        Any problem raises :class:`DataListError` listing them (the first 20 and the count). With
        ``skip_bad``, the affected images are left out, and every problem is written to
        ``<report_dir>/skipped_<split>.csv`` (default: beside the CSV) and announced in the log.
        """
        skip_bad, check_images = as_flag(skip_bad, "skip_bad"), as_flag(check_images, "check_images")
        items, problems = self.scan(split, dataset_dir, num_classes, check_images, rules)
        warnings = [p for p in problems if p.warning]
        for warning in warnings[:10]:
            logger.warning("%s", warning)
        if len(warnings) > 10:
            logger.warning("... and %d more warnings of these kinds, not shown", len(warnings) - 10)
        problems = [p for p in problems if not p.warning]
        if not annotations:
            items = [{k: v for k, v in item.items() if k not in ("mask", "boxes")} for item in items]
        folder = report_dir or os.path.dirname(self.csv_path(split, dataset_dir))
        return _keep_good(items, problems, skip_bad, f"the {split} split", folder, split)


def _box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


@dataclass(frozen=True)
class _BoxTable:
    """The boxes of a ``boxes_csv`` (one row per box) by image key (its name without extension), with the
    rows that gave them (a key with rows but no box: an image without boxes)."""

    path: str
    boxes: dict[str, list[list[float]]]
    rows: dict[str, list[int]]

    @classmethod
    def read(cls, path: str, key_column: str, box_columns: list[str]) -> "_BoxTable":
        """Read ``path``; a DataListError names every bad row (file, row, column) or a missing column."""
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            absent = [c for c in (key_column, *box_columns) if c not in columns]
            if absent:
                raise DataListError(f"{path}: no column {absent[0]!r} (boxes_csv); the columns are {columns}")
            boxes: dict[str, list[list[float]]] = {}
            rows: dict[str, list[int]] = {}
            problems = []
            for number, row in enumerate(reader, start=2):
                key = image_stem((row.get(key_column) or "").strip())
                if not key:
                    problems.append(Problem(f"{path} row {number} column {key_column!r}", "empty image name"))
                    continue
                box, message = _parse_box([(row.get(c) or "").strip() for c in box_columns])
                if message:
                    problems.append(Problem(f"{path} row {number} columns {box_columns}", f"{key!r}: {message}"))
                    continue
                rows.setdefault(key, []).append(number)
                boxes.setdefault(key, []).extend([box] if box is not None else [])
        if problems:
            raise _problems_error(problems, f"the boxes CSV {path}")
        if not rows:
            raise DataListError(f"{path}: the boxes CSV is empty (no data rows)")
        return cls(path, boxes, rows)

    def describe(self, name: str) -> str:
        several = sum(len(b) > 1 for b in self.boxes.values())
        total = sum(len(b) for b in self.boxes.values())
        counts = f"{total} boxes of {len(self.rows)} images; {several} with more than one"
        return f"every box of each image from {name} ({counts})"

    def join(self, item: dict[str, Any], key: str, where: str) -> Problem | None:
        """Give ``item`` (holding the split row's own box, if any) this file's boxes of ``key``; the
        disagreement between the two, if any: an error when the image is absent here or has a box in
        one file only, a warning when its box is not one of the boxes here."""
        own, image = item["boxes"], item["image"]
        if key not in self.rows:
            return Problem(where, f"image {key!r} is not in {self.path}: its boxes are unknown", image)
        theirs, rows = self.boxes[key], self.rows[key]
        listed = f"{self.path} row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}"
        shown = ", ".join(map(_box_text, theirs))
        item["boxes"] = [list(b) for b in theirs]
        if own and not theirs:
            message = f"image {key!r} is positive here (box {_box_text(own[0])}) but negative in {listed} (no box)"
            return Problem(where, message, image)
        if theirs and not own:
            message = (
                f"image {key!r} is negative here (no box) but positive in {listed} ({len(theirs)} box(es): {shown})"
            )
            return Problem(where, message, image)
        if own and own[0] not in theirs:
            message = f"the box {_box_text(own[0])} of image {key!r} is not one of its boxes in {listed}: {shown}"
            return Problem(where, f"{message} (those are used)", image, warning=True)
        return None


@dataclass(frozen=True)
class SplitLists:
    """How the bundle reads every split's list: ``spec``'s CSVs under ``dataset_dir``, with the same
    checks for each split (:meth:`CSVDataSpec.datalist` says what they are).

    Example::

        splits = SplitLists(CSVDataSpec(label_column="bin_target"), "/data/rsna", num_classes=2)
        train_items = splits.datalist("train", annotations=False)
    """

    spec: CSVDataSpec
    dataset_dir: str
    num_classes: int | None = None
    skip_bad: Any = False
    report_dir: str | None = None
    check_images: Any = False
    rules: InputRules | None = None

    def datalist(self, split: str, annotations: bool = True) -> list[dict[str, Any]]:
        """The data list of ``split`` (``annotations=False``: without masks and boxes)."""
        return self.spec.datalist(
            split,
            self.dataset_dir,
            num_classes=self.num_classes,
            skip_bad=self.skip_bad,
            report_dir=self.report_dir,
            annotations=annotations,
            check_images=self.check_images,
            rules=self.rules,
        )


def split_datalist(splits: SplitLists, split: str, annotations: bool = True) -> list[dict[str, Any]]:
    """``splits.datalist(split, annotations)``: one split's list as a config component."""
    return splits.datalist(split, annotations)


def _file_problem(path: str, read_header: bool, rules: InputRules | None = None) -> str:
    """ "" when ``path`` exists (and, with ``read_header``, its header reads and passes ``rules``), else what is
    wrong."""
    if not os.path.exists(path):
        return "file not found"
    return probe_image(path, rules) if read_header else ""


def _keep_good(
    items: list[dict[str, Any]], problems: Sequence[Problem], skip_bad: bool, what: str, folder: str, name: str
) -> list[dict[str, Any]]:
    """``items`` (the good ones) when there is no problem, or with ``skip_bad`` (every problem then
    written to ``<folder>/skipped_<name>.csv`` and announced in the log); else a DataListError
    listing the problems of ``what``."""
    if not problems:
        return items
    if not skip_bad or not items:
        hint = "" if skip_bad else " (fix them, or set skip_bad to leave those images out)"
        raise _problems_error(problems, f"{what}{hint}")
    report = write_skipped_report(problems, folder, name)
    logger.warning(
        "skip_bad: %d problem(s) in %s; %d image(s) kept; every skipped row is listed in %s",
        len(problems),
        what,
        len(items),
        report,
    )
    return items


def _problems_error(problems: Sequence[Problem], what: str) -> DataListError:
    """One error listing the problems of ``what`` (the first 20 and the count)."""
    shown = "\n  ".join(str(p) for p in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return DataListError(f"{len(problems)} problem(s) in {what}:\n  {shown}{more}")


def write_skipped_report(problems: Sequence[Problem], folder: str, split: str) -> str:
    """Write ``skipped_<split>.csv`` (where, image, problem) atomically; return its path."""
    path = os.path.join(folder, f"skipped_{split}.csv")
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["where", "image", "problem"])
        writer.writerows([p.where, p.image, p.message] for p in problems)
    return path


def _parse_label(value: str, classes: Sequence[int] | None) -> tuple[int | None, str]:
    if not value:
        return None, "empty label"
    try:
        number = float(value)
    except ValueError:
        return None, f"label {value!r} is not a number"
    if not number.is_integer():
        return None, f"label {value!r} is not an integer class index"
    label = int(number)
    if classes is not None and label not in classes:
        return label, f"label {label} is not one of the classes {list(classes)}"
    return label, ""


def _parse_box(cells: list[str]) -> tuple[list[float] | None, str]:
    if not any(cells):
        return None, ""
    if not all(cells):
        return None, f"incomplete box {cells}"
    try:
        x, y, w, h = (float(c) for c in cells)
    except ValueError:
        return None, f"box {cells} is not numeric"
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        return None, f"box {cells} must have x, y >= 0 and width, height > 0"
    return [x, y, w, h], ""


def read_csv_datalist(
    csv_path: str,
    data_root: str | None = None,
    image_column: str = "filename",
    label_column: str | None = "label",
    mask_column: str | None = None,
    num_classes: int | None = None,
) -> list[dict[str, Any]]:
    """A data list from one CSV (a shortcut for :class:`CSVDataSpec` with that CSV as its train split)."""
    root = data_root if data_root is not None else os.path.dirname(os.path.abspath(csv_path))
    spec = CSVDataSpec(
        train_csv=os.path.abspath(csv_path),
        image_column=image_column,
        label_column=label_column,
        mask_column=mask_column,
    )
    return spec.datalist("train", root, num_classes=num_classes)


def pair_regions(items: Sequence[dict[str, Any]], regions: str | None) -> list[dict[str, Any]]:
    """Each inference input paired with its label map under ``"regions"`` (for region evidence).

    ``regions`` is one label-map file (one input only) or a folder holding one label map per input,
    named after the input's stem (``<stem>.nii.gz``, ``<stem>.nrrd``, ``<stem>.png``, ...; for a DICOM
    series folder, the folder's name); None leaves the items as they are. Every input is paired before
    anything runs: a missing or ambiguous label map is an :class:`~monai_softcam.utils.InputError`
    naming the input and the folder; one file for several inputs is a :class:`~monai_softcam.utils.ConfigError`.
    """
    if regions is None:
        return [dict(item) for item in items]
    regions = os.fspath(regions)
    if not os.path.exists(regions):
        raise MissingInputError(f"regions: {regions} does not exist (a label-map file, or a folder of them)")
    if os.path.isfile(regions):
        sources = {str(item["image"]) for item in items}
        if len(sources) > 1:
            raise ConfigError(
                f"regions is one label map ({regions}) but the input has {len(sources)} images: give a folder "
                "holding one label map per input, named after each input (<stem>.nii.gz, <stem>.nrrd, <stem>.png, ...)"
            )
        return [{**item, "regions": regions} for item in items]
    found: dict[str, list[str]] = {}
    for name in sorted(os.listdir(regions)):
        path = os.path.join(regions, name)
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path):
            found.setdefault(image_stem(name), []).append(path)
    paired = []
    for item in items:
        source = str(item["image"])
        stem = image_stem(os.path.basename(os.path.normpath(source)))
        candidates = [p for p in found.get(stem, []) if os.path.abspath(p) != os.path.abspath(source)]
        if not candidates:
            raise InputError(
                f"no label map for input {source} in the regions folder {regions} "
                f"(expected {stem}.nii.gz, {stem}.nrrd, {stem}.png or another image format named {stem})"
            )
        if len(candidates) > 1:
            raise InputError(
                f"several label maps for input {source} in the regions folder {regions}: "
                f"{', '.join(os.path.basename(p) for p in candidates)}; keep one"
            )
        paired.append({**item, "regions": candidates[0]})
    return paired


def list_images(
    source: str | None,
    data_root: str | None = None,
    spec: CSVDataSpec | None = None,
    check_images: bool = False,
    skip_bad: bool = False,
    report_dir: str | None = None,
    spatial_dims: int = 3,
    regions: str | None = None,
    rules: InputRules | None = None,
) -> list[dict[str, Any]]:
    """Data list for inference from a folder (its image files, sorted, not recursive; for a 3D
    task, a folder holding one DICOM series of several slices is that one volume; for a 2D task
    (``spatial_dims=2``) every DICOM file is an image of its own, as a CR/DX export holds them), a
    CSV or one image file.

    A folder's image files are those named with one of
    :data:`~monai_softcam.data.formats.IMAGE_EXTENSIONS` and DICOM files of any name (recognised by
    their content, as PACS exports often have no extension); other files are left out.

    ``source=None`` is the test CSV of ``data_root`` as ``spec`` names it (the bundle's default input).

    A CSV is read with ``spec``'s image column, image root and file-name template (labels, masks
    and boxes are not needed and not read; rows sharing ``spec.group_column`` are one image), so a
    preset's test CSV works as inference input unchanged. Its paths resolve under
    ``data_root/spec.image_root`` (``data_root`` defaults to the CSV's folder).

    With ``check_images``, every input must exist and its header must read and pass ``rules`` (the task's
    :class:`~monai_softcam.data.rules.InputRules`, as training checks its splits), before anything is run or
    written: any problem raises :class:`DataListError` listing them all; with ``skip_bad`` the bad inputs are
    left out instead and listed in ``<report_dir>/skipped_inference.csv``.

    With ``regions`` (a label map or a folder of them), each input is paired with its label map
    under ``"regions"`` (:func:`pair_regions`), for region evidence.
    """
    check_images, skip_bad = as_flag(check_images, "check_images"), as_flag(skip_bad, "skip_bad")
    if source is None:
        source = (spec if spec is not None else CSVDataSpec()).csv_path("test", data_root or ".")
    items = _inference_inputs(source, data_root, spec, spatial_dims)
    if not check_images:
        return pair_regions(items, regions)
    problems = []
    for item in tqdm(items, desc="checking inputs", unit="file", disable=None if len(items) > 2000 else True):
        message = _file_problem(item["image"], read_header=True, rules=rules)
        if message:
            problems.append(Problem(f"inference input {item['image']}", message, item["image"]))
    good = [item for item in items if item["image"] not in {p.image for p in problems}]
    folder = report_dir or os.path.dirname(os.path.abspath(source))
    return pair_regions(
        _keep_good(good, problems, skip_bad, f"the inference input {source}", folder, "inference"), regions
    )


def _inference_inputs(
    source: str, data_root: str | None, spec: CSVDataSpec | None, spatial_dims: int = 3
) -> list[dict[str, Any]]:
    """The inputs of :func:`list_images`, unchecked."""
    if os.path.isdir(source):
        folder = os.path.abspath(source)
        names, dicoms = [], 0
        for name in sorted(os.listdir(folder)):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if is_dicom_file(path):
                names.append(name)
                dicoms += 1
            elif name.lower().endswith(IMAGE_EXTENSIONS):
                names.append(name)
        if (
            dicoms == len(names) and spatial_dims == 3
        ):  # only DICOM files (or none): one series of several slices is one volume
            try:
                if len(dicom_series(folder)) > 1 or not names:
                    return [{"image": folder}]
            except ValueError:
                pass
        if not names:
            kinds = ", ".join(IMAGE_EXTENSIONS)
            raise DataListError(f"no image files ({kinds}), DICOM files or DICOM series in folder {source}")
        return [{"image": os.path.join(folder, n)} for n in names]
    if source.lower().endswith(".csv"):
        csv_path = os.path.abspath(source)
        if not os.path.isfile(csv_path):
            raise DataListError(f"inference input CSV not found: {csv_path}")
        spec = spec if spec is not None else CSVDataSpec()
        unlabelled = replace(
            spec,
            train_csv=csv_path,
            label_column=None,
            mask_column=None,
            box_columns=None,
            boxes_csv=None,
            holdout=None,
        )
        root = data_root if data_root is not None else os.path.dirname(csv_path)
        items, problems = unlabelled._scan_csv(csv_path, "train", root, None, False, what="the inference input CSV")
        if problems:
            raise _problems_error(problems, f"the inference input CSV {csv_path}")
        return [{"image": item["image"]} for item in items]
    if os.path.isfile(source):
        return [{"image": os.path.abspath(source)}]
    raise DataListError(f"inference input not found: {source} (give a folder of images, a CSV or an image file)")
