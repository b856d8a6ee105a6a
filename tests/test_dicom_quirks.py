"""DICOM header quirks and multi-frame files: each loads with the right values and geometry (checked
against SimpleITK/GDCM where it reads the file) with one warning naming the file, or raises an
InputError naming the file and what is wrong."""

import logging
import os
import re

import numpy as np
import pytest

from monai_softcam.data import DicomReader, default_readers, list_images
from monai_softcam.data.dicom import is_dicom_file
from monai_softcam.data.formats import _LPS_TO_RAS
from monai_softcam.data.readers import probe_image
from monai_softcam.utils import InputError

PIXELS = (np.arange(6 * 8).reshape(6, 8) * 50).astype(np.uint16)  # rows, cols
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    import monai_softcam.data.dicom as dicom

    monkeypatch.setattr(dicom, "_WARNED", set())  # one warning per file and process: forget between tests


def _dataset(pixels=PIXELS, modality="CR", sop_class=CT_IMAGE, **attrs):
    """A dataset of ``pixels`` ((frames,) rows, cols (, 3)) with the image pixel module and ``attrs``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    colour = pixels.shape[-1] == 3 and pixels.ndim >= 3
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = modality, "quirk"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _save(ds, path, preamble=True, implicit=False):
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # the dataset alone: no preamble, no DICM, no file meta
        del ds.file_meta
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return str(path)


def _read(path, **kwargs):
    reader = DicomReader(**kwargs)
    return reader.get_data(reader.read(path))


def _sitk_affine_ras(path):
    """SimpleITK's (GDCM's) geometry of the file, as a RAS affine (SimpleITK gives LPS)."""
    import SimpleITK

    image = SimpleITK.ReadImage(str(path))
    n = image.GetDimension()
    lps = np.eye(4)
    lps[:n, :n] = np.asarray(image.GetDirection()).reshape(n, n) * np.asarray(image.GetSpacing())[None, :]
    lps[:n, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ lps, image


def _same_picture(array, stored):
    """The reader's values are the stored ones up to the intensity mapping (linear, 0 kept at 0 here)."""
    assert array.shape == stored.shape
    np.testing.assert_allclose(array / array.max(), stored / stored.max(), rtol=1e-5, atol=1e-6)


def _warnings(caplog, path):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


# ---------------------------------------------------------------------------------------- header


@pytest.mark.parametrize("implicit", [True, False])
def test_no_preamble_is_recognised_and_read_with_one_warning(tmp_path, caplog, implicit):
    path = _save(_dataset(PixelSpacing=[0.5, 0.5]), tmp_path / "IM0001", preamble=False, implicit=implicit)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x08\x00" and b"DICM" not in f.read(200)
    assert is_dicom_file(path)
    assert not is_dicom_file(str(tmp_path / "nothing"))
    (tmp_path / "notes").write_bytes(b"hello world, not a DICOM file at all " * 5)
    assert not is_dicom_file(str(tmp_path / "notes"))
    assert [item["image"] for item in list_images(str(tmp_path))] == [path]
    assert probe_image(path) == ""
    with caplog.at_level(logging.WARNING, logger="monai_softcam"):
        array, meta = _read(path)
        _read(path)
    _same_picture(array, PIXELS.T)
    np.testing.assert_allclose(np.diag(meta["affine"])[:2], [-0.5, -0.5])
    messages = _warnings(caplog, path)
    assert len(messages) == 1 and "without the 128-byte preamble" in messages[0]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom, writing the NaN
@pytest.mark.parametrize("bad", [[0, 0], [-0.5, 0.5], ["nan", 0.5]])
def test_unusable_pixel_spacing_falls_back_with_one_warning(tmp_path, caplog, bad):
    ds = _dataset(PixelSpacing=bad)
    ds.ImagerPixelSpacing = [0.2, 0.3]
    imager = _save(ds, tmp_path / "imager.dcm")
    one_mm = _save(_dataset(PixelSpacing=bad), tmp_path / "cr.dcm")
    with caplog.at_level(logging.WARNING, logger="monai_softcam"):
        _, meta = _read(imager)
        _, meta_1mm = _read(one_mm)
        _read(one_mm)
    np.testing.assert_allclose(np.diag(meta["affine"])[:2], [-0.3, -0.2])  # x: column spacing
    np.testing.assert_allclose(np.diag(meta_1mm["affine"]), [-1, -1, 1, 1])
    (message,) = _warnings(caplog, imager)
    assert "unusable PixelSpacing" in message and "ImagerPixelSpacing 0.2\\0.3 mm" in message
    (message,) = _warnings(caplog, one_mm)
    assert "unusable PixelSpacing" in message and "1 mm" in message


def test_zero_spacing_cr_saves_its_evidence_maps(tmp_path):
    """Where inference crashed: nibabel could not decompose the affine of a `0\\0` spacing."""
    import nibabel as nib
    import torch
    from monai.data import MetaTensor

    from monai_softcam.transforms import SaveEvidenceMapsd

    path = _save(_dataset(PixelSpacing=[0, 0]), tmp_path / "zero.dcm")
    array, meta = _read(path)
    maps = MetaTensor(torch.randn(2, *array.shape), affine=torch.as_tensor(meta["affine"]))
    maps.meta["filename_or_obj"] = path
    SaveEvidenceMapsd("maps", str(tmp_path / "out"), ["normal", "lesion"], image_key="none")({"maps": maps})
    saved = nib.load(str(tmp_path / "out" / "zero" / "zero_evidence_lesion.nii.gz"))
    np.testing.assert_allclose(saved.affine, meta["affine"])
    np.testing.assert_allclose(saved.get_fdata(), maps[1].numpy(), rtol=1e-6)


def test_missing_spacing_and_orientation_warn_only_for_cross_sectional_modalities(tmp_path, caplog):
    cr = _save(_dataset(), tmp_path / "cr.dcm")  # a projection image without spacing or plane: as viewers show it
    ct = _save(_dataset(modality="CT"), tmp_path / "ct.dcm")
    imager = _save(_dataset(ImagerPixelSpacing=[0.15, 0.15]), tmp_path / "dx.dcm")  # DX/CR: the usual spacing
    with caplog.at_level(logging.WARNING, logger="monai_softcam"):
        _, meta_cr = _read(cr)
        _, meta_ct = _read(ct)
        _, meta_dx = _read(imager)
    np.testing.assert_allclose(meta_cr["affine"], np.diag([-1.0, -1, 1, 1]))  # identity orientation, origin, 1 mm
    np.testing.assert_allclose(meta_ct["affine"], np.diag([-1.0, -1, 1, 1]))
    np.testing.assert_allclose(np.diag(meta_dx["affine"])[:2], [-0.15, -0.15])
    assert _warnings(caplog, cr) == [] and _warnings(caplog, imager) == []
    messages = _warnings(caplog, ct)
    assert len(messages) == 2
    assert any("no PixelSpacing" in m for m in messages)
    assert any("ImageOrientationPatient or ImagePositionPatient" in m and "identity" in m for m in messages)


def test_non_square_oblique_pixels_keep_their_geometry_as_simpleitk(tmp_path, caplog):
    c, s = np.cos(0.3), np.sin(0.3)
    ds = _dataset(
        modality="CT",
        PixelSpacing=[0.5, 0.25],
        ImageOrientationPatient=[c, s, 0, -s, c, 0],
        ImagePositionPatient=[-12.5, 30.0, 7.0],
        SliceThickness=2.0,
    )
    path = _save(ds, tmp_path / "oblique.dcm")
    with caplog.at_level(logging.WARNING, logger="monai_softcam"):
        array, meta = _read(path)
    assert _warnings(caplog, path) == []
    _same_picture(array, PIXELS.T)
    affine = meta["affine"]
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 0]), 0.25)  # x = column: column spacing
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 1]), 0.5)  # y = row: row spacing
    expected, image = _sitk_affine_ras(path)
    assert image.GetSize()[:2] == (8, 6)
    np.testing.assert_allclose(affine[:3, :2], expected[:3, :2], atol=1e-6)
    np.testing.assert_allclose(affine[:3, 3], expected[:3, 3], atol=1e-6)


# ---------------------------------------------------------------------------------------- pixel data


def test_truncated_and_missing_pixel_data_are_named_by_reader_and_probe(tmp_path):
    full = _save(_dataset(PixelSpacing=[0.5, 0.5]), tmp_path / "full.dcm")
    data = open(full, "rb").read()
    (tmp_path / "cut.dcm").write_bytes(data[:-10])  # 96 bytes expected, 86 in the file
    ds = _dataset()
    ds.PixelData = PIXELS.tobytes()[:40]  # an element shorter than Rows x Columns x 2
    short = _save(ds, tmp_path / "short.dcm")
    ds = _dataset()
    del ds.PixelData
    none = _save(ds, tmp_path / "none.dcm")
    big = (np.arange(64 * 64) % 4096).astype(np.uint16).reshape(64, 64)
    big_path = _save(_dataset(big), tmp_path / "big.dcm")
    data = open(big_path, "rb").read()
    (tmp_path / "bigcut.dcm").write_bytes(data[:-1000])  # large pixel data: the probe does not read it
    cases = {
        str(tmp_path / "cut.dcm"): "pixel data truncated: 86 bytes, expected 96",
        short: "pixel data truncated: 40 bytes, expected 96",
        none: r"no pixel data \(7FE0,0010\)",
        str(tmp_path / "bigcut.dcm"): "pixel data truncated: 7192 bytes, expected 8192",
    }
    assert probe_image(full) == probe_image(big_path) == ""
    for path, message in cases.items():
        assert re.fullmatch(message, probe_image(path)), (path, probe_image(path))
        with pytest.raises(InputError, match=f"{os.path.basename(path)}: {message}"):
            _read(path)


# ---------------------------------------------------------------------------------------- multi-frame


def _volume(frames=4):
    return (np.arange(frames * 6 * 8).reshape(frames, 6, 8) * 20).astype(np.uint16)


def test_classic_multi_frame_grey_2d_needs_a_frame_3d_is_a_volume(tmp_path):
    frames = _volume()
    ds = _dataset(
        frames,
        modality="CT",
        PixelSpacing=[0.7, 0.6],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        ImagePositionPatient=[10.0, -20.0, 5.0],
        SliceThickness=2.5,
    )
    path = _save(ds, tmp_path / "classic.dcm")
    with pytest.raises(
        InputError,
        match=r"classic.dcm: multi-frame DICOM \(4 frames\) cannot be used as a 2D image; "
        r"choose one with --dicom_frame <0..3>",
    ):
        _read(path)
    two_d, meta = _read(path, frame=2)
    _same_picture(two_d, frames[2].T)
    assert meta["spatial_shape"].tolist() == [8, 6]
    with pytest.raises(InputError, match="frame 4 asked for, the file has 4 frames"):
        _read(path, frame=4)
    reader = default_readers(2, frame=1)[1]
    _same_picture(reader.get_data(reader.read(path))[0], frames[1].T)
    volume, meta = _read(path, spatial_dims=3)
    assert volume.shape == (8, 6, 4)
    _same_picture(volume, np.transpose(frames, (2, 1, 0)))
    expected = _LPS_TO_RAS @ np.array([[0.6, 0, 0, 10], [0, 0.7, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    np.testing.assert_allclose(meta["affine"], expected)


def _enhanced(frames, step):
    """Enhanced CT: shared orientation and pixel measures, one PlanePositionSequence per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    c, s = np.cos(0.4), np.sin(0.4)
    orientation = [1.0, 0.0, 0.0, 0.0, c, s]  # tilted about x
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array([-30.0, 12.0, 40.0])
    ds = _dataset(frames, modality="CT", sop_class=ENHANCED_CT)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    shared = Dataset()
    plane = Dataset()
    plane.ImageOrientationPatient = orientation
    measures = Dataset()
    measures.PixelSpacing = [0.8, 0.4]
    measures.SliceThickness = abs(step)
    measures.SpacingBetweenSlices = abs(step)
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(len(frames)):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [float(v) for v in origin + k * step * normal]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds, orientation, normal, origin


def test_enhanced_multi_frame_reads_its_per_frame_geometry_as_simpleitk(tmp_path):
    frames = _volume(5)
    ds, orientation, normal, origin = _enhanced(frames, 3.0)
    path = _save(ds, tmp_path / "enhanced.dcm")
    volume, meta = _read(path, spatial_dims=3)
    assert volume.shape == (8, 6, 5)
    _same_picture(volume, np.transpose(frames, (2, 1, 0)))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = np.asarray(orientation[:3]) * 0.4, np.asarray(orientation[3:]) * 0.8
    lps[:3, 2], lps[:3, 3] = normal * 3.0, origin
    np.testing.assert_allclose(meta["affine"], _LPS_TO_RAS @ lps, atol=1e-9)
    expected, image = _sitk_affine_ras(path)  # GDCM reads enhanced CT as a volume
    assert image.GetSize() == (8, 6, 5)
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-5)
    two_d, meta2 = _read(path, frame=3)  # 2D: that frame, at its own position
    _same_picture(two_d, frames[3].T)
    np.testing.assert_allclose(meta2["affine"][:3, 3], (_LPS_TO_RAS[:3, :3] @ (origin + 9.0 * normal)), atol=1e-9)

    reversed_ds, _, normal, origin = _enhanced(frames, -2.0)  # frames stored against the normal
    _, meta = _read(_save(reversed_ds, tmp_path / "reversed.dcm"), spatial_dims=3)
    np.testing.assert_allclose(meta["affine"][:3, 2], _LPS_TO_RAS[:3, :3] @ (-2.0 * normal), atol=1e-9)


def test_colour_cine_is_a_video_in_2d_unless_a_frame_is_chosen(tmp_path):
    cine = np.zeros((3, 6, 8, 3), np.uint8)
    for k in range(3):
        cine[k, ..., k] = 255  # frame k: pure red, green, blue
    path = _save(_dataset(cine, modality="US"), tmp_path / "cine.dcm")
    message = r"cine.dcm: multi-frame colour DICOM \(3 frames\).*a video, not one image.*--dicom_frame <0..2>"
    with pytest.raises(InputError, match=message):
        _read(path)
    rgb, meta = _read(path, frame=1)
    assert rgb.shape == (8, 6, 3) and meta["original_channel_dim"] == -1
    np.testing.assert_allclose(rgb[0, 0], [0, 1, 0])
