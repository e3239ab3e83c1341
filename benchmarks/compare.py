"""graphopt's compile targets against what the peers' own tools give, in one interleaved run.

Models (same machine, same 2 threads, same letterboxed image for latency; mAP50-95 on the COCO128
holdout half, calibration on the other half):
- yolov5n-coco through yolov5's own `export.py` (a temp copy of ../shared/repos/yolov5) on
  onnxruntime — the baseline every ratio is against;
- that ONNX through onnxruntime `quantize_static` with the library's defaults;
- that ONNX through plain pnnx → NCNN (pnnx's defaults: fp16 weights), run with ncnn;
- yolov9t-ball through Ultralytics' own exports (onnx; ncnn where it exports here; Ultralytics has
  no int8 for either) — latency only: its one class, 'ball', is not a COCO class;
- graphopt compile of yolov5n-coco for x86-ort, pi5-ort, pi5-ncnn, and of yolov9t-ball for x86-ort.

Latency: onnxruntime sessions with thread spinning off (several sessions in one process otherwise
bias each other), median of per-round ratios against the baseline. Models with NMS in the graph are
timed with it; the others without their host NMS (a few tenths of a ms here).

    python benchmarks/compare.py [--rounds 30] [--repeats 3] [--write benchmarks/RESULTS.md] [--json]

Needs ../shared and graphopt[all]. About 15 minutes on the 2-core machine.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.prune import graphopt  # noqa: E402
from benchmarks.prune_yolov9 import TORCHSCRIPT, ultralytics_export  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--repeats", type=int, default=3, help="independent interleaved runs (orders alternate)"
    )
    parser.add_argument("--write", type=Path, help="also write the markdown (and the plot beside it)")
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

    with tempfile.TemporaryDirectory(prefix="graphopt-compare-") as tmp:
        work = Path(tmp)
        base = yolov5_export(work)
        add("yolov5 export.py ONNX (baseline)", base, "ort", "peer", base)
        try:
            q = ort_defaults(base, work / "ort-defaults.onnx")
            add("yolov5 export.py → ORT quantize_static defaults", q, "ort", "peer", q)
        except Exception as exc:  # noqa: BLE001 - a peer tool's failure is a result
            add("yolov5 export.py → ORT quantize_static defaults", None, "ort", "peer", error=str(exc)[:120])
        try:
            folder = plain_pnnx(base, work)
            add("yolov5 export.py → plain pnnx → ncnn", folder, "ncnn", "peer", folder)
        except Exception as exc:  # noqa: BLE001
            add("yolov5 export.py → plain pnnx → ncnn", None, "ncnn", "peer", error=str(exc)[:120])
        ball_onnx = ultralytics_export(BALL, work)
        add(
            "yolov9t-ball: Ultralytics ONNX export",
            ball_onnx,
            "ort",
            "peer",
            note="one-class model: no COCO mAP",
        )
        try:
            add(
                "yolov9t-ball: Ultralytics NCNN export",
                ultralytics_ncnn(work),
                "ncnn",
                "peer",
                note="no COCO mAP",
            )
        except Exception as exc:  # noqa: BLE001
            err = exc.stderr.decode()[-200:] if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            add(
                "yolov9t-ball: Ultralytics NCNN export",
                None,
                "ncnn",
                "peer",
                error=" ".join(err.split())[:160],
            )
        for target in ("x86-ort", "pi5-ort", "pi5-ncnn"):
            out = work / f"graphopt-{target}"
            report = graphopt(
                "compile", V5, "--target", target, "-o", out, "--data", SPLIT, "--rounds", "5", "--json"
            )
            final = Path(report["final"])
            scored = next(s for s in reversed(report["stages"]) if s["map50_95"] is not None)
            add(
                f"graphopt compile yolov5n → {target}",
                final,
                report["backend"],
                "graphopt",
                map50_95=scored["map50_95"],
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

        from graphopt.compile.compiler import time_models
        from graphopt.eval.evaluate import evaluate

        for row in rows:
            if row.get("map_from") is not None and row["path"] is not None:
                row["map50_95"] = evaluate(
                    row["map_from"], SPLIT, backend=row["backend"], threads=2, progress=False
                ).map50_95
        timed = [(r["model"], r["path"], r["backend"]) for r in rows if r["path"] is not None]
        first = rows[0]["model"]
        # Several independent interleaved runs, each in another model order: the spread between them
        # is this shared machine's noise, printed beside each ratio.
        ratios: dict[str, list[float]] = {}
        latencies: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            order = timed if repeat % 2 == 0 else timed[::-1]
            times = time_models(order, IMAGE, 2, args.rounds)
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
        args.write.write_text(text)
        plot(rows, args.write.with_suffix(".png"))


def markdown(rows: list[dict[str, Any]], seconds: float, rounds: int, repeats: int) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# graphopt against the peers' own tools",
        "",
        f"Measured {datetime.date.today().isoformat()} on this machine ({cpu}, {os.cpu_count()} cores, "
        f"{platform.system()}), 2 threads, {repeats} interleaved runs of {rounds} rounds each, model order "
        "alternating (onnxruntime spinning off, NCNN's OpenMP block time 0); speed = median of the runs' "
        "per-round-ratio medians, with every run's ratio beside it (their spread is this shared machine's noise); "
        f"mAP50-95 on the COCO128 holdout half (64 images); `python benchmarks/compare.py` took {seconds / 60:.1f} min.",
        "",
        "| model | backend | latency (ms) | speed vs yolov5 export.py | runs | mAP50-95 (holdout) | note |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lat = f"{r['latency_ms']:.1f}" if "latency_ms" in r else "–"
        ratio = f"{r['speed_vs_baseline']:.2f}×" if "speed_vs_baseline" in r else "–"
        m = f"{r['map50_95']:.4f}" if r.get("map50_95") is not None else "–"
        note = r.get("error") and f"failed: {r['error']}" or r.get("note", "")
        runs = " / ".join(f"{v:.2f}" for v in r.get("speed_runs", []))
        lines.append(f"| {r['model']} | {r['backend']} | {lat} | {ratio} | {runs} | {m} | {note} |")
    return "\n".join(lines) + "\n"


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
