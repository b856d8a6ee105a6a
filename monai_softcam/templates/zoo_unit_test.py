"""Model Zoo unit tests of the bundle_name bundle (written by monai_softcam package-bundle).

Train, train + evaluate and inference run through ConfigWorkflow and the Zoo's check_workflow with
check_properties=True, on a small demo dataset that the bundle's own generator writes; checkpoints
and outputs go to a temporary folder (the bundle's models/ is left as downloaded).
"""

import os
import shutil
import sys
import tempfile
import unittest

from monai.bundle import ConfigWorkflow
from utils import check_workflow

BUNDLE_NAME = "bundle_name"  # package-bundle writes the bundle's name here
QUICK_TASK: dict = {}  # package-bundle writes a smaller image_size here for a quick run
BUNDLE_ROOT = os.path.join("models", BUNDLE_NAME)
CONFIGS = os.path.join(BUNDLE_ROOT, "configs")
if os.path.abspath(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, os.path.abspath(BUNDLE_ROOT))  # the configs import the bundle's scripts/


def test_order(name1, name2):
    def order(name):
        return 1 if "train" in name and "eval" not in name else 2 if "eval" in name else 3

    return order(name1) - order(name2)


class TestBundle(unittest.TestCase):  # package-bundle names it after the bundle
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp()
        cls.override = {
            "bundle_root": BUNDLE_ROOT,
            "demo_dir": os.path.join(cls.work, "demo"),
            "ckpt_dir": os.path.join(cls.work, "models"),
            "output_dir": os.path.join(cls.work, "eval"),
            "epochs": 1,
            "batch_size": 4,
            "num_workers": 0,
            "demo_data#size": 48,
            "demo_data#num_train": 8,
            "demo_data#num_val": 4,
            "demo_data#num_test": 4,
            **QUICK_TASK,
        }

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work)

    def workflow(self, workflow_type, configs, **override):
        return ConfigWorkflow(
            workflow_type=workflow_type,
            config_file=[os.path.join(CONFIGS, c) for c in configs],
            logging_file=os.path.join(CONFIGS, "logging.conf"),
            meta_file=os.path.join(CONFIGS, "metadata.json"),
            **override,
        )

    def train(self):
        check_workflow(self.workflow("train", ["train.yaml"], **self.override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work, "models", "model.pt")))

    def test_train_config(self):
        self.train()

    def test_train_eval_config(self):
        if not os.path.isfile(os.path.join(self.work, "models", "model.pt")):
            self.train()
        # evaluate.yaml overrides train.yaml, so the workflow type stays "train", as in the Zoo's other tests
        check_workflow(self.workflow("train", ["train.yaml", "evaluate.yaml"], **self.override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work, "eval", "metrics_test.json")))

    def test_infer_config(self):
        if not os.path.isfile(os.path.join(self.work, "models", "model.pt")):
            self.train()
        override = {
            "bundle_root": BUNDLE_ROOT,
            "ckpt_dir": os.path.join(self.work, "models"),
            "input_path": os.path.join(self.work, "demo", "test.csv"),
            "dataset_dir": os.path.join(self.work, "demo"),
            "output_dir": os.path.join(self.work, "inference"),
        }
        check_workflow(self.workflow("infer", ["inference.yaml"], **override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work, "inference", "predictions.csv")))


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
