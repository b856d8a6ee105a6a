"""Nothing silently wrong: bad images, non-finite values, bad settings and untrusted files end in a correct
result or an error naming the file or key, as the user meets them (exit code, last line, files on disk).
One test per class of case."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import EVALUATE, EXPLAIN, INFERENCE, TINY, TRAIN, bundle, env, last_line, run_bundle
from conftest import REPO_ROOT
from data_helpers import write_csv, write_png
from PIL import Image

from monai_softcam.utils import find_user_error

TUNE = os.path.join(REPO_ROOT, "bundle", "configs", "tune.yaml")


def _png_of_size(path, width, height):
    """A complete, valid 8-bit grey PNG of ``width`` x ``height`` black pixels: a few hundred KB on disk
    for hundreds of megapixels in memory (a decompression bomb of the plainest kind)."""
    squeeze = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    data = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return str(path)


def _nifti(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), str(path))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Files as real exports get them wrong, with the reason each must be refused (None: read as it is)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    nan = rng.random((32, 32))
    nan[3, 5] = np.nan
    inf = rng.random((32, 32))
    inf[7, 1] = np.inf
    rgba = (rng.random((32, 32, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(folder / "opaque.png")
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / "whole.jpg", quality=90)
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    png = write_png(str(folder / "whole.png"), (rng.random((40, 40)) * 255).astype(np.uint8))
    (folder / "truncated.png").write_bytes(open(png, "rb").read()[:-30])
    (folder / "folder.png").mkdir()  # a folder named like an image
    files = {
        "flat.nii.gz": (_nifti(folder / "flat.nii.gz", rng.random((32, 32, 1))), None),  # 2D saved as 32 x 32 x 1
        "nan.nii.gz": (
            _nifti(folder / "nan.nii.gz", nan),
            "1 value(s) are NaN or infinite (the first at pixel (3, 5))",
        ),
        "inf.nii.gz": (
            _nifti(folder / "inf.nii.gz", inf),
            "1 value(s) are NaN or infinite (the first at pixel (7, 1))",
        ),
        "four_d.nii.gz": (
            _nifti(folder / "four_d.nii.gz", rng.random((32, 32, 1, 3))),
            "a 4D image (32 x 32 x 1 x 3) for a 2D task",
        ),
        "transparent.png": (str(folder / "transparent.png"), "4 channels (RGBA) with transparent pixels"),
        "opaque.png": (str(folder / "opaque.png"), None),
        "truncated.jpg": (str(folder / "truncated.jpg"), "truncated JPEG file (no end-of-image marker)"),
        "truncated.png": (str(folder / "truncated.png"), "truncated PNG file (no end-of-image marker)"),
        "huge.png": (
            _png_of_size(folder / "huge.png", 20000, 20000),
            "image of 20000 x 20000 = 400,000,000 pixels is larger than the limit of 200,000,000 (max_image_pixels",
        ),
        "dot.png": (
            write_png(str(folder / "dot.png"), np.zeros((4, 4), np.uint8)),
            "image of 4 x 4 pixels is smaller than the network's smallest input 8 x 8",
        ),
        "folder.png": (str(folder / "folder.png"), "no DICOM series in this folder"),
    }
    return folder, files


def _tiny_task():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([TRAIN, TINY])
    return parser.get_parsed_content("task")  # 32 px, ResNet-18 of output stride 8


def test_every_image_is_checked_alike_by_header_reader_and_check_data(corpus, tmp_path):
    """The header check (training's split lists, inference's inputs), the reader of every run and check-data
    accept and refuse the same files, each refusal naming the file and saying why; check-data prints no
    decoder noise and its exit status is 1."""
    from monai_softcam.data import CSVDataSpec, SplitLists, list_images
    from monai_softcam.data.readers import probe_image

    folder, files = corpus
    task = _tiny_task()
    rules = task.input_rules()
    read = task.load_input()
    header_level = ("4D", "truncated", "larger than the limit", "smaller than", "no DICOM series")
    for name, (path, reason) in files.items():
        problem = probe_image(path, rules)
        if reason is not None and any(k in reason for k in header_level):
            assert reason in problem, name  # refused before decoding
        else:
            assert problem == "", (name, problem)
        if reason is None:
            image = read({"image": path})["image"]
            assert tuple(image.shape) == ((3, 32, 32) if name == "opaque.png" else (1, 32, 32)), name
            continue
        with pytest.raises(Exception) as raised:
            read({"image": path})
        error = find_user_error(raised.value)
        assert str(error).startswith(f"cannot read image file {path}: "), name
        assert reason in str(error), name

    # training's split lists and inference's inputs: the header-level refusals, every one named
    rows = [[os.path.basename(p), i % 2, ""] for i, (p, _) in enumerate(files.values())]
    write_csv(str(folder / "train.csv"), ["filename", "bin_target", "mask"], rows)
    spec = CSVDataSpec(image_column="filename", label_column="bin_target", val_csv=None, test_csv=None)
    with pytest.raises(ValueError) as raised:
        SplitLists(spec, str(folder), 2, check_images=True, rules=rules).datalist("train")
    for name, (path, reason) in files.items():
        if reason is not None and any(k in reason for k in header_level):
            assert f"{reason}" in str(raised.value) and path in str(raised.value), name
    with pytest.raises(ValueError, match="truncated JPEG file"):
        list_images(files["truncated.jpg"][0], check_images=True, spatial_dims=2, rules=rules)

    # check-data, through its command line: every refused file named with its reason, no HDF5/GDCM noise
    proc = subprocess.run(
        [sys.executable, "-m", "monai_softcam", "check-data", "--config", TRAIN, "--config", TINY]
        + ["--dataset_dir", str(folder), "--splits", "train", "--report", str(tmp_path / "report.csv")],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    refused = [n for n, (_, reason) in files.items() if reason is not None]
    assert last_line(proc.stdout) == f"{len(refused)} problem(s) found; all listed in {tmp_path / 'report.csv'}"
    report = (tmp_path / "report.csv").read_text()
    for name in refused:
        path, reason = files[name]
        assert reason in report and path in report, name
    for name in ("flat.nii.gz", "opaque.png"):
        assert files[name][0] not in report
    assert "HDF5" not in proc.stderr and "GDCM" not in proc.stderr and "Premature end" not in proc.stderr


def test_a_split_of_one_class_is_warned_about(tmp_path):
    from monai_softcam.data.check import check_data

    rng = np.random.default_rng(1)
    rows = []
    for i in range(3):
        write_png(str(tmp_path / f"{i}.png"), (rng.random((32, 32)) * 255).astype(np.uint8))
        rows.append([f"{i}.png", 1, ""])
    write_csv(str(tmp_path / "train.csv"), ["filename", "bin_target", "mask"], rows)
    lines = []
    assert check_data([TRAIN, TINY], str(tmp_path), splits=["train"], progress=False, out=lines.append) == 0
    assert "  warning: every image of the train split is of one class (lesion): the model cannot learn" in "\n".join(
        lines
    )


def test_non_finite_values_never_train_save_or_predict(trained_bundle, corpus, tmp_path):
    """A NaN input stops training before any step with it, naming the batch's files; non-finite gradients do
    too; a non-finite model is never saved over a good one; inference refuses a NaN image and a NaN model's
    output, naming the input, and writes no predictions."""
    from monai.data import MetaTensor
    from monai.engines import SupervisedTrainer

    from monai_softcam.checkpoint import CheckpointError, save_checkpoint
    from monai_softcam.handlers import StopOnNonFinite
    from monai_softcam.utils import InputError

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    before = {k: v.clone() for k, v in network.state_dict().items()}
    image = torch.rand(2, 1, 8, 8)
    image[1, 0, 2, 2] = float("nan")
    batch = {"image": MetaTensor(image, meta={"filename_or_obj": ["a.png", "b.nii.gz"]}), "label": torch.tensor([0, 1])}

    def trainer(loss_function):
        return SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=1,
            epoch_length=1,
            train_data_loader=[batch],
            network=network,
            optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
            loss_function=loss_function,
            train_handlers=[StopOnNonFinite()],
        )

    with pytest.raises(Exception) as raised:
        trainer(torch.nn.CrossEntropyLoss()).run()
    message = str(find_user_error(raised.value))
    assert isinstance(find_user_error(raised.value), InputError)
    assert message.startswith(
        "training stopped at epoch 1, iteration 1: the loss is nan for the batch of a.png, b.nii.gz"
    )
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())  # no step was taken

    batch["image"] = MetaTensor(torch.rand(2, 1, 8, 8), meta={"filename_or_obj": ["a.png", "b.png"]})
    finite_loss_nan_gradient = lambda pred, label: torch.sqrt(pred.sum() * 0.0)  # noqa: E731 (d sqrt(0) = inf)
    with pytest.raises(Exception) as raised:
        trainer(finite_loss_nan_gradient).run()
    assert "the gradients hold NaN or infinite values for the batch of a.png, b.png" in str(
        find_user_error(raised.value)
    )
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())

    good = tmp_path / "model.pt"
    save_checkpoint(network.state_dict(), good)
    kept = good.read_bytes()
    broken = {k: v.clone() for k, v in network.state_dict().items()}
    broken["0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"not saving .*model.pt: 0.weight \(1 of 18 values\) hold NaN"):
        save_checkpoint(broken, good)
    assert good.read_bytes() == kept

    root, _ = trained_bundle
    nan_image = corpus[1]["nan.nii.gz"][0]
    out = tmp_path / "nan_image"
    proc = bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        str(root),
        "--input_path",
        nan_image,
        "--output_dir",
        str(out),
        check=False,
    )
    assert proc.returncode != 0
    assert last_line(proc.stderr) == (
        f"error: cannot read image file {nan_image}: 1 value(s) are NaN or infinite (the first at pixel (3, 5)); "
        "a model trained or run on them would give NaN"
    )
    assert not (out / "predictions.csv").exists()

    state = torch.load(os.path.join(root, "models", "model.pt"), weights_only=True)
    state = {k: (v.float() * float("nan") if k.endswith("head.evidence.weight") else v) for k, v in state.items()}
    torch.save(state, tmp_path / "nan_model.pt")
    good_image = str(root / "data" / "demo" / "images" / "demo_00000.png")
    out = tmp_path / "nan_model"
    proc = bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        str(root),
        "--checkpoint",
        str(tmp_path / "nan_model.pt"),
        "--input_path",
        good_image,
        "--output_dir",
        str(out),
        check=False,
    )
    assert proc.returncode != 0
    assert last_line(proc.stderr).startswith(f"error: {good_image}: the model's logits are not finite ([nan, nan]")
    assert not (out / "predictions.csv").exists()


@pytest.mark.parametrize(
    "run_id, configs, overrides, expected",
    [
        (
            "training",
            [TRAIN, TINY],
            ["--batch_size", "-1"],
            "--batch_size: -1 is not allowed; allowed: an integer >= 1",
        ),
        ("training", [TRAIN, TINY], ["--epochs", "0"], "--epochs: 0 is not allowed; allowed: a positive integer"),
        (
            "training",
            [TRAIN, TINY],
            ["--learning_rate", "nan"],
            "--learning_rate: 'nan' is not allowed; allowed: a finite number > 0 (e.g. 1.0e-3)",
        ),
        (
            "training",
            [TRAIN, TINY],
            ["--learning_rate", "1e999"],
            "--learning_rate: inf is not allowed; allowed: a finite number > 0 (e.g. 1.0e-3)",
        ),
        ("training", [TRAIN, TINY], ["--device", "cuda:99"], "--device: 'cuda:99' is not allowed (this machine has"),
        (
            "evaluate",
            [TRAIN, EVALUATE],
            ["--eval_split", "tset"],
            "--eval_split: 'tset' is not allowed; allowed: one of",
        ),
        (
            "explain_eval",
            [TRAIN, EVALUATE, EXPLAIN],
            ["--explain#methods", "['softcam','gradcamm']"],
            "--explain#methods#1: 'gradcamm' is not allowed; allowed: a list of explanation methods from softcam,",
        ),
        (
            "tune",
            [TRAIN, TUNE],
            ["--tune_settings#search_space", "{'penalty#lambda1': [0.0, -1.0]}"],
            "--tune_settings#search_space#penalty#lambda1: -1.0 is not allowed; allowed: a finite number >= 0",
        ),
        (
            "inference",
            [INFERENCE],
            ["--sw_overlap", "1.5"],
            "--sw_overlap: 1.5 is not allowed; allowed: a number in [0, 1)",
        ),
    ],
)
def test_every_setting_is_checked_before_any_work(tmp_path, run_id, configs, overrides, expected):
    with pytest.raises(Exception) as raised:
        run_bundle(run_id, configs, "--bundle_root", str(tmp_path), *overrides)
    assert str(find_user_error(raised.value)).startswith(expected)
    assert os.listdir(tmp_path) == []  # no demo data, model or output was made


def test_a_bad_setting_through_the_command_line_is_the_last_line_and_nothing_is_made(tmp_path):
    proc = bundle("training", [TRAIN, TINY], "--bundle_root", str(tmp_path), "--epochs", "abc", check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr) == "error: --epochs: 'abc' is not allowed; allowed: a positive integer"
    assert os.listdir(tmp_path) == []


def test_an_image_size_below_the_networks_smallest_input_is_refused():
    from monai_softcam.task import Task, TaskError

    with pytest.raises(TaskError, match=r"image_size \[16, 16\] is smaller than the smallest input of backbone "):
        Task(["a", "b"], 2, 1, [16, 16], backbone="resnet50").input_rules()


def _export_with(path, extra):
    """A zip shaped like a TorchScript export holding ``extra`` files (name -> bytes, or (bytes, mode))."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", b"")
        for name, content in extra.items():
            info = zipfile.ZipInfo(f"model/extra/{name}")
            if isinstance(content, tuple):
                content, mode = content
                info.external_attr = mode << 16
            archive.writestr(info, content)
    return str(path)


def test_a_crafted_torchscript_export_writes_nothing_outside_its_folder(tmp_path):
    sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))
    try:
        from SoftCAMLib.bundle import BundleError, unpack_torchscript
    finally:
        sys.path.pop(0)
    needed = {"metadata.json": b"{}", "inference.json": b"{}", "task.json": b"{}"}
    for member in ("../../escaped.json", "/tmp/escaped_abs.json", "sub/escaped.json", ".."):
        unpacked = tmp_path / "unpacked"
        with pytest.raises(BundleError, match="refusing the extra file .*not a plain file name"):
            unpack_torchscript(_export_with(tmp_path / "evil.ts", {**needed, member: b"{}"}), str(unpacked))
        assert not unpacked.exists()  # checked before anything is written
    assert not (tmp_path.parent / "escaped.json").exists() and not os.path.exists("/tmp/escaped_abs.json")
    link = {**needed, "link.json": (b"/etc/passwd", 0o120777)}
    with pytest.raises(BundleError, match="refusing the extra file 'model/extra/link.json' .*: a link"):
        unpack_torchscript(_export_with(tmp_path / "link.ts", link), str(tmp_path / "l"))

    # a folder of its own is removed when the process exits
    good = _export_with(tmp_path / "good.ts", needed)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from SoftCAMLib.bundle import unpack_torchscript; print(unpack_torchscript(sys.argv[2])[0])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"), good],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = proc.stdout.strip()
    assert folder and not os.path.exists(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("big_endian", [False, True])
def test_palette_colour_dicom_decodes_as_gdcm_does(tmp_path, big_endian):
    """PALETTE COLOR through its 16-bit lookup tables, in either byte order, against GDCM (through SimpleITK):
    the same colours up to GDCM's 8-bit output."""
    import SimpleITK
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from monai_softcam.data import DicomReader

    rng = np.random.default_rng(0)
    index = rng.integers(0, 256, (16, 20)).astype(np.uint8)
    tables = {c: rng.integers(0, 65536, 256).astype(np.uint16) for c in ("Red", "Green", "Blue")}
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "OT", "PALETTE COLOR"
    ds.Rows, ds.Columns = index.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 8, 8, 7, 0
    for colour, table in tables.items():
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        # OW data as the file's byte order stores it
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype(">u2" if big_endian else "<u2").tobytes())
    ds.PixelData = index.tobytes()
    path = str(tmp_path / "palette.dcm")
    ds.save_as(path, enforce_file_format=True)

    gdcm = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(path)).astype(np.float64).reshape(16, 20, 3)
    gdcm /= 255.0 if gdcm.max() <= 255 else 65535.0
    from monai.transforms import LoadImage

    ours = LoadImage(reader=DicomReader(spatial_dims=2), image_only=True, ensure_channel_first=True)(path)
    ours = np.transpose(np.asarray(ours), (2, 1, 0))  # channels, x, y -> rows, columns, RGB
    expected = np.stack([tables[c][index] for c in ("Red", "Green", "Blue")], -1) / 65535.0
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    np.testing.assert_allclose(ours, gdcm, atol=1.0 / 255)  # GDCM's 8-bit RGB
