"""Unit tests of the pieces the bundle is made of: schedule, data lists, transforms, handlers, CLI checks."""

import csv
import os
import re

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from data_helpers import write_dicom, write_dicom_series
from ignite.engine import Engine

from monai_softcam.bundle import bundle_root, check_overrides, parse_command_line, prepare_dataset
from monai_softcam.checkpoint import CheckpointError, load_weights
from monai_softcam.data import DataListError, image_stem, list_images, read_csv_datalist
from monai_softcam.handlers import BestModelSaver, TrainingCheckpoint
from monai_softcam.networks import SoftCAM
from monai_softcam.optim import ClippedCosineLR
from monai_softcam.transforms import AdaptChannelsd, preprocessing
from monai_softcam.utils import ConfigError, as_flag, atomic_open
from monai_softcam.visualize import evidence_gallery, overlay


def test_clipped_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = ClippedCosineLR(opt, t_max=4, eta_min=1e-4)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [1e-4 + 0.9e-3 * (1 + np.cos(np.pi * min(t, 4) / 4)) / 2 for t in range(7)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    assert lrs[4:] == [1e-4] * 3  # held at the floor after t_max
    with pytest.raises(ValueError, match="t_max must be >= 1"):
        ClippedCosineLR(opt, t_max=0)


def _csv(path, rows, header=("filename", "label", "mask")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_read_csv_datalist_shortcut(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    path = _csv(tmp_path / "one.csv", [["a.png", "1", ""]])
    assert read_csv_datalist(path, str(tmp_path), num_classes=2) == [
        {"image": str(tmp_path / "a.png"), "row": 2, "label": 1}
    ]
    with pytest.raises(DataListError, match=r"one.csv row 2 column 'label': label 3 is not one of the classes"):
        read_csv_datalist(_csv(tmp_path / "one.csv", [["a.png", "3", ""]]), str(tmp_path), num_classes=2)


def test_list_images_folder_csv_file(tmp_path):
    for name in ("b.png", "a.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(i["image"]) for i in list_images(str(tmp_path))] == ["a.nii.gz", "b.png"]
    assert list_images(str(tmp_path / "b.png")) == [{"image": str(tmp_path / "b.png")}]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataListError, match="no image files"):
        list_images(str(tmp_path / "empty"))
    with pytest.raises(DataListError, match="inference input not found"):
        list_images(str(tmp_path / "missing"))


def test_list_images_takes_every_reader_format_and_dicom_files_without_extension(tmp_path):
    import SimpleITK

    from monai_softcam.transforms import load_input

    grey = SimpleITK.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    SimpleITK.WriteImage(grey, str(tmp_path / "a.bmp"))
    SimpleITK.WriteImage(SimpleITK.Cast(grey, SimpleITK.sitkFloat32), str(tmp_path / "b.nhdr"))  # header + b.raw
    write_dicom(str(tmp_path / "1.2.826.0.1.7"), np.zeros((3, 4), np.uint16))  # a PACS export: no extension
    (tmp_path / "c").write_bytes(b"\0" * 200)  # no image name, no DICOM preamble
    assert sorted(os.listdir(tmp_path)) == ["1.2.826.0.1.7", "a.bmp", "b.nhdr", "b.raw", "c"]
    items = list_images(str(tmp_path))
    assert [os.path.basename(i["image"]) for i in items] == ["1.2.826.0.1.7", "a.bmp", "b.nhdr"]
    for item in items:  # every listed file has a reader
        assert load_input([4, 4])(item)["image"].shape[1:] == (4, 4)

    volume = np.random.default_rng(0).integers(0, 1000, (3, 4, 5))
    for k, path in enumerate(write_dicom_series(str(tmp_path / "ct"), volume)):
        os.rename(path, str(tmp_path / "ct" / f"1.2.826.0.1.{k}"))
    assert list_images(str(tmp_path / "ct")) == [{"image": str(tmp_path / "ct")}]  # one series: one volume
    # ... for a 3D task; a 2D task takes each file as an image (a CR study: PA and lateral, one series)
    slices = [{"image": str(tmp_path / "ct" / f"1.2.826.0.1.{k}")} for k in range(3)]
    assert list_images(str(tmp_path / "ct"), spatial_dims=2) == slices


def test_list_images_names_the_inference_input_csv(tmp_path):
    with pytest.raises(
        DataListError, match=f"^inference input CSV not found: {re.escape(str(tmp_path / 'test.csv'))}$"
    ):
        list_images(str(tmp_path / "test.csv"))
    path = _csv(tmp_path / "test.csv", [["gone.png", "1", ""]])
    where = re.escape(path)
    with pytest.raises(
        DataListError, match=rf"1 problem\(s\) in the inference input CSV {where}:\n  {where} row 2: file not found"
    ):
        list_images(path)
    with pytest.raises(DataListError, match="the inference input CSV is empty"):
        list_images(_csv(tmp_path / "empty.csv", []))


def test_image_stem_is_the_one_rule_for_stems_and_case_names(tmp_path):
    from monai_softcam.transforms import SaveEvidenceMapsd

    assert image_stem("a.nii.gz") == "a" and image_stem("img/b.PNG") == "img/b" and image_stem("c.nhdr") == "c"
    assert image_stem("d.webp") == "d" and image_stem("1.2.840.113619.5") == "1.2.840.113619.5"  # a DICOM UID
    assert image_stem("IM0001") == "IM0001"
    saver = SaveEvidenceMapsd("maps", str(tmp_path), ["a", "b"])
    assert [saver._unique_name(p) for p in ("/x/scan.nii.gz", "/y/scan.nii.gz", "/x/1.2.3")] == [
        "scan",
        "scan_2",
        "1.2.3",
    ]


def test_adapt_channels():
    grey = {"image": torch.rand(1, 4, 4)}
    assert AdaptChannelsd("image", 3)(grey)["image"].shape == (3, 4, 4)
    # an RGBA photo loses a uniform alpha channel when read (ReadImaged); four channels here are refused
    with pytest.raises(ValueError, match="image has 4 channel\\(s\\) but the network expects 3"):
        AdaptChannelsd("image", 3)({"image": torch.rand(4, 4, 4)})
    with pytest.raises(ValueError, match="image has 3 channel\\(s\\) but the network expects 1"):
        AdaptChannelsd("image", 1)({"image": torch.rand(3, 4, 4)})
    assert AdaptChannelsd("image", 1, allow_rgb_to_grey=True)({"image": torch.rand(3, 4, 4)})["image"].shape == (
        1,
        4,
        4,
    )


def test_preprocessing_normalises_and_resizes(tmp_path):
    from PIL import Image

    arr = np.full((20, 30), 128, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = preprocessing([16, 16], in_channels=3, mean=[0.5], std=[0.25])({"image": str(tmp_path / "x.png")})
    assert out["image"].shape == (3, 16, 16)
    np.testing.assert_allclose(out["image"].numpy(), (128 / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="std must be > 0"):
        preprocessing([16, 16], std=[0.0])
    with pytest.raises(RuntimeError) as err:  # MONAI's Compose wraps the transform's error
        preprocessing([16, 16])({"image": str(tmp_path / "nope.png")})
    chain, cause = [], err.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    assert any("cannot read image file" in text and "nope.png" in text for text in chain)


def test_load_weights_names_the_mismatch(tmp_path):
    src = SoftCAM("resnet10", num_classes=3)
    path = str(tmp_path / "m.pt")
    torch.save(src.state_dict(), path)
    load_weights(SoftCAM("resnet10", num_classes=3), path)
    with pytest.raises(
        ValueError,
        match=r"m.pt does not fit the network SoftCAM\(backbone=resnet10, num_classes=2.*"
        r"head.evidence.weight: checkpoint \(3, 512, 1, 1\) vs network \(2, 512, 1, 1\)",
    ):
        load_weights(SoftCAM("resnet10", num_classes=2), path)
    with pytest.raises(FileNotFoundError, match="model checkpoint not found"):
        load_weights(src, str(tmp_path / "none.pt"))


def test_best_model_saver_and_training_checkpoint_round_trip(tmp_path):
    net = torch.nn.Linear(2, 2)
    saver = BestModelSaver("accuracy", str(tmp_path / "best.pt"), net)
    engine = Engine(lambda e, b: None)
    for epoch, value in ((1, 0.5), (2, 0.4), (3, float("nan")), (4, 0.7)):
        engine.state.epoch = epoch
        engine.state.metrics = {"accuracy": value}
        saver(engine)
    assert (saver.best, saver.best_epoch) == (0.7, 4)
    best = torch.load(tmp_path / "best.pt", weights_only=True)  # a plain state dict of CPU contiguous tensors
    assert type(best) is dict and list(best) == list(net.state_dict())
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in best.values())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ckpt = TrainingCheckpoint(str(tmp_path / "state.pt"), {"model": net, "optimizer": opt, "best": saver})
    trainer = Engine(lambda e, b: None)
    trainer.state.epoch, trainer.state.iteration, trainer.state.max_epochs = 3, 30, 10
    ckpt._save(trainer)
    fresh_saver = BestModelSaver("accuracy", str(tmp_path / "best.pt"), net)
    resumed = TrainingCheckpoint(
        str(tmp_path / "state.pt"), {"model": net, "optimizer": opt, "best": fresh_saver}, resume=True
    )
    other = Engine(lambda e, b: None)
    other.state.max_epochs = 10
    resumed._load(other)
    assert (other.state.epoch, other.state.iteration) == (3, 30)
    assert (fresh_saver.best, fresh_saver.best_epoch) == (0.7, 4)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "state.pt"]  # no temporary files left
    torch.save({"model": net.state_dict()}, tmp_path / "state.pt")  # written by another configuration
    with pytest.raises(CheckpointError, match=r"state.pt lacks \['optimizer', 'best', 'trainer'\]"):
        resumed._load(other)


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("new, half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_cli_parsing_and_override_check(tmp_path):
    argv = [
        "/x/monai/bundle/__main__.py",
        "run",
        "training",
        "--config_file",
        "['bundle/configs/train.yaml','x.yaml']",
        "--epochs",
        "3",
        "--penalty#lambda1=0.1",
        "--train::dataloader::num_workers",
        "2",
        "--tracking",
        "mlflow",
    ]
    cli = parse_command_line(argv)
    assert cli.config_files == ["bundle/configs/train.yaml", "x.yaml"]
    assert cli.overrides == {"epochs": 3, "penalty#lambda1": 0.1, "train#dataloader#num_workers": 2}
    assert cli.run_args == {"tracking": "mlflow"}
    assert cli.source_of("epochs") == "--epochs on the command line"
    assert cli.source_of("seed") == "bundle/configs/train.yaml" and cli.source_of("no_such_key") is None
    assert parse_command_line(["pytest", "--epoch", "3"]) is None  # not the bundle command line
    assert bundle_root(["run", "--config_file", "/a/b/configs/train.yaml"]) == "/a/b"
    train = os.path.join(REPO_ROOT, "bundle", "configs", "train.yaml")
    check_overrides([train], {"epochs": 3, "penalty#lambda1": 0.1, "demo_data#num_train": 5, "explanation#patch": 9})
    with pytest.raises(ValueError, match=r"--learning_rat \(did you mean --learning_rate\?\)"):
        check_overrides([train], {"learning_rat": 0.1})
    with pytest.raises(ValueError, match=r"--trian#dataloader#batch_size"):
        check_overrides([train], {"trian#dataloader#batch_size": 4})
    with pytest.raises(ValueError, match=r"--penalty#lambda3"):  # a plain dict takes no new keys
        check_overrides([train], {"penalty#lambda3": 4})
    # the keys MONAI's tracking settings add are known when the command line asks for tracking
    tracking = {"tracking_uri": "sqlite:///x.db", "experiment_name": "e", "run_name": "r"}
    with pytest.raises(ValueError, match=r"--tracking_uri"):
        check_overrides([train], tracking)
    check_overrides([train], tracking, tracking="mlflow")


def test_prepare_dataset_generates_only_in_demo_dir(tmp_path):
    demo = {"size": 40, "num_train": 2, "num_val": 1, "num_test": 1}
    prepare_dataset(str(tmp_path / "demo"), str(tmp_path / "demo"), demo)
    assert os.path.isfile(tmp_path / "demo" / "train.csv")
    with pytest.raises(FileNotFoundError, match="dataset_dir does not exist or is not a folder"):
        prepare_dataset(str(tmp_path / "typo"), str(tmp_path / "demo"), demo)


def test_overlay_colours_signed_evidence():
    image = torch.zeros(1, 4, 4)
    evidence = torch.tensor([[1.0, -1.0, 0.0, 0.0]] * 4).T  # x = 0 positive, x = 1 negative
    rgb = overlay(image, evidence)
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # red where positive
    assert rgb[1, 0, 2] > rgb[1, 0, 0]  # blue where negative
    assert (rgb[3, 0] == 0).all()  # zero evidence leaves the (black) image as it is
    picture = evidence_gallery(
        [image, image], [evidence[None].repeat(2, 1, 1)] * 2, ["a", "b"], cases_per_row=2, tile=32
    )
    assert picture.size[0] == 2 * 3 * 32 + 6


def test_a_user_error_under_wrappers_is_printed_last(capsys, monkeypatch):
    """MONAI wraps a failing config expression in RuntimeError('Failed to evaluate ...'): the hook
    prints the traceback as before, then the user's error as the last line; other errors are left alone."""
    import sys

    from monai_softcam.utils import ConfigError, find_user_error, install_error_hook

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, err, tb: printed.append(kind))
    install_error_hook()
    install_error_hook()  # once only
    try:
        try:
            raise ConfigError("unknown config key(s) in the command line: --epoch (did you mean --epochs?)")
        except ConfigError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: '$monai_softcam.bundle.start()'") from err
    except RuntimeError as wrapped:
        assert isinstance(find_user_error(wrapped), ConfigError)
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    assert printed == [RuntimeError]  # the previous hook still prints the traceback
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1] == "error: unknown config key(s) in the command line: --epoch (did you mean --epochs?)"
    try:
        raise RuntimeError("a bug, not a user error")
    except RuntimeError as plain:
        assert find_user_error(plain) is None
        sys.excepthook(type(plain), plain, plain.__traceback__)
    assert capsys.readouterr().err == ""


def test_yes_no_settings_read_the_command_lines_strings():
    """``--resume false`` reaches the config as the string "false" (Fire reads only True/False as
    booleans): it must mean no, not yes."""
    for value, expected in [
        (True, True),
        ("true", True),
        ("True", True),
        ("yes", True),
        (1, True),
        (False, False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("0", False),
        (0, False),
    ]:
        assert as_flag(value, "resume") is expected, value
    for bad in ("maybe", 2, None, ""):
        with pytest.raises(ConfigError, match="resume must be true or false"):
            as_flag(bad, "resume")
    assert TrainingCheckpoint("unused.pt", {}, resume="false").resume is False
    with pytest.raises(ConfigError, match="resume"):
        TrainingCheckpoint("unused.pt", {}, resume="ture")


def test_overlays_drawn_in_the_writer_thread_are_the_same_and_a_failure_names_the_file(tmp_path):
    from monai.data import MetaTensor

    from monai_softcam.transforms import SaveEvidenceMapsd, SaveOverlayd
    from monai_softcam.utils import BackgroundWriter, WriteError

    def case(name: str) -> dict:
        image = MetaTensor(torch.rand(1, 40, 30), affine=torch.eye(4))
        image.meta["filename_or_obj"] = f"/in/{name}.png"
        maps = MetaTensor(torch.randn(2, 5, 4), affine=torch.diag(torch.tensor([8.0, 7.5, 1.0, 1.0])))
        maps.meta["filename_or_obj"] = f"/in/{name}.png"
        return {"image": image, "evidence_maps": maps, "pred": torch.tensor([0.3, 0.7])}

    torch.manual_seed(0)
    cases = [case(f"c{i}") for i in range(5)]
    pictures = {}
    for mode, writer in (("direct", None), ("thread", BackgroundWriter(max_pending=2))):
        save = SaveEvidenceMapsd("evidence_maps", str(tmp_path / mode), ["a", "b"])
        overlay = SaveOverlayd("evidence_maps", ["a", "b"], overlay_size=16, writer=writer)
        for c in cases:
            overlay(save(c))
        if writer is not None:
            writer.wait()
        pictures[mode] = [(tmp_path / mode / f"c{i}" / f"c{i}_overlay.png").read_bytes() for i in range(5)]
    assert pictures["direct"] == pictures["thread"]
    # a file that cannot be written stops the run at the next wait, naming it
    writer = BackgroundWriter()
    (tmp_path / "blocked").write_text("a file where the case folder should be")
    overlay = SaveOverlayd("evidence_maps", ["a", "b"], writer=writer)
    overlay({**cases[0], "evidence_maps_dir": str(tmp_path / "blocked" / "c0")})
    with pytest.raises(WriteError, match=r"^cannot write .*blocked/c0/c0_overlay.png: Not a directory$"):
        writer.wait()
    writer.wait()  # reported once
    with pytest.raises(ValueError, match="SaveOverlayd needs evidence_maps_dir: put it after SaveEvidenceMapsd"):
        overlay(cases[0])
