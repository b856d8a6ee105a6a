"""monai_softcam.checkpoint: the one reader (unwrapping rules, errors), the one mismatch report,
the atomic writer, and the source scan that keeps ``torch.load`` in that one place."""

import ast
import os

import pytest
import torch
from conftest import REPO_ROOT
from ignite.engine import Engine
from ignite.handlers import Checkpoint, DiskSaver

from monai_softcam.checkpoint import (
    CheckpointError,
    StateMismatch,
    describe_network,
    load_state_checked,
    load_weights,
    portable_state_dict,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
    unwrap_state_dict,
)
from monai_softcam.networks import PretrainedWeightsError, SoftCAM


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))


def _save(obj, tmp_path, name="ckpt.pt"):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "network"])
@pytest.mark.parametrize("ddp", [False, True])
def test_every_wrapper_and_the_ddp_prefix_unwrap_to_the_state_dict(wrapper, ddp, tmp_path):
    state = _net().state_dict()
    stored = {f"module.{k}": v for k, v in state.items()} if ddp else dict(state)
    if wrapper:
        stored = {wrapper: stored, "epoch": 3}
    path = _save(stored, tmp_path)
    read = read_state_dict(path)
    assert list(read) == list(state)
    for key in state:
        torch.testing.assert_close(read[key], state[key])
    net = load_weights(_net(), path)  # the same rules for loading into a network
    torch.testing.assert_close(net.state_dict()["0.weight"], state["0.weight"])


def test_unwrapping_rules_in_detail():
    t = torch.zeros(1)
    # the first wrapper present wins, in the order state_dict, model, network
    assert unwrap_state_dict({"model": {"a": t}, "state_dict": {"b": t}}) == {"b": t}
    # the prefix goes only when every key has it (a submodule may be called "module")
    assert list(unwrap_state_dict({"module.a": t, "b": t})) == ["module.a", "b"]
    assert list(unwrap_state_dict({"module.module.a": t})) == ["module.a"]
    # a training state: the model's entry
    assert unwrap_state_dict({"model": {"a": t}, "optimizer": {"state": {}}, "trainer": {"epoch": 2}}) == {"a": t}
    for not_a_state_dict in ({"epoch": 3}, [t], t, {"model": [t]}):
        with pytest.raises(CheckpointError, match="x.pt does not hold a state dict"):
            unwrap_state_dict(not_a_state_dict, "x.pt")


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*none.pt"):
        read_checkpoint(tmp_path / "none.pt")
    with pytest.raises(FileNotFoundError, match="model checkpoint not found: .*none.pt"):
        load_weights(_net(), str(tmp_path / "none.pt"))
    with pytest.raises(FileNotFoundError, match="not found: \\(no path given\\)"):
        read_checkpoint("")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="corrupt.pt is not a readable PyTorch checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="corrupt.pt is not a readable PyTorch model checkpoint"):
        load_weights(_net(), str(bad))
    # weights_only refuses arbitrary objects: the file is unreadable, not executed
    pickled = _save({"model": _net()}, tmp_path, "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt is not a readable PyTorch checkpoint"):
        read_checkpoint(pickled)
    meta = _save({"epoch": 3}, tmp_path, "meta.pt")
    with pytest.raises(CheckpointError, match="meta.pt does not hold a state dict"):
        load_weights(_net(), meta)
    assert issubclass(CheckpointError, ValueError) and issubclass(PretrainedWeightsError, CheckpointError)


def test_one_report_lists_missing_unexpected_and_shapes(tmp_path):
    state = _net().state_dict()
    del state["1.bias"]  # missing
    state["2.weight"] = torch.zeros(1)  # unexpected
    state["0.weight"] = torch.zeros(4, 2)  # shape
    path = _save(state, tmp_path, "other.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(_net(), path)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {path} does not fit the network Sequential; ")
    assert "shape mismatch (1): 0.weight: checkpoint (4, 2) vs network (3, 2)" in msg
    assert "missing keys (1): 1.bias" in msg and "unexpected keys (1): 2.weight" in msg
    # nothing was loaded into the network
    fresh = _net()
    with pytest.raises(CheckpointError):
        load_state_checked(fresh, state, path)
    torch.testing.assert_close(fresh.state_dict()["1.weight"], _net().state_dict()["1.weight"])


def test_report_shows_the_first_keys_and_describes_the_network():
    many = StateMismatch(missing=[f"k{i}" for i in range(25)])
    softcam = SoftCAM("resnet10", num_classes=3, in_channels=1)
    msg = many.message("m.pt", softcam)
    assert msg == (
        "checkpoint m.pt does not fit the network "
        "SoftCAM(backbone=resnet10, num_classes=3, spatial_dims=2, in_channels=1); "
        "missing keys (25): " + ", ".join(f"k{i}" for i in range(10)) + ", ... (15 more)"
    )
    assert not StateMismatch.compare(softcam.state_dict(), softcam.state_dict())
    assert describe_network(torch.nn.DataParallel(softcam)).startswith("SoftCAM(backbone=resnet10")
    assert describe_network(softcam.backbone) == "Backbone(backbone=resnet10, spatial_dims=2, in_channels=1)"


def test_portable_state_dict_unwraps_and_is_contiguous_on_cpu():
    net = _net()
    net.register_buffer("strided", torch.rand(3, 4).t())
    assert not net.strided.is_contiguous()
    state = portable_state_dict(torch.nn.DataParallel(net))
    assert list(state) == list(net.state_dict())
    assert all(v.device.type == "cpu" and v.is_contiguous() and not v.requires_grad for v in state.values())
    torch.testing.assert_close(state["strided"], net.strided)


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "models" / "model.pt"  # the folder is created
    save_checkpoint({"a": torch.ones(2)}, path)
    assert torch.equal(read_state_dict(path)["a"], torch.ones(2))
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_checkpoint({"a": torch.zeros(2), "b": lambda: None}, path)  # fails while writing
    assert torch.equal(read_state_dict(path)["a"], torch.ones(2))  # the old file is intact
    assert os.listdir(tmp_path / "models") == ["model.pt"]  # and no temporary file is left
    save_checkpoint({"a": torch.zeros(2)}, str(path))
    assert torch.equal(read_state_dict(path)["a"], torch.zeros(2))


def test_ignite_checkpoint_removes_a_fixed_name_before_writing(tmp_path):
    """Why save_checkpoint does not use ignite's Checkpoint: with a fixed file name, Checkpoint
    deletes the existing file before it writes the new one (a kill in between loses the file)."""
    seen = []

    class Spy(DiskSaver):
        def __call__(self, checkpoint, filename, metadata=None):
            seen.append(os.path.exists(self.dirname / filename))
            super().__call__(checkpoint, filename, metadata)

    saver = Checkpoint({"model": _net()}, Spy(tmp_path, require_empty=False), filename_pattern="model.pt", n_saved=1)
    engine = Engine(lambda e, b: None)
    for iteration in (1, 2):
        engine.state.iteration = iteration
        saver(engine)
    assert seen == [False, False]  # at the second write, the previous model.pt was already gone


def _torch_load_uses(path: str) -> list[tuple[int, ast.Call | None]]:
    """Uses of ``torch.load`` in a source file (calls, aliases, ``from torch import load``);
    comments and docstrings are not code, so the AST does not see them."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    calls = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    uses = []
    for node in ast.walk(tree):
        is_torch = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch"
        if is_torch and node.attr == "load":
            uses.append((node.lineno, calls.get(id(node))))
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            uses += [(node.lineno, None) for alias in node.names if alias.name == "load"]
    return uses


def test_torch_load_is_called_in_exactly_one_place():
    found = []
    for top in ("monai_softcam", "slicer_extension"):
        for folder, _, files in os.walk(os.path.join(REPO_ROOT, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    found += [(os.path.relpath(path, REPO_ROOT), line, call) for line, call in _torch_load_uses(path)]
    calls = [(path, call is not None) for path, _, call in found]
    assert calls == [(os.path.join("monai_softcam", "checkpoint.py"), True)], found
    keywords = {k.arg: ast.literal_eval(k.value) for k in found[0][2].keywords}
    assert keywords == {"map_location": "cpu", "weights_only": True}
