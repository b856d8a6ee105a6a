"""DICOM files: recognised by name or content, decoded by pydicom and its plugins (compressed transfer syntaxes
included), read by :class:`~monai_softcam.data.dicom.DicomReader` for MONAI's ``LoadImage``.

:class:`~monai_softcam.data.dicom.DicomReader` reads single DICOM files, intensities from the header
(:func:`~monai_softcam.data.dicom.dicom_intensities`): the Modality LUT (rescale or LUT sequence), then CT keeps
Hounsfield units and every other modality is mapped to [0, 1], by its VOI LUT/window when asked (``window``),
else by the effective range of its stored bits (:func:`~monai_softcam.data.dicom.effective_range`: a 12-bit
image in 16-bit words, or a signed image without rescale, keeps its contrast). ``MONOCHROME1`` images (where
larger values are darker) are inverted to look like ``MONOCHROME2``. RGB/YBR colour is returned as RGB, PALETTE
COLOR through its palette.

Header quirks are handled as PACS viewers and ITK do, each with one warning (the ``monai_softcam``
logger) naming the file: a file without the 128-byte preamble and ``DICM`` is recognised by its
first element and read anyway; an unusable PixelSpacing (zero, negative, NaN) falls back to
ImagerPixelSpacing, then 1 mm; a missing orientation or position gives the identity orientation
at the origin (warned about only for CT/MR/PT: projection images and photographs have neither,
nor need them, like a missing spacing). Non-square pixels keep their row/column spacing. No pixel
data, or less than the header asks for, is an ``InputError`` naming the file (also found by
:func:`~monai_softcam.data.readers.probe_image`). Multi-frame files: a volume when ``spatial_dims``
is 3 (enhanced CT/MR/PET with their per-frame positions, the slice vector from the first two
frames; classic files by SpacingBetweenSlices/SliceThickness); for 2D an ``InputError`` naming the
file and its frame count (a colour cine loop: a video, not an image) unless the reader's ``frame``
picks one. Arrays are in MONAI's axis order with an ``affine`` in RAS.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Sequence

import numpy as np
import pydicom
from monai.data import ImageReader
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from ..utils import InputError
from .formats import DICOM_SUFFIXES, IMAGE_EXTENSIONS, _meta, _single

__all__ = [
    "CROSS_SECTIONAL_MODALITIES",
    "DICOM_DECODERS",
    "DicomReader",
    "KEEP_UNITS_MODALITIES",
    "decode_dicom_pixels",
    "dicom_intensities",
    "effective_range",
    "is_dicom_file",
]

logger = logging.getLogger("monai_softcam")


_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


def _head(path: str, size: int = 132) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _dicom_start(head: bytes) -> str:
    """How a file whose first bytes are ``head`` starts: ``"preamble"`` (128 bytes, then ``DICM``),
    ``"bare"`` (no preamble: the dataset itself, starting with a group 0x0002 or 0x0008 element in
    little endian, explicit VR or implicit VR, as old and some PACS-exported files do), else ``""``."""
    if head[128:132] == b"DICM":
        return "preamble"
    if len(head) < 8:
        return ""
    group, element = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element >= 0x1000:
        return ""
    if head[4:6] in _DICOM_VRS:  # explicit VR
        return "bare"
    length = int.from_bytes(head[4:8], "little")  # implicit VR: a 32-bit length
    return "bare" if length < 0x10000 or length == 0xFFFFFFFF else ""


def is_dicom_file(path: str) -> bool:
    """True for files named ``.dcm``/``.dicom``, carrying the DICOM preamble (``DICM`` at byte 128),
    or starting with a DICOM dataset without it (a group 0x0002/0x0008 element; reads 132 bytes)."""
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    if not os.path.isfile(path) or path.lower().endswith(IMAGE_EXTENSIONS + (".gz",)):
        return False
    return bool(_dicom_start(_head(path)))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """One warning (the ``monai_softcam`` logger) per message, i.e. per file and quirk, per process."""
    if message in _WARNED:
        return
    if len(_WARNED) < 100_000:
        _WARNED.add(message)
    logger.warning(message)


def _dcmread(path: str, **kwargs: Any) -> Any:
    """``pydicom.dcmread``; a file without the preamble is read with ``force=True`` (one warning), its
    transfer syntax set from the encoding pydicom found when the file has no file meta."""
    if _dicom_start(_head(path)) != "bare":
        return pydicom.dcmread(path, **kwargs)
    _warn_once(f"{path}: DICOM file without the 128-byte preamble and 'DICM' prefix; read anyway")
    ds = pydicom.dcmread(path, force=True, **kwargs)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data


def _palette_little_endian(ds: Any) -> Any:
    """``ds``, or for a big-endian file (Explicit VR Big Endian) a dataset of its palette alone with the lookup
    table words in little-endian order: pydicom's ``apply_color_lut`` reads the OW table data as little-endian
    whatever the file's byte order, and so decodes a big-endian file's palette almost black (GDCM decodes it
    right; the test corpus compares the two)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax != pydicom.uid.ExplicitVRBigEndian:
        return ds
    palette = Dataset()
    for colour in ("Red", "Green", "Blue"):
        for keyword in (
            f"{colour}PaletteColorLookupTableDescriptor",
            f"{colour}PaletteColorLookupTableData",
            f"Segmented{colour}PaletteColorLookupTableData",
        ):
            if keyword in ds:
                value = ds[keyword].value
                if keyword.endswith("Data"):
                    value = np.frombuffer(value, dtype=">u2").astype("<u2").tobytes()
                setattr(palette, keyword, value)
    return palette


def _pixel_data_problem(ds: Any, path: str) -> str:
    """ "" or what is wrong with the pixel data of ``ds`` (read whole, or with ``defer_size``): none at
    all, or fewer bytes than Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames
    (uncompressed transfer syntaxes; the file's size bounds a deferred element)."""
    tag = next((t for t in _PIXEL_TAGS if t in ds), None)
    if tag is None:
        return "no pixel data (7FE0,0010)"
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and (not syntax.is_transfer_syntax or syntax.is_encapsulated):
        return ""  # compressed frames (or a private syntax): their decoder finds damage, or names the syntax
    elem = ds.get_item(tag)
    value = elem.value
    length = int(getattr(elem, "length", 0) or 0)
    if length == 0xFFFFFFFF:
        return ""  # undefined length: encapsulated
    if value is None and length > 0:  # deferred: the element ends where the file does, at the latest
        available = length
        tell = getattr(elem, "value_tell", None)
        if tell is not None and not (syntax is not None and syntax.is_deflated):
            with contextlib.suppress(OSError):
                available = min(length, os.path.getsize(path) - int(tell))
    else:
        available = len(value) if value is not None else 0
    try:
        count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        count *= int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
    except (AttributeError, TypeError, ValueError):
        return ""  # no Rows/Columns: reported as such
    expected = (count * bits + 7) // 8
    if available == 0:
        return "no pixel data (7FE0,0010): the element is empty"
    if available < expected:
        return f"pixel data truncated: {available} bytes, expected {expected}"
    return ""


#: modalities whose values keep their physical units after the Modality LUT (CT in Hounsfield units)
KEEP_UNITS_MODALITIES = ("CT",)


def effective_range(values: np.ndarray, bits: int, signed: bool) -> tuple[float, float]:
    """The range that ``[0, 1]`` stands for, for integer data of ``bits`` bits (the container's, or
    DICOM's BitsStored) and this image's ``values``.

    Data of at most 8 bits: the full range (0-255 for 8-bit PNG/JPEG and 8-bit DICOM, as
    before). Deeper data: the smallest bit depth ``b <= bits`` that holds every value of the image,
    i.e. ``[0, 2^b - 1]`` when no value is negative, else ``[-2^(b-1), 2^(b-1) - 1]``. So 12-bit
    data in a 16-bit container maps by 12 bits, and a signed image without rescale whose values
    span a few hundred keeps its contrast, where the stored range (e.g. +-32768) would flatten it.
    Deterministic per image, monotonic, and the same for images of the same bit depth."""
    full = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if bits <= 8 or values.size == 0:
        return float(full[0]), float(full[1])
    low, high = float(values.min()), float(values.max())
    for b in range(8, bits + 1):
        if low >= 0 and high <= 2**b - 1:
            return 0.0, float(2**b - 1)
        if low >= -(2 ** (b - 1)) and high <= 2 ** (b - 1) - 1 and low < 0:
            return float(-(2 ** (b - 1))), float(2 ** (b - 1) - 1)
    return float(full[0]), float(full[1])


def _window(values: np.ndarray, ds: Any) -> np.ndarray | None:
    """``values`` (after the Modality LUT) through the file's first VOI LUT or window
    (WindowCenter/Width, PS3.3 C.11.2.1.2 linear function), in [0, 1]; None when it has neither."""
    if "VOILUTSequence" in ds:  # a table: output = LUT[input - first mapped value], clamped at both ends
        lut = ds.VOILUTSequence[0]
        count, first, bits = (int(v) for v in lut.LUTDescriptor)
        data = lut.LUTData
        table = (
            np.frombuffer(data, dtype="<u2")
            if isinstance(data, bytes)
            else np.asarray(data, dtype=np.float64).reshape(-1)
        )
        table = table[: count or 65536].astype(np.float64)
        index = np.clip(np.round(values) - first, 0, len(table) - 1).astype(np.int64)
        return (table[index] / float(2**bits - 1)).astype(np.float32)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
    width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    if width < 1:
        return None
    return np.clip(((values - (center - 0.5)) / (width - 1)) + 0.5, 0.0, 1.0).astype(np.float32)


def dicom_intensities(ds: Any, pixels: np.ndarray, window: bool = False) -> np.ndarray:
    """Intensities of a DICOM image from its header, not its container (float32).

    1. The Modality LUT: RescaleSlope/Intercept, or the Modality LUT Sequence (pydicom's
       ``apply_modality_lut``).
    2. CT (:data:`KEEP_UNITS_MODALITIES`) keeps those units (Hounsfield units, for windowing in
       the preset) unless ``window``. Every other modality (CR, DX, MG, XA, US, OP, OCT, SC, MR
       single images, ...) is mapped to [0, 1]:

       * with ``window`` and a VOI LUT or WindowCenter/Width in the file: through it;
       * otherwise by :func:`effective_range` of the stored values (BitsStored and
         PixelRepresentation bound it), carried through the Modality LUT.
    3. ``MONOCHROME1`` (larger values darker) is inverted to look like ``MONOCHROME2``. Colour
       (RGB; YBR converted by pydicom; PALETTE COLOR through its palette) is mapped by its bits.
    """
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(getattr(ds, "BitsStored", 8 * pixels.dtype.itemsize) or 8 * pixels.dtype.itemsize)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, _palette_little_endian(ds))  # 8- or 16-bit RGB per the palette descriptor
        top = 255.0 if rgb.dtype == np.uint8 else 65535.0
        return (rgb.astype(np.float32) / top).astype(np.float32)
    stored = pixels.astype(np.float32)
    low, high = effective_range(pixels, bits, signed)
    has_lut = "ModalityLUTSequence" in ds
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    rescaled = has_lut or slope != 1 or intercept != 0
    values = stored
    if rescaled:  # the bounds go through the same LUT (a table needs integer indices)
        values = np.asarray(apply_modality_lut(pixels if has_lut else stored, ds), dtype=np.float32)
        ends = np.asarray([low, high]).astype(np.int64 if has_lut else np.float64)
        bounds = np.asarray(apply_modality_lut(ends, ds), dtype=np.float64)
        low, high = float(bounds.min()), float(bounds.max())
    inverted = photometric == "MONOCHROME1"  # larger values darker: shown inverted, as MONOCHROME2
    if window:
        windowed = _window(values, ds)
        if windowed is not None:
            return (1.0 - windowed if inverted else windowed).astype(np.float32)
    if rescaled and str(getattr(ds, "Modality", "")).upper() in KEEP_UNITS_MODALITIES:
        return values.astype(np.float32)
    unit = (values - low) / max(high - low, 1e-12)
    return (1.0 - unit if inverted else unit).astype(np.float32)


#: modalities that always carry the image plane (orientation, position, spacing); a missing one is warned about
CROSS_SECTIONAL_MODALITIES = ("CT", "MR", "PT")


def _floats(value: Any, count: int) -> np.ndarray | None:
    """``value`` as ``count`` finite floats, else None (absent, empty, wrong count, not numbers)."""
    if value is None:
        return None
    try:
        items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        values = np.asarray([float(v) for v in items])
    except (TypeError, ValueError):
        return None
    return values if values.size == count and np.all(np.isfinite(values)) else None


def _frame_attr(ds: Any, frame: int, sequence: str, name: str) -> Any:
    """``name`` of frame ``frame``: from its item of PerFrameFunctionalGroupsSequence, then from
    SharedFunctionalGroupsSequence (``sequence``: PlanePositionSequence, ...; enhanced multi-frame),
    then from the dataset itself (classic files); None if nowhere."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 <= frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items and name in items[0]:
            return items[0].get(name)
    return ds.get(name)


def _pixel_spacing(ds: Any, path: str, frame: int = 0) -> tuple[float, float]:
    """(row, column) spacing in mm: PixelSpacing (PixelMeasuresSequence in enhanced files), else
    ImagerPixelSpacing, else 1 mm. A value present but unusable (zero, negative, NaN, not two
    numbers) is skipped with one warning naming the file, it and the value used; no spacing at all is
    warned about for :data:`CROSS_SECTIONAL_MODALITIES` only (projection images and photographs often
    have none; viewers show them uncalibrated)."""
    bad = []
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        raw = _frame_attr(ds, frame, "PixelMeasuresSequence", name) if name == "PixelSpacing" else ds.get(name)
        if raw is None or raw == "":
            continue
        values = _floats(raw, 2)
        if values is not None and np.all(values > 0):
            if bad:
                _warn_once(f"{path}: unusable {', '.join(bad)}; using {name} {values[0]:g}\\{values[1]:g} mm")
            return float(values[0]), float(values[1])
        bad.append(f"{name} {raw!r}")
    if bad:
        _warn_once(f"{path}: unusable {', '.join(bad)}; using a pixel spacing of 1 mm")
    elif str(ds.get("Modality", "")).upper() in CROSS_SECTIONAL_MODALITIES:
        _warn_once(f"{path}: no PixelSpacing; using a pixel spacing of 1 mm")
    return 1.0, 1.0


#: the package that decodes each transfer syntax through pydicom's decoder plugins (all of them
#: dependencies of this package): UID -> (name, package, pip install line). Uncompressed and deflated
#: data pydicom decodes itself.
_PYDICOM = ("pydicom", "pydicom")


_LIBJPEG = ("pylibjpeg-libjpeg", "pylibjpeg pylibjpeg-libjpeg")


_OPENJPEG = ("pylibjpeg-openjpeg", "pylibjpeg pylibjpeg-openjpeg")


#: transfer syntax -> (the decoder package, what to install) for pydicom's compressed pixel data
DICOM_DECODERS = {
    "1.2.840.10008.1.2": ("Implicit VR Little Endian", *_PYDICOM),
    "1.2.840.10008.1.2.1": ("Explicit VR Little Endian", *_PYDICOM),
    "1.2.840.10008.1.2.1.99": ("Deflated Explicit VR Little Endian", *_PYDICOM),
    "1.2.840.10008.1.2.2": ("Explicit VR Big Endian", *_PYDICOM),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "pylibjpeg-rle (or pydicom itself)", "pylibjpeg pylibjpeg-rle"),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline (Process 1)", *_LIBJPEG),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (Process 2 & 4)", *_LIBJPEG),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless (Process 14)", *_LIBJPEG),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless (Process 14, Selection Value 1)", *_LIBJPEG),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", *_LIBJPEG),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", *_LIBJPEG),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", *_OPENJPEG),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", *_OPENJPEG),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", *_OPENJPEG),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", *_OPENJPEG),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", *_OPENJPEG),
}


_CONVERT_HINT = "convert it to an uncompressed transfer syntax first (e.g. gdcmconv --raw, or DCMTK's dcmdjpeg/dcmdrle)"


def _transfer_syntax(ds: Any) -> tuple[str, str]:
    """(UID, name) of ``ds``'s transfer syntax; the UID pydicom assumed when the file has none."""
    meta = getattr(ds, "file_meta", None)
    uid = str(meta.get("TransferSyntaxUID", "") if meta is not None else "").strip()
    if not uid:
        implicit = (getattr(ds, "original_encoding", None) or (None,))[0]  # as read: (implicit, little)
        uid = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1" if implicit is False else ""
    if uid in DICOM_DECODERS:
        return uid, DICOM_DECODERS[uid][0]
    name = pydicom.uid.UID(uid).name if uid else "none"
    if not uid or name == uid:  # not a transfer syntax pydicom knows: private, or made up
        name = "a private transfer syntax" if uid and pydicom.uid.UID(uid).is_private else "an unknown transfer syntax"
    return uid, name


def _decoder_missing(uid: str) -> bool | None:
    """True when pydicom has a decoder for ``uid`` but none of its plugins is installed, False when
    one is, None when pydicom has no decoder for it at all."""
    try:
        return not get_decoder(pydicom.uid.UID(uid)).is_available
    except (NotImplementedError, ValueError):
        return None


_SEQUENTIAL_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")  # JPEG baseline, extended


def _sequential_scans_fixed(stream: bytes) -> bytes | None:
    """``stream`` (one JPEG frame) with the spectral selection of its scans set to 0..63, as sequential
    DCT (SOF0/SOF1) requires; some writers leave 0..0 there, which IJG's libjpeg (GDCM) ignores and
    pylibjpeg-libjpeg refuses. None when nothing needs fixing or the stream is not sequential DCT."""
    data, i, sequential, changed = bytearray(stream), 2, False, False
    while i + 4 <= len(data):
        if data[i] != 0xFF or data[i + 1] in (0x00, 0xFF, 0x01) or 0xD0 <= data[i + 1] <= 0xD7:
            i += 1  # entropy-coded data, stuffed 0xFF00, fill bytes, RSTn, TEM
            continue
        marker = data[i + 1]
        if marker == 0xD9:  # EOI
            break
        if marker in (0xC0, 0xC1):
            sequential = True
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # progressive, lossless, hierarchical or arithmetic: not this defect
        if marker == 0xDA and sequential and i + 7 + 2 * data[i + 4] <= len(data):
            k = i + 5 + 2 * data[i + 4]  # Ss, Se after the component specifications
            if (data[k], data[k + 1]) != (0, 63):
                data[k], data[k + 1], changed = 0, 63, True
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return bytes(data) if changed else None


def _decode_fixed_sequential_jpeg(ds: Any) -> np.ndarray | None:
    """The pixels of a JPEG baseline/extended ``ds`` whose scan headers needed
    :func:`_sequential_scans_fixed`, decoded again; None if that does not apply or does not help."""
    import copy

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(getattr(ds, "NumberOfFrames", 1) or 1)))
        fixed = [_sequential_scans_fixed(frame) for frame in frames]
        if all(f is None for f in fixed):
            return None
        patched = copy.deepcopy(ds)
        patched.PixelData = encapsulate([f if f is not None else frame for f, frame in zip(fixed, frames)])
        return patched.pixel_array
    except Exception:
        return None


def decode_dicom_pixels(ds: Any, path: str) -> np.ndarray:
    """``ds``'s pixel data as pydicom decodes it (``([frames,] rows, cols [, samples])``, stored values,
    colour as RGB), through its decoder plugins for compressed syntaxes (:data:`DICOM_DECODERS`).
    JPEG baseline/extended streams whose scan headers carry the spectral selection 0..0 (a common
    writer defect that IJG's libjpeg ignores) are decoded with it set to 0..63, as sequential JPEG
    requires. A syntax nothing decodes, a decoder not installed, or a decoder failing raises an
    :class:`~monai_softcam.utils.InputError` naming the file, the transfer syntax (name and UID) and the package."""
    try:
        return ds.pixel_array
    except Exception as err:
        uid, name = _transfer_syntax(ds)
        if uid in _SEQUENTIAL_JPEG:
            pixels = _decode_fixed_sequential_jpeg(ds)
            if pixels is not None:
                return pixels
        syntax = f"{name if name.endswith('transfer syntax') else 'transfer syntax ' + name} ({uid or 'no UID'})"
        missing = _decoder_missing(uid)
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        if len(lines) > 1 and "all available plugins" in lines[0]:  # pydicom: one line per plugin tried
            lines = lines[1:]
        reason = "; ".join(lines) or type(err).__name__
        if uid not in DICOM_DECODERS or missing is None:
            raise InputError(
                f"{path}: cannot decode the DICOM pixel data: no decoder in pydicom or in the packages this "
                f"reader uses reads {syntax}; {_CONVERT_HINT}"
            ) from err
        package, pip = DICOM_DECODERS[uid][1:]
        if missing:
            raise InputError(
                f"{path}: cannot decode the DICOM pixel data: {syntax} needs {package}, which is not installed "
                f"(pip install {pip}; one of the required packages)"
            ) from err
        raise InputError(
            f"{path}: cannot decode the DICOM pixel data ({syntax}, decoded by {package}): {reason}"
        ) from err


class DicomReader(ImageReader):
    """Read one DICOM file with pydicom (see the module docstring for the intensity and header rules).

    Args:
        spatial_dims: 3 reads a multi-frame file as a volume (frame = slice), with its per-frame
            geometry; 2 refuses a multi-frame file (an InputError naming it and its number of
            frames) unless ``frame`` is set.
        frame: 2D only: the frame (0-based) to take from a multi-frame file; None refuses them.
            Single-frame files are read as they are whatever ``frame``.
        window: map to [0, 1] through the file's VOI LUT or WindowCenter/Width when it has one
            (CT too); otherwise by the effective range (see :func:`dicom_intensities`).
    """

    def __init__(self, spatial_dims: int = 2, frame: int | None = None, window: bool = False) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.frame = None if frame is None else int(frame)
        self.window = bool(window)

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        """Whether the name is one DICOM file."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and is_dicom_file(os.fspath(names[0]))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        """``(path, pydicom dataset)`` of the one file given; a ValueError for a non-DICOM or unreadable file, an
        InputError for missing or truncated pixel data."""
        path = _single(data)
        if not is_dicom_file(path):  # MONAI tries every given reader: leave other formats to theirs
            raise ValueError(f"{path}: not a DICOM file")
        try:
            ds = _dcmread(path)
        except Exception as err:
            raise ValueError(f"{path}: not a readable DICOM file ({err})") from err
        problem = _pixel_data_problem(ds, path)
        if problem:
            raise InputError(f"{path}: {problem}")
        return path, ds

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The intensities as an array ``x, y (, z) [, c]`` (one frame if ``frame`` is set) and its metadata."""
        path, ds = img
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        index = self._frame_index(path, ds, frames)
        pixels = decode_dicom_pixels(ds, path)
        if index is not None:
            pixels, frames = pixels[index], 1  # pydicom: (frames, rows, cols [, samples])
        # colour: RGB, YBR (pydicom returns it as RGB) and PALETTE COLOR (RGB through its palette)
        palette = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
        channels = int(getattr(ds, "SamplesPerPixel", 1)) > 1 or palette
        values = dicom_intensities(ds, pixels, window=self.window)
        # pydicom: ([frames,] rows, cols [, samples]) -> MONAI: x = column, y = row (, z = frame)
        if frames > 1:
            values = np.moveaxis(values, 0, 2)  # rows, cols, frames [, c]
        order = [1, 0] + list(range(2, values.ndim))
        array = np.ascontiguousarray(np.transpose(values, order))
        return array, _meta(array, self._affine(ds, path, index or 0, volume=frames > 1), channels, path)

    def _frame_index(self, path: str, ds: Any, frames: int) -> int | None:
        """The frame to take (2D, multi-frame, ``frame`` set), None to read the file whole; an
        InputError for a multi-frame file in 2D without ``frame``, or a frame it does not have."""
        if frames <= 1 or self.spatial_dims != 2:
            return None
        choose = f"choose one with --dicom_frame <0..{frames - 1}> (the reader option frame)"
        if self.frame is None:
            if int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1:
                raise InputError(
                    f"{path}: multi-frame colour DICOM ({frames} frames) cannot be used as a 2D image: "
                    f"a colour cine loop is a video, not one image; {choose}"
                )
            raise InputError(f"{path}: multi-frame DICOM ({frames} frames) cannot be used as a 2D image; {choose}")
        if not -frames <= self.frame < frames:
            raise InputError(f"{path}: frame {self.frame} asked for, the file has {frames} frames (0..{frames - 1})")
        return self.frame % frames

    @staticmethod
    def _affine(ds: Any, path: str = "", frame: int = 0, volume: bool = False) -> np.ndarray:
        """LPS affine of frame ``frame`` (or of all frames stacked when ``volume``).

        Plane geometry: the frame's PlanePositionSequence/PlaneOrientationSequence/
        PixelMeasuresSequence (per-frame, then shared functional groups: enhanced CT/MR/PET), else
        ImagePositionPatient/ImageOrientationPatient/PixelSpacing (see :func:`_pixel_spacing`).
        Without orientation or position: the identity orientation at the origin, with one warning
        for :data:`CROSS_SECTIONAL_MODALITIES` only (projection images such as CR/DX/MG/XA/US and
        photographs have neither, and viewers show them so). Slice vector of a volume: the first two
        frames' positions (enhanced), else the normal times GridFrameOffsetVector's step (RT dose),
        SpacingBetweenSlices, SliceThickness or 1 mm."""
        row_spacing, col_spacing = _pixel_spacing(ds, path, frame)
        orientation = _floats(_frame_attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        if orientation is not None and min(np.linalg.norm(orientation[:3]), np.linalg.norm(orientation[3:])) < 1e-6:
            orientation = None
        position = _floats(_frame_attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
        planes = (("ImageOrientationPatient", orientation), ("ImagePositionPatient", position))
        missing = [name for name, value in planes if value is None]
        if missing and str(ds.get("Modality", "")).upper() in CROSS_SECTIONAL_MODALITIES:
            _warn_once(f"{path}: no usable {' or '.join(missing)}; using the identity orientation at the origin")
        if orientation is None:
            orientation = np.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        row_dir, col_dir = orientation[:3], orientation[3:]  # increasing column index, increasing row index
        normal = np.cross(row_dir, col_dir)
        thickness = 0.0
        for name in ("SpacingBetweenSlices", "SliceThickness"):
            value = _floats(_frame_attr(ds, frame, "PixelMeasuresSequence", name), 1)
            if value is not None and value[0] > 0:
                thickness = float(value[0])
                break
        slice_vector = normal * (thickness or 1.0)
        if volume:
            offsets = _floats(ds.get("GridFrameOffsetVector"), int(getattr(ds, "NumberOfFrames", 1) or 1))
            next_position = _floats(_frame_attr(ds, 1, "PlanePositionSequence", "ImagePositionPatient"), 3)
            if "PerFrameFunctionalGroupsSequence" in ds and position is not None and next_position is not None:
                step = next_position - position
                if np.linalg.norm(step) > 1e-6:
                    slice_vector = step
            elif offsets is not None and offsets.size > 1 and abs(offsets[1] - offsets[0]) > 1e-6:
                slice_vector = normal * float(offsets[1] - offsets[0])
        affine = np.eye(4)
        affine[:3, 0] = row_dir * col_spacing
        affine[:3, 1] = col_dir * row_spacing
        affine[:3, 2] = slice_vector
        affine[:3, 3] = position if position is not None else 0.0
        return affine
