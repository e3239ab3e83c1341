"""Which layers and filters of a YOLO model matter least: seed 002's pruning report, on a `.pt` or an ONNX.

The model is first brought to its lossless form (BatchNorm folded into the convs, so a filter's L2
norm includes its BN scale, and Rep branches merged) — the form `prune` works on. Then:

- layers: every prunable channel group (convs coupled by residual Adds, Concat/Split, depthwise
  convs…: they can only lose channels together), with its width, the L2 norms of its filters and —
  with `--data` — its measured sensitivity: the detection error of the model with the group's
  `--probe` least important channels removed, on `--samples` calibration images. Ranked least
  sensitive first (least L2 first without `--data`).
- filters: the `--top` filters with the smallest L2 norm relative to their conv's mean (the seed's
  criterion), with their mean |activation| on the images when `--data` is given.

    python tools/importance.py MODEL.pt|MODEL.onnx [--data DATA] [--top 15] [--samples 4] [--probe 0.25]
        [--json] [--trust] [--repo PATH]

A `.pt` is exported first (needs graphopt[torch]); `--trust`/`--repo` as for `graphopt export`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphopt.core.errors import GraphoptError  # noqa: E402


def lossless_model(path: Path, data: str | None, trust: bool, repo: str | None, work: Path) -> Any:
    """The lossless form of `path` (a checkpoint is exported first), verified as `optimize` verifies it."""
    from graphopt.core.model import check_opset, load_model
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import Pipeline

    if path.suffix.lower() in (".pt", ".pth"):
        try:
            from frontends import export
        except ImportError as exc:
            raise GraphoptError("a .pt needs PyTorch to export: pip install 'graphopt[torch]'") from exc
        onnx_path = work / "exported.onnx"
        export(path, onnx_path, repo=repo, trust=trust)
        path = onnx_path
    model = load_model(path)
    check_opset(model, path)
    return Pipeline.from_recipe("lossless", {}, feeds=FeedSource(data, samples=2)).run(model).model


def importance_report(model: Any, data: str | None, top: int, samples: int, probe: float) -> dict[str, Any]:
    import numpy as np
    import onnx_graphsurgeon as gs

    from graphopt.core import ort_session
    from graphopt.core.graph import constant_value
    from graphopt.core.model import read_metadata
    from graphopt.data.feeds import FeedSource
    from graphopt.prune import alloc, channels
    from runtime.metadata import parse_metadata

    graph = gs.import_onnx(model)
    cg = channels.analyse(graph)
    nodes = {n.name: n for n in graph.nodes}
    norms: dict[str, np.ndarray] = {}
    for name in cg.producers:
        w = constant_value(nodes[name].inputs[1]).astype(np.float64)
        norms[name] = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
    groups = [g for g in cg.groups() if g.units]
    meta = parse_metadata(read_metadata(model))
    feeds: list[dict[str, np.ndarray]] = []
    if data:
        inp = graph.inputs[0]
        stream = FeedSource(data).image_stream(
            (int(inp.shape[2]), int(inp.shape[3])), meta.preprocess, samples
        )
        feeds = [{inp.name: t} for t in stream]
        if not feeds:
            raise GraphoptError(f"{data}: none of its images could be read")
    activation = (
        alloc.channel_means(model, feeds, [cg.conv_output[n] for n in cg.producers], absolute=True)
        if feeds
        else {}
    )
    l2 = alloc.l2_importance(cg, nodes)
    sensitivity: dict[str, float] = {}
    if feeds:
        plans = alloc.plan_groups(groups, l2, round_to=1, floor=1e-9, min_channels=0)
        output = (
            meta.main_output if meta.main_output in {o.name for o in graph.outputs} else graph.outputs[0].name
        )
        reference = [r[output] for r in ort_session.run(model, feeds, outputs=[output])]
        error = alloc.detection_error(meta.head, reference, output, feeds, model)
        candidates = alloc.PrunedModels(model)
        alloc.probe_sensitivity(plans, probe, lambda removed: error(candidates(removed)), _bar)
        sensitivity = {p.name: p.sensitivity for p in plans}

    layers = []
    for g in groups:
        n = np.concatenate([norms[c] for c in g.convs])
        layers.append(
            {
                "group": g.convs[0],
                "convs": g.convs,
                "channels": g.size,
                "prunable": g.size - g.protected,
                "l2_mean": float(n.mean()),
                "l2_min": float(n.min()),
                "near_zero_filters": int((n < 1e-3 * max(n.mean(), 1e-12)).sum()),
                "sensitivity": sensitivity.get(g.convs[0]),
            }
        )
    key = (
        (lambda r: (r["sensitivity"] is None, r["sensitivity"] or 0.0))
        if sensitivity
        else (lambda r: r["l2_mean"])
    )
    layers.sort(key=key)

    filters = []
    protected = cg.protected()
    for name, units in cg.producers.items():
        rel = norms[name] / max(norms[name].mean(), 1e-12)
        act = activation.get(cg.conv_output[name])
        for k, u in enumerate(units):
            if cg.root(u) in protected:
                continue
            row = {"conv": name, "filter": k, "l2": float(norms[name][k]), "l2_relative": float(rel[k])}
            if act is not None:
                row["mean_abs_activation"] = float(act[k])
            filters.append(row)
    filters.sort(key=lambda r: r["l2_relative"])
    return {
        "groups": len(groups),
        "prunable_channels": sum(g.size - g.protected for g in groups),
        "sensitivity_images": len(feeds),
        "probe": probe if feeds else None,
        "layers": layers,
        "filters": filters[:top],
    }


def _bar(items: list[Any]) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc="sensitivity", unit="group", disable=None, leave=False, file=sys.stderr)


def _short(name: str) -> str:
    """`/model/model.23/cv3/conv/Conv` → `model.23/cv3/conv` (torch export names), else unchanged."""
    short = name.removeprefix("/model/").removesuffix("/Conv")
    return short or name


def _print(report: dict[str, Any], top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    measured = report["sensitivity_images"] > 0
    title = (
        f"least important layers ({report['groups']} channel groups, {report['prunable_channels']} prunable "
        + (
            f"channels; sensitivity: {report['probe']:.0%} removed, {report['sensitivity_images']} image(s))"
            if measured
            else "channels; by L2 — give --data to measure sensitivity)"
        )
    )
    table = Table(title=title)
    columns = ["group", "convs", "prunable/channels", "L2 mean", "L2 min", "≈0 filters"]
    for col in columns + (["sensitivity"] if measured else []):
        table.add_column(col, justify="left" if col == "group" else "right", no_wrap=col == "group")
    for r in report["layers"][:top]:
        row = [
            _short(r["group"]),
            str(len(r["convs"])),
            f"{r['prunable']}/{r['channels']}",
            f"{r['l2_mean']:.3g}",
            f"{r['l2_min']:.3g}",
            str(r["near_zero_filters"]),
        ]
        if measured:
            row.append("-" if r["sensitivity"] is None else f"{r['sensitivity']:.4g}")
        table.add_row(*row)
    console.print(table)
    table = Table(title=f"least important filters (L2 relative to their conv's mean), {top} of them")
    for col in ("conv", "filter", "L2", "L2 / mean") + (("mean |act|",) if measured else ()):
        table.add_column(col, justify="left" if col == "conv" else "right", no_wrap=col == "conv")
    for r in report["filters"]:
        act = r.get("mean_abs_activation")
        row = [_short(r["conv"]), str(r["filter"]), f"{r['l2']:.3g}", f"{r['l2_relative']:.3f}"]
        if measured:
            row.append("-" if act is None else f"{act:.3g}")
        table.add_row(*row)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help=".pt checkpoint or .onnx")
    parser.add_argument("--data", help="calibration images (folder, image, data.yaml train split, list file)")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    parser.add_argument("--samples", type=int, default=4, help="images for sensitivity (default 4)")
    parser.add_argument(
        "--probe", type=float, default=0.25, help="fraction of a group removed (default 0.25)"
    )
    parser.add_argument(
        "--trust", action="store_true", help="allow full unpickling (runs code from the file)"
    )
    parser.add_argument("--repo", help="training repo checkout the checkpoint needs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        if args.top < 1 or args.samples < 1 or not 0 < args.probe < 1:
            raise GraphoptError("--top and --samples must be ≥ 1, --probe in (0, 1)")
        if not args.model.is_file():
            raise GraphoptError(f"{args.model}: no such file")
        with tempfile.TemporaryDirectory(prefix="graphopt-importance-") as tmp:
            model = lossless_model(args.model, args.data, args.trust, args.repo, Path(tmp))
            report = importance_report(model, args.data, args.top, args.samples, args.probe)
    except GraphoptError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"model": str(args.model)} | report
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
