"""`prune`: structured channel pruning on the ONNX graph, sensitivity-allocated, with recovery.

Channel dependencies come from the graph (graphopt.prune.channels): residual Adds and SiLU's Mul couple
their producers, Concat/Split/Slice map channel ranges, depthwise convs couple in and out, and
whatever reads channels otherwise (the detection head's Reshape, a graph output) is protected. The
MACs target is met by pruning the least sensitive groups most (graphopt.prune.alloc); widths stay
multiples of `round_to` and groups of `min_channels` or fewer are left alone — uneven widths lose
onnxruntime's fast layout paths. Recovery (graphopt.prune.recovery) uses the calibration images
only. `dead_only=true` is the lossless mode: only channels whose filters and biases are all zero go,
under the pipeline's equivalence check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphopt.core import ort_session
from graphopt.core.errors import GraphoptError
from graphopt.core.graph import constant_value, to_model
from graphopt.passes.options import Options, option
from graphopt.passes.registry import PassContext, PassResult, register
from graphopt.prune import alloc, channels, recovery
from runtime.metadata import parse_metadata
from runtime.preprocess import Preprocess


@dataclass(frozen=True)
class PruneOptions(Options):
    macs: float = option(0.85, "fraction of the MACs to keep (0.85 keeps 85 %)", lo=0, hi=1, lo_open=True)
    importance: Literal["l2", "activation"] = option("activation", "how units are ranked inside a group")
    recover: Literal["none", "bn", "lstsq", "distill"] = option("lstsq", "how accuracy is recovered")
    round_to: int = option(
        16, "kept widths are multiples of this (x86 AVX-512 and Arm NEON like 16)", lo=1, hi=1024
    )
    min_channels: int = option(32, "groups this narrow or narrower are left alone", lo=0, hi=65536)
    floor: float = option(
        0.25, "no group keeps less than this fraction of its channels", lo=0, hi=1, lo_open=True
    )
    # The calibration tensors are held in memory together (5 MB each at 640): 256 is 1.3 GB.
    samples: int = option(16, "calibration images for importance, sensitivity and recovery", lo=1, hi=256)
    sensitivity_samples: int = option(
        4, "of those, the images each group's sensitivity is measured on", lo=1, hi=64
    )
    probe: float = option(
        0.25, "fraction of a group removed to measure its sensitivity", lo=0, hi=1, lo_open=True, hi_open=True
    )
    distill_steps: int = option(600, "optimizer steps of recover=distill (batches of 8)", lo=1, hi=1_000_000)
    distill_size: int = option(
        320, "input size recover=distill trains at (fully convolutional weights)", lo=32, hi=1280
    )
    # decoded whole, as photos (about 1 MB each for COCO)
    distill_images: int = option(
        64, "calibration images recover=distill draws its batches from", lo=1, hi=1024
    )
    protect: list[str] = option([], "conv names never pruned")
    dead_only: bool = option(False, "lossless: remove only channels whose filters and biases are all zero")



def _needs(options: PruneOptions) -> tuple[str, ...]:
    if options.dead_only:
        return ()
    return ("calibration_data", "static_input_shape") + (("torch",) if options.recover == "distill" else ())


@register("prune", lossless=lambda o: o.dead_only, options=PruneOptions, requires=_needs)
def prune(graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Structured channel pruning to a MACs target, sensitivity-allocated, with recovery."""
    opts: PruneOptions = ctx.options
    original = gs.export_onnx(graph.copy(), do_type_check=False)  # before any edit: the reference
    nodes = {n.name: n for n in graph.nodes}
    cg = _analyse(graph, nodes, opts)
    if opts.dead_only:
        return _dead_only(cg, nodes)
    geo, other = alloc.geometry(original)
    macs_before = alloc.macs(cg, geo, other, set())
    target = int(opts.macs * macs_before)
    meta = parse_metadata(ctx.metadata)
    feeds = _feeds(ctx, graph, meta, opts.samples)
    probe_feeds = feeds[: opts.sensitivity_samples]
    output = (
        meta.main_output if meta.main_output in {o.name for o in graph.outputs} else graph.outputs[0].name
    )
    reference = [r[output] for r in ort_session.run(original, probe_feeds, outputs=[output])]
    error = alloc.detection_error(meta.head, reference, output, probe_feeds, original)
    importance = (
        alloc.l2_importance(cg, nodes)
        if opts.importance == "l2"
        else alloc.activation_importance(cg, original, feeds)
    )
    plans = alloc.plan_groups(cg.groups(), importance, opts.round_to, opts.floor, opts.min_channels)
    if not plans:
        return PassResult(changed=False, notes=["no group is wide enough to prune (min_channels)"])
    start = time.perf_counter()
    candidates = alloc.PrunedModels(original)
    alloc.probe_sensitivity(plans, opts.probe, lambda removed: error(candidates(removed)), _bar)
    sensitivity_seconds = time.perf_counter() - start
    removed, log = alloc.allocate(plans, cg, geo, other, target)
    macs_after = alloc.macs(cg, geo, other, removed)
    found = recovery.consumers(cg, removed, downstream=opts.recover in ("lstsq", "distill"))
    changed = channels.apply(cg, removed)
    details: dict[str, Any] = {
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_target": target,
        "macs_kept": round(macs_after / macs_before, 4),
        "importance": opts.importance,
        "recover": opts.recover,
        "sensitivity_seconds": round(sensitivity_seconds, 2),
        "groups": [
            {
                "convs": p.group.convs,
                "channels": p.group.size,
                "kept": p.kept,
                "sensitivity": round(p.sensitivity, 6),
            }
            for p in sorted(plans, key=lambda p: p.kept / p.group.size)
        ],
        "error_before_recovery": error(to_model(graph, original)),
    }
    details.update(_recover(graph, original, found, feeds, ctx, meta, opts))
    details["error_after_recovery"] = error(to_model(graph, original))
    details["allocation_steps"] = len(log)
    notes = _summary(opts, details, len(changed), sum(p.kept < p.group.size for p in plans), len(probe_feeds))
    return PassResult(changed=bool(changed), notes=notes, details=details)


def _analyse(graph: gs.Graph, nodes: dict[str, gs.Node], opts: PruneOptions) -> channels.ChannelGraph:
    """The channel-dependency groups, with the convs `prune.protect` names kept whole."""
    cg = channels.analyse(graph)
    unknown = [n for n in opts.protect if n not in nodes]
    if unknown:
        raise GraphoptError(f"prune.protect names unknown node(s): {', '.join(unknown[:5])}")
    for name in opts.protect:
        for u in cg.producers.get(name, []):
            cg.protected_raw.add(u)
    return cg


def _recover(
    graph: gs.Graph,
    original: onnx.ModelProto,
    found: Any,
    feeds: list[dict[str, np.ndarray]],
    ctx: PassContext,
    meta: Any,
    opts: PruneOptions,
) -> dict[str, Any]:
    """Buy accuracy back after the cut: bias compensation, least squares, or distillation from it."""
    if opts.recover == "bn":
        return recovery.bias_compensation(graph, original, found, feeds)
    if opts.recover not in ("lstsq", "distill"):
        return {}
    details = recovery.least_squares(graph, original, found, feeds)
    if opts.recover == "distill":  # starts from the least-squares fit
        fitted = details.pop("recovery_seconds")
        details.update(
            recovery.distill(
                graph,
                original,
                ctx.feeds.images[: opts.distill_images],
                Preprocess.from_meta(meta.preprocess),
                meta.head,
                len(meta.names),
                opts.distill_steps,
                opts.distill_size,
            )
        )
        details["recovery_seconds"] += fitted
    return details


def _summary(opts: PruneOptions, d: dict[str, Any], convs: int, groups: int, probes: int) -> list[str]:
    notes = [
        f"MACs {d['macs_before'] / 1e9:.3g} G → {d['macs_after'] / 1e9:.3g} G "
        f"({d['macs_after'] / d['macs_before']:.1%}; target {opts.macs:.0%}) in {convs} conv(s) of {groups} "
        f"group(s); widths multiples of {opts.round_to}, groups of ≤ {opts.min_channels} channels kept",
        f"head error on {probes} calibration image(s): {d['error_before_recovery']:.4g} pruned, "
        f"{d['error_after_recovery']:.4g} after recover={opts.recover}",
    ]
    if d["macs_after"] > d["macs_target"]:
        notes.append(
            f"target not reached: every group is at its floor ({opts.floor:.0%}) or too narrow; "
            "lower prune.floor or prune.min_channels to go further"
        )
    return notes


def _bar(items: list[Any]) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc="prune sensitivity", unit="group", disable=None, leave=False)


def _feeds(ctx: PassContext, graph: gs.Graph, meta: Any, count: int) -> list[dict[str, np.ndarray]]:
    if ctx.feeds is None or not ctx.feeds.images:
        raise GraphoptError("prune needs calibration images: pass --data FOLDER, IMAGE or data.yaml")
    inp = graph.inputs[0]
    hw = (int(inp.shape[2]), int(inp.shape[3]))
    stream = ctx.feeds.image_stream(hw, meta.preprocess, count)
    feeds = [{inp.name: t} for t in stream]
    if not feeds:
        first = f": {stream.reasons[0]}" if stream.reasons else ""
        raise GraphoptError(f"prune: no usable calibration image ({len(stream.skipped)} unreadable{first})")
    return feeds


def _dead_only(cg: channels.ChannelGraph, nodes: dict[str, gs.Node]) -> PassResult:
    """Units whose every producing filter and bias is all zero: their channels are zero everywhere
    downstream of a zero-preserving activation; the equivalence check confirms it."""
    dead: set[int] = set()
    alive: set[int] = set()
    for name, units in cg.producers.items():
        node = nodes[name]
        w = constant_value(node.inputs[1])
        b = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        for k, u in enumerate(units):
            zero = not np.any(w[k]) and (b is None or b[k] == 0)
            (dead if zero else alive).add(cg.root(u))
    for name, units in cg.depthwise.items():  # a depthwise bias makes a zero channel constant again
        node = nodes[name]
        b = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        alive.update(cg.root(u) for k, u in enumerate(units) if b is not None and b[k] != 0)
    for node, _, units in cg.per_channel:  # an added constant (or BN shift) does too
        if node.op != "Mul":
            alive.update(cg.root(u) for u in units)
    dead -= alive | cg.protected()
    if not dead:
        return PassResult(changed=False, notes=["no dead channel (all-zero filter and bias) found"])
    changed = channels.apply(cg, dead)
    return PassResult(
        changed=True,
        notes=[f"removed {len(dead)} dead channel(s) from {len(changed)} conv(s)"],
        details={"dead_units": len(dead), "convs": {k: list(v) for k, v in changed.items()}},
    )
