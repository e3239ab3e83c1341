"""Typed pass options: each pass declares a frozen dataclass once; values are checked on arrival.

Fields carry their type (`bool`, `int`, `float`, `str`, `list[str]`, `Literal[...]` choices, and
`X | None` where "unset" is a real state), their default, a one-line help and, for numbers, their
closed range (`option(100, "…", lo=1, hi=100_000)`): every option that sizes a tensor or a buffer has
an upper bound, checked on arrival like the type. A class may add `check()` for open ranges and
cross-field rules. The
pipeline builds every step's options — defaults ← recipe ← `--set` — before the first pass runs,
so a bad value in the last step fails before anything is done.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from graphopt.core.errors import GraphoptError


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every pass's options (a pass without options uses it as is)."""

    def check(self) -> None:
        """Ranges and cross-field rules; raise OptionError with the option's name."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class OptionError(GraphoptError):
    pass


def help_of(cls: type[Options]) -> dict[str, str]:
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def describe(cls: type[Options]) -> dict[str, dict[str, Any]]:
    """Per option: default, type (as text), choices, help — what `graphopt passes` shows."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = {
            "default": default,
            "type": _type_text(hint),
            "choices": list(_choices(hint) or []) or None,
            "range": _range(f),
            "interval": interval_text(f),
            "help": f.metadata.get("help", ""),
        }
    return out


def build(cls: type[Options], pass_name: str, values: dict[str, Any]) -> Options:
    """An instance of `cls` from raw values (YAML scalars, strings from --set), fully checked."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, raw in values.items():
        if key not in known:
            names = ", ".join(known) or "none"
            raise OptionError(f"pass '{pass_name}' has no option '{key}' (options: {names})")
        kwargs[key] = _coerce(raw, hints[key], f"{pass_name}.{key}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in kwargs.items():
        bounds = _range(fields[key])
        if bounds and value is not None and not _within(value, bounds, _open(fields[key])):
            raise OptionError(f"option {pass_name}.{key} must be in {interval_text(fields[key])}; got {value!r}")
    options = cls(**kwargs)
    try:
        options.check()
    except OptionError as exc:
        raise OptionError(f"{pass_name}: {exc}") from None
    return options


def _range(f: dataclasses.Field) -> list[float | int | None] | None:
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    return None if lo is None and hi is None else [lo, hi]


def _open(f: dataclasses.Field) -> tuple[bool, bool]:
    return bool(f.metadata.get("lo_open")), bool(f.metadata.get("hi_open"))


def _within(value: float, bounds: list[float | int | None], is_open: tuple[bool, bool] = (False, False)) -> bool:
    lo, hi = bounds
    above = lo is None or (value > lo if is_open[0] else value >= lo)
    below = hi is None or (value < hi if is_open[1] else value <= hi)
    return above and below


def interval_text(f: dataclasses.Field) -> str | None:
    """An option's range as an interval: `[1, 100,000]`, `(0, 1]`; None when it has none."""
    bounds = _range(f)
    if bounds is None:
        return None
    lo, hi = ("-inf" if b is None and i == 0 else "inf" if b is None else f"{b:,}" if isinstance(b, int) else f"{b:g}"
              for i, b in enumerate(bounds))  # fmt: skip
    lo_open, hi_open = _open(f)
    return f"{'(' if lo_open or bounds[0] is None else '['}{lo}, {hi}{')' if hi_open or bounds[1] is None else ']'}"


def _optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _choices(hint: Any) -> tuple[Any, ...] | None:
    hint, _ = _optional(hint)
    return get_args(hint) if get_origin(hint) is Literal else None


def _type_text(hint: Any) -> str:
    inner, optional = _optional(hint)
    if get_origin(inner) is Literal:
        text = "|".join(map(str, get_args(inner)))
    elif get_origin(inner) is list:
        text = f"list[{get_args(inner)[0].__name__}]"
    else:
        text = getattr(inner, "__name__", str(inner))
    return f"{text} or none" if optional else text


def _coerce(value: Any, hint: Any, name: str) -> Any:
    inner, optional = _optional(hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise OptionError(f"option {name} needs a value ({_type_text(hint)})")
    if get_origin(inner) is Literal:
        choices = get_args(inner)
        if value not in choices:
            raise OptionError(f"option {name} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"option {name} expects true or false, got {value!r}")
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise OptionError(f"option {name} expects an integer, got {value!r}")
    if inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise OptionError(f"option {name} expects a finite number, got {value!r}")
    if inner is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise OptionError(f"option {name} expects text, got {value!r}")
    if get_origin(inner) is list:
        if not isinstance(value, (list, str)):
            raise OptionError(f"option {name} expects a list of names, got {value!r}")
        items = value if isinstance(value, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
            raise OptionError(f"option {name} expects a list of names, got {value!r}")
        return [str(v) for v in items]
    raise OptionError(f"option {name}: unsupported option type {hint!r}")  # a pass declared a bad type


def option(
    default: Any,
    help: str,  # noqa: A002 - reads as field(help=…)
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    **kw: Any,
) -> Any:
    """A dataclass field with a default, a one-line help and, for a number, its range [lo, hi] (either
    end optional, either end open with lo_open / hi_open); `build` refuses a value outside it, naming
    the option and the interval."""
    number = isinstance(default, (int, float)) and not isinstance(default, bool)
    if lo is not None or hi is not None:
        if not (number or default is None):
            raise TypeError("lo/hi are for int and float options")
        if number and not _within(default, [lo, hi], (lo_open, hi_open)):
            raise TypeError(f"default {default} is outside its range")
    metadata = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)
