"""graphopt's compile targets against what the peers' own tools give, in one interleaved run.

Models (same machine, same 2 threads, same letterboxed image for latency; mAP50-95 on the COCO128
holdout half, calibration on the other half):
- yolov5n-coco through yolov5's own `export.py` (a temp copy of ../shared/repos/yolov5) on
  onnxruntime — the baseline every ratio is against (640);
- that ONNX through onnxruntime `quantize_static` with the library's defaults;
- that ONNX through plain pnnx → NCNN (pnnx's defaults: fp16 weights), run with ncnn;
- that ONNX on OpenVINO (fp32), and NNCF's int8 of it (`nncf.quantize`, preset MIXED, calibrated on
  the calibration half) on OpenVINO — what an x86 user would pick instead (`pip install
  "graphopt[bench-peers]"`; rows are skipped with the reason when OpenVINO is absent);
- yolov9t-ball through Ultralytics' own exports (onnx; its ONNX int8 export, `int8=True`; ncnn where
  it exports here) — latency only: its one class, 'ball', is not a COCO class;
- graphopt compile of yolov5n-coco for x86-ort, pi5-ort, pi5-ncnn at the baseline's input size
  (640), and of yolov9t-ball for x86-ort; and `graphopt compile --search` for x86-ort: its Pareto
  pick (which may be at another input size) on a row of its own, so the table shows what the graph
  work bought apart from what a smaller input bought.

The pi5-* artifacts are timed here too, on x86: those are host figures, not the Pi's (x86
onnxruntime runs S8S8 QDQ as a float reference); the Pi's arithmetic is in the section written by
benchmarks/arm64/accuracy.py, the Pi's estimated latency in benchmarks/pi5_cost.

Latency: onnxruntime sessions with thread spinning off (several sessions in one process otherwise
bias each other), median of per-round ratios against the baseline. Models with NMS in the graph are
timed with it; the others without their host NMS (a few tenths of a ms here).

    python benchmarks/compare.py [--rounds 30] [--repeats 3] [--no-search] [--write benchmarks/RESULTS.md] [--json]

Needs ../shared and graphopt[all] (+ bench-peers for OpenVINO). About 45 minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.prune import graphopt  # noqa: E402
from benchmarks.prune_yolov9 import TORCHSCRIPT, ultralytics_export  # noqa: E402
from benchmarks.results_md import replace_section  # noqa: E402
from runtime.stats import interleaved  # noqa: E402

SHARED = ROOT.parent / "shared"
SPLIT = SHARED / "data" / "coco128" / "split.yaml"
V5 = SHARED / "models" / "yolov5n-coco.pt"
BALL = SHARED / "models" / "yolov9t-ball.pt"
IMAGE = ROOT / "graphopt" / "assets" / "bus.jpg"

YOLOV5_EXPORT = (
    TORCHSCRIPT
    + """
import runpy
sys.path.insert(0, ".")
sys.argv = ["export.py", *sys.argv[1:]]
runpy.run_path("export.py", run_name="__main__")
"""
)

ULTRALYTICS_INT8 = (
    TORCHSCRIPT
    + """
from ultralytics import YOLO
print(YOLO(sys.argv[1]).export(format="onnx", int8=True, imgsz=640, data=sys.argv[2]))
"""
)

ULTRALYTICS_NCNN = (
    TORCHSCRIPT
    + """
from ultralytics import YOLO
print(YOLO(sys.argv[1]).export(format="ncnn", imgsz=640))
"""
)


def yolov5_export(work: Path) -> Path:
    repo = work / "yolov5"
    shutil.copytree(SHARED / "repos" / "yolov5", repo, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    weights = work / V5.name
    shutil.copy(V5, weights)
    env = os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "YOLOv5_VERBOSE": "False"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            YOLOV5_EXPORT,
            "--weights",
            str(weights),
            "--include",
            "onnx",
            "--imgsz",
            "640",
        ],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    return weights.with_suffix(".onnx")


def ort_defaults(src: Path, out: Path) -> Path:
    """onnxruntime quantize_static with the library's defaults, calibrated on the calibration half."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from graphopt.data.datasets import resolve_images
    from runtime.preprocess import Preprocess
    from runtime.sources import read_image

    images = resolve_images(SPLIT)[:64]
    pre = Preprocess.from_meta(None)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(images)

        def get_next(self) -> dict | None:
            p = next(self.it, None)
            return None if p is None else {"images": pre(read_image(p), (640, 640))[0]}

    quantize_static(str(src), str(out), Reader())
    return out


def plain_pnnx(src: Path, work: Path) -> Path:
    """pnnx with its defaults on an ONNX: NCNN files in `work/pnnx`, named as our runtime finds them."""
    from graphopt.compile.ncnn import _pnnx

    exe, _ = _pnnx()
    folder = work / "pnnx"
    folder.mkdir()
    local = folder / "model.onnx"
    shutil.copy(src, local)
    subprocess.run(
        [exe, str(local), "inputshape=[1,3,640,640]"],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=900,
    )
    for leftover in folder.iterdir():
        if not leftover.name.startswith("model.ncnn."):
            leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
    return folder


def ultralytics_ncnn(work: Path) -> Path:
    from graphopt.compile.ncnn import _pnnx

    local = work / "ncnn-export" / BALL.name
    local.parent.mkdir()
    shutil.copy(BALL, local)
    exe, _ = _pnnx()
    env = os.environ | {
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(work / "ultralytics-config"),
        "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its pnnx, not a download
    }
    subprocess.run(
        [sys.executable, "-c", ULTRALYTICS_NCNN, str(local)],
        cwd=local.parent,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    folder = local.parent / f"{local.stem}_ncnn_model"
    return folder


def calibration_copy(work: Path) -> Path:
    """The calibration half as a folder dataset of its own: Ultralytics writes a label cache beside the
    labels it reads, and ../shared is read-only."""
    import yaml

    from graphopt.data.datasets import resolve_images

    root = work / "calib-ds"
    (root / "images" / "calib").mkdir(parents=True)
    (root / "labels" / "calib").mkdir(parents=True)
    for image in resolve_images(SPLIT):
        shutil.copy(image, root / "images" / "calib" / image.name)
        label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")
        if label.exists():
            shutil.copy(label, root / "labels" / "calib" / label.name)
    names = yaml.safe_load(SPLIT.read_text())["names"]
    cfg = {"path": str(root), "train": "images/calib", "val": "images/calib", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


def ultralytics_int8(work: Path) -> Path:
    """Ultralytics' own ONNX int8 export (onnxruntime's quantizer inside), calibrated on the calibration half."""
    local = work / "int8-export" / BALL.name
    local.parent.mkdir()
    shutil.copy(BALL, local)
    data = calibration_copy(work)
    env = os.environ | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "ultralytics-config")}
    subprocess.run(
        [sys.executable, "-c", ULTRALYTICS_INT8, str(local), str(data)],
        cwd=local.parent,
        env=env,
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return local.with_name(f"{local.stem}_int8.onnx")


class OpenVinoBackend:
    """OpenVINO's CPU plugin behind the runtime's Backend protocol (a peer, for this benchmark only)."""

    name = "openvino"

    def __init__(self, model: Path, threads: int, metadata_from: Path, precision: str | None = None) -> None:
        import onnx
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision:  # OpenVINO's CPU default on an AMX/AVX-512-BF16 host is bf16, not the model's f32
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)
        self.input_shape = tuple(int(d) for d in compiled.input(0).shape)
        self.input_dtype = np.dtype(compiled.input(0).get_element_type().to_dtype())
        self.output_names = [o.get_any_name() for o in self.outputs]
        props = onnx.load(str(metadata_from), load_external_data=False).metadata_props
        self.metadata = {p.key: p.value for p in props}  # export.py's stride and names

    def run(self, x: Any) -> dict[str, Any]:
        result = self.request.infer({0: x})
        return {name: result[o] for name, o in zip(self.output_names, self.outputs, strict=True)}


def nncf_int8(base: Path, work: Path) -> Path:
    """NNCF post-training int8 of the export.py ONNX (preset MIXED, as its YOLO examples use), as IR."""
    import nncf
    import openvino as ov

    from graphopt.data.datasets import resolve_images
    from runtime.preprocess import Preprocess
    from runtime.sources import read_image

    pre = Preprocess.from_meta(None)
    tensors = [pre(read_image(p), (640, 640))[0] for p in resolve_images(SPLIT)[:64]]
    model = ov.Core().read_model(str(base))
    quantized = nncf.quantize(
        model, nncf.Dataset(tensors), subset_size=len(tensors), preset=nncf.QuantizationPreset.MIXED
    )
    out = work / "nncf" / "model.xml"
    out.parent.mkdir()
    ov.save_model(quantized, str(out))
    return out


def openvino_default_precision(model: Path) -> str:
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(str(model)), "CPU").get_property("INFERENCE_PRECISION_HINT").get_type_name()


def openvino_available() -> str | None:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install 'graphopt[bench-peers]'"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--repeats", type=int, default=3, help="independent interleaved runs (orders alternate)"
    )
    parser.add_argument("--no-search", action="store_true", help="skip graphopt compile --search (~20 min)")
    parser.add_argument("--budget", type=float, default=1.0, help="--search's budget (mAP50-95 points)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown (and the plot beside it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []

    def add(
        name: str, path: Path | None, backend: str, kind: str, map_from: Path | None = None, **extra: Any
    ) -> None:
        rows.append(
            {"model": name, "path": path, "backend": backend, "kind": kind, "map_from": map_from, **extra}
        )

    def attempt(name: str, backend: str, build: Any, **extra: Any) -> None:
        """A peer tool's failure is a result: the row says what failed."""
        try:
            path = build()
            add(name, path, backend, "peer", path if extra.pop("scored", True) else None, **extra)
        except Exception as exc:  # noqa: BLE001
            err = exc.stderr.decode()[-200:] if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            add(name, None, backend, "peer", error=" ".join(err.split())[:160])

    with tempfile.TemporaryDirectory(prefix="graphopt-compare-") as tmp:
        work = Path(tmp)
        base = yolov5_export(work)
        add("yolov5 export.py ONNX (baseline)", base, "ort", "peer", base, imgsz=640)
        attempt("yolov5 export.py → ORT quantize_static defaults", "ort", lambda: ort_defaults(base, work / "ort-defaults.onnx"))
        attempt("yolov5 export.py → plain pnnx → ncnn", "ncnn", lambda: plain_pnnx(base, work))
        missing = openvino_available()
        if missing:
            add("yolov5 export.py → OpenVINO fp32", None, "openvino", "peer", error=missing)
            add("yolov5 export.py → OpenVINO NNCF int8", None, "openvino", "peer", error=missing)
        else:
            add("yolov5 export.py → OpenVINO fp32", base, "openvino", "peer", base, ov_precision="f32",
                note="INFERENCE_PRECISION_HINT f32")
            add("yolov5 export.py → OpenVINO, its default precision", base, "openvino", "peer", base,
                note=f"OpenVINO's CPU default here: {openvino_default_precision(base)}")
            attempt("yolov5 export.py → OpenVINO NNCF int8", "openvino", lambda: nncf_int8(base, work),
                    note="OpenVINO's default precision for the ops left float")
        ball_onnx = ultralytics_export(BALL, work)
        add("yolov9t-ball: Ultralytics ONNX export", ball_onnx, "ort", "peer", note="one-class model: no COCO mAP")
        attempt(
            "yolov9t-ball: Ultralytics ONNX int8 export", "ort", lambda: ultralytics_int8(work),
            scored=False, note="no COCO mAP",
        )  # fmt: skip
        attempt(
            "yolov9t-ball: Ultralytics NCNN export", "ncnn", lambda: ultralytics_ncnn(work), scored=False, note="no COCO mAP"
        )
        for target in ("x86-ort", "pi5-ort", "pi5-ncnn"):
            out = work / f"graphopt-{target}"
            report = graphopt(
                "compile", V5, "--target", target, "-o", out, "--data", SPLIT, "--rounds", "5", "--json"
            )
            final = Path(report["final"])
            scored = next(s for s in reversed(report["stages"]) if s["map50_95"] is not None)
            deployed = (report.get("deploy") or {}).get("deployed_from")
            note = f"deployed: {deployed} (640)"
            if target != "x86-ort":
                note += "; timed on x86: a host figure, not the Pi's"
            if scored.get("accuracy_on") == "host-reference":
                note += "; int8 mAP on x86 reference arithmetic (the Pi's: section below)"
            add(
                f"graphopt compile yolov5n → {target}",
                final,
                report["backend"],
                "graphopt",
                map50_95=scored["map50_95"],
                note=note,
                imgsz=640,
            )
        if not args.no_search:
            out = work / "graphopt-search"
            report = graphopt(
                "compile", V5, "--search", "--target", "x86-ort", "-o", out, "--data", SPLIT,
                "--budget", args.budget, "--baseline", base, "--rounds", "5", "--json",
            )  # fmt: skip
            configs = {c["name"]: c for c in report["search"]}
            chosen = configs[report["chosen"]]
            same = (report.get("baseline") or {}).get("same_size")
            if same and same != report["chosen"]:
                add(
                    f"graphopt compile --search → x86-ort, best at 640 ({same})",
                    Path(configs[same]["artifact"]),
                    "ort",
                    "graphopt",
                    map50_95=configs[same]["map50_95"],
                    note=f"within {args.budget} points at the baseline's input size",
                    imgsz=configs[same]["imgsz"],
                )
            add(
                f"graphopt compile --search → x86-ort, Pareto pick ({report['chosen']})",
                Path(report["final"]),
                "ort",
                "graphopt",
                map50_95=chosen["map50_95"],
                note=f"fastest within {args.budget} points; input {chosen['imgsz']}"
                + (" (smaller than the baseline's: part of its speed is the input size)" if chosen["imgsz"] != 640 else ""),
                imgsz=chosen["imgsz"],
            )
        out = work / "graphopt-ball"
        report = graphopt("compile", BALL, "--target", "x86-ort", "-o", out, "--rounds", "5", "--json")
        add(
            "graphopt compile yolov9t-ball → x86-ort",
            Path(report["final"]),
            "ort",
            "graphopt",
            note="no COCO mAP",
        )

        from graphopt.eval.evaluate import evaluate

        for row in rows:
            if row.get("map_from") is not None and row["path"] is not None:
                backend = backend_for(row, base)
                row["map50_95"] = evaluate(row["map_from"], SPLIT, backend=backend, threads=2, progress=False).map50_95
        from benchmarks.pi5_cost.results import estimate_for

        for row in rows:
            if row["path"] is not None and row["backend"] in ("ort", "ncnn"):
                row["pi5_estimate"] = estimate_for(row["path"], row["backend"])
        timed = [r for r in rows if r["path"] is not None]
        first = rows[0]["model"]
        # Several independent interleaved runs, each in another model order: the spread between them
        # is this shared machine's noise, printed beside each ratio.
        ratios: dict[str, list[float]] = {}
        latencies: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            order = timed if repeat % 2 == 0 else timed[::-1]
            times = interleaved(runners(order, base), args.rounds)
            for name, ms in times.items():
                latencies.setdefault(name, []).extend(ms)
                ratios.setdefault(name, []).append(
                    statistics.median(a / b for a, b in zip(times[first], ms, strict=True))
                )
        for r in rows:
            if r["model"] in ratios:
                r["latency_ms"] = statistics.median(latencies[r["model"]])
                r["speed_vs_baseline"] = statistics.median(ratios[r["model"]])
                r["speed_runs"] = ratios[r["model"]]
    seconds = time.perf_counter() - started
    for r in rows:
        r.pop("path", None)
        r.pop("map_from", None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    text = markdown(rows, seconds, args.rounds, args.repeats)
    print(text)
    if args.write:
        replace_section(args.write, "peers", text)
        plot(rows, args.write.with_suffix(".png"))


def backend_for(row: dict[str, Any], base: Path) -> Any:
    """The runtime's backend name, or an OpenVINO backend object for the OpenVINO rows."""
    if row["backend"] == "openvino":
        return OpenVinoBackend(row["path"], 2, metadata_from=base, precision=row.get("ov_precision"))
    return row["backend"]


def runners(rows: list[dict[str, Any]], base: Path) -> dict[str, Any]:
    """One inference per call for each row, on the same letterboxed bus.jpg."""
    from runtime.detector import Detector
    from runtime.sources import read_image

    frame = read_image(IMAGE)
    out = {}
    for r in rows:
        backend = backend_for(r, base)
        det = Detector(r["path"], backend=backend, threads=2, spinning=False)
        x = det.preprocess(frame)[0]
        out[r["model"]] = lambda d=det, x=x: d.backend.run(x)
    return out


def markdown(rows: list[dict[str, Any]], seconds: float, rounds: int, repeats: int) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# graphopt against the peers' own tools",
        "",
        f"Measured {datetime.date.today().isoformat()} on this machine ({cpu}, {os.cpu_count()} cores, "
        f"{platform.system()}), 2 threads, {repeats} interleaved runs of {rounds} rounds each, model order "
        "alternating (onnxruntime spinning off, NCNN's OpenMP block time 0); speed = median of the runs' "
        "per-round-ratio medians, with every run's ratio beside it (their spread is this shared machine's noise); "
        f"mAP50-95 on the COCO128 holdout half (64 images); `python benchmarks/compare.py` took {seconds / 60:.1f} min. "
        "**Every latency here is this x86 host's**: for the pi5-* rows it is a host figure, not the Pi's "
        "(the Pi's arithmetic: the section 'On the Pi's arithmetic'). The Pi 5 column is an **estimate, not a "
        "measurement** (benchmarks/pi5_cost: instructions under an emulated Cortex-A76 over a rate fitted on "
        "published Pi 5 latencies; onnxruntime fp32 at 4 threads, NCNN at 1): *counted* where the section "
        "'Raspberry Pi 5 (estimated)' counted this very file, *MACs* where it is proxied from the model's MACs as "
        "`compile` does; none for onnxruntime int8 (nothing published to validate a rate on) or where no count "
        "or accepted proxy exists.",
        "",
        "| model | backend | input | latency (ms, x86) | speed vs yolov5 export.py | runs | mAP50-95 (holdout) "
        "| Pi 5 estimate (ms) | note |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lat = f"{r['latency_ms']:.1f}" if "latency_ms" in r else "–"
        ratio = f"{r['speed_vs_baseline']:.2f}×" if "speed_vs_baseline" in r else "–"
        m = f"{r['map50_95']:.4f}" if r.get("map50_95") is not None else "–"
        note = r.get("error") and f"failed: {r['error']}" or r.get("note", "")
        runs = " / ".join(f"{v:.2f}" for v in r.get("speed_runs", []))
        size = r.get("imgsz") or "640"
        lines.append(f"| {r['model']} | {r['backend']} | {size} | {lat} | {ratio} | {runs} | {m} | {pi5_cell(r)} | {note} |")
    return "\n".join(lines) + "\n"


def pi5_cell(row: dict[str, Any]) -> str:
    est = row.get("pi5_estimate") or {}
    if est.get("ms") is None:
        return "–"
    how = "counted" if est.get("method") == "counted" else "MACs"
    return f"{est['ms']:.0f} ({how}, {est['threads']} thr.)"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for r in rows:
        if r.get("map50_95") is None or "speed_vs_baseline" not in r:
            continue
        ax.scatter(r["speed_vs_baseline"], r["map50_95"], marker="o" if r["kind"] == "graphopt" else "x")
        ax.annotate(
            r["model"],
            (r["speed_vs_baseline"], r["map50_95"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 3),
        )
    ax.set_xlabel("speed vs yolov5 export.py ONNX on onnxruntime (×, higher is faster)")
    ax.set_ylabel("mAP50-95, COCO128 holdout")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
