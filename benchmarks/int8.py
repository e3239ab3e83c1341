"""int8 on this machine: accuracy (mAP on COCO128) and speed (interleaved, 2 threads, 640) of
graphopt's quantize against fp32, onnxruntime's quantize_static with library defaults, and dynamic
quantization; plus yolov9t-ball agreement with fp32 (cosine, score correlation).

    python benchmarks/int8.py [--rounds 20] [--threads 2] [--samples 64] [--json]

Needs ../shared (checkpoints and COCO128).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import interleaved, ort_runner, summary  # noqa: E402
from graphopt.core.model import load_model, save_model  # noqa: E402
from graphopt.data.feeds import FeedSource  # noqa: E402
from graphopt.eval.evaluate import evaluate  # noqa: E402
from graphopt.passes.pipeline import Pipeline  # noqa: E402
from graphopt.quantize.ort import quiet  # noqa: E402

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "coco128" / "data.yaml"


def _naive(src: Path, out: Path, samples: int) -> None:
    """What users try first: quantize_static with the library's defaults on the whole model."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from runtime.preprocess import letterbox, to_input_tensor

    images = FeedSource(DATA).images[:samples]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(images)

        def get_next(self) -> dict | None:
            import cv2

            p = next(self.it, None)
            return (
                None
                if p is None
                else {"images": to_input_tensor(letterbox(cv2.imread(str(p)), (640, 640))[0])}
            )

    with quiet():
        quantize_static(str(src), str(out), Reader())


def _variant(src: Path, out: Path, passes: list[str], options: dict[str, Any]) -> dict[str, Any]:
    result = Pipeline.from_passes(passes, options, feeds=FeedSource(DATA, samples=2)).run(load_model(src))
    save_model(result.model, out)
    return result.reports[-1].as_dict()


def _agreement(fp32: Path, int8: Path, head: str, count: int = 32) -> dict[str, float]:
    from graphopt.core.ort_session import run
    from runtime.decode import head_arrays

    feeds = FeedSource(DATA, samples=count).feeds_for(load_model(fp32))
    a, b = run(load_model(fp32), feeds), run(load_model(int8), feeds)
    ref = np.concatenate([np.ravel(x["output0"]) for x in a]).astype(np.float64)
    got = np.concatenate([np.ravel(x["output0"]) for x in b]).astype(np.float64)
    sa = np.concatenate([head_arrays(x["output0"], head)[1].ravel() for x in a])
    sb = np.concatenate([head_arrays(x["output0"], head)[1].ravel() for x in b])
    live = (sa > 0.01) | (sb > 0.01)
    return {
        "images": count,
        "output_cosine": float(ref @ got / np.sqrt((ref @ ref) * (got @ got))),
        "score_pearson": float(np.corrcoef(sa[live], sb[live])[0, 1]),
        "max_score_fp32": float(sa.max()),
        "max_score_int8": float(sb.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit("needs ../shared (checkpoints and COCO128)")
    from frontends import export

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name, head in (("yolov5n-coco", "yolov5"), ("yolov9t-ball", "anchor-free")):
            export(SHARED / "models" / f"{name}.pt", tmp / f"{name}.onnx")
            fp32 = tmp / f"{name}.fp32.onnx"
            save_model(Pipeline.from_recipe("lossless").run(load_model(tmp / f"{name}.onnx")).model, fp32)
            variants = {"fp32": fp32}
            rows: dict[str, Any] = {"fp32": {}}
            for label, target in (("int8-arm", "arm"), ("int8-x86", "x86")):
                variants[label] = tmp / f"{name}.{label}.onnx"
                rows[label] = {
                    "report": _variant(
                        fp32,
                        variants[label],
                        ["quantize"],
                        {"quantize": {"target": target, "samples": args.samples}},
                    )
                }
            if name == "yolov5n-coco":
                variants["naive-quantize_static"] = tmp / f"{name}.naive.onnx"
                _naive(fp32, variants["naive-quantize_static"], args.samples)
                rows["naive-quantize_static"] = {}
                variants["dynamic"] = tmp / f"{name}.dynamic.onnx"
                rows["dynamic"] = {
                    "report": _variant(
                        fp32, variants["dynamic"], ["quantize"], {"quantize": {"mode": "dynamic"}}
                    )
                }
                for label, path in variants.items():
                    r = evaluate(path, DATA, progress=False)
                    rows[label].update(map50_95=r.map50_95, map50=r.map50)
            else:
                for label in ("int8-arm", "int8-x86"):
                    rows[label]["agreement"] = _agreement(fp32, variants[label], head)
            times = interleaved(
                {k: ort_runner(str(v), args.threads)[0] for k, v in variants.items()}, rounds=args.rounds
            )
            base = summary(times["fp32"])["median_ms"]
            for label in variants:
                med = summary(times[label])["median_ms"]
                rows[label].update(median_ms=med, speedup_vs_fp32=base / med)
                rows[label].pop("report", None)
            out[name] = rows
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"onnxruntime CPU, {args.threads} threads, 640x640, {args.rounds} interleaved rounds (median ms)")
    for name, rows in out.items():
        print(f"\n{name}")
        for label, row in rows.items():
            acc = (
                f"mAP50-95 {row['map50_95']:.4f}  mAP50 {row['map50']:.4f}"
                if "map50_95" in row
                else (
                    f"cosine {row['agreement']['output_cosine']:.5f}  score r {row['agreement']['score_pearson']:.4f}"
                    if "agreement" in row
                    else ""
                )
            )
            print(f"  {label:<22}{row['median_ms']:8.1f} ms  {row['speedup_vs_fp32']:5.2f}x   {acc}")


if __name__ == "__main__":
    main()
