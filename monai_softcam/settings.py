"""The types and ranges of the bundle's settings, declared once as a JSON schema and checked before any work.

:data:`SCHEMA` describes the config keys a user sets (``epochs``, ``batch_size``, ``learning_rate``, ``device``,
``eval_split``, the tuning search space, ...) by their config ids. The configs hand the
values they use to :func:`~monai_softcam.bundle.start` (the first step of every run id) as ``checked_settings``,
and :func:`check_settings` validates them with ``jsonschema``: the first wrong value ends the run with a
:class:`~monai_softcam.utils.ConfigError` naming the key, the value and what is allowed, before data is read or
a model built. Keys the schema does not name pass unchecked; a value of ``null`` is "not set" (evaluation and
inference take the trained task's)."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import jsonschema
import torch

from .data import CACHE_MODES, SAMPLING_MODES
from .data.datalist import SPLITS
from .guidance import GUIDANCE_METHODS, GUIDANCE_MODES
from .utils import ConfigError

__all__ = ["SCHEMA", "check_settings", "flatten_settings"]


def _integer(minimum: int, text: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": text}


def _number(text: str, minimum: float = 0.0, exclusive: bool = False, maximum: float = 1e6) -> dict[str, Any]:
    low = {"exclusiveMinimum": minimum} if exclusive else {"minimum": minimum}
    return {"type": "number", **low, "maximum": maximum, "description": text}  # a maximum also refuses inf and nan


def _choice(values: Any, text: str = "") -> dict[str, Any]:
    values = list(values)
    return {"enum": values, "description": text or "one of " + ", ".join(map(str, values))}


_SIZE = {
    "type": ["array", "null"],
    "items": {"type": "integer", "minimum": 1},
    "minItems": 2,
    "maxItems": 3,
    "description": "a list of 2 (2D) or 3 (3D) positive integers, e.g. [224, 224]",
}

_SEARCH_VALUES = {
    "oneOf": [
        {"type": "array", "minItems": 1},
        {
            "type": "object",
            "properties": {"low": {"type": "number"}, "high": {"type": "number"}, "log": {"type": "boolean"}},
            "required": ["low", "high"],
            "additionalProperties": False,
        },
    ],
    "description": "a list of values (a grid) or {low, high, log} (a range)",
}

#: the checked settings by config id (``#`` separates nested keys, as on the command line)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "epochs": _integer(1, "a positive integer"),
        "batch_size": _integer(1, "an integer >= 1"),
        "learning_rate": _number("a finite number > 0 (e.g. 1.0e-3)", exclusive=True, maximum=10.0),
        "weight_decay": _number("a finite number >= 0", maximum=10.0),
        "lr_eta_min": _number("a finite number >= 0", maximum=10.0),
        "lr_cosine_end": {
            "anyOf": [_number("", maximum=10.0), {"type": "null"}],
            "description": "a number >= 0, or null",
        },
        "val_interval": _integer(1, "a positive integer (epochs between validations)"),
        "early_stop_patience": _integer(0, "an integer >= 0 (0: never stop early)"),
        "num_workers": _integer(0, "an integer >= 0"),
        "seed": {"type": ["integer", "null"], "description": "an integer, or null"},
        "cache_rate": _number("a number from 0 to 1", maximum=1.0),
        "image_size": _SIZE,
        "spatial_dims": {"enum": [2, 3, None], "description": "2 or 3"},
        "in_channels": {"type": ["integer", "null"], "minimum": 1, "description": "a positive integer"},
        "resize": _choice(["stretch", "crop", "border", "none", None], "stretch, crop, border or none"),
        "eval_split": _choice(SPLITS),
        "sampling": _choice(SAMPLING_MODES),
        "cache": _choice(CACHE_MODES),
        "device": {"format": "torch-device", "description": "cpu, cuda or cuda:<index> of a GPU of this machine"},
        "max_image_pixels": {"type": ["integer", "null"], "minimum": 1, "description": "a positive integer, or null"},
        "sw_batch_size": _integer(1, "an integer >= 1"),
        "sw_overlap": {"type": "number", "minimum": 0.0, "exclusiveMaximum": 1.0, "description": "a number in [0, 1)"},
        "penalty#lambda1": _number("a finite number >= 0"),
        "penalty#lambda2": _number("a finite number >= 0"),
        "penalty_squared_l2": _choice([True, False, "true", "false"], "true or false"),
        "drop_last": _choice([True, False, "true", "false"], "true or false"),
        "guidance#lambda": _number("a finite number >= 0 (0: no guidance)"),
        "guidance#mode": _choice(GUIDANCE_MODES),
        "guidance#method": _choice(GUIDANCE_METHODS),
        "guidance#fraction": _number("a number from 0 to 1", maximum=1.0),
        "guidance#annotated_class": _integer(0, "a class index (an integer >= 0)"),
        "guidance#mask_column": {"type": ["string", "null"], "description": "a CSV column name, or null"},
        "tune_settings#search_space": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _SEARCH_VALUES,
            "description": "{config id: a list of values or {low, high, log}}",
        },
    },
}

#: sections whose every key the schema names: another key there is a typo, refused
_CLOSED_SECTIONS = ("guidance",)

_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("torch-device", raises=(ValueError, RuntimeError))
def _is_device(value: Any) -> bool:
    """A ``torch.device`` (or its name) this machine has."""
    device = value if isinstance(value, torch.device) else torch.device(str(value))
    if device.type == "cuda":
        index = device.index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("MPS is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"device type {device.type!r} is not supported here")
    return True


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(config id, value)`` of a nested settings dict (``{"penalty": {"lambda1": 0.1}}`` gives
    ``penalty#lambda1``); a dict is a value itself when the schema names its id."""
    for key, value in settings.items():
        ident = f"{prefix}#{key}" if prefix else str(key)
        if isinstance(value, Mapping) and ident not in SCHEMA["properties"]:
            yield from flatten_settings(value, ident)
        else:
            yield ident, value


def _plain(value: Any) -> Any:
    """``value`` as JSON types (tuples as lists, torch devices kept for the format check)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _problem(ident: str, value: Any) -> str:
    """ "" or what is wrong with ``value`` for the config id ``ident`` (ids the schema does not name pass)."""
    schema = SCHEMA["properties"].get(ident)
    if schema is None:
        return ""
    validator = jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)
    error = jsonschema.exceptions.best_match(validator.iter_errors(_plain(value)))
    nan = isinstance(value, float) and math.isnan(value)  # NaN passes every comparison of a JSON schema
    if error is None and not (nan and schema.get("type") == "number"):
        return ""
    if error is None:
        return f": {value!r} is not allowed; allowed: {schema['description']}"
    where = "".join(f"#{p}" for p in error.absolute_path)  # the item of a list or dict that is wrong
    cause = f" ({error.cause})" if error.cause else ""
    shown = error.instance if error.absolute_path else value
    return f"{where}: {shown!r} is not allowed{cause}; allowed: {schema['description']}"


def check_settings(settings: Mapping[str, Any] | None) -> None:
    """Validate ``settings`` (config id, or nested dicts of them, to value) against :data:`SCHEMA`; the values a
    search space gives a checked key are checked too. A :class:`~monai_softcam.utils.ConfigError` names the
    first wrong key, its value and what is allowed."""
    for ident, value in flatten_settings(settings or {}):
        section = ident.split("#")[0]
        if section in _CLOSED_SECTIONS and ident not in SCHEMA["properties"]:
            known = sorted(k.split("#", 1)[1] for k in SCHEMA["properties"] if k.startswith(section + "#"))
            raise ConfigError(f"--{ident}: {section} has no such setting; its settings are {', '.join(known)}")
        problem = _problem(ident, value)
        if problem:
            raise ConfigError(f"--{ident}{problem}")
        if ident == "tune_settings#search_space" and value is not None:
            for key, values in value.items():
                candidates = values if isinstance(values, list) else [values.get("low"), values.get("high")]
                for candidate in candidates:
                    problem = _problem(key, candidate)
                    if problem:
                        raise ConfigError(f"--tune_settings#search_space#{key}{problem}")
