"""`graphopt compile`: one command from a checkpoint (or ONNX) to the artifacts a target deploys.

Stages, each a step of one run with its own artifact in DIR/stages/: export (a `.pt`) → lossless →
prune (if asked) → int8 (the target's flavour) → fuse-nms (onnxruntime targets) or convert (NCNN).
Then every stage is measured the same way: accuracy on the labeled split of `--data` (when given),
latency in one interleaved run on this machine (the target's thread count, capped by this machine's
cores; onnxruntime's thread spinning off so sessions do not disturb each other), and the final
model's frame time split into preprocess / inference / postprocess. DIR gets the deployable model,
report.json + report.md, a latency-vs-mAP plot and one annotated sample image.

A failing stage stops the run with its one-line error; the artifacts of the stages before it stay,
and report.json says which stage failed.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.core.errors import GraphoptError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = ASSETS / "yolov5n-coco.pt"
DEFAULT_IMAGE = ASSETS / "bus.jpg"
DEFAULT_CALIB = ASSETS / "calib"


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # ort | ncnn
    threads: int  # on the device
    int8: str | None  # quantize.target for onnxruntime int8, None when the backend's int8 is not ORT's
    nms_in_graph: bool
    device: str  # where the artifact runs

    def host_threads(self) -> int:
        return max(1, min(self.threads, os.cpu_count() or 1))


TARGETS = {
    "x86-ort": Target("x86-ort", "ort", os.cpu_count() or 1, "x86", True, "this x86 machine"),
    "pi5-ort": Target("pi5-ort", "ort", 4, "arm", True, "Raspberry Pi 5 (Cortex-A76, 4 cores)"),
    "pi5-ncnn": Target("pi5-ncnn", "ncnn", 4, None, False, "Raspberry Pi 5 (Cortex-A76, 4 cores)"),
}


def default_target() -> str:
    return "pi5-ort" if platform.machine().lower() in ("aarch64", "arm64") else "x86-ort"


@dataclass
class Stage:
    name: str
    artifact: Path | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    accuracy_from: str | None = None  # a stage verified equal to an earlier one reuses its mAP
    latency_ms: float | None = None
    speedup: float | None = None  # vs the first stage (the model as trained), same run
    backend: str = "ort"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "artifact": str(self.artifact) if self.artifact else None,
            "backend": self.backend,
            "seconds": round(self.seconds, 2),
            **{k: self.summary.get(k) for k in ("nodes", "params", "macs")},
            "ops": self.summary.get("ops"),
            "map50_95": None if self.accuracy is None else self.accuracy["map50_95"],
            "map50": None if self.accuracy is None else self.accuracy["map50"],
            "accuracy_from": self.accuracy_from,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "notes": self.notes,
        }


@dataclass
class CompileOptions:
    source: Path
    target: Target
    out: Path
    data: str | None = None  # data.yaml (train split: calibration; val split: accuracy), folder or list
    prune: float | None = None
    budget: float | None = None
    imgsz: int | None = None
    image: Path = DEFAULT_IMAGE
    baseline: Path | None = None  # another ONNX timed (and scored) in the same run, e.g. a peer's export
    rounds: int = 20
    trust: bool = False
    repo: str | None = None
    progress: bool = True
    checked: bool = field(default=False, repr=False, compare=False)

    def check(self) -> None:
        """Every input and setting, before the first stage runs (a mistake is one line after seconds,
        not at stage 5/5 after the stage models are written): the model (an ONNX opens in onnxruntime,
        its opset and metadata as eval reads them), the sample image (decoded, within the megapixel
        limit), the baseline (opened as the runtime will), `--data` (its images, and a data.yaml's
        names, nc and val split), the sizes and ranges, and the output folder. Every input is noted,
        so no output lands on one. Idempotent: `Compiler.run` calls it too."""
        if self.checked:
            return
        from graphopt.core.model import check_opset, checked_metadata, load_model
        from graphopt.data.datasets import load_dataset, resolve_images
        from runtime.detector import open_detector
        from runtime.files import FileProblem, input_file
        from runtime.metadata import input_size_problem
        from runtime.sources import ImageProblem, load_image

        suffix = self.source.suffix.lower()
        if suffix not in (".pt", ".pth", ".onnx"):
            raise GraphoptError(f"{self.source}: expected a .pt checkpoint or an .onnx model")
        try:
            input_file(self.source, "checkpoint" if suffix != ".onnx" else "ONNX model", max_bytes=None)
        except FileProblem as exc:
            raise GraphoptError(str(exc)) from None
        if suffix == ".onnx":
            from graphopt.core.ort_session import session

            model = load_model(self.source)
            check_opset(model, str(self.source))
            checked_metadata(model, self.source)
            try:
                session(model)  # what the first stage would find out: onnxruntime can run it
            except GraphoptError as exc:
                raise GraphoptError(f"{self.source}: {exc}") from None
        elif self.repo is not None and not Path(self.repo).is_dir():
            raise GraphoptError(f"--repo {self.repo}: not a folder")
        if self.imgsz is not None and (problem := input_size_problem(self.imgsz, self.imgsz)):
            raise GraphoptError(f"--imgsz: {problem}")
        if self.prune is not None and not 0 < self.prune <= 1:
            raise GraphoptError(f"--prune {self.prune}: the MACs fraction to keep must be in (0, 1]")
        if self.budget is not None and not 0 <= self.budget <= 100:
            raise GraphoptError(f"--budget {self.budget}: points of mAP50-95, in [0, 100]")
        if self.rounds < 1:
            raise GraphoptError("--rounds must be at least 1")
        try:
            load_image(self.image)
        except ImageProblem as exc:
            raise GraphoptError(f"--image {exc}") from None
        if self.baseline is not None:
            from runtime.backends import RuntimeModelError

            try:
                open_detector(self.baseline, backend="ort", threads=1)
            except RuntimeModelError as exc:
                raise GraphoptError(f"--baseline {exc}") from None
        if self.data is not None:
            resolve_images(self.data)  # the calibration images (a data.yaml's train split)
            if labeled_yaml(self.data) is not None:
                load_dataset(self.data, "val")  # names, nc and the split accuracy is measured on
        for p in (self.source, self.image, self.baseline, self.data):
            if p is not None and self.out.resolve() in Path(p).resolve().parents:
                raise GraphoptError(f"{self.out}: the output folder holds an input ({p}); choose another -o")
        if self.out.exists() and not self.out.is_dir():
            raise GraphoptError(f"{self.out}: exists and is not a folder; -o takes a folder")
        self.checked = True


class Compiler:
    """Runs the stages for one target; `run()` returns the report (also written to DIR)."""

    def __init__(self, opts: CompileOptions) -> None:
        self.opts = opts
        self.stages: list[Stage] = []
        self.stage_dir = opts.out / "stages"
        self.calibration, self.calibration_note = calibration_source(opts.data)
        self.labeled = labeled_yaml(opts.data)
        self.started = time.perf_counter()
        self._say = _progress_printer(opts.progress)

    # --- the run ------------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, Callable[[], Stage]]]:
        t = self.opts.target
        steps: list[tuple[str, Callable[[], Stage]]] = [
            ("export", self._export),
            ("lossless", self._lossless),
        ]
        if self.opts.prune is not None:
            steps.append(("prune", self._prune))
        if t.int8 is not None:
            steps.append(("int8", self._int8))
        steps.append(("fuse-nms", self._fuse_nms) if t.nms_in_graph else ("convert", self._convert))
        return steps

    def run(self) -> dict[str, Any]:
        from runtime.files import FileProblem, output_dir

        self.opts.check()
        try:
            output_dir(self.opts.out, "compile output folder")
            output_dir(self.stage_dir, "compile stages folder")
        except FileProblem as exc:
            raise GraphoptError(str(exc)) from None
        steps = self.plan()
        total = len(steps) + 1
        for i, (name, fn) in enumerate(steps, 1):
            label = "input" if name == "export" and self.opts.source.suffix.lower() == ".onnx" else name
            self._say(f"[{i}/{total}] {label}")
            start = time.perf_counter()
            try:
                stage = fn()
            except GraphoptError as exc:
                self._write_report(failed=(name, str(exc)))
                raise GraphoptError(
                    f"compile stage '{name}' failed: {exc} (earlier artifacts in {self.opts.out})"
                ) from exc
            stage.seconds = time.perf_counter() - start
            if stage.artifact is not None and stage.artifact.suffix == ".onnx":
                from graphopt.core.model import load_model, summarize

                stage.summary = summarize(load_model(stage.artifact))
            self.stages.append(stage)
            self._say(
                f"      {name}: {stage.seconds:.1f} s" + (f" — {stage.notes[0]}" if stage.notes else "")
            )
        self._say(f"[{total}/{total}] measure (accuracy, latency, sample)")
        final = self._deploy()
        measured = self._measure()
        return self._write_report(final=final, measured=measured)

    # --- stages -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.stage_dir / f"{len(self.stages)}-{name}.onnx"

    def _previous_onnx(self) -> Path:
        return next(s.artifact for s in reversed(self.stages) if s.artifact and s.artifact.suffix == ".onnx")

    def _export(self) -> Stage:
        src = self.opts.source
        if src.suffix.lower() == ".onnx":
            return Stage("input", src, notes=["an ONNX input: used as given (never written)"])
        try:
            from frontends import export
        except ImportError as exc:
            raise GraphoptError(
                "compiling a .pt needs PyTorch to export it: pip install 'graphopt[torch]'"
            ) from exc
        out = self._path("export")
        report = export(
            src,
            out,
            imgsz=self.opts.imgsz or 640,
            repo=self.opts.repo,
            trust=self.opts.trust,
            image=self.opts.image,
        )
        r = report.as_dict()
        return Stage(
            "export",
            out,
            notes=[f"{r['family']}, verified against torch (max abs diff {r['max_abs_diff']:.2e})"],
        )

    def _optimize(self, name: str, passes: list[str] | None, recipe: str | None, options: dict) -> Stage:
        out = self._path(name)
        reports = optimize_file(self._previous_onnx(), out, passes, recipe, options, self.calibration)
        stage = Stage(name, out, notes=[n for r in reports for n in r.notes])
        if all(r.lossless for r in reports):
            stage.accuracy_from = self.stages[-1].name
        return stage

    def _lossless(self) -> Stage:
        return self._optimize("lossless", None, "lossless", {})

    def _prune(self) -> Stage:
        return self._optimize("prune", ["prune"], None, {"prune": {"macs": self.opts.prune}})

    def _int8(self) -> Stage:
        options: dict[str, Any] = {"target": self.opts.target.int8}
        if self.opts.budget is not None:
            options["budget"] = self.opts.budget
        stage = self._optimize("int8", ["quantize"], None, {"quantize": options})
        stage.notes.insert(0, f"calibrated on {self.calibration_note}")
        return stage

    def _fuse_nms(self) -> Stage:
        stage = self._optimize("fuse-nms", ["fuse-nms"], None, {})
        stage.notes.append(
            "NMS in the graph equals the runtime's host NMS at its thresholds (verified); its accuracy is the "
            "previous stage's at the validator's settings"
        )
        return stage

    def _convert(self) -> Stage:
        from graphopt.compile.ncnn import convert_to_ncnn

        out = self.stage_dir / f"{len(self.stages)}-ncnn"
        result = convert_to_ncnn(self._previous_onnx(), out, fp16=True, verify_image=self.opts.image)
        stage = Stage("convert", Path(result["param"]).parent, backend="ncnn")
        stage.notes.append(
            f"pnnx → NCNN, fp16 weights; max abs diff vs onnxruntime {max(result['max_abs_diff'].values()):.2e}"
        )
        stage.notes.append(
            "NCNN int8 is not produced: the ncnn pip package ships no ncnn2table/ncnn2int8 tools and pnnx has "
            "no int8 mode; int8 for the Pi is the pi5-ort target"
        )
        return stage

    # --- deploy and measure -------------------------------------------------------------------

    def _deploy(self) -> Path:
        last = self.stages[-1]
        assert last.artifact is not None
        if last.backend == "ncnn":
            final = self.opts.out / "ncnn"
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(last.artifact, final)
            return final
        final = self.opts.out / "model.onnx"
        from graphopt.core.model import load_model, save_model

        save_model(load_model(last.artifact), final, input_path=self.opts.source)
        return final

    def _measure(self) -> dict[str, Any]:
        measured: dict[str, Any] = {}
        if self.labeled:
            self._accuracy()
        measured["latency"] = self._latency()
        measured["frame_ms"], measured["sample"] = self._sample()
        return measured

    def _accuracy(self) -> None:
        from graphopt.eval.evaluate import evaluate

        by_name: dict[str, dict[str, Any]] = {}
        for stage in self.stages:
            if stage.accuracy_from and stage.accuracy_from in by_name:  # verified equal to that stage
                stage.accuracy = by_name[stage.accuracy_from]
            else:
                self._say(f"      eval {stage.name}")
                r = evaluate(
                    stage.artifact,  # type: ignore[arg-type]
                    self.labeled,  # type: ignore[arg-type]
                    backend=stage.backend,
                    threads=self.opts.target.host_threads(),
                    progress=self.opts.progress,
                )
                stage.accuracy = {"map50_95": r.map50_95, "map50": r.map50}
            by_name[stage.name] = stage.accuracy  # type: ignore[assignment]
        if self.opts.baseline:
            r = evaluate(self.opts.baseline, self.labeled, progress=self.opts.progress)  # type: ignore[arg-type]
            self.baseline_accuracy = {"map50_95": r.map50_95, "map50": r.map50}

    def _latency(self) -> dict[str, Any]:
        """Every stage (and the baseline) in turns on one letterboxed image: ratios hold on a noisy machine."""
        import statistics

        threads = self.opts.target.host_threads()
        entries = [(s.name, s.artifact, s.backend) for s in self.stages]
        if self.opts.baseline:
            entries.append(("baseline", self.opts.baseline, "ort"))
        times = time_models(entries, self.opts.image, threads, self.opts.rounds)  # type: ignore[arg-type]
        first = self.stages[0].name
        for s in self.stages:
            s.latency_ms = statistics.median(times[s.name])
            s.speedup = statistics.median(a / b for a, b in zip(times[first], times[s.name], strict=True))
        result: dict[str, Any] = {"threads": threads, "rounds": self.opts.rounds, "spinning": False}
        if self.opts.baseline:
            result["baseline_ms"] = statistics.median(times["baseline"])
            result["final_vs_baseline"] = statistics.median(
                a / b for a, b in zip(times["baseline"], times[self.stages[-1].name], strict=True)
            )
        return result

    def _sample(self) -> tuple[dict[str, float], Path]:
        import cv2
        import numpy as np

        from graphopt.core.fileio import atomic_write
        from runtime.detector import open_detector
        from runtime.draw import draw
        from runtime.sources import read_image

        final = self.stages[-1]
        det = open_detector(final.artifact, backend=final.backend, threads=self.opts.target.host_threads())
        frame = read_image(self.opts.image)
        result = det(frame)
        splits = []
        for _ in range(10):
            splits.append(det(frame).timings_ms)
        frame_ms = {k: float(np.median([s[k] for s in splits])) for k in ("pre", "infer", "post")}
        out = self.opts.out / "sample.jpg"
        annotated = draw(frame.copy(), result)

        ok, encoded = cv2.imencode(".jpg", annotated)
        if not ok:
            raise GraphoptError("cannot encode the annotated sample image")
        atomic_write(out, lambda tmp: tmp.write_bytes(encoded.tobytes()), "annotated sample image")
        self.sample_detections = [f"{n} {s:.2f}" for n, s in zip(result.names, result.scores, strict=True)]
        return frame_ms, out

    # --- report -------------------------------------------------------------------------------

    def _write_report(
        self,
        final: Path | None = None,
        measured: dict[str, Any] | None = None,
        failed: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        from graphopt.compile.report import write_plot, write_reports

        t = self.opts.target
        report: dict[str, Any] = {
            "source": str(self.opts.source),
            "target": t.name,
            "device": t.device,
            "backend": t.backend,
            "measured_on": f"this host ({platform.machine()}, {os.cpu_count()} cores), {t.host_threads()} thread(s)",
            "latency_note": (
                None
                if t.name == "x86-ort"
                else f"latency was measured on this host, not on the {t.device}: use the ratios, not the ms"
            ),
            "calibration": self.calibration_note,
            "accuracy_data": str(self.labeled) if self.labeled else None,
            "stages": [s.as_dict() for s in self.stages],
            "final": str(final) if final else None,
            "seconds": round(time.perf_counter() - self.started, 1),
            "failed": None if failed is None else {"stage": failed[0], "error": failed[1]},
        }
        if measured:
            report["latency"] = measured["latency"]
            report["frame_ms"] = {k: round(v, 2) for k, v in measured["frame_ms"].items()}
            report["sample"] = str(measured["sample"])
            report["sample_detections"] = getattr(self, "sample_detections", [])
            if getattr(self, "baseline_accuracy", None):
                report["baseline"] = {"model": str(self.opts.baseline), **self.baseline_accuracy}
            elif self.opts.baseline:
                report["baseline"] = {"model": str(self.opts.baseline)}
            report["plot"] = str(write_plot(report, self.opts.out / "latency_vs_map.png"))
        write_reports(report, self.opts.out)
        return report


def time_models(
    entries: list[tuple[str, Path, str]], image: Path, threads: int, rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per inference of each (name, model, backend), the models taking turns on one
    letterboxed image (machine noise hits all alike; onnxruntime spinning off so idle pools stay idle)."""
    from runtime.detector import open_detector
    from runtime.sources import read_image
    from runtime.stats import interleaved

    frame = read_image(image)
    if frame is None:
        raise GraphoptError(f"{image}: cannot read the sample image")
    runners: dict[str, Callable[[], object]] = {}
    for name, path, backend in entries:
        det = open_detector(path, backend=backend, threads=threads, spinning=False)
        x = det.preprocess(frame)[0]
        runners[name] = lambda d=det, x=x: d.backend.run(x)  # type: ignore[misc]
    return interleaved(runners, rounds)


def optimize_file(
    source: Path, out: Path, passes: list[str] | None, recipe: str | None, options: dict, calibration: str
) -> list[Any]:
    """`graphopt optimize` of one file into another (calibration images also verify); the pass reports."""
    from graphopt.core.model import load_model, save_model
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import Pipeline

    feeds = FeedSource(calibration, samples=2)
    if recipe:
        pipeline = Pipeline.from_recipe(recipe, options, feeds=feeds)
    else:
        pipeline = Pipeline.from_passes(passes or [], options, feeds=feeds)
    result = pipeline.run(load_model(source))
    save_model(result.model, out, input_path=source)
    return result.reports


def labeled_yaml(data: str | None) -> Path | None:
    if data is None:
        return None
    p = Path(data)
    return p if p.suffix.lower() in (".yaml", ".yml") else None


def calibration_source(data: str | None) -> tuple[str, str]:
    """Calibration images (a data.yaml's train split) or the bundled 32 COCO images, and what they were."""
    if data is not None:
        p = Path(data)
        what = f"{p} (train split)" if p.suffix.lower() in (".yaml", ".yml") else str(p)
        return str(p), what
    return str(DEFAULT_CALIB), "graphopt's 32 bundled COCO images (give --data for your own)"


def _progress_printer(enabled: bool) -> Callable[[str], None]:
    import sys

    def say(line: str) -> None:
        if enabled:
            print(line, file=sys.stderr, flush=True)

    return say
