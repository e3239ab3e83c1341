"""`graphopt compile`: one command from a checkpoint (or ONNX) to the artifacts a target deploys.

Stages, each a step of one run with its own artifact in DIR/stages/: export (a `.pt`) → lossless →
prune (if asked) → int8 (the target's flavour) → fuse-nms (onnxruntime targets) or convert (NCNN).
Before the last stage the lossy stages are judged (graphopt.compile.deploy): each is deployed only
where it pays on the target — this host's clock decides when the host is of the target's kind —
within `--budget`; the last stage finishes the deployed chain. Then every stage is measured the same
way: accuracy on the labeled split of `--data` (when given), latency in one interleaved run on this
machine (the target's thread count, capped by this machine's cores; onnxruntime's thread spinning
off so sessions do not disturb each other), and the final model's frame time split into preprocess /
inference / postprocess. Every figure says where it was computed (graphopt.compile.targets): the
target's arithmetic, or this host's. DIR gets the deployable model, report.json + report.md, a
latency-vs-mAP plot and one annotated sample image.

A failing stage stops the run with its one-line error; the artifacts of the stages before it stay,
and report.json says which stage failed.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.compile.deploy import Candidate, Decision, decide
from graphopt.compile.results import CompileReport, Stage
from graphopt.compile.targets import Target, host_arch
from graphopt.core.errors import GraphoptError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = ASSETS / "yolov5n-coco.pt"
DEFAULT_IMAGE = ASSETS / "bus.jpg"
DEFAULT_CALIB = ASSETS / "calib"

# Where a figure computed on another kind of CPU than the target's stands, by what computed it.
HOST_FP32 = "this host's fp32 kernels: fp32 agrees with the Pi's up to rounding (benchmarks/arm64 measures it)"
HOST_INT8 = (
    "x86 reference arithmetic, not the Pi's kernels: x86 onnxruntime does not fuse S8S8 QDQ and runs "
    "the float reference between Q/DQ pairs; the Pi's integer kernels round otherwise"
)
HOST_NCNN = "this host's NCNN kernels, not the Pi's (on the Cortex-A76 NCNN computes in fp16)"
HOST_NCNN_INT8 = (
    "this host's NCNN int8 kernels (x86), not the Pi's: ARM's int8 kernels (and fp16 for the layers kept "
    "float) round otherwise — benchmarks/arm64 runs the Pi's arithmetic"
)


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
    keep_lossy: bool = False  # deploy every lossy stage, paying or not
    ncnn_int8: str | None = None  # NCNN targets: write the int8 NCNN model (mixed | all)
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

        if self.ncnn_int8 is not None and self.target.backend != "ncnn":
            raise GraphoptError(
                f"--int8 is for NCNN targets (pi5-ncnn); {self.target.name} quantizes with onnxruntime already"
            )
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
        self.deploy_from: str | None = None
        self.decisions: list[Decision] = []
        self.judged_by: str | None = None
        self.baseline_accuracy: dict[str, Any] | None = None
        self.latency: dict[str, Any] | None = None
        self.frame_ms: dict[str, float] | None = None
        self.sample_path: Path | None = None
        self.sample_detections: list[str] = []

    # --- the run ------------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, Callable[[], Stage]]]:
        """The model stages: each made from the one before it."""
        steps: list[tuple[str, Callable[[], Stage]]] = [("export", self._export), ("lossless", self._lossless)]
        if self.opts.prune is not None:
            steps.append(("prune", self._prune))
        if self.opts.target.int8 is not None:
            steps.append(("int8", self._int8))
        return steps

    def finish_step(self) -> tuple[str, Callable[[], Stage]]:
        """The last stage, applied to the deployed model stage."""
        return ("fuse-nms", self._fuse_nms) if self.opts.target.nms_in_graph else ("convert", self._convert)

    def run(self) -> CompileReport:
        from runtime.files import FileProblem, output_dir

        self.opts.check()
        try:
            output_dir(self.opts.out, "compile output folder")
            output_dir(self.stage_dir, "compile stages folder")
        except FileProblem as exc:
            raise GraphoptError(str(exc)) from None
        steps = self.plan()
        finish = self.finish_step()
        total = len(steps) + 2
        for i, (name, fn) in enumerate(steps, 1):
            self._run_stage(i, total, name, fn)
        if self.labeled:
            self._accuracy()  # before the decision: the budget is about accuracy
        self._decide()
        self._run_stage(len(steps) + 1, total, *finish)
        self._say(f"[{total}/{total}] measure (accuracy, latency, sample)")
        final = self._deploy()
        if self.labeled:
            self._accuracy()
            if self.opts.baseline:
                self._baseline_accuracy()
        self._latency()
        self._sample()
        return self._write_report(final=final, measured=True)

    def _run_stage(self, i: int, total: int, name: str, fn: Callable[[], Stage]) -> None:
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
        if stage.parent is None and self.stages:
            stage.parent = self.stages[-1].name
        if stage.artifact is not None and stage.artifact.suffix == ".onnx":
            from graphopt.core.model import load_model, summarize

            stage.summary = summarize(load_model(stage.artifact))
        self.stages.append(stage)
        self._say(f"      {name}: {stage.seconds:.1f} s" + (f" — {stage.notes[0]}" if stage.notes else ""))

    # --- stages -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.stage_dir / f"{len(self.stages)}-{name}.onnx"

    def _stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

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

    def _optimize(
        self, name: str, passes: list[str] | None, recipe: str | None, options: dict, source: Stage | None = None
    ) -> Stage:
        source = source or self.stages[-1]
        assert source.artifact is not None and source.artifact.suffix == ".onnx"
        out = self._path(name)
        reports = optimize_file(source.artifact, out, passes, recipe, options, self.calibration)
        stage = Stage(name, out, notes=[n for r in reports for n in r.notes], parent=source.name)
        stage.lossy = not all(r.lossless for r in reports)
        stage.precision = source.precision
        if not stage.lossy:
            stage.accuracy_from = source.name
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
        stage.precision = "int8"
        stage.notes.insert(0, f"calibrated on {self.calibration_note}")
        return stage

    def _fuse_nms(self) -> Stage:
        stage = self._optimize("fuse-nms", ["fuse-nms"], None, {}, source=self._deployed_stage())
        stage.notes.append(
            "NMS in the graph equals the runtime's host NMS at its thresholds (verified); its accuracy is the "
            "previous stage's at the validator's settings"
        )
        return stage

    def _convert(self) -> Stage:
        from graphopt.compile.ncnn import convert_to_ncnn

        source = self._deployed_stage()
        out = self.stage_dir / f"{len(self.stages)}-ncnn"
        if self.opts.ncnn_int8 is not None:
            return self._convert_int8(source, out)
        result = convert_to_ncnn(source.artifact, out, fp16=True, verify_image=self.opts.image)
        stage = Stage("convert", Path(result["param"]).parent, backend="ncnn", parent=source.name, precision="fp16")
        stage.notes.append(
            f"pnnx → NCNN, fp16 weights; max abs diff vs onnxruntime {max(result['max_abs_diff'].values()):.2e}"
        )
        stage.notes.append("NCNN int8: add --int8 (graphopt writes the int8 .param/.bin itself)")
        return stage

    def _convert_int8(self, source: Stage, out: Path) -> Stage:
        from graphopt.compile.ncnn import convert_to_ncnn
        from graphopt.compile.ncnn_int8 import NoInt8Layer, convert_to_ncnn_int8, decision_summary

        mode = self.opts.ncnn_int8 or "mixed"
        try:
            result = convert_to_ncnn_int8(
                source.artifact,  # type: ignore[arg-type]
                out,
                self.calibration,
                mode,
                verify_image=self.opts.image,
            )
        except NoInt8Layer as exc:  # nothing pays in int8 on NCNN: the fp16 model is what deploys
            fp16 = convert_to_ncnn(source.artifact, out, fp16=True, verify_image=self.opts.image)
            stage = Stage("convert", Path(fp16["param"]).parent, backend="ncnn", parent=source.name, precision="fp16")
            stage.notes.append(
                f"NCNN int8 ({mode}): not written — {decision_summary([d.as_dict() for d in exc.decisions])}; "
                "deployed the fp16 NCNN model (--int8 all forces int8)"
            )
            return stage
        stage = Stage("convert", out, backend="ncnn", parent=source.name, precision="int8")
        stage.lossy = True
        v = result["verified"]
        stage.notes.append(
            f"NCNN int8 ({mode}, graphopt's writer): {decision_summary(result['layers'])}; "
            f"{result['calibration']} calibration on {self.calibration_note}; .bin {result['bin_bytes']:,} bytes "
            f"(fp32 {result['fp32_bin_bytes']:,}); vs the fp32 NCNN model: cosine {v['cosine']:.4f}"
        )
        stage.notes.append("per-layer decisions (what was kept float and why): the sidecar's `int8.layers`")
        return stage

    # --- which lossy stages pay ---------------------------------------------------------------

    def _deployed_stage(self) -> Stage:
        return self._stage(self.deploy_from) if self.deploy_from else self.stages[-1]

    def _decide(self) -> None:
        """Judge each lossy stage against its parent on the target's clock, where this host has it."""
        t = self.opts.target
        if not any(s.lossy for s in self.stages):
            self.deploy_from = self.stages[-1].name
            for s in self.stages:
                s.deployed = True
            return
        speed: dict[str, float] | None = None
        if t.host_times_target():
            self._say("      deploy: timing each lossy stage against its parent (interleaved)")
            times = time_models(
                [(s.name, s.artifact, s.backend) for s in self.stages],  # type: ignore[misc]
                self.opts.image,
                t.host_threads(),
                self.opts.rounds,
            )
            speed = {
                s.name: statistics.median(a / b for a, b in zip(times[s.parent], times[s.name], strict=True))
                for s in self.stages
                if s.parent is not None
            }
            self.judged_by = "on this host"
        elif t.host_is_target_kind():
            self.judged_by = "this host is emulated: its kernels are the target's, its clock is not"
        else:
            self.judged_by = f"this {host_arch()} host's clock does not judge the {t.device}'s speed"
        chain = [
            Candidate(s.name, s.parent, s.lossy, None if s.accuracy is None else s.accuracy["map50_95"])
            for s in self.stages
        ]
        self.deploy_from, self.decisions = decide(chain, speed, self.judged_by, self.opts.budget, self.opts.keep_lossy)
        kept = {d.stage: d.deployed for d in self.decisions}
        on_chain = True
        for s in self.stages:
            on_chain = on_chain and kept.get(s.name, True)
            s.deployed = on_chain
        for d in self.decisions:
            self._stage(d.stage).notes.append(d.reason)
            self._say(f"      deploy: {d.stage}: {d.reason}")

    # --- deploy and measure -------------------------------------------------------------------

    def _deploy(self) -> Path:
        last = self.stages[-1]
        last.deployed = True
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

    def _arithmetic(self, stage: Stage) -> tuple[str, str | None]:
        """Where a stage's accuracy figure stands: the target's kernels, or this host's."""
        t = self.opts.target
        if t.host_is_target_kind():
            return "target", None
        if stage.backend == "ncnn":
            return "host", HOST_NCNN_INT8 if stage.precision == "int8" else HOST_NCNN
        if stage.precision == "int8" and t.int8 == "arm":
            return "host-reference", HOST_INT8
        return "host", HOST_FP32

    def _accuracy(self) -> None:
        from graphopt.eval.evaluate import evaluate

        for stage in self.stages:
            if stage.accuracy is not None:
                continue
            source = self._stage(stage.accuracy_from) if stage.accuracy_from else None
            if source is not None and source.accuracy is not None:  # verified equal to that stage
                stage.accuracy = source.accuracy
                stage.accuracy_on, stage.accuracy_note = source.accuracy_on, source.accuracy_note
                continue
            self._say(f"      eval {stage.name}")
            r = evaluate(
                stage.artifact,  # type: ignore[arg-type]
                self.labeled,  # type: ignore[arg-type]
                backend=stage.backend,
                threads=self.opts.target.host_threads(),
                progress=self.opts.progress,
            )
            stage.accuracy = {"map50_95": r.map50_95, "map50": r.map50}
            stage.accuracy_on, stage.accuracy_note = self._arithmetic(stage)

    def _pi5_estimates(self) -> None:
        """The estimated Pi 5 latency of each stage (graphopt.compile.pi5_cost): MACs proxied to
        instructions, over the class's rate validated against published Pi 5 latencies; none where the
        class was not accepted. An NCNN stage computes its parent's graph: its MACs are the parent's."""
        from graphopt.compile.pi5_cost import estimate_from_macs

        threads = self.opts.target.threads
        for s in self.stages:
            macs = s.summary.get("macs")
            if macs is None and s.parent is not None:
                macs = self._stage(s.parent).summary.get("macs")
            s.pi5_estimate = estimate_from_macs(macs, s.backend, s.precision, threads)

    def _baseline_accuracy(self) -> None:
        from graphopt.eval.evaluate import evaluate

        r = evaluate(self.opts.baseline, self.labeled, progress=self.opts.progress)  # type: ignore[arg-type]
        self.baseline_accuracy = {"map50_95": r.map50_95, "map50": r.map50}

    def _latency(self) -> dict[str, Any]:
        """Every stage (and the baseline) in turns on one letterboxed image: ratios hold on a noisy machine."""
        t = self.opts.target
        threads = t.host_threads()
        entries = [(s.name, s.artifact, s.backend) for s in self.stages]
        if self.opts.baseline:
            entries.append(("baseline", self.opts.baseline, "ort"))
        times = time_models(entries, self.opts.image, threads, self.opts.rounds)  # type: ignore[arg-type]
        first = self.stages[0].name
        for s in self.stages:
            s.host_latency_ms = statistics.median(times[s.name])
            s.host_speedup = statistics.median(a / b for a, b in zip(times[first], times[s.name], strict=True))
            if t.host_times_target():
                s.latency_ms, s.speedup = s.host_latency_ms, s.host_speedup
        if t.arch == "arm" and not t.host_times_target():
            self._pi5_estimates()
        result: dict[str, Any] = {
            "threads": threads,
            "rounds": self.opts.rounds,
            "spinning": False,
            "on": "target" if t.host_times_target() else "host",
        }
        if self.opts.baseline:
            result["baseline_ms"] = statistics.median(times["baseline"])
            result["final_vs_baseline"] = statistics.median(
                a / b for a, b in zip(times["baseline"], times[self.stages[-1].name], strict=True)
            )
            result["baseline_imgsz"] = input_hw(self.opts.baseline)
            result["final_imgsz"] = input_hw(self.stages[-1].artifact)
            result["same_size"] = result["baseline_imgsz"] == result["final_imgsz"]
        self.latency = result
        return result

    def _sample(self) -> None:
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
        self.frame_ms = {k: float(np.median([s[k] for s in splits])) for k in ("pre", "infer", "post")}
        out = self.opts.out / "sample.jpg"
        annotated = draw(frame.copy(), result)

        ok, encoded = cv2.imencode(".jpg", annotated)
        if not ok:
            raise GraphoptError("cannot encode the annotated sample image")
        atomic_write(out, lambda tmp: tmp.write_bytes(encoded.tobytes()), "annotated sample image")
        self.sample_detections = [f"{n} {s:.2f}" for n, s in zip(result.names, result.scores, strict=True)]
        self.sample_path = out

    # --- report -------------------------------------------------------------------------------

    def _write_report(
        self, final: Path | None = None, measured: bool = False, failed: tuple[str, str] | None = None
    ) -> CompileReport:
        from graphopt.compile.report import write_plot, write_reports

        t = self.opts.target
        on_target = t.host_times_target()
        report = CompileReport(
            source=str(self.opts.source),
            target=t.name,
            device=t.device,
            backend=t.backend,
            measured_on=f"{t.host_label()}, {t.host_threads()} thread(s)",
            latency_note=None if on_target else _latency_note(t),
            calibration=self.calibration_note,
            accuracy_data=str(self.labeled) if self.labeled else None,
            stages=self.stages,
            final=str(final) if final else None,
            seconds=round(time.perf_counter() - self.started, 1),
            failed=None if failed is None else {"stage": failed[0], "error": failed[1]},
            arithmetic=self._arithmetic_summary(final),
            pi5_estimate=pi5_summary(t) if any(s.pi5_estimate for s in self.stages) else None,
            deploy=None
            if self.deploy_from is None
            else {
                "deployed_from": self.deploy_from,
                "judged_by": self.judged_by,
                "decisions": [d.as_dict() for d in self.decisions],
            },
        )
        if measured:
            report.latency = self.latency
            report.frame_ms = self.frame_ms
            report.frame_ms_on = t.host_label() if not on_target else "target"
            report.sample = str(self.sample_path)
            report.sample_detections = self.sample_detections
            if self.opts.baseline:
                report.baseline = {"model": str(self.opts.baseline), **(self.baseline_accuracy or {})}
            report.plot = str(write_plot(report, self.opts.out / "latency_vs_map.png"))
        write_reports(report, self.opts.out)
        return report

    def _arithmetic_summary(self, final: Path | None) -> dict[str, Any]:
        """Which of the report's figures are the target's arithmetic and which this host's, and the
        command that measures the deployed model with the target's kernels where this host cannot."""
        t = self.opts.target
        summary: dict[str, Any] = {
            "host": host_arch(),
            "accuracy": "target" if t.host_is_target_kind() else "host",
            "latency": "target" if t.host_times_target() else "host",
        }
        if not t.host_times_target() and self.deploy_from is not None:
            # NMS in the graph scores at baked thresholds: the model it was appended to is what eval scores
            scored = final if final is not None and t.backend == "ncnn" else self._deployed_stage().artifact
            summary["pi_command"] = t.pi_command(str(scored), str(self.labeled) if self.labeled else None)
        return summary


def pi5_summary(t: Target) -> dict[str, Any]:
    """What a report says about its Pi 5 estimates: where the model is, what it cannot see."""
    from graphopt.compile import pi5_cost

    return {
        "estimate": True,
        "model": "graphopt/compile/pi5_cost.json (benchmarks/pi5_cost: instructions counted under qemu -cpu "
        "cortex-a76, rates fitted to published Pi 5 latencies)",
        "threads": t.threads,
        "limits": pi5_cost.LIMITS,
        "label": f"estimated {t.device} latency, not measured",
    }


def _latency_note(t: Target) -> str:
    artifact = "ncnn" if t.backend == "ncnn" else "model.onnx"
    why = (
        "this host is emulated (its kernels are the target's, its clock is not)"
        if t.host_is_target_kind()
        else f"{t.host_label()} is not one"
    )
    return (
        f"latency on the {t.device} was not measured: {why}, so its times (host_latency_ms) are this "
        f"host's reference, not the target's; on the device: graphopt bench DIR/{artifact}"
    )


def input_hw(path: Path | None) -> list[int] | None:
    """[H, W] of a model's first input when static (an NCNN folder: its sidecar's)."""
    if path is None:
        return None
    try:
        if Path(path).is_dir():
            import json

            sidecar = next(Path(path).glob("*.ncnn.json"))
            dims = json.loads(sidecar.read_text())["inputs"][0]["shape"]
        else:
            import onnx

            shape = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]
        hw = [int(d) for d in dims[-2:]]
    except Exception:  # noqa: BLE001 - a size we cannot read is reported as unknown
        return None
    return hw if all(d > 0 for d in hw) else None


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
