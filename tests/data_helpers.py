"""Writers of small stand-in files for the data tests: DICOM (pydicom), PNG (SimpleITK), split CSVs."""

from __future__ import annotations

import csv
import os

import numpy as np
from conftest import SHARED_DIR

UPSTREAM = os.path.join(SHARED_DIR, "upstream_csv")


def write_dicom(
    path: str,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    spacing: tuple[float, float] = (0.14, 0.14),
    signed: bool = False,
    modality: str = "CR",
) -> str:
    """A single-frame DICOM file; ``pixels`` is (rows, cols) or (rows, cols, 3) as stored."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = os.path.splitext(os.path.basename(path))[0]
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: str, pixels: np.ndarray) -> str:
    """PNG of (rows, cols) or (rows, cols, 3) uint8/uint16 pixels."""
    import SimpleITK

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(pixels, isVector=pixels.ndim == 3), path)
    return path


def head_csv(source: str, target: str, rows: int, keep=None) -> list[dict[str, str]]:
    """Copy the header and the first ``rows`` data rows (those passing ``keep``) of a CSV."""
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        picked = []
        for row in reader:
            if keep is None or keep(row):
                picked.append(row)
            if len(picked) == rows:
                break
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(picked)
    return picked


def write_csv(path: str, header: list[str], rows: list[list]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def xray_with_boxes(boxes, size: int = 1024, seed: int = 0) -> np.ndarray:
    """A grey 8-bit 'radiograph' (rows, cols): dim noise, with every box [x, y, w, h] bright."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(20, 90, size=(size, size), dtype=np.uint8)
    for x, y, w, h in boxes:
        pixels[int(y) : int(y + h), int(x) : int(x + w)] = 250
    return pixels


def fundus_photo(seed: int) -> np.ndarray:
    """An RGB 'fundus photograph', wider than high like the originals: a reddish disc on black."""
    rng = np.random.default_rng(seed)
    rows, cols = 512, 600
    yy, xx = np.mgrid[:rows, :cols]
    disc = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < (rows / 2 - 4) ** 2
    pixels = np.zeros((rows, cols, 3), np.uint8)
    pixels[disc] = (rng.integers(150, 200), rng.integers(60, 90), rng.integers(20, 40))
    return pixels


def fundus_with_border(rows: int = 540, cols: int = 720) -> np.ndarray:
    """An RGB fundus-like photograph with the black border of the originals: wider than high, an off-centre
    disc with a vignette and vessels-like stripes, the background dark but not 0 (a camera's noise floor, a
    brighter column of dust on the left). Deterministic (a formula, no random numbers), for the border-crop
    oracle (``fixtures/reference_fundus_crop.json``)."""
    yy, xx = np.mgrid[:rows, :cols].astype(np.float64)
    cy, cx, r = rows * 0.52, cols * 0.47, rows * 0.46
    d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
    disc = d2 < 1.0
    shade = np.clip(1.15 - 0.55 * d2, 0, 1) * (1 + 0.08 * np.sin(xx / 9.0) * np.cos(yy / 13.0))
    pixels = np.zeros((rows, cols, 3), np.float64)
    pixels[..., 0] = 4 + 3 * ((xx + 2 * yy) % 5 == 0)
    pixels[..., 1] = 3 + 2 * ((3 * xx + yy) % 7 == 0)
    pixels[..., 2] = 2 + 2 * ((xx + yy) % 3 == 0)
    pixels[:, 5:8, :] += 9  # dust on the left strip: the background threshold is the strips' maximum
    for c, level in enumerate((185.0, 92.0, 38.0)):
        pixels[..., c] = np.where(disc, level * shade, pixels[..., c])
    vessels = disc & (np.abs(np.sin((xx - cx) / 23.0) * 40 - (yy - cy)) < 2.5)
    pixels[vessels] *= 0.55
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def oct_scan(rows: int, cols: int, seed: int) -> np.ndarray:
    """A grey 8-bit OCT 'B-scan' (rows, cols) of dim noise."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 120, size=(rows, cols), dtype=np.uint8)


def write_dicom_series(
    folder: str,
    volume_kji: np.ndarray,
    spacing=(0.8, 0.7, 2.5),
    origin=(-40.0, 30.0, 12.0),
    series_uid: str | None = None,
) -> list[str]:
    """One DICOM file per slice of an int16 volume ((K, J, I) = slices, rows, columns), axial, LPS
    geometry (``spacing``: column, row, slice), with the tags a series reader sorts by."""
    import locale

    import SimpleITK
    from pydicom.uid import generate_uid

    saved_locale = locale.setlocale(locale.LC_ALL)  # GDCM's DICOM writer leaves the process in the "C" locale
    os.makedirs(folder, exist_ok=True)
    series_uid = series_uid or generate_uid()
    writer = SimpleITK.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k, plane in enumerate(volume_kji.astype(np.int16)):
        image = SimpleITK.GetImageFromArray(plane)
        image.SetSpacing((float(spacing[0]), float(spacing[1])))
        tags = {
            "0008|0060": "CT",
            "0010|0020": "test",
            "0020|000d": series_uid + ".1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in (origin[0], origin[1], origin[2] + k * spacing[2])),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{spacing[2]:.4f}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        path = os.path.join(folder, f"slice_{k:03d}.dcm")
        writer.SetFileName(path)
        writer.Execute(image)
        paths.append(path)
    locale.setlocale(locale.LC_ALL, saved_locale)
    return paths


def resample_with_itk(moving_path: str, reference_path: str) -> np.ndarray:
    """The image of ``moving_path`` (e.g. a compact evidence map) linearly resampled onto the voxel
    grid of ``reference_path`` by SimpleITK, which reads both files' geometry itself (an
    independent check of world-space placement), as a (x, y[, z]) array."""
    import SimpleITK

    reference = SimpleITK.ReadImage(reference_path)
    moving = SimpleITK.ReadImage(moving_path)
    if reference.GetDimension() == 3 and moving.GetDimension() == 2 and reference.GetSize()[2] == 1:
        reference = reference[:, :, 0]  # a 2D image in a 3D container (DICOM): its plane
    out = SimpleITK.Resample(moving, reference, SimpleITK.Transform(), SimpleITK.sitkLinear, 0.0, SimpleITK.sitkFloat32)
    return SimpleITK.GetArrayFromImage(out).T
