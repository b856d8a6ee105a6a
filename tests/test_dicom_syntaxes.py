"""DICOM transfer syntaxes a PACS exports: every one decodes through pydicom's plugins (the pylibjpeg
stack this package depends on) to the values SimpleITK/GDCM decodes from the same file, exactly for
the lossless syntaxes and within a tolerance for the lossy ones, and loads through ``DicomReader``;
a syntax nothing decodes, or a decoder that is not installed, is refused naming the file, the
syntax (name and UID) and the package.

The corpus is written by the tests into a temporary folder: pydicom's own encoders (RLE; JPEG-LS
via pyjpegls, a test-only dependency; JPEG 2000 via pylibjpeg-openjpeg), SimpleITK's GDCM writer
(JPEG Lossless, process 14 selection value 1), Pillow (JPEG baseline 8-bit) and, for 12-bit JPEG
Extended, which nothing here encodes, the 12-bit file pydicom ships with its own test data.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest
from data_helpers import write_dicom
from pydicom import uid
from pydicom.encaps import encapsulate

from monai_softcam.data.dicom import DICOM_DECODERS, DicomReader, decode_dicom_pixels
from monai_softcam.utils import InputError

ROWS, COLS = 48, 64
DEPTHS = {"u8": (np.uint8, 8), "u12": (np.uint16, 12), "u16": (np.uint16, 16)}
JPEG_PROCESS14 = "1.2.840.10008.1.2.4.57"  # pydicom 3: uid.JPEGLossless
PRIVATE_SYNTAX = "1.2.826.0.1.3680043.9.9999.42.1"


def test_image(depth: str) -> np.ndarray:
    """A smooth 64x48 image with some noise over the full range of ``depth`` (stored values)."""
    dtype, bits = DEPTHS[depth]
    top = 2**bits - 1
    y, x = np.mgrid[0:ROWS, 0:COLS]
    values = top * (0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 5.0))
    values += np.random.default_rng(bits).normal(0, 0.01 * top, values.shape)
    return np.clip(np.rint(values), 0, top).astype(dtype)


test_image.__test__ = False  # a helper, not a test


def _uncompressed(folder: str, depth: str) -> str:
    pixels = test_image(depth)
    return write_dicom(os.path.join(folder, f"{depth}_source.dcm"), pixels, bits_stored=DEPTHS[depth][1])


def _with_syntax(source: str, path: str, syntax: str) -> str:
    """``source`` (explicit VR little endian) rewritten in an uncompressed or deflated ``syntax``."""
    ds = pydicom.dcmread(source)
    if syntax == uid.ExplicitVRBigEndian:
        if ds.BitsAllocated > 8:
            ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, enforce_file_format=True)  # save_as refuses to change endianness
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


def _compressed(source: str, path: str, syntax: str, **options) -> str:
    """``source`` compressed with pydicom's own encoders (RLE; JPEG-LS: pyjpegls; JPEG 2000: openjpeg)."""
    ds = pydicom.dcmread(source)
    ds.compress(syntax, **options)
    ds.save_as(path, enforce_file_format=True)
    return path


def _sitk_jpeg_lossless(source: str, path: str, syntax: str) -> str:
    """JPEG Lossless written by SimpleITK's GDCM writer (process 14, selection value 1). For the general
    process-14 syntax the same stream is labelled process 14, as GDCM itself writes it (predictor 1
    is one of process 14's predictors)."""
    import SimpleITK

    writer = SimpleITK.ImageFileWriter()
    writer.SetFileName(path)
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")  # GDCMImageIO: JPEG Lossless SV1 (its only JPEG)
    writer.Execute(SimpleITK.ReadImage(source))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == uid.JPEGLosslessSV1
    if syntax != uid.JPEGLosslessSV1:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


def _pillow_jpeg(source: str, path: str, syntax: str) -> str:
    """8-bit lossy JPEG (baseline, SOF0) by Pillow, encapsulated; in the JPEG Extended syntax too,
    whose decoders must read process 1 streams (GDCM writes 8-bit Extended files the same way)."""
    from PIL import Image

    ds = pydicom.dcmread(source)
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path


def _pydicom_12bit_extended(source: str, path: str, syntax: str) -> str:
    from pydicom.data import get_testdata_file

    found = get_testdata_file("JPEG-lossy.dcm", download=False)  # in pydicom's wheel: never downloaded
    if found is None:
        pytest.skip("pydicom's test file JPEG-lossy.dcm is not installed")
    return found  # 1024x256, 12-bit, JPEG Extended process 4 (SOF1); its scans say 0..0, not 0..63


# name -> (syntax, writer, options, depths, lossless)
CASES = {
    "implicit_le": (uid.ImplicitVRLittleEndian, _with_syntax, {}, ("u8", "u12", "u16"), True),
    "explicit_le": (uid.ExplicitVRLittleEndian, _with_syntax, {}, ("u8", "u12", "u16"), True),
    "explicit_be": (uid.ExplicitVRBigEndian, _with_syntax, {}, ("u8", "u12", "u16"), True),
    "deflated": (uid.DeflatedExplicitVRLittleEndian, _with_syntax, {}, ("u8", "u12", "u16"), True),
    "rle": (uid.RLELossless, _compressed, {"encoding_plugin": "pydicom"}, ("u8", "u12", "u16"), True),
    "jpeg_baseline": (uid.JPEGBaseline8Bit, _pillow_jpeg, {}, ("u8",), False),
    "jpeg_extended": (uid.JPEGExtended12Bit, _pillow_jpeg, {}, ("u8",), False),
    "jpeg_extended_12bit": (uid.JPEGExtended12Bit, _pydicom_12bit_extended, {}, ("u12",), False),
    "jpeg_lossless_sv1": (uid.JPEGLosslessSV1, _sitk_jpeg_lossless, {}, ("u8", "u12", "u16"), True),
    "jpeg_lossless_p14": (JPEG_PROCESS14, _sitk_jpeg_lossless, {}, ("u8", "u12", "u16"), True),
    "jpegls_lossless": (uid.JPEGLSLossless, _compressed, {"encoding_plugin": "pyjpegls"}, ("u8", "u12", "u16"), True),
    "jpegls_near": (
        uid.JPEGLSNearLossless,
        _compressed,
        {"encoding_plugin": "pyjpegls", "jls_error": 2},
        ("u8", "u12", "u16"),
        False,
    ),
    "j2k_lossless": (uid.JPEG2000Lossless, _compressed, {"encoding_plugin": "pylibjpeg"}, ("u8", "u12", "u16"), True),
    "j2k_lossy": (
        uid.JPEG2000,
        _compressed,
        {"encoding_plugin": "pylibjpeg", "j2k_cr": [4]},
        ("u8", "u12", "u16"),
        False,
    ),
}
PARAMS = [pytest.param(name, depth, id=f"{name}-{depth}") for name, case in CASES.items() for depth in case[3]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """name, depth -> (path, the pixels it was written from or None); written once for the module."""
    pytest.importorskip("jpeg_ls", reason="pyjpegls (the test extra) encodes the JPEG-LS files")
    folder = str(tmp_path_factory.mktemp("dicom_syntaxes"))
    sources = {depth: _uncompressed(folder, depth) for depth in DEPTHS}
    files = {}
    for name, (syntax, writer, options, depths, _) in CASES.items():
        for depth in depths:
            path = writer(sources[depth], os.path.join(folder, f"{depth}_{name}.dcm"), syntax, **options)
            files[name, depth] = (path, None if writer is _pydicom_12bit_extended else test_image(depth))
    return files


def _gdcm(path: str) -> np.ndarray:
    """The independent decode: SimpleITK (GDCM) reading the same file, as stored values (rows, cols)."""
    import SimpleITK

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(path)).reshape(int(ds.Rows), int(ds.Columns))


@pytest.mark.parametrize("name, depth", PARAMS)
def test_decodes_like_gdcm(corpus, name, depth):
    path, original = corpus[name, depth]
    syntax, lossless = CASES[name][0], CASES[name][4]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    decoded = decode_dicom_pixels(ds, path).astype(np.int64)
    reference = _gdcm(path).astype(np.int64)
    assert decoded.shape == reference.shape
    top = 2 ** int(ds.BitsStored) - 1
    if lossless:
        np.testing.assert_array_equal(decoded, reference)
        np.testing.assert_array_equal(decoded, original)
        return
    # lossy: two decoders of one stream agree to rounding (libjpeg's and GDCM's IDCTs differ by 1)
    assert np.abs(decoded - reference).max() <= max(2, top // 1000), name
    if original is not None:  # and the decode is close to the image that was compressed
        error = np.abs(decoded - original)
        assert error.max() > 0, "not lossy: the case tests nothing"
        if syntax == uid.JPEGLSNearLossless:
            assert error.max() <= CASES[name][2]["jls_error"]
        else:
            assert error.mean() <= 0.02 * top and error.max() <= 0.2 * top, (error.mean(), error.max())


@pytest.mark.parametrize("name, depth", PARAMS)
def test_dicom_reader_loads(corpus, name, depth):
    path, _ = corpus[name, depth]
    ds = pydicom.dcmread(path)
    reader = DicomReader()
    array, meta = reader.get_data(reader.read(path))
    assert array.shape == (ds.Columns, ds.Rows)  # MONAI order: x = column, y = row
    assert np.isfinite(array).all() and float(array.max()) > float(array.min())
    assert meta["filename_or_obj"] == path


def test_every_decodable_syntax_has_its_plugin():
    """The packages in DICOM_DECODERS are installed: pydicom has a working plugin for each syntax."""
    from pydicom.pixels import get_decoder

    for syntax in DICOM_DECODERS:
        decoder = get_decoder(uid.UID(syntax))
        assert decoder.is_available, (syntax, decoder.missing_dependencies)
        if DICOM_DECODERS[syntax][1] != "pydicom":
            assert "pylibjpeg" in decoder.available_plugins, (syntax, decoder.available_plugins)


def test_unknown_syntax_is_refused_by_name(tmp_path, corpus):
    """A private transfer syntax (here: a JPEG Lossless stream under a made-up UID) has no decoder."""
    source, _ = corpus["jpeg_lossless_sv1", "u8"]
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = PRIVATE_SYNTAX
    path = str(tmp_path / "private.dcm")
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    reader = DicomReader()
    with pytest.raises(InputError) as caught:
        reader.get_data(reader.read(path))
    message = str(caught.value)
    assert path in message and PRIVATE_SYNTAX in message and "private transfer syntax" in message
    assert "no decoder" in message and "uncompressed" in message


def test_missing_decoder_names_the_package(corpus, monkeypatch):
    """JPEG Lossless without its plugin (as before this package depended on pylibjpeg-libjpeg)."""
    from pydicom.pixels import get_decoder

    monkeypatch.setattr(get_decoder(uid.JPEGLosslessSV1), "_available", {})
    path, _ = corpus["jpeg_lossless_sv1", "u16"]
    reader = DicomReader()
    with pytest.raises(InputError) as caught:
        reader.get_data(reader.read(path))
    message = str(caught.value)
    assert path in message and uid.JPEGLosslessSV1 in message
    assert "JPEG Lossless (Process 14, Selection Value 1)" in message
    assert "pylibjpeg-libjpeg" in message and "not installed" in message


def test_decoder_failure_names_the_syntax(tmp_path, corpus):
    """Damaged compressed data: the decoder's own reason, with the file, syntax and package."""
    source, _ = corpus["j2k_lossless", "u8"]
    ds = pydicom.dcmread(source)
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    path = str(tmp_path / "truncated.dcm")
    ds.save_as(path, enforce_file_format=True)
    reader = DicomReader()
    with pytest.raises(InputError) as caught:
        reader.get_data(reader.read(path))
    message = str(caught.value)
    assert path in message and uid.JPEG2000Lossless in message and "JPEG 2000 Lossless" in message
    assert "pylibjpeg-openjpeg" in message


def test_sequential_scan_header_fix(corpus):
    """Only a sequential JPEG whose scans say 0..0 is changed (pydicom's 12-bit Extended file is one)."""
    from pydicom.encaps import generate_frames

    from monai_softcam.data.dicom import _sequential_scans_fixed

    def stream(path):
        return next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))

    assert _sequential_scans_fixed(stream(corpus["jpeg_baseline", "u8"][0])) is None  # Pillow's: 0..63 already
    assert _sequential_scans_fixed(stream(corpus["jpeg_lossless_sv1", "u8"][0])) is None  # lossless: not DCT
    original = stream(corpus["jpeg_extended_12bit", "u12"][0])
    fixed = _sequential_scans_fixed(original)
    assert fixed is not None and len(fixed) == len(original)
    assert sum(a != b for a, b in zip(original, fixed)) == 1  # Se: 0 -> 63, nothing else
