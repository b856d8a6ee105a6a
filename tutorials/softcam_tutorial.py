# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: train SoftCAM, look at its evidence, measure it
#
# This notebook runs the bundle from Python, as MONAI apps and the Model Zoo's tests run bundles
# (`ConfigWorkflow`): it trains a SoftCAM classifier on the built-in demo data, shows the evidence
# maps of a few validation cases, runs the explanation report, and reads the evidence of a region.
# Every cell runs as it is; the documentation site shows it executed at a small size
# (`TUTORIAL_SIZE=small`: 32-px images, two epochs, a few dozen images). Leave that variable unset to run
# the real demo (96 px, 12 epochs: about 5 minutes on two CPU cores).
#
# The source is `tutorials/softcam_tutorial.py` (a [jupytext](https://jupytext.readthedocs.io)
# script): run it with `python tutorials/softcam_tutorial.py`, or open it as a notebook.

# %%
import csv
import json
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath("__file__")), ".."))
if not os.path.isdir(os.path.join(REPO, "bundle")):  # run from the repository root
    REPO = os.path.abspath(".")
CONFIGS = os.path.join(REPO, "bundle", "configs")
SMALL = os.environ.get("TUTORIAL_SIZE") == "small"
ROOT = os.environ.get("TUTORIAL_DIR") or tempfile.mkdtemp(prefix="softcam_tutorial_")
settings = {"bundle_root": ROOT, "device": "cpu"}
# the small size: 32-px images, fewer of them, two epochs (training only: later runs read the trained task)
small = (
    {
        "image_size": [32, 32],
        "epochs": 2,
        "batch_size": 8,
        "demo_data#num_train": 24,
        "demo_data#num_val": 12,
        "demo_data#num_test": 12,
        "demo_data#radius": [3.0, 5.0],
    }
    if SMALL
    else {}
)
print("bundle folder:", ROOT)

# %% [markdown]
# ## 1. Train
#
# `train.yaml` generates the demo data on first use (images with and without a low-contrast lesion,
# with distractors in both classes, and the true lesion masks), trains, keeps the model with the best
# validation accuracy and ends with a report on the validation split. The keyword arguments are the
# same overrides as `--key value` on the command line.


# %%
def run(run_id, configs, workflow_type, **overrides):
    """Run one run id of the bundle in this process (initialize, run, finalize)."""
    workflow = ConfigWorkflow(
        config_file=[os.path.join(CONFIGS, c) for c in configs],
        workflow_type=workflow_type,
        run_id=run_id,
        logging_file=False,
        **settings,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


run("training", ["train.yaml"], "train", **small)
metrics = json.load(open(os.path.join(ROOT, "eval", "metrics_val.json")))
{k: round(v, 3) for k, v in metrics["metrics"].items() if isinstance(v, float)}

# %% [markdown]
# The model and the task it was trained for travel together: `models/task.json` says what the model
# classifies and how its input is prepared, so evaluation and inference need no preset.

# %%
task = json.load(open(os.path.join(ROOT, "models", "task.json")))
{k: task[k] for k in ("class_names", "image_size", "intensity_mean", "intensity_std", "backbone")}

# %% [markdown]
# ## 2. The evidence maps of a few cases
#
# A SoftCAM network returns one signed map per class; each class's logit is its map's mean. Here the
# trained network runs on four validation images; red is evidence for the class, blue against it.

# %%
from monai_softcam.checkpoint import load_weights  # noqa: E402
from monai_softcam.data import CSVDataSpec  # noqa: E402
from monai_softcam.task import Task  # noqa: E402

trained = Task.read(os.path.join(ROOT, "models", "task.json"))
network = load_weights(trained.network(return_maps=True), os.path.join(ROOT, "models", "model.pt")).eval()
spec = CSVDataSpec(label_column="bin_target", mask_column="mask")
items = spec.datalist("val", os.path.join(ROOT, "data", "demo"), num_classes=2)
lesions = [item for item in items if item["label"] == 1][:2] + [item for item in items if item["label"] == 0][:2]
prepare = trained.preprocessing()
fig, axes = plt.subplots(len(lesions), 3, figsize=(7, 2.3 * len(lesions)))
for row, item in zip(axes, lesions):
    sample = prepare(dict(item))
    with torch.no_grad():
        out = network(sample["image"][None])
    maps = torch.nn.functional.interpolate(out["evidence_maps"], size=trained.image_size, mode="bilinear")[0]
    probs = torch.softmax(out["logits"], 1)[0]
    limit = float(maps.abs().max())
    row[0].imshow(sample["image"][0].T, cmap="gray")
    if "mask" in sample:
        row[0].contour(sample["mask"][0].T, levels=[0.5], colors="yellow", linewidths=1)
    row[0].set_title(f"label: {trained.class_names[item['label']]}", fontsize=9)
    for c, name in enumerate(trained.class_names):
        row[c + 1].imshow(sample["image"][0].T, cmap="gray")
        row[c + 1].imshow(maps[c].T, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.6)
        row[c + 1].set_title(f"{name}: p={float(probs[c]):.2f}, logit={float(out['logits'][0, c]):.2f}", fontsize=9)
    for ax in row:
        ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Completeness is exact: each logit is its map's mean, for every case and class.

# %%
with torch.no_grad():
    out = network(torch.stack([prepare(dict(item))["image"] for item in lesions]))
float((out["logits"] - out["evidence_maps"].flatten(2).mean(2)).abs().max())

# %% [markdown]
# ## 3. The explanation report
#
# `explain_eval` assesses the maps against the true lesion masks, next to post-hoc explanations of
# the same model (here Grad-CAM), with bootstrap confidence intervals and paired differences. It
# writes `report.json`, tables, curves, a gallery and an `index.html`.

# %%
run(
    "explain_eval",
    ["train.yaml", "evaluate.yaml", "explain.yaml"],
    "eval",
    **{"explain#methods": ["softcam", "gradcam"], "explain#sanity_cases": 1, "explain#gallery_cases": 2},
)
report = json.load(open(os.path.join(ROOT, "eval", "explanations_test", "report.json")))
for method in ("softcam", "gradcam"):
    values = report["explanation"]["softcam"][method]
    print(
        f"{method:>8}: activation precision {values['activation_precision']['mean']:.3f}, "
        f"pointing game {values['pointing_game']['mean']:.3f}, deletion AUC {values['deletion_auc']['mean']:.3f}"
    )

# %%
plt.figure(figsize=(8, 4))
plt.imshow(plt.imread(os.path.join(ROOT, "eval", "explanations_test", "gallery.png")))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 4. Region evidence
#
# Because a logit is the mean of its map, a region's share of it is exact. Give inference a label map
# on the input's grid (here the lesion mask of one test image: label 1 inside, 0 outside), and it
# writes `regions.csv`: each region's evidence and its share of every logit. The shares of all
# regions add up to the logit.

# %%
test = spec.datalist("test", os.path.join(ROOT, "data", "demo"), num_classes=2)
case = next(item for item in test if item["label"] == 1)
out_dir = os.path.join(ROOT, "eval", "inference_regions")
run("inference", ["inference.yaml"], "infer", input_path=case["image"], regions=case["mask"], output_dir=out_dir)
rows = list(csv.DictReader(open(os.path.join(out_dir, "regions.csv"))))
for row in rows:
    print(
        f"{row['class']:>9} {row['region']:>8}: share of the logit {float(row['share_of_logit']):+.3f} "
        f"(logit {float(row['logit']):+.3f})"
    )
lesion_rows = [r for r in rows if r["class"] == "lesion"]
print(
    "sum of the shares - logit:",
    round(sum(float(r["share_of_logit"]) for r in lesion_rows) - float(lesion_rows[0]["logit"]), 6),
)
assert np.isclose(sum(float(r["share_of_logit"]) for r in lesion_rows), float(lesion_rows[0]["logit"]), atol=1e-4)
