"""Per-frame post-processing: host decode + NMS (OpenCV) vs NMS fused into the graph, one interleaved run.

    python benchmarks/nms.py [--images 32] [--threads 2] [--json]

Needs ../shared. Times each stage of the runtime's Detector on the same COCO128 images (conf 0.25,
IoU 0.45, 100 boxes): for the fused model, the NMS cost moves into "infer" and "post" is only the
gather of final detections.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphopt.core.model import load_model, save_model  # noqa: E402
from graphopt.passes.pipeline import Pipeline  # noqa: E402
from runtime.detector import Detector  # noqa: E402

SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from frontends import export

    frames = [
        cv2.imread(str(p))
        for p in sorted((SHARED / "data/coco128/images/train2017").glob("*.jpg"))[: args.images]
    ]
    out = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in ("yolov5n-coco", "yolov9t-ball"):
            export(SHARED / "models" / f"{name}.pt", tmp / f"{name}.onnx")
            host_path, fused_path = tmp / f"{name}.host.onnx", tmp / f"{name}.fused.onnx"
            save_model(
                Pipeline.from_recipe("lossless").run(load_model(tmp / f"{name}.onnx")).model, host_path
            )
            opts = {"fuse-nms": {"conf": 0.25, "iou": 0.45, "max_det": 100}}
            save_model(Pipeline.from_passes(["fuse-nms"], opts).run(load_model(host_path)).model, fused_path)
            dets = {
                "host": Detector(host_path, threads=args.threads, conf=0.25, iou=0.45, max_det=100),
                "fused": Detector(fused_path, threads=args.threads, conf=0.25),
            }
            stages: dict[str, dict[str, list[float]]] = {
                k: {"pre": [], "infer": [], "post": []} for k in dets
            }
            for frame in frames * 2:
                for label, det in dets.items():
                    for stage, ms in det(frame).timings_ms.items():
                        stages[label][stage].append(ms)
            out[name] = {
                label: {s: float(np.median(v)) for s, v in st.items()}
                | {"total": float(np.median(np.sum([st["pre"], st["infer"], st["post"]], axis=0)))}
                for label, st in stages.items()
            }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"median ms per frame over {args.images} COCO128 images ×2, onnxruntime {args.threads} threads, conf 0.25"
    )
    for name, rows in out.items():
        for label, r in rows.items():
            print(
                f"  {name:<14}{label:<7} pre {r['pre']:6.2f}  infer {r['infer']:7.2f}  post {r['post']:6.3f}"
                f"  total {r['total']:7.2f}"
            )


if __name__ == "__main__":
    main()
