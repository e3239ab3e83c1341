"""Pass registry: a pass is a plain function registered by name, lossless or lossy."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError


@dataclass
class PassContext:
    """What a pass may use besides the graph: its options and the pipeline's shared inputs."""

    options: dict[str, Any]
    feeds: Any = None  # graphopt.verify.FeedSource: real images or seeded random inputs
    target: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class PassResult:
    """What a pass did. `graph` is set by passes that rebuild the graph instead of editing it."""

    changed: bool
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    graph: gs.Graph | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # metadata keys the pass sets
    # Graph outputs the pass removed on purpose (named in the report); any other output that
    # disappears fails the pipeline.
    removed_outputs: list[str] = field(default_factory=list)


PassFn = Callable[[gs.Graph, PassContext], PassResult]
# (reference outputs, candidate outputs, candidate metadata, atol, rtol) -> graphopt.verify.Comparison
CompareFn = Callable[[list, list, dict, float, float], Any]


@dataclass(frozen=True)
class PassSpec:
    name: str
    fn: PassFn
    lossless: bool
    description: str
    options: dict[str, Any]  # option name -> default value (its type is the option's type)
    # For passes that change what the outputs are (e.g. NMS in the graph): how "unchanged" is judged.
    compare: CompareFn | None = None


_REGISTRY: dict[str, PassSpec] = {}


def register(
    name: str,
    *,
    lossless: bool,
    description: str | None = None,
    options: dict[str, Any] | None = None,
    compare: CompareFn | None = None,
) -> Callable[[PassFn], PassFn]:
    """Register `fn` as pass `name`. The description defaults to the docstring's first line."""

    def decorator(fn: PassFn) -> PassFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PassSpec(
            name=name,
            fn=fn,
            lossless=lossless,
            description=description or (doc[0] if doc else ""),
            options=dict(options or {}),
            compare=compare,
        )
        return fn

    return decorator


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _ensure_loaded() -> None:
    import graphopt.passes  # noqa: F401  (importing registers the built-in passes)


def get_pass(name: str) -> PassSpec:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known passes: {', '.join(sorted(_REGISTRY))}"
        raise GraphoptError(f"unknown pass '{name}'{hint}")
    return _REGISTRY[name]


def all_passes() -> list[PassSpec]:
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
