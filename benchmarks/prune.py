"""`prune` on yolov5n-coco: holdout mAP per recovery mode and onnxruntime speed, at two MACs targets.

Exports yolov5n-coco, runs the `lossless` recipe, then `prune` at each `--macs` with every recovery
mode, calibrating and recovering on COCO128's first half (split.yaml `train`: calib.txt) and
reporting mAP50-95 on the other half (`val`: holdout.txt). Latency: every model in one interleaved
onnxruntime run (2 threads, thread spinning off, median of per-round ratios against the unpruned
model). Then prune + quantize (x86) for the best mode.

    python benchmarks/prune.py [--macs 0.85 0.7] [--modes none bn lstsq distill] [--rounds 30] [--json]

Needs ../shared (checkpoint and COCO128).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import interleaved, ort_runner, speedup  # noqa: E402

SHARED = ROOT.parent / "shared"
SPLIT = SHARED / "data" / "coco128" / "split.yaml"
CKPT = SHARED / "models" / "yolov5n-coco.pt"


def graphopt(*args: object) -> dict:
    import contextlib
    import io

    from graphopt.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            if exc.code:
                raise SystemExit(f"graphopt {' '.join(map(str, args))} failed ({exc.code})") from None
    text = out.getvalue()
    return json.loads(text[text.index("{") :]) if "{" in text else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=float, nargs="+", default=[0.85, 0.7])
    parser.add_argument("--modes", nargs="+", default=["none", "bn", "lstsq", "distill"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-prune-bench-") as tmp:
        work = Path(tmp)
        export, base = work / "yolov5n.onnx", work / "yolov5n.lossless.onnx"
        graphopt("export", CKPT, "-o", export, "--json")
        graphopt("optimize", export, "-o", base, "--recipe", "lossless", "--data", SPLIT, "--json")
        models = {"unpruned": base}
        base_map = graphopt("eval", base, "--data", SPLIT, "--json")["map50_95"]
        rows.append({"model": "unpruned", "macs": 1.0, "recover": "-", "map50_95": base_map, "seconds": 0})
        best: dict[float, tuple[float, Path]] = {}
        for target in args.macs:
            for mode in args.modes:
                out = work / f"p{target}-{mode}.onnx"
                start = time.perf_counter()
                report = graphopt(
                    "optimize", base, "-o", out, "--passes", "prune", "--data", SPLIT, "--json",
                    "--set", f"prune.macs={target}", "--set", f"prune.recover={mode}",
                )  # fmt: skip
                seconds = time.perf_counter() - start
                details = report["passes"][0]["details"]
                m = graphopt("eval", out, "--data", SPLIT, "--json")["map50_95"]
                name = f"prune {target} {mode}"
                models[name] = out
                rows.append(
                    {
                        "model": name,
                        "macs": details["macs_kept"],
                        "recover": mode,
                        "map50_95": m,
                        "seconds": round(seconds, 1),
                        "recovery_seconds": details.get("recovery_seconds"),
                    }
                )
                if target not in best or m > best[target][0]:
                    best[target] = (m, out)
        for target, (_, path) in best.items():
            q = work / f"p{target}-int8.onnx"
            graphopt(
                "optimize", path, "-o", q, "--passes", "quantize", "--data", SPLIT, "--json",
                "--set", "quantize.target=x86",
            )  # fmt: skip
            name = f"prune {target} best + int8 x86"
            models[name] = q
            rows.append(
                {
                    "model": name,
                    "macs": None,
                    "recover": "best",
                    "map50_95": graphopt("eval", q, "--data", SPLIT, "--json")["map50_95"],
                }
            )
        q = work / "int8.onnx"
        graphopt(
            "optimize",
            base,
            "-o",
            q,
            "--passes",
            "quantize",
            "--data",
            SPLIT,
            "--json",
            "--set",
            "quantize.target=x86",
        )
        models["int8 x86 (no prune)"] = q
        rows.append(
            {
                "model": "int8 x86 (no prune)",
                "macs": 1.0,
                "recover": "-",
                "map50_95": graphopt("eval", q, "--data", SPLIT, "--json")["map50_95"],
            }
        )
        times = interleaved({n: ort_runner(str(p))[0] for n, p in models.items()}, rounds=args.rounds)
        for row in rows:
            row["speedup"] = round(speedup(times, "unpruned", row["model"]), 3)
            row["loss_points"] = round(100 * (base_map - row["map50_95"]), 2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| model | MACs kept | holdout mAP50-95 | loss (points) | speed vs unpruned | time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        macs = "-" if r["macs"] is None else f"{r['macs']:.3f}"
        print(
            f"| {r['model']} | {macs} | {r['map50_95']:.4f} | {r['loss_points']:.2f} | {r['speedup']:.3f}× | "
            f"{r.get('seconds', '-')} |"
        )


if __name__ == "__main__":
    main()
