"""Intensities from the DICOM header, not the container: the Modality LUT, then CT in Hounsfield
units and everything else in [0, 1] by its window (an option) or by the effective range of its
stored bits; 16-bit PNGs by the same rule. Values are checked against SimpleITK's (GDCM) decode of
the same file."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
import SimpleITK
from data_helpers import write_dicom, write_png

from monai_softcam.data.dicom import DicomReader, dicom_intensities, effective_range
from monai_softcam.transforms import load_input

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")


def _read(path, **kwargs):
    reader = DicomReader(**kwargs)
    array, _ = reader.get_data(reader.read(path))
    return array


def _gdcm(path):
    """SimpleITK's own decode, as (x, y) = (column, row) like the reader."""
    return SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(path))[0].T.astype(np.float64)


def test_signed_image_without_rescale_keeps_its_contrast(tmp_path):
    stored = np.random.default_rng(0).integers(-400, 600, (40, 30)).astype(np.int16)
    path = write_dicom(str(tmp_path / "signed.dcm"), stored, signed=True)  # BitsStored 16: +-32768
    out = _read(path)
    raw = _gdcm(path)
    np.testing.assert_array_equal(raw, stored.T)  # the independent decode agrees on the stored values
    np.testing.assert_allclose(out, (raw + 1024) / 2047, rtol=1e-6)  # 11 bits hold -400..599
    assert out.max() - out.min() > 0.45  # by the stored range it would be 1000 / 65535 = 1.5 %


def test_12_bit_image_in_16_bit_words_keeps_its_contrast_even_when_declared_16_bit(tmp_path):
    stored = np.random.default_rng(1).integers(0, 4000, (40, 30)).astype(np.uint16)
    for bits in (12, 16):  # the right BitsStored, and a file that declares all 16 bits
        path = write_dicom(str(tmp_path / f"b{bits}.dcm"), stored, bits_stored=bits)
        np.testing.assert_allclose(_read(path), _gdcm(path) / 4095, rtol=1e-6)
    eight = np.random.default_rng(2).integers(0, 100, (10, 12)).astype(np.uint8)  # 8-bit data: 0-255, as before
    np.testing.assert_allclose(_read(write_dicom(str(tmp_path / "b8.dcm"), eight)), eight.T / 255, rtol=1e-6)


def test_rescale_gives_hounsfield_units_for_ct_and_the_unit_range_otherwise(tmp_path):
    stored = np.random.default_rng(3).integers(0, 3000, (20, 16)).astype(np.uint16)
    ct = write_dicom(str(tmp_path / "ct.dcm"), stored, bits_stored=12, slope=1.0, intercept=-1024, modality="CT")
    np.testing.assert_allclose(_read(ct), _gdcm(ct), rtol=1e-6)  # SimpleITK applies the rescale too
    cr = write_dicom(str(tmp_path / "cr.dcm"), stored, bits_stored=12, slope=2.0, intercept=100.0)
    out = _read(cr)
    np.testing.assert_allclose(out, (_gdcm(cr) - 100) / (2 * 4095), rtol=1e-5)  # the 12-bit range, rescaled
    inverted = write_dicom(
        str(tmp_path / "m1.dcm"), 4095 - stored, "MONOCHROME1", bits_stored=12, slope=2.0, intercept=100.0
    )
    np.testing.assert_allclose(_read(inverted), out, atol=1e-6)  # MONOCHROME1 still looks like MONOCHROME2


def _windowed_ct(tmp_path):
    """(stored values, path, Hounsfield units as (x, y)) of a 12-bit CT with a window 40/400."""
    stored = np.arange(0, 4000, 10, dtype=np.uint16).reshape(20, 20)
    path = write_dicom(str(tmp_path / "w.dcm"), stored, bits_stored=12, slope=1.0, intercept=-1024, modality="CT")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(path)
    return stored, path, stored.T.astype(np.float64) - 1024


def test_window_and_voi_lut_when_asked(tmp_path):
    stored, path, hu = _windowed_ct(tmp_path)
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2, linear
    np.testing.assert_allclose(_read(path, window=True), expected, atol=1e-6)
    np.testing.assert_allclose(_read(path), hu, rtol=1e-6)  # without the option: Hounsfield units
    # a VOI LUT table (a CR without rescale): 4096 entries of 8 bits, an inverted ramp
    path = write_dicom(str(tmp_path / "lut.dcm"), stored, bits_stored=12)
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    table = np.linspace(255, 0, 4096).round()
    item.add_new(0x00283006, "US", [int(v) for v in table])  # LUTData as US (its VR may be US or OW)
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.save_as(path)
    np.testing.assert_allclose(_read(path, window=True), table[stored.T] / 255, atol=1e-6)
    np.testing.assert_allclose(_read(path), stored.T / 4095, rtol=1e-6)  # without the option: the 12-bit range


def test_palette_colour_becomes_rgb():
    path = os.path.join(PYDICOM_FILES, "examples_palette.dcm")
    ds = pydicom.dcmread(path)
    out = _read(path)
    assert out.shape == (ds.Columns, ds.Rows, 3) and 0 <= out.min() and out.max() <= 1
    rgb = pydicom.pixels.apply_color_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(
        out, np.transpose(rgb, (1, 0, 2)) / (255.0 if rgb.dtype == np.uint8 else 65535.0), atol=1e-6
    )
    assert dicom_intensities(ds, ds.pixel_array).shape == rgb.shape


def test_16_bit_png_with_12_bit_data_keeps_its_contrast(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 4096, (30, 40)).astype(np.uint16)
    out = load_input([40, 30])({"image": write_png(str(tmp_path / "x12.png"), pixels)})["image"]
    np.testing.assert_allclose(out.numpy()[0], pixels.T / 4095, atol=1e-6)


@pytest.mark.parametrize(
    "values,bits,signed,expected",
    [
        ([0, 255], 8, False, (0, 255)),
        ([0, 10], 8, False, (0, 255)),  # 8-bit data: the full range
        ([0, 4095], 16, False, (0, 4095)),
        ([0, 4096], 16, False, (0, 8191)),
        ([3, 200], 16, False, (0, 255)),
        ([-400, 599], 16, True, (-1024, 1023)),
        ([0, 3000], 16, True, (0, 4095)),
        ([-32768, 0], 16, True, (-32768, 32767)),
    ],
)
def test_effective_range(values, bits, signed, expected):
    assert effective_range(np.asarray(values), bits, signed) == expected


def test_the_window_option_is_a_task_key_and_the_frame_an_input_option(tmp_path):
    """``dicom_window`` travels with the trained task (training and inference map alike; task files
    written before it existed read as false); ``dicom_frame`` reaches the reader; check-data reads
    both from the configs as training does."""
    import json

    from monai_softcam.data.check import load_check_settings
    from monai_softcam.task import Task

    stored, path, hu = _windowed_ct(tmp_path)
    stride8 = {"conv1_t_stride": 1, "no_max_pool": True}  # the 20-px image passes the network's smallest input
    plain = Task(["a", "b"], 2, 1, [20, 20], backbone_kwargs=stride8)
    windowed = Task(["a", "b"], 2, 1, [20, 20], dicom_window=True, backbone_kwargs=stride8)
    np.testing.assert_allclose(plain.load_input()({"image": path})["image"][0], hu, rtol=1e-5)
    np.testing.assert_allclose(
        windowed.load_input()({"image": path})["image"][0], np.clip((hu - 39.5) / 399 + 0.5, 0, 1), atol=1e-5
    )
    saved = windowed.save(str(tmp_path / "task.json"))
    assert Task.read(str(tmp_path / "task.json")) == saved
    old = {k: v for k, v in saved.to_dict().items() if k != "dicom_window"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Task.read(str(tmp_path / "old.json")).dicom_window is False
    assert Task(["a", "b"], 2, 1, [20, 20], dicom_window="yes").dicom_window is True  # read as every yes/no key
    with pytest.raises(ValueError, match="dicom_window must be true or false"):
        Task(["a", "b"], 2, 1, [20, 20], dicom_window="maybe")

    multi = write_dicom(str(tmp_path / "multi.dcm"), stored, bits_stored=12)
    ds = pydicom.dcmread(multi)
    ds.NumberOfFrames, ds.PixelData = 2, np.stack([stored, stored[::-1]]).tobytes()
    ds.save_as(multi)
    picked = plain.load_input(frame=1)({"image": multi})["image"][0]
    np.testing.assert_allclose(picked, stored[::-1].T / 4095, atol=1e-6)

    (tmp_path / "data").mkdir()
    preset = tmp_path / "preset.yaml"
    preset.write_text("data: {_target_: monai_softcam.data.CSVDataSpec}\ndicom_frame: 1\ndicom_window: true\n")
    *_, options = load_check_settings([str(preset)], str(tmp_path / "data"))
    assert options == {"frame": 1, "window": True}
