"""`graphopt compile --search`: the accuracy-vs-latency trade-off of a small grid, for one target.

Grid: input size (640/512/416/320; a `.pt` is re-exported at each, an ONNX keeps its own size) ×
prune (none / 0.85 / 0.7 of the MACs) × int8 (no / yes; onnxruntime targets). Every configuration is
scored on the labeled val split of `--data` and timed in one interleaved run; the reference is the
fp32 model at the largest size, unpruned. The Pareto front (nothing else both faster and more
accurate) and the chosen configuration — the fastest within `budget` mAP50-95 points of the
reference — are reported; the chosen one is finished for deployment (fuse-nms → DIR/model.onnx).
Pruned models derive from the same size's lossless model, int8 ones from their fp32 parent, so each
prune and calibration runs once.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from graphopt.compile.compiler import (
    CompileOptions,
    calibration_source,
    labeled_yaml,
    optimize_file,
    time_models,
)
from graphopt.compile.deploy import MIN_GAIN
from graphopt.compile.results import SearchConfig, SearchReport
from graphopt.core.errors import GraphoptError

SIZES = (640, 512, 416, 320)
PRUNES = (None, 0.85, 0.7)


def search(opts: CompileOptions, budget: float) -> SearchReport:
    from graphopt.compile.report import write_reports
    from graphopt.eval.evaluate import evaluate
    from runtime.files import FileProblem, output_dir

    labeled = labeled_yaml(opts.data)
    if labeled is None:
        raise GraphoptError("--search scores every configuration: give --data with a labeled data.yaml")
    if opts.target.backend != "ort":
        raise GraphoptError("--search runs on the onnxruntime targets (x86-ort, pi5-ort)")
    started = time.perf_counter()
    work = opts.out / "search"
    try:
        output_dir(opts.out, "compile output folder")
        output_dir(work, "search folder")
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    calibration, calibration_note = calibration_source(opts.data)
    configs = _build(opts, work, calibration)
    for c in configs:
        _say(opts, f"eval {c.name}")
        r = evaluate(c.artifact, labeled, threads=opts.target.host_threads(), progress=opts.progress)
        c.map50_95, c.map50 = r.map50_95, r.map50
    _say(opts, "latency (interleaved)")
    entries = [(c.name, Path(c.artifact), "ort") for c in configs]
    if opts.baseline:
        entries.append(("baseline", opts.baseline, "ort"))
    times = time_models(entries, opts.image, opts.target.host_threads(), opts.rounds)
    reference = configs[0]  # largest size, unpruned, fp32
    on_target = opts.target.host_times_target()
    by_name = {c.name: c for c in configs}
    for c in configs:
        c.host_latency_ms = statistics.median(times[c.name])
        c.speedup = statistics.median(a / b for a, b in zip(times[reference.name], times[c.name], strict=True))
        c.latency_ms = c.host_latency_ms
        c.loss_points = round(100 * (reference.map50_95 - c.map50_95), 2)
        if c.int8 and not on_target:
            # this host's int8 is not the target's (x86 runs S8S8 as a float reference): not ranked
            c.rankable, c.latency_ms, c.speedup = False, None, None
            c.note = "int8 speed on the target is unknown on this host: not ranked"
        elif c.int8:
            parent = by_name[c.parent]  # type: ignore[index]
            gain = statistics.median(a / b for a, b in zip(times[parent.name], times[c.name], strict=True))
            if gain < MIN_GAIN:
                c.rankable = False
                c.note = f"{gain:.2f}× of {parent.name} on this host — int8 does not pay"
    by_estimate = _pi5_rank(opts, configs) if opts.target.arch == "arm" and not on_target else False
    ranked = [c for c in configs if c.rankable]
    for c in ranked:
        c.pareto = not any(
            o.latency_ms <= c.latency_ms  # type: ignore[operator]
            and o.map50_95 >= c.map50_95
            and (o.latency_ms, o.map50_95) != (c.latency_ms, c.map50_95)
            for o in ranked
        )
    within = [c for c in ranked if c.loss_points <= budget]
    chosen = min(within, key=lambda c: c.latency_ms) if within else reference  # type: ignore[arg-type,return-value]
    chosen.chosen = True
    final = opts.out / "model.onnx"
    optimize_file(Path(chosen.artifact), final, ["fuse-nms"], None, {}, calibration)
    report = SearchReport(
        source=str(opts.source),
        target=opts.target.name,
        device=opts.target.device,
        budget=budget,
        calibration=calibration_note,
        accuracy_data=str(labeled),
        measured_on=f"{opts.target.host_label()}, {opts.target.host_threads()} thread(s), {opts.rounds} interleaved rounds",
        latency_note=None
        if on_target
        else (
            f"latency is the estimated {opts.target.device} latency (graphopt.compile.pi5_cost: an estimate, not "
            "a measurement, with its validation error in each config's pi5_estimate); configurations without an "
            "accepted estimate are not ranked"
            if by_estimate
            else f"latency is this host's, not the {opts.target.device}'s: fp32 configurations are ranked by it, int8 ones are not"
        ),
        reference=reference.name,
        chosen=chosen.name,
        final=str(final),
        configs=configs,
        seconds=0.0,
    )
    if by_estimate:
        from graphopt.compile.compiler import pi5_summary

        report.pi5_estimate = pi5_summary(opts.target)
    if opts.baseline:
        report.baseline = _versus_baseline(opts.baseline, times, configs, chosen, budget)
    report.plot = str(_plot(report, opts.out / "pareto.png"))
    report.seconds = round(time.perf_counter() - started, 1)
    write_reports(report, opts.out)
    return report


def _pi5_rank(opts: CompileOptions, configs: list[SearchConfig]) -> bool:
    """A Pi 5 target this host cannot time: every configuration gets its estimated Pi 5 latency
    (graphopt.compile.pi5_cost). Where every fp32 configuration has one (its class validated and
    accepted), the search ranks by the estimates: latency_ms and speedup become the estimate's, and a
    configuration without one is not ranked. Returns whether it ranks by them."""
    from graphopt.compile.pi5_cost import estimate_from_macs
    from graphopt.core.macs import macs_summary
    from graphopt.core.model import load_model

    for c in configs:
        macs = int(macs_summary(load_model(Path(c.artifact)))["macs"])  # type: ignore[call-overload]
        c.pi5_estimate = estimate_from_macs(macs, "ort", "int8" if c.int8 else "fp32", opts.target.threads)
    reference = configs[0]
    if any(c.pi5_estimate is None or c.pi5_estimate["ms"] is None for c in configs if not c.int8):
        return False
    for c in configs:
        est = c.pi5_estimate["ms"] if c.pi5_estimate else None
        if est is None:
            c.rankable, c.latency_ms, c.speedup = False, None, None
            c.note = (c.pi5_estimate or {}).get("why") or "no Pi 5 estimate: not ranked"
        else:
            c.latency_ms = est
            c.speedup = reference.pi5_estimate["ms"] / est  # type: ignore[index]
            c.rankable = True
            c.note = "Pi 5 estimate (not measured)"
    return True


def _build(opts: CompileOptions, work: Path, calibration: str) -> list[SearchConfig]:
    """Every configuration's model: per size, lossless → prune → int8; each prune and calibration once."""
    is_onnx = opts.source.suffix.lower() == ".onnx"
    configs: list[SearchConfig] = []
    for size in (None,) if is_onnx else SIZES:
        lossless = work / f"{size or 'input'}-lossless.onnx"
        source = opts.source
        if not is_onnx:
            from frontends import export

            source = work / f"{size}-export.onnx"
            _say(opts, f"export at {size}")
            export(opts.source, source, imgsz=size, repo=opts.repo, trust=opts.trust)
        _say(opts, f"lossless at {size or 'the input size'}")
        optimize_file(source, lossless, None, "lossless", {}, calibration)
        size = size or _input_size(lossless)
        for prune in PRUNES:
            fp32 = lossless
            if prune is not None:
                fp32 = work / f"{size}-p{prune}.onnx"
                _say(opts, f"prune {size} to {prune}")
                optimize_file(lossless, fp32, ["prune"], None, {"prune": {"macs": prune}}, calibration)
            parent = SearchConfig(size, prune, False, str(fp32))
            configs.append(parent)
            int8 = fp32.with_name(fp32.stem + "-int8.onnx")
            _say(opts, f"int8 {fp32.stem}")
            optimize_file(
                fp32, int8, ["quantize"], None, {"quantize": {"target": opts.target.int8}}, calibration
            )
            configs.append(SearchConfig(size, prune, True, str(int8), parent=parent.name))
    return configs


def _versus_baseline(
    baseline: Path,
    times: dict[str, list[float]],
    configs: list[SearchConfig],
    chosen: SearchConfig,
    budget: float,
) -> dict[str, object]:
    """The chosen configuration against a peer's export, and apart from it the fastest configuration
    within the budget at the peer's own input size: what the graph work bought without what a smaller
    input bought."""
    from graphopt.compile.compiler import input_hw

    size = input_hw(baseline)
    at_size = [c for c in configs if size is not None and [c.imgsz, c.imgsz] == size]
    same = [c for c in at_size if c.rankable and c.loss_points <= budget] or at_size[:1]
    best_same = min(same, key=lambda c: c.host_latency_ms if c.latency_ms is None else c.latency_ms) if same else None

    def ratio(c: SearchConfig) -> float:
        return statistics.median(a / b for a, b in zip(times["baseline"], times[c.name], strict=True))

    return {
        "model": str(baseline),
        "imgsz": size,
        "latency_ms": statistics.median(times["baseline"]),
        "chosen_vs_baseline": ratio(chosen),
        "same_size": None if best_same is None else best_same.name,
        "same_size_vs_baseline": None if best_same is None else ratio(best_same),
    }


def _input_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


def _say(opts: CompileOptions, line: str) -> None:
    import sys

    if opts.progress:
        print(f"search: {line}", file=sys.stderr, flush=True)


def _plot(searched: SearchReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphopt.core.fileio import atomic_write

    report = searched.as_dict()
    rows = [r | {"latency_ms": r["host_latency_ms"] if r["latency_ms"] is None else r["latency_ms"]} for r in report["search"]]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    for int8, marker in ((False, "o"), (True, "^")):
        pts = [r for r in rows if r["int8"] == int8]
        ax.scatter(
            [r["latency_ms"] for r in pts],
            [r["map50_95"] for r in pts],
            marker=marker,
            label="int8" if int8 else "fp32",
        )
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot(
        [r["latency_ms"] for r in front], [r["map50_95"] for r in front], "k--", lw=1, label="Pareto front"
    )
    for r in rows:
        ax.annotate(
            r["name"], (r["latency_ms"], r["map50_95"]), fontsize=7, textcoords="offset points", xytext=(4, 3)
        )
        if r["chosen"]:
            ax.scatter(
                [r["latency_ms"]], [r["map50_95"]], s=160, facecolors="none", edgecolors="red", label="chosen"
            )
    ax.set_xlabel(f"latency (ms; {report['measured_on']})")
    ax.set_ylabel("mAP50-95 (holdout)")
    ax.set_title(f"{Path(report['source']).name} → {report['target']}: budget {report['budget']} points")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), "plot")
    finally:
        plt.close(fig)
    return path
