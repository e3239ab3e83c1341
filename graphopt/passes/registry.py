"""Pass registry: a pass is a plain function registered by name, lossless or lossy, with its typed
options (graphopt.passes.options) and what it needs (requirements, checked by the pipeline)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import onnx_graphsurgeon as gs

from graphopt.core.errors import GraphoptError
from graphopt.passes.options import Options

if TYPE_CHECKING:
    from graphopt.data.feeds import FeedSource

@dataclass(frozen=True)
class Requirement:
    """Something a pass can declare it needs. `data` requirements are checked before the first pass
    runs; `graph` ones on the pass's own input (an earlier pass may establish them); `package` ones
    before the first pass, by whether the packages are installed."""

    kind: Literal["data", "graph", "package"]
    text: str  # what is needed, as the error names it
    packages: tuple[str, ...] = ()


REQUIREMENTS: dict[str, Requirement] = {
    "calibration_data": Requirement("data", "calibration images (--data FOLDER, IMAGE or data.yaml)"),
    "static_input_shape": Requirement("graph", "a static input shape (export with a fixed --imgsz)"),
    "static_output_shapes": Requirement("graph", "static output shapes (run simplify before it)"),
    "torch": Requirement(
        "package", "PyTorch and onnx2torch: pip install 'graphopt[torch]'", ("torch", "onnx2torch")
    ),
}


@dataclass
class PassContext:
    """What a pass may use besides the graph: its options and the pipeline's shared inputs."""

    options: Any  # the pass's Options dataclass instance
    feeds: FeedSource | None = None  # real images or seeded random inputs
    target: str | None = None  # the recipe's target: arm | x86 (None: the pass's default)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class PassResult:
    """What a pass did. `graph` is set by passes that rebuild the graph instead of editing it."""

    # False (with no metadata and no removed output): the pipeline keeps the pass's input model as it
    # was, unexported and unchecked again, so a pass that edited the graph must say changed=True
    changed: bool
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    graph: gs.Graph | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # metadata keys the pass sets
    # Graph outputs the pass removed on purpose (named in the report); any other output that
    # disappears fails the pipeline.
    removed_outputs: list[str] = field(default_factory=list)


PassFn = Callable[[gs.Graph, PassContext], PassResult]
# (reference outputs, candidate outputs, candidate metadata, atol, rtol) -> graphopt.core.compare.Comparison
CompareFn = Callable[[list, list, dict, float, float], Any]
Requires = tuple[str, ...] | Callable[[Any], tuple[str, ...]]


@dataclass(frozen=True)
class PassSpec:
    name: str
    fn: PassFn
    lossless: bool | Callable[[Any], bool]  # a lossy pass may have a lossless mode (prune.dead_only)
    description: str
    options: type[Options]
    requires: Requires = ()
    # For passes that change what the outputs are (e.g. NMS in the graph): how "unchanged" is judged.
    compare: CompareFn | None = None

    def is_lossless(self, options: Options) -> bool:
        return bool(self.lossless(options) if callable(self.lossless) else self.lossless)

    def requirements(self, options: Options) -> tuple[str, ...]:
        return tuple(self.requires(options) if callable(self.requires) else self.requires)

    def describe(self) -> dict[str, Any]:
        """What `graphopt passes` shows: name, kind, description, options (defaults and details), needs."""
        from graphopt.passes.options import describe

        details = describe(self.options)
        defaults = self.options()
        return {
            "name": self.name,
            "lossless": self.is_lossless(defaults),
            "description": self.description,
            "options": {k: d["default"] for k, d in details.items()},
            "option_details": details,
            "requires": list(self.requirements(defaults)),
        }


_REGISTRY: dict[str, PassSpec] = {}


def register(
    name: str,
    *,
    lossless: bool | Callable[[Any], bool],
    description: str | None = None,
    options: type[Options] = Options,
    requires: Requires = (),
    compare: CompareFn | None = None,
) -> Callable[[PassFn], PassFn]:
    """Register `fn` as pass `name`. The description defaults to the docstring's first line."""
    if not (isinstance(options, type) and issubclass(options, Options)):
        raise TypeError(f"pass '{name}': options must be a graphopt.passes.options.Options dataclass")
    if not callable(requires):
        unknown = [r for r in requires if r not in REQUIREMENTS]
        if unknown:
            raise TypeError(
                f"pass '{name}': unknown requirement(s) {unknown} (known: {sorted(REQUIREMENTS)})"
            )

    def decorator(fn: PassFn) -> PassFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise GraphoptError(
                f"a pass named '{name}' is already registered ({_REGISTRY[name].fn.__module__})"
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PassSpec(
            name=name,
            fn=fn,
            lossless=lossless,
            description=description or (doc[0] if doc else ""),
            options=options,
            requires=requires,
            compare=compare,
        )
        return fn

    return decorator


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_pass(name: str) -> PassSpec:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known passes: {', '.join(sorted(_REGISTRY))}"
        raise GraphoptError(f"unknown pass '{name}'{hint}")
    return _REGISTRY[name]


def all_passes() -> list[PassSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
