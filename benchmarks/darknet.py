"""Darknet `.cfg` + `.weights` export against WongKinYiu's PyTorch_YOLOv4, and the result downstream.

For each cfg the repo (a temp copy of ../shared/repos/PyTorch_YOLOv4) builds `Darknet(cfg)` with
random weights and randomized BN statistics and writes real `.weights` with its own `save_weights`;
graphopt exports cfg + weights (decode=scaled, BN eps 1e-4: what the repo's model computes) and is
compared with the repo's eval-mode output on real COCO128 holdout images. Then: `lossless` (BN left),
`fuse-nms` at conf 0.00005 against the runtime's host NMS (detections compared), and
`convert --to ncnn` (fp32 weights) against onnxruntime.

    python benchmarks/darknet.py [--size 416] [--images 4] [--json]

Needs ../shared and graphopt[all] (torch for the repo's reference, pnnx for NCNN).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
CFGS = ("yolov4-tiny.cfg", "yolov4.cfg", "yolov4-csp-mish.cfg")


def main() -> None:
    from frontends.darknet import export_darknet
    from graphopt.compile.ncnn import convert_to_ncnn
    from graphopt.core.model import load_model, op_histogram, save_model
    from graphopt.core.ort_session import run
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import Pipeline
    from runtime.preprocess import Preprocess
    from runtime.sources import read_image
    from tests import upstream

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    holdout = SHARED / "data" / "coco128" / "holdout.txt"
    paths = FeedSource(holdout).images[: args.images]
    pre = Preprocess.from_meta(None)
    x = np.concatenate([pre(read_image(p), (args.size, args.size))[0] for p in paths])
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-darknet-") as tmp:
        work = Path(tmp)
        repo = upstream.repo_copy("PyTorch_YOLOv4", work)
        for cfg in CFGS:
            start = time.perf_counter()
            weights = work / f"{cfg}.weights"
            reference = upstream.darknet_reference(repo, f"cfg/{cfg}", weights, x, work)
            out = work / f"{cfg}.onnx"
            report = export_darknet(
                repo / "cfg" / cfg, weights, out, imgsz=args.size, decode="scaled", bn_eps=1e-4
            )
            model = load_model(out)
            got = np.concatenate(
                [run(model, [{"images": x[i : i + 1]}])[0]["output0"] for i in range(len(x))]
            )
            diff = np.abs(got - reference)
            feeds = FeedSource(holdout, samples=2)
            lossless = Pipeline.from_recipe("lossless", feeds=feeds).run(model).model
            nms = Pipeline.from_passes(["fuse-nms"], {"fuse-nms": {"conf": 0.00005}}, feeds=feeds).run(
                lossless
            )
            lossless_path = work / f"{cfg}.lossless.onnx"
            save_model(lossless, lossless_path)
            ncnn = convert_to_ncnn(lossless_path, work / f"ncnn-{cfg}", fp16=False, verify_image=paths[0])
            rows.append(
                {
                    "cfg": cfg,
                    "nodes": sum(report["ops"].values()),
                    "conv": report["conv"],
                    "batchnorm": report["batchnorm"],
                    "max_abs_diff_vs_repo": float(diff.max()),
                    "max_score_diff_vs_repo": float(diff[..., 4:].max()),
                    "within_export_tolerance": bool(np.all(diff <= 1e-3 + 1e-5 * np.abs(reference))),
                    "batchnorm_after_lossless": op_histogram(lossless).get("BatchNormalization", 0),
                    "fuse_nms_check": nms.reports[0].verification,
                    "ncnn_max_abs_diff": max(ncnn["max_abs_diff"].values()),
                    "ncnn_rel_to_range": ncnn["max_rel_to_range"],
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    print(f"{len(x)} COCO128 holdout images at {args.size}")
    print(
        "| cfg | nodes | Conv | BN | max abs diff vs repo | max score diff | BN after lossless | fuse-nms vs host NMS | NCNN fp32 max abs diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        v = r["fuse_nms_check"] or {}
        check = "ok" if v.get("ok") else f"FAILED {v}"
        print(
            f"| {r['cfg']} | {r['nodes']} | {r['conv']} | {r['batchnorm']} | {r['max_abs_diff_vs_repo']:.2e} | "
            f"{r['max_score_diff_vs_repo']:.2e} | {r['batchnorm_after_lossless']} | {check} | {r['ncnn_max_abs_diff']:.2e} |"
        )


if __name__ == "__main__":
    main()
