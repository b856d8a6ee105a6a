"""scripts/reproduce_paper.sh: the paper's protocol (λ selection for sparse and dense SoftCAM, the
black box, test metrics, the explanation report) end to end at tiny settings, on stand-in images laid
out as each dataset's real files: the split CSVs with their real headers and first rows (copied from
../shared/upstream_csv, and checked against it when it is there), DICOMs or PNGs at the paths the
presets read. Also the script's argument errors."""

import csv
import json
import math
import os
import subprocess

import pytest
from conftest import REPO_ROOT
from data_helpers import UPSTREAM, fundus_photo, oct_scan, write_dicom, write_png, xray_with_boxes

SCRIPT = os.path.join(REPO_ROOT, "scripts", "reproduce_paper.sh")
POSTHOC = ["gradcam", "integrated_gradients", "guided_backprop", "scorecam", "layercam"]
GRIDS = {"lambda1": [1e-5, 1e-3], "lambda2": [1e-5, 1e-3]}

# (upstream folder, {split: file}, header, rows): real rows, verbatim; train and val the first two of
# each class, test the first of each (the report's Score-CAM runs once per channel and image)
DATASETS = {
    "rsna": (
        "RSNA",
        {s: f"{s}.csv" for s in ("train", "val", "test")},
        "filename,x,y,width,height,type,bin_target,target",
        {
            "train": [
                "fa98b567-cb73-4b3a-8c10-dd5c7fd470d2.png,,,,,Train,0,0",
                "2f8fbfdc-56db-4eca-bf64-3c9a0637e28c.png,,,,,Train,0,0",
                "8bb961eb-7baa-4bcc-b92b-bce2538f7cf6.png,49.0,270.0,318.0,574.0,Train,1,2",
                "470595fa-5702-4009-9b56-88549ad8c560.png,583.0,437.0,238.0,253.0,Train,1,2",
            ],
            "val": [
                "d3a76ad6-faf0-4bd1-8b84-57dedbde959d.png,,,,,Val,0,0",
                "5fee7685-a1eb-4be4-8054-e550d86f863b.png,,,,,Val,0,0",
                "afb87feb-0409-42d0-b5cf-7e6a820f67c0.png,519.0,260.0,191.0,379.0,Val,1,2",
                "ed09e414-bcdd-4342-aab8-3b286a54facf.png,637.0,425.0,221.0,446.0,Val,1,2",
            ],
            "test": [
                "942fab2b-4338-457a-9005-c7b18ea41798.png,,,,,Test,0,0",
                "4b048bdc-0a0a-43ed-aa0d-5971e433874b.png,637.0,276.0,188.0,282.0,Test,1,2",
            ],
        },
    ),
    "fundus": (
        "kaggle",
        {
            "train": "kaggle_gradable_train_reduce.csv",
            "val": "kaggle_gradable_val.csv",
            "test": "kaggle_gradable_test.csv",
        },
        "image,level,ungradability_MEAN,ungradability_MEDIAN,Usage,onset1,onset2,filename",
        {
            "train": [
                "30458_left,0,0.066946134,0.02514185,Private,0,0,30458_left.png",
                "18240_right,0,0.27358043,0.17375046,Public,0,0,18240_right.png",
                "82_left,2,0.20640019,0.22330138,,1,1,82_left.png",
                "114_left,1,0.19628781,0.119887546,,1,0,114_left.png",
            ],
            "val": [
                "23_left,0,0.38409734,0.3340985,,0,0,23_left.png",
                "57_left,0,0.35255247,0.36480027,,0,0,57_left.png",
                "30_left,1,0.19837241,0.13484989,,1,0,30_left.png",
                "534_left,2,0.2986783,0.24507563,,1,1,534_left.png",
            ],
            "test": [
                "13_left,0,0.14335817,0.10312028,,0,0,13_left.png",
                "40_left,2,0.13357164,0.093864515,,1,1,40_left.png",
            ],
        },
    ),
    "oct": (
        "Retinal_OCT",
        {s: f"{s}.csv" for s in ("train", "val", "test")},
        "patient_id,filename,type,drusen",
        {
            "train": [
                "8073694,train/NORMAL/NORMAL-8073694-15.png,Train,0",
                "7420981,train/NORMAL/NORMAL-7420981-6.png,Train,0",
                "9072701,train/DRUSEN/DRUSEN-9072701-25.png,Train,1",
                "5371222,train/DRUSEN/DRUSEN-5371222-7.png,Train,1",
            ],
            "val": [
                "8076847,train/NORMAL/NORMAL-8076847-10.png,Val,0",
                "1597239,train/NORMAL/NORMAL-1597239-58.png,Val,0",
                "2257047,train/DRUSEN/DRUSEN-2257047-22.png,Val,1",
                "9642260,train/DRUSEN/DRUSEN-9642260-18.png,Val,1",
            ],
            "test": ["6969,test/NORMAL/NORMAL-6969-1.png,Test,0", "8196333,test/DRUSEN/DRUSEN-8196333-1.png,Test,1"],
        },
    ),
}


def make_dataset(root, dataset):
    """The split CSVs of ``dataset`` and a stand-in image for every row, where its preset looks for it:
    RSNA the challenge's 1024 px DICOMs named by patientId (opacity boxes drawn bright), fundus RGB
    photographs and OCT grey B-scans (496 x 512) at the CSVs' relative paths."""
    _, files, header, rows = DATASETS[dataset]
    for split, name in files.items():
        table = list(csv.DictReader([header, *rows[split]]))
        with open(os.path.join(root, name), "w", newline="") as f:
            f.write("\n".join([header, *rows[split]]) + "\n")
        for i, row in enumerate(table):
            seed = 10 * i + len(split)
            if dataset == "rsna":
                boxes = [[float(row[k]) for k in ("x", "y", "width", "height")]] if row["x"] else []
                path = os.path.join(root, "stage_2_train_images", row["filename"][: -len(".png")] + ".dcm")
                write_dicom(path, xray_with_boxes(boxes, seed=seed))
            elif dataset == "fundus":
                write_png(os.path.join(root, row["filename"]), fundus_photo(seed))
            else:
                write_png(os.path.join(root, row["filename"]), oct_scan(496, 512, seed))


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_the_stand_in_csvs_are_rows_of_the_real_ones(dataset):
    if not os.path.isdir(UPSTREAM):
        pytest.skip(f"the shared split CSVs are not at {UPSTREAM}")
    folder, files, header, rows = DATASETS[dataset]
    for split, name in files.items():
        with open(os.path.join(UPSTREAM, folder, name), newline="") as f:
            lines = f.read().splitlines()
        assert lines[0] == header, name
        real = set(lines[1:])
        assert [r for r in rows[split] if r not in real] == [], name


def _run(*args, cwd=REPO_ROOT, timeout=900):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        ["bash", SCRIPT, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


# the smallest run of the protocol: one epoch, 2 values per sweep, no randomisation check (it runs
# every method again per layer group), and the least image size each preset's backbone takes: 32 px
# for VGG-16 (rsna; Score-CAM's layer, before the last pool, has 2 x 2 cells); 64 px for ResNet-50,
# whose layer4 has a single cell at 32 px, where Score-CAM has no mask to score
SIZE = {"rsna": 32, "fundus": 64, "oct": 64}


def tiny(dataset):
    return [
        "--pretrained",
        "none",
        "--epochs",
        "1",
        "--image_size",
        repr([SIZE[dataset]] * 2),
        "--batch_size",
        "4",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--lambda1_grid",
        repr(GRIDS["lambda1"]),
        "--lambda2_grid",
        repr(GRIDS["lambda2"]),
        "--explain#sanity_cases",
        "0",
        "--explain#gallery_cases",
        "2",
        "--explain#deletion_steps",
        "3",
    ]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """{dataset: its stand-in dataset_dir}, made once per dataset on first use."""
    made = {}

    def get(dataset):
        if dataset not in made:
            root = tmp_path_factory.mktemp(f"{dataset}_data")
            make_dataset(str(root), dataset)
            made[dataset] = str(root)
        return made[dataset]

    return get


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "{data}"], "error: --dataset is missing: one of rsna, fundus, oct"),
        (["--dataset", "chexpert", "--data", "{data}"], "error: --dataset 'chexpert' is not one of rsna, fundus, oct"),
        (["--dataset", "rsna"], "error: --data is missing: the folder with the rsna split CSVs"),
        (["--dataset", "rsna", "--data", "{data}/train.csv"], "error: --data '{data}/train.csv' is not a folder"),
        (["--dataset", "rsna", "--data"], "error: --data needs a value"),
        (
            ["--dataset", "rsna", "--data", "{data}"],
            "error: --pretrained is missing: the paper's models start from ImageNet weights, torchvision's "
            "vgg16-397923af.pth for rsna (https://download.pytorch.org/models/vgg16-397923af.pth): give the local "
            "file, or --pretrained none to train every model from a random initialisation on purpose",
        ),
        (
            ["--dataset", "oct", "--data", "{data}", "--pretrained", "{data}/resnet50-11ad3fa6.pth"],
            "error: --pretrained '{data}/resnet50-11ad3fa6.pth' is not a file",
        ),
        (
            ["--dataset", "rsna", "--data", "{data}", "--pretrained", "none", "--lambda1_grid", "[1e-4, -1]"],
            "error: --lambda1_grid must be a non-empty list of numbers >= 0",
        ),
        (
            ["--dataset", "rsna", "--data", "{data}", "--pretrained", "none", "--lambda2_grid", "[]"],
            "error: --lambda2_grid must be a non-empty list",
        ),
        (["--dataset", "rsna", "--data", "{data}", "--ckpt_dir", "/tmp/x"], "error: --ckpt_dir is set by this script"),
        (
            ["--dataset", "rsna", "--data", "{data}", "--tune_settings#search_space", "{}"],
            "error: --tune_settings#search_space: give the sweeps with --lambda1_grid and --lambda2_grid",
        ),
        (["--dataset", "rsna", "--data", "{data}", "epochs"], "error: unexpected argument 'epochs'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(args, message, stand_in, tmp_path):
    data = stand_in("rsna")
    done = _run(*[a.replace("{data}", data) for a in args], "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(message.replace("{data}", data)), done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.slow
def test_a_sweep_without_a_finished_trial_stops_the_protocol_naming_the_log(tmp_path):
    """A trial that fails (here: an image is missing) is failed by the sweep, which goes on; with no
    finished trial there is nothing to select, and the script stops there, showing the trial's error."""
    data = tmp_path / "data"
    data.mkdir()
    make_dataset(str(data), "rsna")
    missing = data / "stage_2_train_images" / "fa98b567-cb73-4b3a-8c10-dd5c7fd470d2.dcm"  # the first train image
    os.remove(missing)
    out = tmp_path / "out"
    done = _run(
        "--dataset", "rsna", "--data", data, "--out", out, *tiny("rsna"), "--lambda1_grid", "[1e-4]", timeout=300
    )
    assert done.returncode == 1, done.stdout + done.stderr
    log = out / "tune_sparse" / "trial_000" / "train.log"
    assert (
        f"error: the sparse λ selection selected no trial (did every trial fail?): see {out}/tune_sparse/results.md "
        f"and {log}"
    ) in done.stderr
    assert str(missing) in done.stderr.strip().splitlines()[-1]  # the trial's own error line
    assert not (out / "tune_dense").exists()


def _commands(stdout):
    """The ``python -m monai.bundle run ...`` command lines a dry run prints, as ``(run id, files, overrides)``
    read as the bundle's command line reads them (values as Python literals where they are)."""
    import shlex

    from monai_softcam.bundle import parse_command_line

    found = []
    for line in stdout.splitlines():
        if line.startswith("python -m monai.bundle run "):
            words = shlex.split(line)
            cli = parse_command_line(["monai/bundle/__main__.py", *words[3:]])
            files, overrides = cli.config_files, cli.overrides
            found.append((words[4], [os.path.join(REPO_ROOT, f) for f in files], overrides))
    return found


def _parser(files, overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=files)
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_the_dry_run_commands_resolve_on_the_stand_in_data(dataset, stand_in, tmp_path):
    """Every command the protocol runs names known config keys only, and the training ones resolve
    the preset's data, task and λ sweep on the stand-in data (no training: --dry_run)."""
    from monai_softcam.bundle import check_overrides

    data, out = stand_in(dataset), tmp_path / "out"
    done = _run(
        "--dataset",
        dataset,
        "--data",
        data,
        "--out",
        out,
        "--dry_run",
        *tiny(dataset),
        "--tune_settings#epsilon",
        "0.05",
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not out.exists()
    commands = _commands(done.stdout)
    assert [c[0] for c in commands] == ["tune", "tune", "training", "evaluate", "evaluate", "evaluate", "explain_eval"]
    preset = os.path.join(REPO_ROOT, "configs", f"{dataset}.yaml")
    for run_id, files, overrides in commands:
        assert preset in files and overrides["dataset_dir"] == data and overrides["epochs"] == 1
        assert overrides["image_size"] == [SIZE[dataset]] * 2 and overrides["num_workers"] == 0
        # the paper's metrics beside this project's where a report of SoftCAM's maps is written
        assert overrides.get("explanation#protocol") == ("both" if run_id in ("tune", "evaluate") else None)
        assert ("explain#sanity_cases" in overrides) == (run_id == "explain_eval")  # routed to the report only
        assert ("tune_settings#epsilon" in overrides) == (run_id == "tune")  # ... and to the sweeps only
        check_overrides(files, overrides)
    metric = "paper_activation_precision" if dataset == "rsna" else "consistency"
    spaces = []
    for run_id, files, overrides in commands[:3]:
        parser = _parser(files, overrides)
        task = parser.get_parsed_content("task")
        assert (task.image_size, task.in_channels) == ([SIZE[dataset]] * 2, 3)
        assert task.backbone == {"rsna": "vgg16", "fundus": "resnet50", "oct": "resnet50"}[dataset]
        spec = parser.get_parsed_content("data")
        for split in ("train", "val", "test"):
            items = spec.datalist(split, data, num_classes=2)
            assert len(items) == len(DATASETS[dataset][3][split]) and all(os.path.isfile(i["image"]) for i in items)
        if run_id == "tune":
            settings = parser.get_parsed_content("tune_settings")  # its own checks of the sweep and the metric
            assert (settings.metric, settings.epsilon, settings.grid_size) == (metric, 0.05, 2)
            assert overrides["tune_dir"] == overrides["bundle_root"]
            spaces.append((os.path.basename(overrides["tune_dir"]), settings.search_space))
            for name in settings.search_space:
                assert name in _parser(files[:-1], {})  # a key of the configs the trials train with (tune.yaml is last)
        else:
            assert task.architecture == "BlackBox" and overrides["resume"] is True
            assert parser.get_parsed_content("penalty") == {"lambda1": 0.0, "lambda2": 0.0}
            image = parser.get_parsed_content("train#dataset")[0]["image"]
            assert tuple(image.shape) == (3, SIZE[dataset], SIZE[dataset])
    assert spaces == [
        ("tune_sparse", {"penalty#lambda1": GRIDS["lambda1"], "penalty#lambda2": [0.0]}),
        ("tune_dense", {"penalty#lambda1": [0.0], "penalty#lambda2": GRIDS["lambda2"]}),
    ]


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


SLOW = os.environ.get("MONAI_SOFTCAM_SLOW_TESTS") == "1"


@pytest.mark.parametrize(
    "dataset",
    [
        "rsna",  # VGG-16 and the opacity boxes: the localisation metrics too
        pytest.param(
            "fundus", marks=pytest.mark.skipif(not SLOW, reason="about 2 min more: MONAI_SOFTCAM_SLOW_TESTS=1")
        ),
        pytest.param("oct", marks=pytest.mark.skipif(not SLOW, reason="about 2 min more: MONAI_SOFTCAM_SLOW_TESTS=1")),
    ],
)
@pytest.mark.slow
def test_the_protocol_end_to_end(dataset, stand_in, tmp_path):
    out = tmp_path / "out"
    done = _run("--dataset", dataset, "--data", stand_in(dataset), "--out", out, *tiny(dataset))
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    metric = "paper_activation_precision" if dataset == "rsna" else "consistency"
    for name, key in (("sparse", "penalty#lambda1"), ("dense", "penalty#lambda2")):
        folder = out / f"tune_{name}"
        selected = json.load(open(folder / "selected.json"))
        grid = GRIDS[key.split("#")[1]]
        other = "penalty#lambda2" if name == "sparse" else "penalty#lambda1"
        assert selected[key] in grid and selected[other] == 0.0 and selected["metric"] == metric
        assert _finite(selected["accuracy"]) and _finite(selected[metric])
        assert os.path.isfile(os.path.join(selected["ckpt_dir"], "model.pt"))
        assert os.path.dirname(selected["ckpt_dir"]) == selected["dir"] and selected["dir"].startswith(str(folder))
        rows = list(csv.DictReader(open(folder / "results.csv")))
        assert sorted(float(r[key]) for r in rows) == grid and all(r["state"] == "COMPLETE" for r in rows)
        assert f"{name:<6} {key.split('#')[1]} = {selected[key]:g} (trial {selected['number']})" in done.stdout

    for model in ("softcam_sparse", "softcam_dense", "blackbox"):
        report = json.load(open(out / "eval" / model / "metrics_test.json"))
        metrics, explained = report["metrics"], report.get("explanation_metrics", {})
        assert (
            _finite(metrics["accuracy"])
            and _finite(metrics["auc"])
            and metrics["n"] == len(DATASETS[dataset][3]["test"])
        )
        if model != "blackbox":  # SoftCAM's maps, in both protocols
            names = ["consistency", "gini"] + (
                ["activation_precision", "paper_activation_precision"] if dataset == "rsna" else []
            )
            assert all(_finite(explained[n]["mean"]) for n in names), explained
    assert os.path.isfile(out / "blackbox" / "models" / "model.pt")

    report = json.load(open(out / "report" / "report.json"))
    assert list(report["classification"]) == ["softcam_sparse", "softcam_dense", "blackbox"]
    assert {m: list(methods) for m, methods in report["explanation"].items()} == {
        "softcam_sparse": ["softcam"],
        "softcam_dense": ["softcam"],
        "blackbox": POSTHOC,
    }
    for model, methods in report["explanation"].items():
        assert _finite(report["classification"][model]["auc"])
        for method, values in methods.items():
            assert _finite(values["gini"]["mean"]) and _finite(values["consistency"]["mean"]), (model, method)
            for name in ("activation_precision", "paper_activation_precision"):
                if dataset == "rsna":  # one test image has an opacity box
                    assert values[name]["n"] == 1 and _finite(values[name]["mean"]), (model, method, name)
                else:  # no annotations: no localisation
                    assert values.get(name, {"n": 0})["n"] == 0
    for name in ("table.md", "paired.md"):  # printed at the end
        assert open(out / "report" / name).read().strip() in done.stdout
