"""Small bundles for tests (pytest here, ``SoftCAMTest`` inside Slicer): the repository's bundle
configs with a freshly initialised (seeded, untrained) network saved as the checkpoint. The configs
come from the source tree this module sits in (``bundle/configs``) or, in an installed extension,
from the copy its CMake puts in ``Resources/bundle/configs``."""

from __future__ import annotations

import os
import shutil
from typing import Sequence

from .dependencies import module_dir, package_root

__all__ = ["repository_bundle", "write_test_bundle"]


def repository_bundle() -> str:
    """The bundle whose configs test bundles copy: ``<repo>/bundle`` of the source tree this module
    sits in, or ``Resources/bundle`` of an installed extension."""
    candidates = [os.path.join(package_root() or "", "bundle"), os.path.join(module_dir(), "Resources", "bundle")]
    for bundle in candidates:
        if os.path.isfile(os.path.join(bundle, "configs", "inference.yaml")):
            return bundle
    raise FileNotFoundError(f"no bundle configs (configs/inference.yaml) in {' or '.join(candidates)}")


def write_test_bundle(folder: str, extra_configs: Sequence[str] = (), seed: int = 0) -> str:
    """Copy the repository's bundle configs into ``folder`` and save, as training would, the task
    (``models/task.json``: the repository's ``train.yaml`` task with ``extra_configs`` merged after
    it) and a seeded, untrained network of it (built from ``configs/inference.yaml`` +
    ``extra_configs``) as ``models/model.pt``."""
    import torch  # optional: installed on first use (Resources/requirements.txt)
    from monai.bundle import ConfigParser  # optional: installed on first use (Resources/requirements.txt)

    source = repository_bundle()
    os.makedirs(os.path.join(folder, "configs"), exist_ok=True)
    for name in ("metadata.json", "inference.yaml", "logging.conf"):
        shutil.copy(os.path.join(source, "configs", name), os.path.join(folder, "configs", name))
    trained = ConfigParser()
    trained.read_config(f=[os.path.join(source, "configs", "train.yaml"), *extra_configs])
    trained["bundle_root"] = folder
    trained.get_parsed_content("task").save(os.path.join(folder, "models", "task.json"))
    parser = ConfigParser()
    parser.read_config(f=[os.path.join(folder, "configs", "inference.yaml"), *extra_configs])
    parser["bundle_root"] = folder
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), os.path.join(folder, "models", "model.pt"))
    return folder
