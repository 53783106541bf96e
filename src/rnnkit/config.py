"""Checked conversion between config dataclasses and JSON.

Configs are plain dataclasses with commented fields (see `lm.ModelConfig`, `train.TrainConfig`).
They are saved as JSON next to the weights; reading one back rejects unknown keys and ill-typed
values by name, so a tampered or mistyped `config.json` fails with a clear message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from .errors import RnnkitError

C = TypeVar("C")


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[C], data: Any, where: str = "config") -> C:
    """Build `cls` from `data`, checking every key and type; raises RnnkitError naming the field."""
    if not isinstance(data, dict):
        raise RnnkitError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise RnnkitError(f"{where} has unknown keys {unknown}; known keys are {sorted(fields)}")
    values = {}
    for name, value in data.items():
        values[name] = check_type(value, hints[name], f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as e:  # a required field is missing
        raise RnnkitError(f"{where} is incomplete: {e}") from None


def check_type(value: Any, hint: Any, where: str) -> Any:
    """`value` if it fits the type hint (int, float, str, bool, X | None, list[X]), else an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return check_type(value, hint, where)
    if origin is list:
        if not isinstance(value, list):
            raise RnnkitError(f"{where} must be a list, got {value!r}")
        return [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint in (list, dict):
        if not isinstance(value, hint):
            raise RnnkitError(f"{where} must be a {hint.__name__}, got {value!r}")
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"unsupported config type {hint} for {where}")
    if not ok:
        raise RnnkitError(f"{where} must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value
