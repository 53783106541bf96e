"""Checked conversion between config dataclasses and JSON.

Configs are plain dataclasses with commented fields (see `lm.ModelConfig`, `train.TrainConfig`).
They are saved as JSON next to the weights; reading one back rejects unknown keys and ill-typed
values by name, so a tampered or mistyped `config.json` fails with a clear message.

`parse_json` is how rnnkit reads every JSON text, from a file or a request: whatever the text, it
returns the value or raises ValueError.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
import types
import typing
from typing import Any, TypeVar

from .errors import RnnkitError

C = TypeVar("C")


def parse_json(text: str | bytes) -> Any:
    """The value of a JSON text; ValueError (with a message fit for a user) if there is none.

    `json.loads` fails in more ways than JSONDecodeError: an integer longer than Python converts
    (4,300 digits) is a plain ValueError, and deep nesting a RecursionError.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as e:
        if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
            raise
        raise ValueError(f"an integer has more than {sys.get_int_max_str_digits()} digits") \
            from None


def brief(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters for a message (a value may be an integer of 4,000 digits)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[C], data: Any, where: str = "config", in_file: bool = False) -> C:
    """Build `cls` from `data`, checking every key and type; raises RnnkitError naming the field.
    `in_file`: `where` names a file the user may have edited, which the config's own checks
    name too (a command's options are named by their messages)."""
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
    except RnnkitError as e:  # a value the config's own checks refuse
        if not in_file:
            raise
        raise RnnkitError(f"{where} holds a value rnnkit refuses ({e}); correct it there") \
            from None


def check_fields(config) -> None:
    """Every field of a config dataclass checked against its type hint, as `from_dict` checks
    a saved one (floats made floats): a config built in Python gets the same one-line errors,
    not a wrong model or a deep TypeError; and no float is NaN or infinite. A nested config is
    its owner's to check."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        where = f"{type(config).__name__}.{f.name}"
        value = check_type(value, hint, where)
        if isinstance(value, float) and not math.isfinite(value):  # no setting is NaN or inf
            raise RnnkitError(f"{where} must be a finite number, got {value}")
        object.__setattr__(config, f.name, value)


def check_type(value: Any, hint: Any, where: str) -> Any:
    """`value` if it fits the type hint (int, float, str, bool, X | None, list[X], a nested
    config dataclass), else an error."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return check_type(value, hint, where)
    if origin is list:
        if not isinstance(value, list):
            raise RnnkitError(f"{where} must be a list, got {brief(repr(value))}")
        return [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint in (list, dict):
        if not isinstance(value, hint):
            raise RnnkitError(f"{where} must be a {hint.__name__}, got {brief(repr(value))}")
        return value
    ok = {  # NumPy's integers and floats (a length from an array) count as numbers
        # NumPy's bool is not a bool; told by its dtype, without importing NumPy here
        bool: isinstance(value, bool) or (getattr(value, "shape", None) == ()
                                          and getattr(value, "dtype", None) == "bool"),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"unsupported config type {hint} for {where}")
    if not ok:
        raise RnnkitError(f"{where} must be {hint.__name__}, got {brief(repr(value))}")
    if hint is int:
        return int(value)
    if hint is bool:
        return bool(value)
    if hint is not float:
        return value
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the largest float, about 1.8e308
        raise RnnkitError(f"{where} must be a float, got {brief(repr(value))}, too large for "
                          "one") from None
    return number
