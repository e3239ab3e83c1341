"""Where the time goes: onnxruntime's own profiler, aggregated per op type, for one or more models.

Each model runs `--runs` times on one letterboxed image (2 threads, the session's default graph
optimizations — what users run); the table gives per op type the share of kernel time and ms per
inference, so a missed speed target can name what bounds it (e.g. int8 QLinearConv vs the float
activations and the QuantizeLinear/DequantizeLinear around them).

    python benchmarks/profile_ops.py MODEL.onnx [MODEL2.onnx ...] [--runs 20] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = ROOT / "graphopt" / "assets" / "bus.jpg"


def profile(path: Path, runs: int, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    from runtime.preprocess import Preprocess
    from runtime.sources import read_image

    with tempfile.TemporaryDirectory(prefix="graphopt-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = Preprocess.from_meta(None)(read_image(IMAGE), (int(inp.shape[2]), int(inp.shape[3])))[0]
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    runs_seen = 0
    for ev in events:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs_seen += 1
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev["args"]["op_name"]] += ev["dur"] / 1000.0  # µs → ms
    total = sum(per_op.values())
    n = max(runs_seen, 1)
    return {
        "model": str(path),
        "runs": n,
        "kernel_ms_per_run": total / n,
        "ops": {
            op: {"ms_per_run": ms / n, "share": ms / total if total else 0.0}
            for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [profile(m, args.runs, args.threads) for m in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"\n{r['model']}: {r['kernel_ms_per_run']:.1f} ms of kernels per inference ({r['runs']} runs)\n"
        )
        print("| op | ms / inference | share |")
        print("|---|---:|---:|")
        for op, v in r["ops"].items():
            if v["share"] >= 0.005:
                print(f"| {op} | {v['ms_per_run']:.2f} | {v['share']:.1%} |")


if __name__ == "__main__":
    main()
