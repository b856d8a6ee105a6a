"""Deterministic stand-in weights for torchvision-format state dicts (shared by tests and fixture script).

The fixture ``fixtures/torchvision_reference.pt`` holds, for a few torchvision architectures,
the list of ``state_dict`` keys with their shapes and dtypes, and the trunk's output on a fixed
input when the network is filled with :func:`make_weights`. It was produced once by
``fixtures/make_torchvision_reference.py`` with real torchvision model definitions, so the tests
can check that our backbones read torchvision files and compute the same features, without
torchvision installed.
"""

from __future__ import annotations

import math

import torch

ARCHS = ("resnet18", "resnet50", "vgg16", "vgg16_bn", "densenet121")
INPUT_SHAPE = (1, 3, 64, 64)


def reference_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.rand(INPUT_SHAPE, generator=g)


def make_weights(spec: list[tuple[str, tuple[int, ...], str]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the given (key, shape, dtype) entries and well-scaled deterministic values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in spec:
        if dtype != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "running_var":
            value = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif leaf == "running_mean":
            value = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and leaf == "weight":  # batch-norm scale
            value = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # biases
            value = 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
        state[key] = value
    return state
