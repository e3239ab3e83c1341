"""ORT latency before/after the lossless recipe, measured interleaved in one run.

    python benchmarks/lossless_latency.py [--rounds 30] [--threads 2] [MODEL.onnx ...]

Without models it exports ../shared/models/{yolov9t-ball,yolov5n-coco}.pt (640 px). Both ORT
settings are timed: graph optimizations on (what users run: ORT then fuses Conv+BN itself) and
off (the graph as written: what a runtime without such fusions sees, e.g. a naive NCNN/TFLite path).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import interleaved, ort_runner, summary  # noqa: E402
from graphopt.core.model import load_model, op_histogram, save_model  # noqa: E402
from graphopt.passes.pipeline import Pipeline  # noqa: E402

SHARED = ROOT.parent / "shared"


def _default_models(tmp: Path) -> list[Path]:
    from frontends import export

    paths = []
    for name in ("yolov9t-ball", "yolov5n-coco"):
        ckpt = SHARED / "models" / f"{name}.pt"
        if ckpt.exists():
            export(ckpt, tmp / f"{name}.onnx")
            paths.append(tmp / f"{name}.onnx")
    if not paths:
        from frontends.zoo import BUILDERS

        for name in ("yolov5", "gelan"):
            export(BUILDERS[name](), tmp / f"zoo-{name}.onnx", imgsz=320)
            paths.append(tmp / f"zoo-{name}.onnx")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        models = args.models or _default_models(tmp)
        for path in models:
            optimized = tmp / f"{path.stem}.lossless.onnx"
            save_model(Pipeline.from_recipe("lossless").run(load_model(path)).model, optimized)
            row = {
                "model": path.name,
                "nodes_before": sum(op_histogram(load_model(path)).values()),
                "nodes_after": sum(op_histogram(load_model(optimized)).values()),
            }
            for label, ort_opt in (("ort_opt_on", True), ("ort_opt_off", False)):
                runners = {
                    "before": ort_runner(str(path), args.threads, ort_opt)[0],
                    "after": ort_runner(str(optimized), args.threads, ort_opt)[0],
                }
                times = interleaved(runners, rounds=args.rounds)
                before, after = summary(times["before"]), summary(times["after"])
                row[label] = {
                    "before": before,
                    "after": after,
                    "speedup": before["median_ms"] / after["median_ms"],
                }
            results.append(row)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"ORT CPU, {args.threads} threads, {args.rounds} interleaved rounds, median ms")
    print(f"{'model':<22}{'nodes':>14}{'ORT opt on: before → after':>34}{'ORT opt off: before → after':>36}")
    for r in results:
        on, off = r["ort_opt_on"], r["ort_opt_off"]
        print(
            f"{r['model']:<22}{r['nodes_before']:>6} → {r['nodes_after']:<5}"
            f"{on['before']['median_ms']:>14.1f} → {on['after']['median_ms']:6.1f} ({on['speedup']:.2f}x)"
            f"{off['before']['median_ms']:>16.1f} → {off['after']['median_ms']:6.1f} ({off['speedup']:.2f}x)"
        )


if __name__ == "__main__":
    main()
