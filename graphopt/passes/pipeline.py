"""The pipeline runs passes and does all bookkeeping the pass contract promises.

After each pass: cleanup + toposort, shape inference, checker, op histogram and parameter
delta, wall time, and for lossless passes a numerical equivalence check on the same feeds.
Lossless passes are checked against the last trusted outputs: the pipeline's input, or the
output of the latest lossy pass (whose own cost is measured and reported instead).
"""

from __future__ import annotations

import datetime as _dt
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import onnx
import yaml

from graphopt import __version__
from graphopt.core import ort_session
from graphopt.core.compare import compare, cosine_of_outputs
from graphopt.core.errors import GraphoptError, VerificationError
from graphopt.core.graph import infer_shapes_serialized, tidy, to_graph, to_model
from graphopt.core.model import (
    check_opset,
    io_signature,
    op_histogram,
    param_count,
    read_metadata,
    write_metadata,
)
from graphopt.data.feeds import FeedSource
from graphopt.passes.options import Options
from graphopt.passes.options import build as build_options
from graphopt.passes.recipes import load_recipe
from graphopt.passes.registry import REQUIREMENTS, PassContext, PassSpec, get_pass
from runtime import metadata as keys
from runtime.metadata import parse_metadata

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
TARGETS = ("arm", "x86")  # recipe targets; `any` leaves each pass its default


@dataclass
class Step:
    spec: PassSpec
    options: Options


@dataclass
class PassReport:
    name: str
    lossless: bool
    changed: bool
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    params_before: int
    params_after: int
    seconds: float
    verification: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    removed_outputs: list[str] = field(default_factory=list)

    @property
    def ops_delta(self) -> dict[str, int]:
        names = sorted(set(self.ops_before) | set(self.ops_after))
        delta = {n: self.ops_after.get(n, 0) - self.ops_before.get(n, 0) for n in names}
        return {n: d for n, d in delta.items() if d}

    def as_dict(self) -> dict[str, Any]:
        return {
            "pass": self.name,
            "lossless": self.lossless,
            "changed": self.changed,
            "options": self.options,
            "nodes_before": sum(self.ops_before.values()),
            "nodes_after": sum(self.ops_after.values()),
            "ops_delta": self.ops_delta,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "seconds": round(self.seconds, 4),
            "verification": self.verification,
            "notes": self.notes,
            "details": self.details,
            "removed_outputs": self.removed_outputs,
        }


@dataclass
class PipelineResult:
    model: onnx.ModelProto
    reports: list[PassReport]
    feeds: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"passes": [r.as_dict() for r in self.reports], "verification_inputs": self.feeds}


@dataclass
class OptimizeReport:
    """`graphopt optimize`'s result: the passes' reports and the model before and after them."""

    result: PipelineResult
    input: str
    output: str
    before: dict[str, Any]  # graphopt.core.model.summarize without its metadata
    after: dict[str, Any]
    diff: dict[str, Any]  # graphopt.core.model.diff_summaries of before and after (and file sizes)

    def report(self) -> dict[str, Any]:
        """What --report writes."""
        return self.result.as_dict() | {
            "input": self.input,
            "output": self.output,
            "before": self.before,
            "after": self.after,
        }

    def as_dict(self) -> dict[str, Any]:
        return self.report() | {"diff": self.diff}


# --- options ---------------------------------------------------------------------------------------


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`PASS.KEY=VALUE` strings → {pass: {key: value}}; values parsed as YAML scalars."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name_key, sep, raw = item.partition("=")
        pass_name, dot, key = name_key.partition(".")
        if not sep or not dot or not pass_name or not key:
            raise GraphoptError(f"bad --set '{item}': expected PASS.KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(pass_name, {})[key] = value
    return out


def build_steps(
    steps: list[tuple[str, dict[str, Any]]], overrides: dict[str, dict[str, Any]] | None = None
) -> list[Step]:
    """Resolve pass names and build each step's typed options — defaults ← recipe ← --set — checking
    every value (types, choices, ranges) before anything runs."""
    overrides = overrides or {}
    names = {name for name, _ in steps}
    for name in overrides:
        if name not in names:
            get_pass(name)  # unknown pass: the registry's error names it
            raise GraphoptError(f"--set names pass '{name}', which is not in this pipeline")
    built = []
    for name, options in steps:
        spec = get_pass(name)
        built.append(Step(spec, build_options(spec.options, name, {**options, **overrides.get(name, {})})))
    return built


# --- the pipeline ----------------------------------------------------------------------------------


class Pipeline:
    def __init__(
        self,
        steps: list[Step],
        *,
        verify_outputs: bool = True,
        feeds: FeedSource | None = None,
        atol: float = DEFAULT_ATOL,
        rtol: float = DEFAULT_RTOL,
        target: str | None = None,
    ) -> None:
        if not steps:
            raise GraphoptError("no passes to run")
        self.steps = steps
        self.verify_outputs = verify_outputs
        self.feeds = feeds or FeedSource()
        self.atol, self.rtol = atol, rtol
        if target not in (None, "any", *TARGETS):
            raise GraphoptError(f"recipe target must be one of {', '.join(TARGETS)} or any, got {target!r}")
        self.target = None if target == "any" else target
        self._check_data_requirements()

    @classmethod
    def from_passes(
        cls, names: list[str], overrides: dict[str, dict[str, Any]] | None = None, **kw: Any
    ) -> Pipeline:
        return cls(build_steps([(n, {}) for n in names], overrides), **kw)

    @classmethod
    def from_recipe(
        cls, recipe: str, overrides: dict[str, dict[str, Any]] | None = None, **kw: Any
    ) -> Pipeline:
        loaded = load_recipe(recipe)
        kw.setdefault("target", loaded.target)
        return cls(build_steps(loaded.steps, overrides), **kw)

    def _check_data_requirements(self) -> None:
        """What passes need from the command line (calibration images, …), before any pass runs."""
        for step in self.steps:
            for need in step.spec.requirements(step.options):
                req = REQUIREMENTS[need]
                if req.kind == "data" and need == "calibration_data" and not self.feeds.images:
                    raise GraphoptError(f"pass '{step.spec.name}' needs {req.text}")
                if req.kind == "package" and not all(map(_installed, req.packages)):
                    raise GraphoptError(f"pass '{step.spec.name}' with these options needs {req.text}")

    def run(self, model: onnx.ModelProto) -> PipelineResult:
        check_opset(model)
        current = model  # never modified: every step makes a new model (and no step: a copy below)
        feeds = reference = None
        if self.verify_outputs:
            feeds = self.feeds.feeds_for(current)
            reference = ort_session.run(current, feeds)
        history = parse_metadata(read_metadata(current)).history
        reports = []
        for step in self.steps:
            report, current, outputs = self._apply(step, current, feeds, reference)
            if outputs is not None and (
                not step.spec.is_lossless(step.options) or step.spec.compare is not None
            ):
                # later lossless passes are held to the lossy result, or to the new kind of outputs
                reference = outputs
            elif reference is not None and report.removed_outputs:
                reference = _without(reference, report.removed_outputs)
            reports.append(report)
            history.append(_history_entry(report))
        if current is model:
            current = onnx.ModelProto()
            current.CopyFrom(model)
        write_metadata(current, {keys.HISTORY: history, keys.VERSION: __version__})
        return PipelineResult(current, reports, feeds.description if feeds is not None else None)

    def _apply(
        self, step: Step, model: onnx.ModelProto, feeds: list | None, reference: list | None
    ) -> tuple[PassReport, onnx.ModelProto, list | None]:
        spec = step.spec
        _check_graph_requirements(spec, step.options, model)
        ops_before, params_before = op_histogram(model), param_count(model)
        graph = to_graph(model)
        ctx = PassContext(
            options=step.options, feeds=self.feeds, target=self.target, metadata=read_metadata(model)
        )
        start = time.perf_counter()
        result = spec.fn(graph, ctx)
        seconds = time.perf_counter() - start
        # unchanged: the input model is the pass's output, already exported and checked (or the user's own
        # model), and its outputs are the reference; nothing to export, infer, check or run again
        unchanged = not (result.changed or result.metadata or result.removed_outputs)
        if unchanged:
            new, serialized, removed = model, None, []
        else:
            new, serialized = _finish(tidy(result.graph or graph), model, spec.name, result.metadata)
            removed = _removed_outputs(model, new, result.removed_outputs, spec.name)
        report = PassReport(
            name=spec.name,
            lossless=spec.is_lossless(step.options),
            changed=result.changed,
            ops_before=ops_before,
            ops_after=dict(ops_before) if unchanged else op_histogram(new),
            params_before=params_before,
            params_after=params_before if unchanged else param_count(new),
            seconds=seconds,
            verification=None,
            notes=list(result.notes),
            details=dict(result.details),
            options=step.options.as_dict(),
            removed_outputs=removed,
        )
        if unchanged:
            return report, new, None
        # the pass's graph holds a copy of every weight, in reference cycles (nodes <-> tensors) that only
        # the cycle collector frees: free it now, before onnxruntime loads `new`. A full collection walks
        # every object of the process (0.1 s and more in a long-lived one), so only where the weights
        # are worth it; smaller graphs go with the collector's next automatic pass.
        del graph, result
        if params_before >= COLLECT_ABOVE_PARAMS:
            gc.collect()
            ort_session.release_freed_memory()
        outputs = None
        if feeds is not None and reference is not None:
            if removed and spec.compare is None:  # announced: the other outputs are still checked
                reference = _without(reference, removed)
            outputs = ort_session.run(serialized, feeds)
            if spec.compare is not None:
                cmp = spec.compare(reference, outputs, read_metadata(new), self.atol, self.rtol)
            else:
                cmp = compare(reference, outputs, self.atol, self.rtol)
            report.verification = cmp.as_dict() | {"atol": self.atol, "rtol": self.rtol}
            if report.lossless and not cmp.ok:
                raise VerificationError(
                    f"pass '{spec.name}' is registered lossless but changed the outputs: "
                    f"max abs err {cmp.max_abs:.3g}, max rel err {cmp.max_rel:.3g} "
                    f"(worst output '{cmp.worst_output}'; tolerance atol={self.atol:g}, rtol={self.rtol:g}; "
                    f"{cmp.reason}); nothing was written"
                )
            if not report.lossless:
                report.verification["cosine"] = cosine_of_outputs(reference, outputs)
        return report, new, outputs


# yolov5n (1.9 M parameters, 7.6 MB of fp32 weights) and up; the test suite's tiny graphs and the zoo
# fixtures below it
COLLECT_ABOVE_PARAMS = 1_000_000


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _check_graph_requirements(spec: PassSpec, options: Options, model: onnx.ModelProto) -> None:
    """What a pass needs of its input graph (an earlier pass, e.g. simplify, may have established it)."""
    for need in spec.requirements(options):
        req = REQUIREMENTS[need]
        if req.kind != "graph":
            continue
        sig = io_signature(model)
        entries = sig["inputs"] if need == "static_input_shape" else sig["outputs"]
        if not all(e["shape"] and all(isinstance(d, int) and d > 0 for d in e["shape"]) for e in entries):
            raise GraphoptError(f"pass '{spec.name}' needs {req.text}")


def _without(reference: list[dict[str, Any]], removed: list[str]) -> list[dict[str, Any]]:
    return [{k: v for k, v in ref.items() if k not in removed} for ref in reference]


def _removed_outputs(
    before: onnx.ModelProto, after: onnx.ModelProto, announced: list[str], pass_name: str
) -> list[str]:
    """Outputs the pass removed; an output that disappeared without the pass saying so is an error."""
    now = {o.name for o in after.graph.output}
    gone = [o.name for o in before.graph.output if o.name not in now]
    silent = [name for name in gone if name not in announced]
    if silent:
        raise VerificationError(
            f"pass '{pass_name}' removed graph output(s) {', '.join(silent)} without saying so; "
            "nothing was written"
        )
    return gone


def _finish(
    graph: Any, like: onnx.ModelProto, pass_name: str, metadata: dict[str, Any] | None
) -> tuple[onnx.ModelProto, bytes]:
    """Export, re-infer shapes from scratch (stale value_info can contradict a rewrite), check: the model
    and its serialized form, serialized once for the checker and onnxruntime both."""
    model = to_model(graph, like)
    del model.graph.value_info[:]
    if metadata:
        write_metadata(model, metadata)
    serialized = infer_shapes_serialized(model)
    try:
        onnx.checker.check_model(serialized)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise GraphoptError(
            f"pass '{pass_name}' produced an invalid model: {str(exc).splitlines()[0]}"
        ) from exc
    return onnx.load_from_string(serialized), serialized


def _history_entry(report: PassReport) -> dict[str, Any]:
    entry = {
        "pass": report.name,
        "options": report.options,
        "changed": report.changed,
        "ops_delta": report.ops_delta,
        "graphopt": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if report.verification:
        entry["max_abs_err"] = report.verification["max_abs_err"]
    return entry
