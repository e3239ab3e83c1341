"""Peak memory of int8 calibration vs the number of samples, and the accuracy it gives.

Exports yolov5n-coco, runs the `lossless` recipe, then `quantize` (x86) with 64 and with 256
calibration images (COCO128 has 128: the 256-image folder links each image twice under another
name), each in a fresh process whose peak RSS is read from getrusage. Then the `int8-x86` recipe on
COCO128's data.yaml (64 samples) is evaluated on COCO128, the setting of the earlier 0.3519.

    python benchmarks/calibration_memory.py [--json]

Needs ../shared (the checkpoint and COCO128).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
COCO = SHARED / "data" / "coco128"
CKPT = SHARED / "models" / "yolov5n-coco.pt"

_MEASURE = """
import sys
from graphopt.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
# VmHWM: this process's peak since exec (ru_maxrss would include the parent's RSS at fork time)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024, file=sys.stderr)
"""


def graphopt(*args: str) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of one graphopt command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode:
        raise SystemExit(f"graphopt {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return float(proc.stderr.strip().splitlines()[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from graphopt.eval.evaluate import evaluate

    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-calib-mem-") as tmp:
        work = Path(tmp)
        onnx_path, lossless = work / "yolov5n.onnx", work / "yolov5n.lossless.onnx"
        graphopt("export", str(CKPT), "-o", str(onnx_path))
        graphopt("optimize", str(onnx_path), "-o", str(lossless), "--recipe", "lossless", "--no-verify")
        doubled = work / "images256"
        doubled.mkdir()
        for copy in ("a", "b"):
            for image in sorted((COCO / "images" / "train2017").glob("*.jpg")):
                (doubled / f"{copy}_{image.name}").symlink_to(image)
        for samples in (64, 256):
            out = work / f"int8-{samples}.onnx"
            rss, seconds = graphopt(
                "optimize", str(lossless), "-o", str(out), "--passes", "quantize", "--no-verify",
                "--data", str(doubled), "--set", "quantize.target=x86", "--set", f"quantize.samples={samples}",
            )  # fmt: skip
            rows.append({"samples": samples, "peak_rss_mb": round(rss), "seconds": round(seconds, 1)})
        recipe_out = work / "int8-x86.onnx"
        rss, seconds = graphopt(
            "optimize", str(onnx_path), "-o", str(recipe_out), "--recipe", "int8-x86", "--data", str(COCO / "data.yaml")
        )
        result = evaluate(recipe_out, COCO / "data.yaml", progress=False)
        fp32 = evaluate(lossless, COCO / "data.yaml", progress=False)
    report = {
        "quantize_pass": rows,
        "int8_x86_recipe": {
            "peak_rss_mb": round(rss),
            "seconds": round(seconds, 1),
            "map50_95": round(result.map50_95, 4),
            "fp32_map50_95": round(fp32.map50_95, 4),
            "previous_map50_95": 0.3519,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("| samples | peak RSS (MiB) | seconds |\n|---:|---:|---:|")
    for row in rows:
        print(f"| {row['samples']} | {row['peak_rss_mb']} | {row['seconds']} |")
    r = report["int8_x86_recipe"]
    print(
        f"\nint8-x86 recipe (64 samples of COCO128): mAP50-95 {r['map50_95']:.4f} on COCO128 "
        f"(fp32 {r['fp32_map50_95']:.4f}; before streaming calibration 0.3519), peak RSS {r['peak_rss_mb']} MiB, "
        f"{r['seconds']} s"
    )


if __name__ == "__main__":
    main()
