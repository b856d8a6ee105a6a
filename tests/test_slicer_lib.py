"""SoftCAMLib (the Slicer module's logic, no Slicer): bundles, volumes and their geometry,
inference in a subprocess and in-process, export, display settings, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import INFERENCE, bundle
from conftest import REPO_ROOT, TESTS_DIR
from data_helpers import resample_with_itk, write_dicom, write_png

sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))

from SoftCAMLib import (  # noqa: E402
    LPS_TO_RAS,
    BundleError,
    BundleInfo,
    InferenceError,
    InferenceJob,
    Volume,
    VolumeError,
    export_result,
    geometry_matrix,
    missing_requirements,
    overlay_display,
    run_inference,
)
from SoftCAMLib.testing import write_test_bundle  # noqa: E402

KNOWN_2D = os.path.join(TESTS_DIR, "configs", "known_evidence_2d.yaml")
KNOWN_3D = os.path.join(TESTS_DIR, "configs", "known_evidence_3d.yaml")


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


@pytest.fixture
def subprocess_env(monkeypatch):
    """Child processes import the known-evidence network from tests/."""
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + os.pathsep + REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


def _known_bundle(tmp_path, config, *extra):
    folder = write_test_bundle(str(tmp_path / "bundle"), [config, *extra])
    return BundleInfo.read(folder, [config, *extra])


def _hot(array):
    """The voxels of the upper half of the map's range."""
    return array > (array.max() + array.min()) / 2


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_2d_oblique_slice_maps_land_on_the_object_and_both_modes_agree(tmp_path, subprocess_env):
    """An oblique, anisotropic single-slice volume (float, written as NRRD for the bundle): the map
    of a known-evidence model lights up the bright square, on the slice's own grid and matrix, and
    the subprocess and in-process runs give the same numbers."""
    info = _known_bundle(tmp_path, KNOWN_2D)
    assert info.spatial_dims == 2 and info.class_names == ["no_lesion", "lesion"] and info.image_size == [64, 64]
    image = np.full((1, 60, 80), 0.2, np.float32)
    image[0, 20:36, 48:72] = 0.9  # rows (J) 20-35, columns (I) 48-71
    ijk_to_ras = geometry_matrix([12.0, -7.0, 40.0], [0.5, 0.8, 3.0], _rotation([1, 1, 1], 20))
    volume = Volume(image, ijk_to_ras, name="oblique slice")
    messages = []
    inproc = run_inference(info, volume, mode="inprocess", progress=messages.append)
    sub = run_inference(info, volume, mode="subprocess")
    assert messages[0] == "writing the input" and messages[-1].startswith("done in")
    for name in info.class_names:
        assert sub.probabilities[name] == pytest.approx(inproc.probabilities[name], abs=1e-6)
        np.testing.assert_allclose(sub.maps[name], inproc.maps[name], atol=1e-6)
        assert sub.maps[name].shape == image.shape and sub.maps[name].dtype == np.float32
    np.testing.assert_array_equal(sub.ijk_to_ras, ijk_to_ras)
    assert sub.predicted_class == "no_lesion" and sum(sub.probabilities.values()) == pytest.approx(1, abs=1e-5)
    lesion = sub.maps["lesion"][0]
    square = np.zeros_like(lesion, bool)
    square[20:36, 48:72] = True
    assert _iou(_hot(lesion), square) > 0.8
    np.testing.assert_allclose(sub.maps["no_lesion"], -sub.maps["lesion"], atol=1e-5)
    # the logit is the mean of the map, here on the image's own grid (the resampling blurs edges only)
    assert lesion.mean() == pytest.approx(sub.logits["lesion"], abs=0.05 * abs(sub.logits["lesion"]))


def _stretch(shape, grid):
    """Map index -> input voxel index of a map grid stretched over an input grid (cell centres)."""
    matrix = np.eye(4)
    for axis, (n, g) in enumerate(zip(shape, grid)):
        matrix[axis, axis], matrix[axis, 3] = n / g, 0.5 * n / g - 0.5
    return matrix


def test_3d_volume_lps_and_ras_geometry_match_the_bundle_on_the_same_file(tmp_path, subprocess_env):
    """A 3D NIfTI volume (oblique, anisotropic) run by the bundle's CLI, and the same volume as
    Slicer holds it, given once with its RAS matrix (nibabel) and once with the LPS geometry
    SimpleITK/DICOM report: identical probabilities and maps, the bundle's map files carry the
    volume's own matrix, and the evidence sits on the bright cube in RAS."""
    import SimpleITK

    info = _known_bundle(tmp_path, KNOWN_3D)
    array_ijk = np.full((40, 30, 24), 0.1, np.float32)
    array_ijk[8:16, 18:26, 5:12] = 1.0
    ijk_to_ras = geometry_matrix([-30.0, 12.0, -8.0], [0.7, 1.1, 2.5], _rotation([0.2, -1, 0.4], 35))
    path = str(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(array_ijk, ijk_to_ras), path)

    out = tmp_path / "cli"
    bundle(
        "inference", [INFERENCE, KNOWN_3D], "--bundle_root", info.path, "--input_path", path, "--output_dir", str(out)
    )
    with open(out / "predictions.csv") as f:
        cli = next(csv.DictReader(f))
    compact = os.path.join(cli["evidence_maps"], "ct_evidence_lesion.nii.gz")
    assert nib.load(compact).shape == (8, 8, 8)  # the known network's map grid (stride 4 at 32^3)
    cli_map = resample_with_itk(compact, path)  # placed on the volume's grid in world space, by ITK

    ras = run_inference(info, Volume(np.transpose(array_ijk, (2, 1, 0)), ijk_to_ras, name="ct"))
    itk = SimpleITK.ReadImage(path)  # LPS geometry, (K, J, I) array: what a DICOM series gives
    direction = np.asarray(itk.GetDirection()).reshape(3, 3)
    ijk_to_lps = geometry_matrix(itk.GetOrigin(), itk.GetSpacing(), direction)
    lps = run_inference(info, Volume.from_lps(SimpleITK.GetArrayFromImage(itk), ijk_to_lps, name="ct"))

    np.testing.assert_allclose(lps.ijk_to_ras, ijk_to_ras, atol=1e-4)
    for result in (ras, lps):
        for name in info.class_names:
            assert result.probabilities[name] == pytest.approx(float(cli[f"prob_{name}"]), abs=1e-5)
            # the bundle saw our geometry: its map grid is stretched over the volume's voxels
            np.testing.assert_allclose(
                result.map_affines[name], ijk_to_ras @ _stretch((40, 30, 24), (8, 8, 8)), atol=1e-4
            )
        np.testing.assert_allclose(result.maps["lesion"], np.transpose(cli_map, (2, 1, 0)), atol=1e-5)

    kji = np.argwhere(_hot(lps.maps["lesion"]))
    hot_ras = (lps.ijk_to_ras @ np.c_[kji[:, ::-1], np.ones(len(kji))].T)[:3].mean(1)
    cube_ras = (ijk_to_ras @ np.array([11.5, 21.5, 8.0, 1.0]))[:3]
    assert np.linalg.norm(hot_ras - cube_ras) < 2.5  # mm; voxels are 0.7 x 1.1 x 2.5 mm


def test_files_loaded_in_slicer_give_the_bundles_results(tmp_path, subprocess_env):
    """A 12-bit DICOM X-ray (read from its own file) and an 8-bit RGB PNG (a colour volume written
    back as PNG, as when it was edited): the same probabilities and maps as the bundle's CLI on the
    original files; colour channels follow the bundle's channel rule."""
    three = tmp_path / "three_channels.yaml"
    three.write_text("in_channels: 3\n")
    info = _known_bundle(tmp_path, KNOWN_2D, str(three))
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    xray = (rng.uniform(0, 1500, (70, 90))).astype(np.uint16)
    xray[10:30, 50:80] = 4000
    dicom = write_dicom(str(data / "xray.dcm"), xray, bits_stored=12, spacing=(0.2, 0.15))
    photo = rng.integers(0, 120, (50, 64, 3)).astype(np.uint8)
    photo[5:25, 30:60] = 250
    write_png(str(data / "photo.png"), photo)

    out = tmp_path / "cli"
    bundle(
        "inference",
        [INFERENCE, KNOWN_2D, str(three)],
        "--bundle_root",
        info.path,
        "--input_path",
        str(data),
        "--output_dir",
        str(out),
    )
    with open(out / "predictions.csv") as f:
        cli = {os.path.basename(r["image"]): r for r in csv.DictReader(f)}

    xray_to_ras = LPS_TO_RAS @ np.diag([0.15, 0.2, 1.0, 1.0])  # column spacing along I, row spacing along J
    volumes = {
        "xray.dcm": Volume(xray[None], xray_to_ras, name="xray", source_file=dicom),
        "photo.png": Volume(photo[None], LPS_TO_RAS, name="photo"),  # no source: written as PNG again
    }
    for name, volume in volumes.items():
        result = run_inference(info, volume)
        for c in info.class_names:
            assert result.probabilities[c] == pytest.approx(float(cli[name][f"prob_{c}"]), abs=1e-6), name
        stem = os.path.splitext(name)[0]
        compact = os.path.join(cli[name]["evidence_maps"], f"{stem}_evidence_lesion.nii.gz")
        cli_map = resample_with_itk(compact, str(data / name))  # on the file's own grid, by ITK's geometry
        np.testing.assert_allclose(result.maps["lesion"][0], cli_map.T, atol=1e-5)
    # the bright block is where the map is hot, in the image's (row, column) layout
    block = np.zeros((70, 90), bool)
    block[10:30, 50:80] = True
    assert _iou(_hot(run_inference(info, volumes["xray.dcm"]).maps["lesion"][0]), block) > 0.7


def test_bad_bundles_and_volumes_get_clear_errors(tmp_path):
    with pytest.raises(BundleError, match="not a MONAI bundle"):
        BundleInfo.read(str(tmp_path))
    with pytest.raises(BundleError, match="is not a folder"):
        BundleInfo.read(str(tmp_path / "nowhere"))
    folder = write_test_bundle(str(tmp_path / "bundle"))
    with pytest.raises(BundleError, match="preset config .*missing.yaml not found"):
        BundleInfo.read(folder, [str(tmp_path / "missing.yaml")])
    info = BundleInfo.read(folder)
    info.check_weights()  # its own checkpoint fits

    # a checkpoint of another network (3 classes): refused, naming the mismatching tensors
    from monai_softcam.networks import SoftCAM

    other = SoftCAM(
        "resnet18",
        spatial_dims=2,
        in_channels=1,
        num_classes=3,
        backbone_kwargs={"widen_factor": 0.25, "conv1_t_stride": 1, "no_max_pool": True},
    )
    torch.save(other.state_dict(), os.path.join(folder, "models", "model.pt"))
    with pytest.raises(BundleError, match="(?s)model.pt.*shape"):
        info.check_weights()
    job = InferenceJob(info, Volume(np.zeros((1, 40, 40), np.float32), np.eye(4), name="img"), mode="inprocess").start()
    assert job.poll() and job.state == "failed"
    with pytest.raises(InferenceError, match="(?s)inference failed.*model.pt"):
        job.result()

    os.remove(os.path.join(folder, "models", "model.pt"))
    with pytest.raises(BundleError, match="checkpoint .*model.pt does not exist"):
        BundleInfo.read(folder)
    os.remove(os.path.join(folder, "configs", "inference.yaml"))
    with pytest.raises(BundleError, match="no configs/inference.yaml"):
        BundleInfo.read(folder)

    with pytest.raises(VolumeError, match="has 5 slices but the bundle classifies 2D images"):
        InferenceJob(info, Volume(np.zeros((5, 40, 40), np.float32), np.eye(4), name="ct"))
    with pytest.raises(VolumeError, match="'pair' has 2 channel.*takes 1"):
        InferenceJob(info, Volume(np.zeros((1, 40, 40, 2), np.float32), np.eye(4), name="pair"))
    with pytest.raises(VolumeError, match="expected a \\(K, J, I\\)"):
        Volume(np.zeros((40, 40), np.float32), np.eye(4))
    with pytest.raises(VolumeError, match="singular"):
        Volume(np.zeros((1, 4, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))


@pytest.mark.slow
def test_a_torchscript_export_runs_like_its_bundle(tmp_path):
    """A .ts file from ``ckpt_export`` (configs and metadata embedded) is a bundle too: same
    probabilities and maps as the folder it was exported from; an export without configs is refused."""
    folder = write_test_bundle(str(tmp_path / "bundle"))
    ts = str(tmp_path / "model.ts")
    configs = os.path.join(folder, "configs")
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "--net_id",
        "network_def",
        "--filepath",
        ts,
        "--ckpt_file",
        os.path.join(folder, "models", "model.pt"),
        "--meta_file",
        os.path.join(configs, "metadata.json"),
        "--config_file",
        repr([os.path.join(configs, "inference.yaml"), os.path.join(folder, "models", "task.json")]),
        "--bundle_root",
        folder,
    ]
    proc = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info, exported = BundleInfo.read(folder), BundleInfo.read(ts)
    assert (
        exported.torchscript == ts
        and exported.class_names == info.class_names
        and "inference.json" in exported.config_files[0]
    )
    exported.check_weights()  # nothing to check: the export holds its weights
    image = np.random.default_rng(0).uniform(0, 1, (1, 50, 70)).astype(np.float32)
    expected = run_inference(info, Volume(image, np.eye(4), name="img"))
    result = run_inference(exported, Volume(image, np.eye(4), name="img"))
    for name in info.class_names:
        assert result.probabilities[name] == pytest.approx(expected.probabilities[name], abs=1e-6)
        np.testing.assert_allclose(result.maps[name], expected.maps[name], atol=1e-5)

    import torch

    without_task = str(tmp_path / "without_task.ts")
    command[command.index(ts)] = without_task
    command[command.index("--config_file") + 1] = os.path.join(configs, "inference.yaml")
    proc = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with pytest.raises(BundleError, match="without the trained task"):
        BundleInfo.read(without_task)

    bare = str(tmp_path / "bare.ts")
    torch.jit.save(torch.jit.script(torch.nn.Identity()), bare)
    with pytest.raises(BundleError, match="without metadata.json and inference.json"):
        BundleInfo.read(bare)


def test_cancel_stops_a_subprocess_run(tmp_path, subprocess_env):
    info = _known_bundle(tmp_path, KNOWN_2D)
    job = InferenceJob(info, Volume(np.zeros((1, 30, 30), np.float32), np.eye(4), name="img")).start()
    assert job.state == "running" and not job.poll()
    job.cancel()
    assert job.poll() and job.state == "cancelled"
    with pytest.raises(InferenceError, match="cancelled"):
        job.result()


def test_export_writes_maps_with_the_volume_geometry_and_probabilities(tmp_path):
    import SimpleITK

    info = _known_bundle(tmp_path, KNOWN_3D)
    ijk_to_ras = geometry_matrix([5.0, -3.0, 2.0], [0.9, 1.2, 2.0], _rotation([0, 0, 1], 30))
    array = np.random.default_rng(1).uniform(0, 1, (12, 20, 16)).astype(np.float32)
    result = run_inference(info, Volume(array, ijk_to_ras, name="case 1"))
    nrrd = export_result(result, str(tmp_path / "export"), "nrrd")
    nifti = export_result(result, str(tmp_path / "export_nii"), "nii.gz")
    assert [os.path.basename(p) for p in nrrd] == [
        "case_1_evidence_no_lesion.nrrd",
        "case_1_evidence_lesion.nrrd",
        "case_1_probabilities.csv",
    ]
    image = SimpleITK.ReadImage(nrrd[1])
    np.testing.assert_allclose(SimpleITK.GetArrayFromImage(image), result.maps["lesion"], atol=1e-6)
    lps = geometry_matrix(image.GetOrigin(), image.GetSpacing(), np.asarray(image.GetDirection()).reshape(3, 3))
    np.testing.assert_allclose(LPS_TO_RAS @ lps, ijk_to_ras, atol=1e-5)
    saved = nib.load(nifti[1])
    np.testing.assert_allclose(np.asarray(saved.dataobj).transpose(2, 1, 0), result.maps["lesion"], atol=1e-6)
    np.testing.assert_allclose(saved.affine, ijk_to_ras, atol=1e-5)
    with open(nrrd[2]) as f:
        row = next(csv.DictReader(f))
    assert row["predicted_class"] == result.predicted_class
    assert float(row["prob_lesion"]) == pytest.approx(result.probabilities["lesion"], abs=1e-6)
    with pytest.raises(ValueError, match="'nrrd' or 'nii.gz'"):
        export_result(result, str(tmp_path), "png")


def test_overlay_display_is_centred_at_zero_with_one_scale_for_all_classes():
    maps = {"a": np.array([[-2.0, 1.0]]), "b": np.array([[0.5, 4.0]])}
    shown = overlay_display(maps)
    assert shown.level == 0 and shown.window == 8.0 and shown.threshold is None
    # Slicer's diverging table with a neutral middle (ColdToHotRainbow's middle is green): with window
    # 2 x peak and level 0, zero falls on index 127 of DivergingBlueRed's 255, (247, 246, 246)
    assert shown.color_node_id == "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
    assert overlay_display(maps, threshold=0.25).threshold == (1.0, 4.0)
    sequential = overlay_display(maps, signed=False)
    assert (sequential.window, sequential.level) == (6.0, 1.0) and "Inferno" in sequential.color_node_id
    with pytest.raises(ValueError, match="threshold"):
        overlay_display(maps, threshold=1.5)


def test_missing_requirements_are_found_without_importing(monkeypatch):
    """Distributions are looked up in the metadata (nothing imported); the list is the
    requirements file's strings (torch's floor first), plus monai_softcam if its source is missing."""
    import importlib.metadata
    import importlib.util

    assert missing_requirements() == []
    real = importlib.metadata.distribution

    def distribution(name):
        if name in ("torch", "monai", "SimpleITK"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert missing_requirements() == ["torch>=2.3", "monai>=1.4", "SimpleITK>=2.2"]
    real_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "monai_softcam" else real_spec(name, *a)
    )
    assert missing_requirements()[-1] == "monai_softcam"


def test_requirements_below_their_floor_are_missing_too(monkeypatch):
    """Issue 31: an installed version outside the requirement (Slicer 5.10's pydicom 2.4.4, a torch
    or monai that another extension installed) is unmet like an absent one; a local or
    pre-release build counts as its version; the description says what is installed; a package
    this Python already imported needs a restart after its upgrade."""
    import importlib.metadata
    import sys
    import types

    from SoftCAMLib import describe_requirements, loaded_requirements, unmet_requirements

    real = importlib.metadata.distribution
    versions = {"torch": "2.1.2", "pydicom": "2.4.4", "monai": "1.3.2", "numpy": "2.0.2"}

    def distribution(name):
        if name in versions and versions[name] is None:
            raise importlib.metadata.PackageNotFoundError(name)
        if name in versions:
            return types.SimpleNamespace(version=versions[name])
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert missing_requirements() == ["torch>=2.3", "monai>=1.4", "pydicom>=3.0"]
    assert unmet_requirements()[0] == ("torch>=2.3", "2.1.2")
    versions.update(torch="2.5.1+cpu", monai="1.5.0rc1")
    assert missing_requirements() == ["pydicom>=3.0"]
    assert describe_requirements(["pydicom>=3.0", "monai_softcam"]).splitlines() == [
        "pydicom>=3.0 (2.4.4 installed)",
        "monai_softcam (its source is not beside the module)",
    ]
    versions["pydicom"] = None
    assert describe_requirements(["pydicom>=3.0"]) == "pydicom>=3.0 (not installed)"
    monkeypatch.setattr(
        importlib.metadata, "packages_distributions", lambda: {"pydicom": ["pydicom"], "yaml": ["PyYAML"]}
    )
    monkeypatch.setitem(sys.modules, "pydicom", types.ModuleType("pydicom"))
    monkeypatch.delitem(sys.modules, "yaml", raising=False)
    assert loaded_requirements(["pyyaml>=6.0", "pydicom>=3.0", "monai_softcam"]) == ["pydicom>=3.0"]


# ---------------------------------------------------------------- Cancel through PythonSlicer (issue 31)
def _running(pid):
    """Whether process ``pid`` runs (not exited; a zombie does not run)."""
    import slicer_stubs

    return slicer_stubs.process_running(pid)


posix_only = pytest.mark.skipif(os.name == "nt", reason="the stand-in launcher and process groups are POSIX here")


@pytest.fixture
def python_slicer(tmp_path, monkeypatch, subprocess_env):
    """The stand-in of Slicer's PythonSlicer launcher (tests/slicer_stubs.py), first on PATH."""
    import slicer_stubs

    path = slicer_stubs.write_python_slicer(str(tmp_path / "slicer-bin"))
    monkeypatch.setenv("PATH", os.path.dirname(path) + os.pathsep + os.environ.get("PATH", ""))
    return path


def _busy_bundle(tmp_path, ignore_sigterm=False):
    """The known-evidence bundle whose inference, instead of running, keeps writing files (its pid
    first, to <run folder>/child.pid)."""
    extra = tmp_path / "busy.yaml"
    extra.write_text(
        "initialize:\n"
        "  - $import slicer_stubs\n"
        f"  - $slicer_stubs.busy_inference(@output_dir, ignore_sigterm={ignore_sigterm})\n"
    )
    return _known_bundle(tmp_path, KNOWN_2D, str(extra))


def _wait_for_child_pid(job, timeout=120):
    import time

    pid_file = os.path.join(job._work, "child.pid")
    deadline = time.time() + timeout
    while not os.path.exists(pid_file):
        assert not job.poll(), job._error
        assert time.time() < deadline, "the inference child never started"
        time.sleep(0.05)
    with open(pid_file) as f:
        return int(f.read())


def _group_members(pgid):
    """The live processes of process group ``pgid`` (Linux /proc; zombies excluded)."""
    import slicer_stubs

    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and slicer_stubs.process_running(int(entry)):
            found.append(int(entry))
    return found


def _cancel_and_check(job, launcher_pid, child_pid):
    """Cancel as the widget does (cancel(), then poll() from its timer) and check that the run folder
    is removed only once neither the launcher nor its child runs, and that nothing writes there after."""
    import time

    import slicer_stubs

    at_cleanup = []
    real_cleanup = job._cleanup

    def cleanup(*args, **kwargs):
        at_cleanup.append((slicer_stubs.process_running(launcher_pid), slicer_stubs.process_running(child_pid)))
        real_cleanup(*args, **kwargs)

    job._cleanup = cleanup
    work = job._work
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 2, "cancel() must not block the GUI"
    deadline = time.time() + 30
    while not job.poll():  # the widget's QTimer
        assert time.time() < deadline, "the cancelled run never ended"
        time.sleep(0.05)
    assert job.state == "cancelled" and at_cleanup == [(False, False)]
    assert not slicer_stubs.process_running(child_pid) and not slicer_stubs.process_running(launcher_pid)
    if os.path.isdir("/proc/self"):
        assert _group_members(launcher_pid) == []
    time.sleep(0.5)  # a surviving child would recreate the folder (it writes every 50 ms)
    assert not os.path.exists(work)
    with pytest.raises(InferenceError, match="cancelled"):
        job.result()


@posix_only
def test_cancel_through_python_slicer_ends_the_launchers_child_before_removing_the_folder(tmp_path, python_slicer):
    """Issue 31: PythonSlicer (CTKAppLauncher) runs python-real as its child and forwards no signal.
    Cancel ends the run's whole process group; the folder goes only once no process of it is left."""
    import shutil

    info = _busy_bundle(tmp_path)
    volume = Volume(np.zeros((1, 30, 30), np.float32), np.eye(4), name="img")
    job = InferenceJob(info, volume, python=shutil.which("PythonSlicer")).start()
    assert job.python == python_slicer
    child_pid = _wait_for_child_pid(job)
    launcher_pid = job._process.pid
    assert child_pid != launcher_pid and _running(child_pid)
    assert os.getpgid(child_pid) == launcher_pid != os.getpgrp()  # a group of its own, the child in it
    _cancel_and_check(job, launcher_pid, child_pid)


@posix_only
def test_cancel_kills_a_child_that_ignores_sigterm_after_the_grace_period(tmp_path, python_slicer, monkeypatch):
    """A child that outlives SIGTERM (e.g. inside a CUDA call) gets SIGKILL after the grace period;
    until then the job is not over (no new run can start while the GPU is still held)."""
    from SoftCAMLib import inference

    monkeypatch.setattr(inference, "CANCEL_GRACE_SECONDS", 1.0)
    info = _busy_bundle(tmp_path, ignore_sigterm=True)
    volume = Volume(np.zeros((1, 30, 30), np.float32), np.eye(4), name="img")
    job = InferenceJob(info, volume, python=python_slicer).start()
    child_pid = _wait_for_child_pid(job)
    launcher_pid = job._process.pid
    job.cancel()
    assert job.state == "running" and not job.poll() and _running(child_pid)
    assert not _running(launcher_pid)  # SIGTERM ended the launcher, not its child
    _cancel_and_check(job, launcher_pid, child_pid)


@posix_only
def test_the_stand_in_launcher_is_faithful_terminating_it_leaves_its_child_running(tmp_path, python_slicer):
    """Why the group is ended: the old Cancel (Popen.terminate() of PythonSlicer) ends the launcher
    alone and python-real runs on; ending the process group (end_process_tree) ends both."""
    import signal
    import time

    from SoftCAMLib.inference import child_process_options, end_process_tree, process_tree_alive

    script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    for fix in (False, True):
        pid_file = str(tmp_path / f"child-{fix}.pid")
        options = child_process_options() if fix else {}
        launcher = subprocess.Popen([python_slicer, "-c", script, pid_file], **options)
        deadline = time.time() + 60
        while not (os.path.exists(pid_file) and os.path.getsize(pid_file)):
            assert time.time() < deadline and launcher.poll() is None
            time.sleep(0.05)
        with open(pid_file) as f:
            child_pid = int(f.read())
        try:
            if fix:
                end_process_tree(launcher)
                deadline = time.time() + 10
                while process_tree_alive(launcher) and time.time() < deadline:
                    time.sleep(0.02)
                assert not process_tree_alive(launcher) and not _running(child_pid)
            else:
                launcher.terminate()  # the old InferenceJob.cancel()
                assert launcher.wait(timeout=10) != 0
                time.sleep(0.5)
                assert _running(child_pid), "CTKAppLauncher leaves its child running"
        finally:
            if _running(child_pid):
                os.kill(child_pid, signal.SIGKILL)


@posix_only
def test_a_run_through_python_slicer_completes_and_cleans_up(tmp_path, python_slicer):
    """The module's logic finds the stand-in as PythonSlicer; a normal run through it gives the
    result, leaves no process of its group and removes its folder."""
    import slicer_stubs

    slicer_stubs.install()
    try:
        import SoftCAM

        assert SoftCAM.SoftCAMLogic.pythonExecutable() == python_slicer
    finally:
        slicer_stubs.uninstall()
    info = _known_bundle(tmp_path, KNOWN_2D)
    array = np.full((1, 40, 40), 0.2, np.float32)
    array[0, 10:20, 5:15] = 0.9
    job = InferenceJob(info, Volume(array, np.eye(4), name="img"), python=python_slicer).start()
    launcher_pid, work = job._process.pid, job._work
    result = job.wait(timeout=300)
    assert job.state == "done" and not os.path.exists(work)
    assert set(result.probabilities) == set(info.class_names) and result.maps
    if os.path.isdir("/proc/self"):
        assert _group_members(launcher_pid) == []
