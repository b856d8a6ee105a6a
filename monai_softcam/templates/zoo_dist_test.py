"""Model Zoo distributed test of the bundle_name bundle.

Written by monai_softcam package-bundle: training with configs/train.yaml + configs/multi_gpu_train.yaml through
the Zoo's multi-GPU command (ci/unit_tests/utils.py::export_config_and_run_mgpu_cmd: the merged, overridden config
exported, its properties checked in this process, then ``torchrun --nproc_per_node=N -m monai.bundle run``), on a
small demo dataset that the bundle's own generator writes; checkpoints and outputs go to a temporary folder (the
bundle's models/ and configs/ are left as downloaded). The Zoo runs it as ``torchrun ci/unit_tests/runner.py --b
<name> --dist True``: the property check in this process joins the one-process group of that torchrun.

One process per GPU (NCCL), as the Zoo's other distributed tests; where no GPU is visible (a CPU machine, or
CUDA_VISIBLE_DEVICES=""), two CPU processes: the bundle joins the process group with gloo then.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

import torch
from monai.bundle import ConfigParser
from utils import export_config_and_run_mgpu_cmd

BUNDLE_NAME = "bundle_name"  # package-bundle writes the bundle's name here
QUICK_TASK: dict = {}  # package-bundle writes a smaller image_size here for a quick run
BUNDLE_ROOT = os.path.join("models", BUNDLE_NAME)
CONFIGS = os.path.join(BUNDLE_ROOT, "configs")
if os.path.abspath(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, os.path.abspath(BUNDLE_ROOT))  # the configs import the bundle's scripts/
# one process per GPU (NCCL); no GPU: two CPU processes (gloo)
NPROC = torch.cuda.device_count() or 2


class TestBundle(unittest.TestCase):  # package-bundle names it after the bundle
    def setUp(self):
        self.work = tempfile.mkdtemp()
        self.override = {
            "bundle_root": BUNDLE_ROOT,
            "demo_dir": os.path.join(self.work, "demo"),
            "ckpt_dir": os.path.join(self.work, "models"),
            "output_dir": os.path.join(self.work, "eval"),
            "epochs": 1,
            "batch_size": 4,  # per process
            "num_workers": 0,
            "demo_data#size": 48,
            "demo_data#num_train": 4 * NPROC,  # a batch for every process
            "demo_data#num_val": 2 * NPROC,  # a shard of the validation split for every process
            "demo_data#num_test": 2,
            **QUICK_TASK,
        }
        # the demo dataset, made once here by the bundle's own generator (the processes find it in demo_dir)
        parser = ConfigParser()
        parser.read_config(os.path.join(CONFIGS, "train.yaml"))
        parser.update(pairs=self.override)
        parser.get_parsed_content("prepare_data")()

    def tearDown(self):
        if torch.distributed.is_initialized():  # the property check's one-process group
            torch.distributed.destroy_process_group()
        shutil.rmtree(self.work)

    def test_train_mgpu_config(self):
        export_config_and_run_mgpu_cmd(
            config_file=[os.path.join(CONFIGS, "train.yaml"), os.path.join(CONFIGS, "multi_gpu_train.yaml")],
            logging_file=os.path.join(CONFIGS, "logging.conf"),
            meta_file=os.path.join(CONFIGS, "metadata.json"),
            override_dict=self.override,
            output_path=os.path.join(self.work, "train_override.json"),
            ngpu=NPROC,
            check_config=True,
        )  # a process that fails fails the test (subprocess.check_call)
        for name in ("model.pt", "model_best_auc.pt", "task.json"):  # written by the main process only
            self.assertTrue(os.path.isfile(os.path.join(self.work, "models", name)), name)
        with open(os.path.join(self.work, "eval", "metrics_val.json"), encoding="utf-8") as f:
            report = json.load(f)
        # the validation metrics gathered over all processes' shards
        self.assertEqual(report["metrics"]["n"], self.override["demo_data#num_val"])


if __name__ == "__main__":
    unittest.main()
