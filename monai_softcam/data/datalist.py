"""Turn split CSVs (or a folder of images) into MONAI data lists, refusing bad rows with clear errors."""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

__all__ = ["DataListError", "IMAGE_EXTENSIONS", "list_images", "read_csv_datalist", "resolve_under_root"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".tif", ".tiff")


class DataListError(ValueError):
    """A CSV or folder cannot be turned into a data list; the message names the file, row and column."""


def resolve_under_root(path: str, root: str, where: str) -> str:
    """Absolute path of ``path`` (relative paths resolve under ``root``), refusing paths that escape ``root``."""
    root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root:
        raise DataListError(f"{where}: path {path!r} resolves outside the data root {root}")
    return full


def _label(value: str, where: str, classes: Sequence[int] | None) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataListError(f"{where}: label {value!r} is not a number") from None
    if not number.is_integer():
        raise DataListError(f"{where}: label {value!r} is not an integer class index")
    label = int(number)
    if classes is not None and label not in classes:
        raise DataListError(f"{where}: label {label} is not one of the classes {list(classes)}")
    return label


def read_csv_datalist(
    csv_path: str,
    data_root: str | None = None,
    image_column: str = "filename",
    label_column: str | None = "label",
    mask_column: str | None = None,
    num_classes: int | None = None,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Read a split CSV into ``[{"image": path, "label": int, "mask": path}, ...]``.

    Args:
        csv_path: the CSV file (header row required).
        data_root: folder that relative paths resolve under (default: the CSV's folder); paths may
            not escape it.
        image_column: column holding the image path.
        label_column: column holding the integer class; None for unlabelled data (inference).
        mask_column: optional column holding a mask path (an empty cell means "no mask").
        num_classes: when given, labels must lie in ``0 .. num_classes - 1`` (``0..1`` for 1 class).
        check_files: verify that every referenced file exists.

    Raises:
        DataListError: naming the CSV, the row (1-based, header = row 1) and the column of the first
            bad cell, or listing every missing file. Nothing is skipped silently.
    """
    if not os.path.isfile(csv_path):
        raise DataListError(f"CSV file not found: {csv_path}")
    root = data_root if data_root is not None else os.path.dirname(os.path.abspath(csv_path))
    classes = None if num_classes is None else list(range(max(int(num_classes), 2)))
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        wanted = [c for c in (image_column, label_column, mask_column) if c is not None]
        absent = [c for c in wanted if c not in columns]
        if absent:
            raise DataListError(f"{csv_path}: no column {absent[0]!r}; the columns are {columns}")
        rows = list(reader)
    if not rows:
        raise DataListError(f"{csv_path}: the split is empty (no data rows)")
    items, missing = [], []
    for number, row in enumerate(rows, start=2):
        where = f"{csv_path} row {number}"
        image = (row[image_column] or "").strip()
        if not image:
            raise DataListError(f"{where}: column {image_column!r} is empty")
        item: dict[str, Any] = {"image": resolve_under_root(image, root, f"{where} column {image_column!r}")}
        if label_column is not None:
            item["label"] = _label((row[label_column] or "").strip(), f"{where} column {label_column!r}", classes)
        if mask_column is not None and (row[mask_column] or "").strip():
            item["mask"] = resolve_under_root(row[mask_column].strip(), root, f"{where} column {mask_column!r}")
        if check_files:
            missing += [f"{where}: {item[k]}" for k in ("image", "mask") if k in item and not os.path.isfile(item[k])]
        items.append(item)
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataListError(f"{len(missing)} file(s) listed in {csv_path} do not exist:\n  {shown}{more}")
    return items


def list_images(source: str, data_root: str | None = None, image_column: str = "filename") -> list[dict[str, Any]]:
    """Data list for inference from a folder (its image files, sorted, not recursive) or a CSV
    (the ``image_column``; a ``label`` is not needed)."""
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
        if not names:
            raise DataListError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {source}")
        return [{"image": os.path.join(os.path.abspath(source), n)} for n in names]
    if source.lower().endswith(".csv"):
        return read_csv_datalist(source, data_root, image_column=image_column, label_column=None)
    if os.path.isfile(source):
        return [{"image": os.path.abspath(source)}]
    raise DataListError(f"inference input not found: {source} (give a folder of images, a CSV or an image file)")
