"""The Pi artifacts' accuracy on the Pi's arithmetic, beside this x86 host's figures.

For the bundled yolov5n (calibrated on the 32 bundled images) and for ../shared/models/yolov5n-coco.pt
with ../shared/data/coco128/split.yaml (calibrated on its train half): `graphopt compile` for
pi5-ort (int8 S8S8) and pi5-ncnn (fp16) on this host, then

- holdout mAP (the split's val half, all 64 images) of the int8 stage and of the NCNN model, on x86
  and inside the arm64 root (benchmarks/arm64/run: the Cortex-A76's kernels), and of the fp32
  lossless stage on x86 — the reference the int8 loss is measured against;
- the same input tensors through fp32, int8 and NCNN on both sides (preprocessing out of the
  comparison): how far the kernels alone move boxes and scores — fp32 is ≈ 60 s per image under
  emulation, so it is checked on a few images and x86's fp32 mAP stands for the Pi's;
- `graphopt detect` on bus.jpg with each deployable artifact, on both sides.

    sudo python benchmarks/arm64/accuracy.py [--work DIR] [--tensors 2] [--write benchmarks/RESULTS.md] [--json]

Needs root, the arm64 root (built on first use: ~11 min) and ../shared. About 45 min on the 2-core
machine, nearly all of it emulation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import replace_section  # noqa: E402

SHARED = ROOT.parent / "shared"
SPLIT = SHARED / "data" / "coco128" / "split.yaml"
V5 = SHARED / "models" / "yolov5n-coco.pt"
BUS = ROOT / "graphopt" / "assets" / "bus.jpg"
RUN = ROOT / "benchmarks" / "arm64" / "run"
SAME_TENSOR = ROOT / "benchmarks" / "arm64" / "same_tensor.py"
CASES = {
    "bundled": ("bundled yolov5n, 32 bundled calibration images", []),
    "split": ("yolov5n-coco.pt, calibrated on split.yaml's train half", [str(V5), "--data", str(SPLIT)]),
}


def graphopt_x86(*args: str) -> str:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "graphopt", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"graphopt {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def on_arm(*args: str) -> str:
    done = subprocess.run([str(RUN), *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"arm64: {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


CACHE: Path | None = None  # work/evals.json: an evaluation is kept by (side, model bytes, backend)


def _digest(model: Path) -> str:
    files = sorted(model.glob("*")) if model.is_dir() else [model]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def mAP(where: str, model: Path, backend: str) -> dict[str, float]:
    """Holdout mAP of `model` on x86 or inside the arm64 root (an emulated int8 eval takes ~10 min)."""
    key = f"{where}:{backend}:{_digest(model)}"
    cache = json.loads(CACHE.read_text()) if CACHE and CACHE.exists() else {}
    if key in cache:
        return cache[key]
    args = ["graphopt", "eval", str(model), "--data", str(SPLIT), "--backend", backend, "--json"]
    started = time.perf_counter()
    out = on_arm(*args) if where == "arm64" else graphopt_x86(*args[1:])
    r = json.loads(out)
    result = {"map50_95": r["map50_95"], "map50": r["map50"], "seconds": round(time.perf_counter() - started)}
    if CACHE:
        cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
        CACHE.write_text(json.dumps(cache | {key: result}, indent=1))
    return result


def compile_case(case: str, target: str, work: Path) -> dict[str, Any]:
    out = work / f"{case}-{target}"
    report = out / "report.json"
    if not report.exists():
        graphopt_x86("compile", *CASES[case][1], "--target", target, "-o", str(out), "--rounds", "3", "--json")
    return json.loads(report.read_text())


def stage_artifact(report: dict[str, Any], name: str) -> Path:
    return Path(next(s["artifact"] for s in report["stages"] if s["stage"] == name))


def write_inputs(path: Path, count: int) -> None:
    """The first `count` holdout images, letterboxed once here: both sides get the same tensors."""
    from graphopt.data.datasets import load_dataset
    from runtime.preprocess import Preprocess
    from runtime.sources import read_image

    items = load_dataset(SPLIT).items[:count]
    pre = Preprocess.from_meta(None)
    np.savez(path, **{f"img{i}": pre(read_image(item.path), (640, 640))[0] for i, item in enumerate(items)})


def same_tensor(work: Path, models: dict[str, tuple[Path, str]], count: int) -> dict[str, dict[str, float]]:
    """Per model: how far the arm64 kernels move boxes (px) and scores from x86's on the same tensors."""
    from runtime.decode import head_arrays

    inputs = work / "inputs.npz"
    write_inputs(inputs, count)
    specs = [f"{name}={path}:{backend}" for name, (path, backend) in models.items()]
    results = {}
    for side in ("x86", "arm64"):
        out = work / f"outputs-{side}.npz"
        cmd = ["python", str(SAME_TENSOR), str(inputs), str(out), *specs]
        if side == "arm64":
            on_arm(*cmd)
        else:
            subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, check=True, capture_output=True)
        results[side] = np.load(out)
    diffs: dict[str, dict[str, float]] = {}
    for name in models:
        keys = [k for k in results["x86"].files if k.startswith(f"{name}/")]
        box, obj, cls = [], [], []
        for k in keys:
            a, b = results["x86"][k], results["arm64"][k]
            if a.ndim != 3 or a.shape[-1] < 6:
                continue
            ab, asc = head_arrays(a, "yolov5")
            bb, bsc = head_arrays(b, "yolov5")
            box.append(np.abs(ab - bb))
            obj.append(np.abs(a.reshape(-1, a.shape[-1])[:, 4] - b.reshape(-1, b.shape[-1])[:, 4]))
            cls.append(np.abs(asc - bsc))
        diffs[name] = {
            "images": count,
            "box_mean_px": float(np.concatenate(box).mean()),
            "box_max_px": float(np.concatenate(box).max()),
            "objectness_max": float(np.concatenate(obj).max()),
            "class_score_max": float(np.concatenate(cls).max()),
        }
    return diffs


def detections(where: str, model: Path) -> list[str]:
    args = ["graphopt", "detect", str(model), str(BUS), "--json"]
    r = json.loads(on_arm(*args) if where == "arm64" else graphopt_x86(*args[1:]))
    dets = [d for frame in r["results"] for d in frame["detections"]]
    return [f"{d['name']} {d['score']:.2f}" for d in dets]


def measure(work: Path, tensors: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    agreement: dict[str, Any] = {}
    detect: list[dict[str, Any]] = []
    ncnn_done: dict[str, dict[str, Any]] = {}
    for case, (label, _) in CASES.items():
        ort = compile_case(case, "pi5-ort", work)
        ncnn = compile_case(case, "pi5-ncnn", work)
        lossless, int8 = stage_artifact(ort, "lossless"), stage_artifact(ort, "int8")
        folder = Path(ncnn["final"])
        fp32 = mAP("x86", lossless, "ort")
        row: dict[str, Any] = {"case": label, "fp32_x86": fp32}
        print(f"{case}: int8 on x86, then on arm64 (≈ 8 s/image emulated)", file=sys.stderr)
        row["int8_x86"] = mAP("x86", int8, "ort")
        row["int8_arm64"] = mAP("arm64", int8, "ort")
        # the NCNN model is the same file in both cases (no calibration): measured once
        digest = hashlib.sha256(next(folder.glob("*.ncnn.bin")).read_bytes()).hexdigest()
        if digest not in ncnn_done:
            print(f"{case}: NCNN on x86, then on arm64", file=sys.stderr)
            ncnn_done[digest] = {"ncnn_x86": mAP("x86", folder, "ncnn"), "ncnn_arm64": mAP("arm64", folder, "ncnn")}
        row |= ncnn_done[digest]
        rows.append(row)
        if case == "split":
            agreement = same_tensor(
                work,
                {"fp32": (lossless, "ort"), "int8": (int8, "ort"), "ncnn-fp16": (folder, "ncnn")},
                tensors,
            )
            for name, model in (("pi5-ort model.onnx (int8, NMS in the graph)", Path(ort["final"])), ("pi5-ncnn", folder)):
                detect.append({"artifact": name, "x86": detections("x86", model), "arm64": detections("arm64", model)})
    return {"rows": rows, "same_tensor": agreement, "detect": detect}


def points(a: dict[str, float], b: dict[str, float]) -> float:
    return round(100 * (a["map50_95"] - b["map50_95"]), 2)


def markdown(result: dict[str, Any], minutes: float) -> str:
    lines = [
        "## On the Pi's arithmetic",
        "",
        "The Pi artifacts evaluated with the Cortex-A76's kernels: inside the arm64 root of `benchmarks/arm64` "
        "(Debian bookworm arm64, qemu-user `-cpu cortex-a76`, onnxruntime and ncnn's aarch64 wheels at the host's "
        "versions), beside this x86 host. mAP50-95 on the COCO128 holdout half (64 images); the int8 loss is "
        "against the fp32 lossless stage (x86's fp32 stands for the Pi's: the same-tensor check below). "
        f"`sudo python benchmarks/arm64/accuracy.py` took {minutes:.0f} min.",
        "",
        "| model | fp32 (x86) | int8 S8S8 x86 (reference arithmetic) | int8 S8S8 arm64 (Pi kernels) | "
        "int8 loss on arm64 (points) | int8 loss on x86 | NCNN fp16 x86 | NCNN fp16 arm64 | NCNN arm64 − x86 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['fp32_x86']['map50_95']:.4f} | {r['int8_x86']['map50_95']:.4f} | "
            f"{r['int8_arm64']['map50_95']:.4f} | **{points(r['fp32_x86'], r['int8_arm64']):.2f}** | "
            f"{points(r['fp32_x86'], r['int8_x86']):.2f} | {r['ncnn_x86']['map50_95']:.4f} | "
            f"{r['ncnn_arm64']['map50_95']:.4f} | {-points(r['ncnn_x86'], r['ncnn_arm64']):+.2f} |"
        )
    if result["same_tensor"]:
        lines += [
            "",
            "Same input tensors on both sides (the first holdout images, letterboxed once), raw head outputs, "
            "arm64 against x86:",
            "",
            "| model | images | boxes: mean / max Δ (px) | objectness max Δ | class score max Δ |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, d in result["same_tensor"].items():
            lines.append(
                f"| {name} | {d['images']} | {d['box_mean_px']:.4f} / {d['box_max_px']:.3f} | "
                f"{d['objectness_max']:.4f} | {d['class_score_max']:.4f} |"
            )
    if result["detect"]:
        lines += ["", "`graphopt detect` on bus.jpg:", "", "| artifact | x86 | arm64 |", "|---|---|---|"]
        for d in result["detect"]:
            lines.append(f"| {d['artifact']} | {', '.join(d['x86'])} | {', '.join(d['arm64'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/graphopt-arm64-accuracy"))
    parser.add_argument("--tensors", type=int, default=2, help="images for the same-tensor check (fp32: ~60 s each)")
    parser.add_argument("--write", type=Path, help="replace the section in this markdown file (RESULTS.md)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("error: benchmarks/arm64 needs root (debootstrap, chroot and mounts); run it with sudo")
    if not SPLIT.exists():
        raise SystemExit(f"error: {SPLIT} is absent (real data lives in ../shared)")
    args.work.mkdir(parents=True, exist_ok=True)
    global CACHE
    CACHE = args.work / "evals.json"
    started = time.perf_counter()
    result = measure(args.work, args.tensors)
    minutes = (time.perf_counter() - started) / 60
    (args.work / "accuracy.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    text = markdown(result, minutes)
    print(text)
    if args.write:
        replace_section(args.write, "arm64", text)


if __name__ == "__main__":
    main()
