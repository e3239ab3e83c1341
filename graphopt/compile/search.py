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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from graphopt.compile.compiler import (
    CompileOptions,
    calibration_source,
    labeled_yaml,
    optimize_file,
    time_models,
)
from graphopt.core.errors import GraphoptError

SIZES = (640, 512, 416, 320)
PRUNES = (None, 0.85, 0.7)


@dataclass
class Config:
    imgsz: int
    prune: float | None
    int8: bool
    artifact: str = ""
    map50_95: float = 0.0
    map50: float = 0.0
    latency_ms: float = 0.0
    speedup: float = 1.0
    loss_points: float = 0.0
    pareto: bool = False
    chosen: bool = False

    @property
    def name(self) -> str:
        return f"{self.imgsz}" + (f"-p{self.prune}" if self.prune else "") + ("-int8" if self.int8 else "")


def search(opts: CompileOptions, budget: float) -> dict[str, Any]:

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
    is_onnx = opts.source.suffix.lower() == ".onnx"
    sizes = (None,) if is_onnx else SIZES
    configs: list[Config] = []
    for size in sizes:
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
            configs.append(Config(size, prune, False, str(fp32)))
            int8 = fp32.with_name(fp32.stem + "-int8.onnx")
            _say(opts, f"int8 {fp32.stem}")
            optimize_file(
                fp32, int8, ["quantize"], None, {"quantize": {"target": opts.target.int8}}, calibration
            )
            configs.append(Config(size, prune, True, str(int8)))
    for c in configs:
        _say(opts, f"eval {c.name}")
        r = evaluate(c.artifact, labeled, threads=opts.target.host_threads(), progress=opts.progress)
        c.map50_95, c.map50 = r.map50_95, r.map50
    _say(opts, "latency (interleaved)")
    times = time_models(
        [(c.name, Path(c.artifact), "ort") for c in configs],
        opts.image,
        opts.target.host_threads(),
        opts.rounds,
    )
    reference = configs[0]  # largest size, unpruned, fp32
    for c in configs:
        c.latency_ms = statistics.median(times[c.name])
        c.speedup = statistics.median(
            a / b for a, b in zip(times[reference.name], times[c.name], strict=True)
        )
        c.loss_points = round(100 * (reference.map50_95 - c.map50_95), 2)
    for c in configs:
        c.pareto = not any(
            o.latency_ms <= c.latency_ms
            and o.map50_95 >= c.map50_95
            and (o.latency_ms, o.map50_95) != (c.latency_ms, c.map50_95)
            for o in configs
        )
    within = [c for c in configs if c.loss_points <= budget]
    chosen = min(within, key=lambda c: c.latency_ms) if within else reference
    chosen.chosen = True
    final = opts.out / "model.onnx"
    optimize_file(Path(chosen.artifact), final, ["fuse-nms"], None, {}, calibration)
    report: dict[str, Any] = {
        "source": str(opts.source),
        "target": opts.target.name,
        "device": opts.target.device,
        "budget": budget,
        "calibration": calibration_note,
        "accuracy_data": str(labeled),
        "measured_on": f"this host, {opts.target.host_threads()} thread(s), {opts.rounds} interleaved rounds",
        "reference": reference.name,
        "chosen": chosen.name,
        "final": str(final),
        "search": [asdict(c) | {"name": c.name} for c in configs],
        "seconds": round(time.perf_counter() - started, 1),
        "stages": [],
    }
    report["plot"] = str(_plot(report, opts.out / "pareto.png"))
    write_reports(report, opts.out)
    return report


def _input_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


def _say(opts: CompileOptions, line: str) -> None:
    import sys

    if opts.progress:
        print(f"search: {line}", file=sys.stderr, flush=True)


def _plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphopt.core.fileio import atomic_write

    rows = report["search"]
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
