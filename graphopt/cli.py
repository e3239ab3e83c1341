"""`graphopt` command line. User mistakes print one line `error: …` and exit 2 (--debug: traceback)."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from graphopt import __version__
from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import write_json

EXIT_REGRESSION = 1
EXIT_INTERNAL = 3
EXIT_TERMINATED = 128 + signal.SIGTERM


class FiniteFloat(click.ParamType):
    """A float within [lo, hi] (either end optional); NaN and infinities are refused."""

    name = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        bad_lo = self.lo is not None and (number <= self.lo if self.lo_open else number < self.lo)
        if not math.isfinite(number) or bad_lo or (self.hi is not None and number > self.hi):
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            self.fail(f"{value!r} is not in {'(' if self.lo_open else '['}{lo}, {hi}]", param, ctx)
        return number


def backend_options(command: Any) -> Any:
    """--backend and --threads, declared once for every command that runs a model."""
    command = click.option(
        "--threads", type=click.IntRange(min=1), default=None, help="Inference threads [min(4, cores)]."
    )(command)
    return click.option(
        "--backend", type=click.Choice(["ort", "ncnn"]), default=None, help="[by model file: .onnx → ort]"
    )(command)


def ncnn_int8_option(dest: str, help: str) -> Any:
    """--int8 [mixed|all], declared once: compile (pi5-ncnn) and convert (--to ncnn) write the same model."""
    return click.option(
        "--int8",
        dest,
        type=click.Choice(["mixed", "all"]),
        is_flag=False,
        flag_value="mixed",
        default=None,
        help=help,
    )


UNIT = FiniteFloat(0.0, 1.0)
NON_NEGATIVE = FiniteFloat(0.0)
POSITIVE_INT = click.IntRange(min=1)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def emit(result: Any, as_json: bool, table: Callable[[], None]) -> None:
    """Every command's one output: the result as JSON (its `as_dict()` when it has one), or its table."""
    if as_json:
        _echo_json(result.as_dict() if hasattr(result, "as_dict") else result)
    else:
        table()


def _note_inputs(*paths: str | Path | None) -> None:
    from runtime.files import note_input

    for p in paths:
        if p is not None:
            note_input(p)


def _check_outputs(*outputs: tuple[str, str | Path | None]) -> None:
    """Before any work: every output may be written (not an input, not a folder) and no two coincide."""
    from runtime.files import check_output, distinct_outputs

    distinct_outputs(outputs)
    for what, path in outputs:
        if path is not None:
            check_output(path, what)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graphopt")
def cli() -> None:
    """ONNX graph-surgery compiler and edge runtime for YOLO detectors on the Raspberry Pi 5.

    Add --debug anywhere to see the traceback of an error.
    """


@cli.command()
@click.argument("model")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: ops, nodes, params, inputs, outputs, opset, metadata.",
)
def inspect(model: str, as_json: bool) -> None:
    """Ops per type, node count, params, inputs/outputs, opset and metadata of MODEL."""
    from graphopt.core.model import load_model, summarize
    from graphopt.report import print_inspect

    summary = summarize(load_model(model))
    emit(summary, as_json, lambda: print_inspect(model, summary))


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: ops, nodes, params, size_bytes (each a/b/delta)."
)
def diff(a: str, b: str, as_json: bool) -> None:
    """Compare two models: op counts (with deltas), params and file size."""
    from graphopt.core.model import diff_summaries, load_model, summarize
    from graphopt.report import print_diff

    result = diff_summaries(
        summarize(load_model(a)), summarize(load_model(b)), os.path.getsize(a), os.path.getsize(b)
    )
    emit(result, as_json, lambda: print_diff(result, a, b))


@cli.command()
@click.argument("model")
@click.option("--golden", required=True, help="Golden JSON snapshot (ops, params, input/output shapes).")
@click.option("--update", is_flag=True, help="Write the golden file from MODEL instead of checking.")
@click.option(
    "--allow-decrease", is_flag=True, help="Fewer ops or params than the golden file is not a regression."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: ok, model, golden, differences.")
def check(model: str, golden: str, update: bool, allow_decrease: bool, as_json: bool) -> int:
    """Check MODEL against a golden snapshot; exit 1 on regression."""
    from graphopt.core.model import load_model, summarize
    from graphopt.eval.golden import GoldenCheck, compare_golden, read_golden, snapshot, write_golden
    from graphopt.report import print_check

    snap = snapshot(summarize(load_model(model)))
    golden_path = Path(golden)
    if update:
        _check_outputs(("golden file", golden_path))
        write_golden(golden_path, snap)
        updated = GoldenCheck(model, golden, [], updated=True)
        emit(
            updated,
            as_json,
            lambda: click.echo(f"wrote {golden_path} ({sum(snap['ops'].values())} nodes, {snap['params']:,} params)"),
        )
        return 0
    result = GoldenCheck(model, golden, compare_golden(snap, read_golden(golden_path), allow_decrease))
    emit(result, as_json, lambda: print_check(result))
    return 0 if result.ok else EXIT_REGRESSION


@cli.command()
@click.argument("input_model", metavar="IN")
@click.option("-o", "--output", required=True, help="Output .onnx path (never the input).")
@click.option("--passes", help="Comma-separated pass names, run in order.")
@click.option("--recipe", help="Recipe name (see graphopt/passes/recipes) or a recipe YAML file.")
@click.option(
    "--set", "sets", multiple=True, metavar="PASS.KEY=VALUE", help="Set a pass option (repeatable)."
)
@click.option("--data", help="Images (folder, image, or data.yaml) for verification and calibration.")
@click.option("--no-verify", is_flag=True, help="Skip the numerical equivalence check of lossless passes.")
@click.option(
    "--verify-samples",
    default=2,
    show_default=True,
    type=POSITIVE_INT,
    help="Inputs used by the equivalence check.",
)
@click.option(
    "--atol", default=None, type=NON_NEGATIVE, help="Absolute tolerance of the equivalence check [1e-4]."
)
@click.option(
    "--rtol", default=None, type=NON_NEGATIVE, help="Relative tolerance of the equivalence check [1e-3]."
)
@click.option("--report", "report_path", help="Write the per-pass report as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
def optimize(
    input_model: str,
    output: str,
    passes: str | None,
    recipe: str | None,
    sets: tuple[str, ...],
    data: str | None,
    no_verify: bool,
    verify_samples: int,
    atol: float | None,
    rtol: float | None,
    report_path: str | None,
    as_json: bool,
) -> None:
    """Run passes (or a recipe) over IN and write OUT; lossless passes are verified numerically."""
    from graphopt.core.model import check_opset, diff_summaries, load_model, same_file, save_model, summarize
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, OptimizeReport, Pipeline, parse_overrides
    from graphopt.report import print_pipeline
    from runtime.files import commit_together

    if bool(passes) == bool(recipe):
        raise GraphoptError("give exactly one of --passes or --recipe")
    if same_file(output, input_model) and Path(input_model).exists():
        raise GraphoptError(f"{output}: output path is the input file; choose another output path")
    model = load_model(input_model)
    check_opset(model, input_model)
    overrides = parse_overrides(sets)
    kwargs: dict[str, Any] = {
        "verify_outputs": not no_verify,
        "feeds": FeedSource(data, samples=verify_samples),
        "atol": DEFAULT_ATOL if atol is None else atol,
        "rtol": DEFAULT_RTOL if rtol is None else rtol,
    }
    if passes:
        names = [p.strip() for p in passes.split(",") if p.strip()]
        pipeline = Pipeline.from_passes(names, overrides, **kwargs)
    else:
        pipeline = Pipeline.from_recipe(recipe, overrides, **kwargs)  # type: ignore[arg-type]
    # --data (its data.yaml, lists and images) and a recipe file have been read: every output is now
    # checked against every input, before any pass runs
    _check_outputs(("output model", output), ("report", report_path))
    result = pipeline.run(model)
    before, after = summarize(model), summarize(result.model)
    for s in (before, after):
        s.pop("metadata")
    with commit_together():  # the model and its report, or neither
        save_model(result.model, output, input_path=input_model)
        done = OptimizeReport(result, input_model, output, before, after, {})
        if report_path:
            write_json(report_path, done.report(), "report")
    done.diff = diff_summaries(before, after, os.path.getsize(input_model), os.path.getsize(output))
    emit(done, as_json, lambda: print_pipeline(done, Path(input_model).name, Path(output).name))
    if not as_json:
        click.echo(f"wrote {output}")


def _parse_imgsz(text: str) -> int | tuple[int, int]:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise GraphoptError(f"bad --imgsz '{text}': expected N or H,W")
    return values[0] if len(values) == 1 else (values[0], values[1])


@cli.command()
@click.argument("checkpoint", metavar="CKPT")
@click.option("-o", "--output", help="Output .onnx [CKPT's name with .onnx, in the current folder].")
@click.option(
    "--imgsz", default=None, help="Input size: N or H,W (multiple of the stride) [640; a .cfg's own]."
)
@click.option("--opset", default=17, show_default=True, type=click.IntRange(11, 21), help="ONNX opset.")
@click.option(
    "--repo", help="Training repo checkout whose code the checkpoint needs (yolov7/yolov9, or yolov5)."
)
@click.option("--trust", is_flag=True, help="Allow full unpickling, which runs code from the file.")
@click.option("--data", help="Verify on a real image: an image, or the first of a folder or data.yaml.")
@click.option("--weights", "darknet_weights", help="Darknet: the .weights file of a .cfg CKPT.")
@click.option("--names", "names_file", help="Darknet: class names, one per line (a .names file).")
@click.option(
    "--decode",
    type=click.Choice(["darknet", "scaled"]),
    default="darknet",
    show_default=True,
    help="Darknet: the yolo layer's decode — Darknet's, from the cfg; or PyTorch_YOLOv4's (scaled).",
)
@click.option(
    "--letterbox/--no-letterbox",
    default=None,
    help="Darknet: letterbox the input, or resize it to the network size [the cfg's [net] letter_box].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
def export(
    checkpoint: str,
    output: str | None,
    imgsz: str | None,
    opset: int,
    repo: str | None,
    trust: bool,
    data: str | None,
    darknet_weights: str | None,
    names_file: str | None,
    decode: str,
    letterbox: bool | None,
    as_json: bool,
) -> None:
    """Export a trained checkpoint (or a Darknet .cfg + .weights) to ONNX once, as trained (BN and Rep
    branches kept), verified."""
    from graphopt.data.datasets import resolve_images
    from graphopt.report import print_export

    size = _parse_imgsz(imgsz) if imgsz else None
    image = resolve_images(data)[0] if data else None
    out = output or Path(checkpoint).with_suffix(".onnx").name
    if Path(checkpoint).suffix.lower() == ".weights":
        raise GraphoptError(
            f"{checkpoint}: Darknet weights; give the .cfg first: graphopt export MODEL.cfg --weights {checkpoint}"
        )
    if Path(checkpoint).suffix.lower() == ".cfg":
        if not darknet_weights:
            raise GraphoptError(f"{checkpoint}: a Darknet .cfg needs its weights: --weights MODEL.weights")
        from frontends.darknet import export_darknet

        _note_inputs(checkpoint, darknet_weights, names_file, image)
        _check_outputs(("output model", out))
        result = export_darknet(
            checkpoint,
            darknet_weights,
            out,
            imgsz=size,
            names=names_file,
            decode=decode,
            opset=opset,
            image=image,
            letterbox=letterbox,
        )
        emit(result, as_json, lambda: print_export(result))
        return
    if darknet_weights or names_file or letterbox is not None:
        raise GraphoptError(
            "--weights, --names and --letterbox/--no-letterbox are for a Darknet .cfg; a .pt holds its own "
            "(and is letterboxed)"
        )
    _note_inputs(checkpoint, image)
    _check_outputs(("output model", out))
    try:
        import torch  # noqa: F401

        from frontends import export as export_checkpoint
    except ImportError as exc:
        raise GraphoptError("graphopt export needs PyTorch: pip install 'graphopt[torch]'") from exc
    report = export_checkpoint(
        checkpoint, out, imgsz=640 if size is None else size, opset=opset, repo=repo, trust=trust, image=image
    )
    emit(report.as_dict(), as_json, lambda: print_export(report.as_dict()))


@cli.command("eval")
@click.argument("model")
@click.option("--data", required=True, help="YOLO data.yaml (its val split is evaluated).")
@click.option(
    "--imgsz", type=POSITIVE_INT, default=None, help="Input size for models with a dynamic input [640]."
)
@backend_options
@click.option("--plots", "plots_dir", help="Write per_class.md and pr_curve.png (IoU 0.5) into this folder.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: map50, map50_95, precision, recall, images, instances, per_class, timing_ms, …",
)
def eval_command(
    model: str,
    data: str,
    imgsz: int | None,
    backend: str | None,
    threads: int | None,
    plots_dir: str | None,
    as_json: bool,
) -> None:
    """mAP50 and mAP50-95 (COCO-style, pycocotools) of MODEL on a YOLO dataset, with precision/recall."""
    from graphopt.eval.evaluate import evaluate
    from graphopt.report import print_eval

    _note_inputs(model, data)
    if plots_dir and Path(plots_dir).exists() and not Path(plots_dir).is_dir():
        raise GraphoptError(f"{plots_dir}: --plots takes a folder, and this is a file")
    evaluated = evaluate(model, data, backend=backend, imgsz=imgsz, threads=threads)
    if plots_dir:
        from graphopt.eval.plots import write_plots

        evaluated.plots = [str(p) for p in write_plots(evaluated, Path(plots_dir))]
    emit(evaluated, as_json, lambda: print_eval(evaluated, per_class=bool(plots_dir)))


@cli.command()
@click.argument("model")
@backend_options
@click.option("--runs", type=POSITIVE_INT, default=50, show_default=True, help="Timed runs.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first."
)
@click.option("--image", help="Time the whole frame path (letterbox, decode, NMS) on this image too.")
@click.option(
    "--pi5-estimate",
    is_flag=True,
    help="Also the estimated Raspberry Pi 5 latency (4 threads, or --threads 1): an estimate with its "
    "validation error, from the model's MACs (needs graphopt[compiler]).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: avg_ms, min_ms, max_ms, p50_ms, p95_ms, fps, cpu_temp_c, throttled, … (pi5_estimate)",
)
def bench(
    model: str,
    backend: str | None,
    threads: int | None,
    runs: int,
    warmup: int,
    image: str | None,
    pi5_estimate: bool,
    as_json: bool,
) -> None:
    """Inference latency (avg/min/max/p50/p95 ms, FPS) with CPU temperature and throttle flags."""
    from graphopt.report import print_bench
    from runtime.bench import run_bench

    result = run_bench(model, backend=backend, threads=threads, runs=runs, warmup=warmup, image=image)
    if pi5_estimate:
        try:
            from graphopt.compile.pi5_cost import model_estimate
        except ImportError as exc:
            raise GraphoptError("--pi5-estimate reads the model's MACs: pip install 'graphopt[compiler]'") from exc
        result["pi5_estimate"] = model_estimate(model, threads=1 if threads == 1 else 4)
    emit(result, as_json, lambda: print_bench(result))


@cli.command()
@click.argument("model")
@click.argument("source")
@click.option("--save", "save_dir", help="Write annotated images / video into this folder.")
@backend_options
@click.option("--conf", type=UNIT, default=0.25, show_default=True, help="Confidence threshold (0-1).")
@click.option("--iou", type=UNIT, default=0.45, show_default=True, help="NMS IoU threshold (0-1).")
@click.option(
    "--max-frames",
    type=POSITIVE_INT,
    default=None,
    help="Stop after this many frames (cameras run until Ctrl-C).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: summary and per-frame detections.")
def detect(
    model: str,
    source: str,
    save_dir: str | None,
    backend: str | None,
    threads: int | None,
    conf: float,
    iou: float,
    max_frames: int | None,
    as_json: bool,
) -> None:
    """Detect objects in an image, a folder, a video, a camera index or picamera2; print a summary."""
    from graphopt.report import print_detect
    from runtime.detect import run_detect

    result = run_detect(
        model,
        source,
        save_dir=save_dir,
        backend=backend,
        threads=threads,
        conf=conf,
        iou=iou,
        max_frames=max_frames,
        collect=as_json,
    )
    emit(result, as_json, lambda: print_detect(result))


@cli.command("compile")
@click.argument("model", required=False, metavar="[CKPT_OR_ONNX]")
@click.option(
    "--target",
    type=click.Choice(["x86-ort", "pi5-ort", "pi5-ncnn"]),
    default=None,
    help="What the artifact runs on [pi5-ort on an Arm machine, else x86-ort].",
)
@click.option("-o", "--output", help="Output folder [compiled-TARGET].")
@click.option("--data", help="data.yaml: calibrate on its train split, report mAP on its val split.")
@click.option(
    "--prune", "prune_macs", type=FiniteFloat(0.0, 1.0, lo_open=True), help="Prune to this MACs fraction."
)
@click.option(
    "--budget", type=NON_NEGATIVE, help="int8: keep layers float until the loss is ≤ this (points)."
)
@click.option("--imgsz", type=POSITIVE_INT, default=None, help="Export size for a .pt [640].")
@click.option("--image", help="Sample image (annotated, and timed) [the bundled bus.jpg].")
@click.option("--baseline", help="Another ONNX timed (and scored) in the same run, e.g. a peer's export.")
@click.option(
    "--rounds", type=POSITIVE_INT, default=20, show_default=True, help="Interleaved latency rounds."
)
@click.option(
    "--search", is_flag=True, help="Evaluate a grid (input size × prune × int8) and pick within --budget."
)
@click.option(
    "--keep-lossy",
    is_flag=True,
    help="Deploy every lossy stage (prune, int8) even where it does not pay on the target.",
)
@ncnn_int8_option(
    "ncnn_int8",
    "pi5-ncnn: an int8 NCNN model (mixed: where NCNN's kernels pay; all: every conv but the head's).",
)
@click.option("--repo", help="Training repo checkout the checkpoint needs (as for export).")
@click.option("--trust", is_flag=True, help="Allow full unpickling of the checkpoint (runs code from it).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile_command(
    model: str | None,
    target: str | None,
    output: str | None,
    data: str | None,
    prune_macs: float | None,
    budget: float | None,
    imgsz: int | None,
    image: str | None,
    baseline: str | None,
    rounds: int,
    search: bool,
    keep_lossy: bool,
    ncnn_int8: str | None,
    repo: str | None,
    trust: bool,
    as_json: bool,
) -> None:
    """Checkpoint or ONNX → deployable artifacts for a target, with report.md/json, a plot and a sample image.

    With no model, compiles the bundled YOLOv5n (COCO) and calibrates on 32 bundled COCO images.
    """
    from graphopt.compile import compiler
    from graphopt.compile.targets import TARGETS, default_target
    from graphopt.report import print_compile

    name = target or default_target()
    source = Path(model) if model else compiler.DEFAULT_MODEL
    sample = Path(image) if image else compiler.DEFAULT_IMAGE
    out = Path(output or f"compiled-{name}")
    opts = compiler.CompileOptions(
        source=source,
        target=TARGETS[name],
        out=out,
        data=data,
        prune=prune_macs,
        budget=budget,
        imgsz=imgsz,
        image=sample,
        baseline=Path(baseline) if baseline else None,
        rounds=rounds,
        trust=trust,
        repo=repo,
        progress=not as_json,
        keep_lossy=keep_lossy,
        ncnn_int8=ncnn_int8,
    )
    opts.check()  # every input, before the first stage
    if search and ncnn_int8 is not None:
        raise GraphoptError("--search does not take --int8 yet: compile the picked configuration with --int8")
    if search:
        from graphopt.compile.search import search as run_search

        report = run_search(opts, budget if budget is not None else 1.0)
    else:
        report = compiler.Compiler(opts).run()
    emit(report, as_json, lambda: print_compile(report))


@cli.command()
@click.argument("model")
@click.option("--to", "target", type=click.Choice(["ncnn"]), required=True, help="Target format.")
@click.option("-o", "--output", required=True, help="Output folder (gets NAME.ncnn.param/.bin/.json).")
@click.option(
    "--fp16/--fp32", default=True, show_default=True, help="Store weights as fp16 (NCNN's default)."
)
@click.option(
    "--data",
    help="Verify on a real image: an image, or the first of a folder or data.yaml; with --int8, the "
    "calibration images (a data.yaml's train split).",
)
@ncnn_int8_option(
    "int8_mode",
    "Write an int8 NCNN model (needs --data): mixed = int8 where NCNN's kernels pay (convs "
    "followed by Swish stay fp16); all = every conv but the head's output convs.",
)
@click.option(
    "--calibration",
    type=click.Choice(["auto", "kl", "aciq"]),
    default="auto",
    show_default=True,
    help="--int8 activation scales: KL (2048-bin histogram), ACIQ (Gaussian clip), or auto: both, "
    "keeping the one whose model agrees best with fp32 on the calibration images.",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 100_000),
    default=64,
    show_default=True,
    help="--int8 calibration images.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def convert(
    model: str,
    target: str,
    output: str,
    fp16: bool,
    data: str | None,
    int8_mode: str | None,
    calibration: str,
    samples: int,
    as_json: bool,
) -> None:
    """Convert an ONNX model to NCNN with pnnx, with the metadata sidecar the runtime reads."""
    from graphopt.data.datasets import resolve_images

    if int8_mode is not None:
        from graphopt.compile.ncnn_int8 import convert_to_ncnn_int8

        if data is None:
            raise GraphoptError("--int8 needs --data: the calibration images (e.g. a data.yaml's train split)")
        resolve_images(data)  # a mistake in --data is one line before pnnx runs
        result = convert_to_ncnn_int8(
            model, output, data, int8_mode, calibration, samples, verify_image=resolve_images(data)[0]
        )
        if as_json:
            _echo_json(result)
            return
        from graphopt.report import print_ncnn_int8

        print_ncnn_int8(result)
        return
    from graphopt.compile.ncnn import convert_to_ncnn

    image = resolve_images(data)[0] if data else None
    result = convert_to_ncnn(model, output, fp16=fp16, verify_image=image)
    if as_json:
        _echo_json(result)
    else:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_diff"].items())
        click.echo(
            f"wrote {result['param']} and .bin ({'fp16' if fp16 else 'fp32'} weights), sidecar {result['sidecar']}"
        )
        click.echo(
            f"NCNN vs onnxruntime on {result['verified_on']}: max abs diff {diffs} "
            f"({result['max_rel_to_range']:.3%} of the output range)"
        )


@cli.command("passes")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: a list of name, lossless, description, options."
)
def list_passes(as_json: bool) -> None:
    """Registered passes, whether each is lossless, their options and what they need."""
    from graphopt.passes import all_passes
    from graphopt.report import print_passes

    specs = all_passes()
    emit([spec.describe() for spec in specs], as_json, lambda: print_passes(specs))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are a user's mistake or an unusable input: one line, exit 2."""
    from runtime.backends import RuntimeModelError
    from runtime.files import FileProblem
    from runtime.metadata import MetadataError
    from runtime.sources import SourceError

    return (RuntimeModelError, FileProblem, MetadataError, SourceError)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` (temp files) runs before exit."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C does: atomic writes remove their temp files on the way out."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps errors to one line and an exit code (2 user error, 1 regression, 3 internal)."""
    from runtime.files import forget_inputs
    from runtime.logs import route_library_output

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    forget_inputs()
    route_library_output(not debug)  # libjpeg/FFmpeg/onnxruntime lines stay off stderr unless --debug
    in_main = threading_main()  # signal handlers can only be set from the main thread
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:
        install_signal_handlers()
    try:
        code = cli.main(args=args, prog_name="graphopt", standalone_mode=False)
    except GraphoptError as exc:
        _fail(f"error: {exc}", exc.exit_code, debug)
    except _user_errors() as exc:
        _fail(f"error: {exc}", 2, debug)
    except click.ClickException as exc:
        _fail(
            f"error: {exc.format_message()}", 2 if isinstance(exc, click.UsageError) else exc.exit_code, debug
        )
    except (KeyboardInterrupt, click.Abort):
        _fail("error: interrupted", 130, debug)
    except Terminated:
        from runtime.logs import release_terminal

        release_terminal()
        if debug:
            traceback.print_exc()
        click.echo("error: terminated (SIGTERM); nothing was left half-written", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Every `finally` has run (temp files are gone). Skip interpreter teardown: native thread pools
        # (onnxruntime, OpenCV) stopped mid-run can abort the process while being destroyed.
        os._exit(EXIT_TERMINATED)
    except MemoryError:
        _fail(
            "error: out of memory; try a smaller --imgsz, fewer samples (--set quantize.samples=N), "
            "or close other programs",
            EXIT_INTERNAL,
            debug,
        )
    except ModuleNotFoundError as exc:
        hint = MISSING_EXTRA.get((exc.name or "").split(".")[0])
        if hint is None:
            _internal(exc, debug)
        _fail(
            f"error: this command needs '{exc.name}', which is not installed: pip install '{hint}'", 2, debug
        )
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        _internal(exc, debug)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    sys.exit(code if isinstance(code, int) else 0)


# A compiler dependency missing from a runtime-only install (the Pi's): which extra brings it.
MISSING_EXTRA = {
    "onnx": "graphopt[compiler]",
    "onnx_graphsurgeon": "graphopt[compiler]",
    "onnxsim": "graphopt[compiler]",
    "yaml": "graphopt[compiler]",
    "onnxruntime": "graphopt[runtime]",
    "pycocotools": "graphopt[eval]",
    "pnnx": "graphopt[pnnx]",
    "ncnn": "graphopt[ncnn]",
    "torch": "graphopt[torch]",
    "onnx2torch": "graphopt[torch]",
    "matplotlib": "graphopt[compiler]",
}


def _internal(exc: BaseException, debug: bool) -> None:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    _fail(
        f"error: internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
        EXIT_INTERNAL,
        debug,
    )


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fail(line: str, code: int, debug: bool) -> None:
    from runtime.logs import release_terminal

    release_terminal()  # the one line reaches the terminal, whatever a decoder thread is doing
    if debug:
        traceback.print_exc()
    click.echo(" ".join(line.split("\n"))[:2000], err=True)
    sys.exit(code)
