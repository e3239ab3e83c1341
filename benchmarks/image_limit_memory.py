"""Peak RSS of every command that reads an image, on a 20000 x 20000 PNG (issue 24, problem 2).

The PNG is a valid 1-bit greyscale image (50 KB on disk) that OpenCV would decode into 1.2 GB of BGR
(2.4 GB peak). Each command runs in a fresh interpreter and reports its own VmHWM (/proc/self/status;
ru_maxrss would carry the parent's RSS at fork time).

    python benchmarks/image_limit_memory.py [--model M.onnx]

Without --model, the bundled YOLOv5n is exported first (needs torch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers import run_cli_child, write_dataset, write_png_claiming  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an ONNX detector [the bundled YOLOv5n, exported]")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="graphopt-image-limit-"))
    try:
        ckpt = REPO / "graphopt" / "assets" / "yolov5n-coco.pt"
        model = args.model
        if model is None:
            model = tmp / "yolov5n.onnx"
            r = run_cli_child("export", ckpt, "-o", model, tmp=tmp)
            if r.code != 0:
                sys.exit(f"exporting the bundled model failed: {r.err.strip()}")
        huge = write_png_claiming(tmp / "huge.png", 20000, 20000)
        folder = tmp / "folder"
        folder.mkdir()
        shutil.copy(huge, folder / "huge.png")
        cv2.imwrite(str(folder / "small.jpg"), np.zeros((480, 640, 3), np.uint8))
        data = write_dataset(tmp / "ds", 4)
        shutil.copy(huge, tmp / "ds" / "images" / "train" / "huge.png")
        cases = {
            "detect M huge.png": ["detect", model, huge],
            "detect M folder/ (huge.png + small.jpg)": ["detect", model, folder],
            "bench M --image huge.png": ["bench", model, "--image", huge, "--runs", "3", "--warmup", "1"],
            "eval M --data (huge.png in the val split)": ["eval", model, "--data", data],
            "export yolov5n.pt --data huge.png": ["export", ckpt, "-o", tmp / "e.onnx", "--data", huge],
            "optimize --passes quantize --data huge.png": [
                "optimize", model, "-o", tmp / "q.onnx", "--passes", "quantize", "--data", huge,
            ],
        }  # fmt: skip
        print(f"{'command':48s} {'exit':>4s} {'peak RSS':>10s}  stderr")
        for name, command in cases.items():
            r = run_cli_child(*command, tmp=tmp, timeout=900)
            lines = r.err.strip().splitlines()
            last = lines[-1][:110] if lines else ""
            print(f"{name:48s} {r.code:4d} {r.peak_mib:7.0f} MiB  {len(lines)} line(s) {last}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
