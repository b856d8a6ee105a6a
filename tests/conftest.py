import os
import sys

import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")
sys.path.insert(0, TESTS_DIR)


def package_requirements() -> list[str]:
    """monai_softcam's dependencies as ``pyproject.toml`` declares them (``[project] dependencies``)."""
    import tomllib

    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


# one thread per process when pytest-xdist runs tests in parallel worker processes (bash scripts/test.sh
# does, one worker per core): the workers share the cores instead of oversubscribing them
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # and the bundle runs they start
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory):
    """One tiny 2D demo model (32 px, two epochs), trained once through the real command line and
    shared by every test that needs *a* trained model: ``(bundle_root, the finished training process)``.
    Tests may add outputs of their own beside it (evaluation reports, inference folders) but change
    nothing it holds; one that needs to, copies it."""
    from bundle_helpers import train

    root = tmp_path_factory.mktemp("trained_bundle")
    return root, train(root)


@pytest.fixture(scope="session")
def trained_bundle_3d(tmp_path_factory):
    """One tiny 3D demo model (configs/demo3d.yaml + tests/configs/tiny3d.yaml: 24^3 volumes, resnet10,
    'auto' statistics), trained once through the real command line, for every test that needs a
    trained 3D model: ``(bundle_root, the finished training process)``; used as trained_bundle is."""
    from bundle_helpers import TRAIN, bundle

    root = tmp_path_factory.mktemp("trained_bundle_3d") / "b"
    configs = [
        TRAIN,
        os.path.join(REPO_ROOT, "configs", "demo3d.yaml"),
        os.path.join(TESTS_DIR, "configs", "tiny3d.yaml"),
    ]
    return str(root), bundle("training", configs, "--bundle_root", str(root))


def metric_settings(**given):
    """An :class:`~monai_softcam.metrics.ExplanationSettings` with the neutral defaults of the metric
    functions (each sample's label, no pointing tolerance, no dilation), ``given`` settings replacing them."""
    from monai_softcam.metrics import ExplanationSettings

    return ExplanationSettings(**{"explained_class": None, "pointing_tolerance": 0, "dilation": 1, **given})
