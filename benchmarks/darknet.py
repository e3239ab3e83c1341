"""Darknet `.cfg` + `.weights` export: against WongKinYiu's PyTorch_YOLOv4, every official AlexeyAB cfg
downstream, and a real trained Darknet model judged by mAP.

    python benchmarks/darknet.py [--size 416] [--images 4] [--json]         # vs PyTorch_YOLOv4 (default)
    python benchmarks/darknet.py --official [--size 256] [--cfg NAME …] [--json]
    python benchmarks/darknet.py --fastest [--json]

`--official`: each cfg in ../shared/models/darknet/cfg/ (the official AlexeyAB cfgs) gets seeded weights
of the size it implies (tests/helpers.write_darknet_weights: 20-byte v0.2 header + 4 bytes per
parameter), is exported at --size, run through `lossless` (verified on COCO128 holdout images, BN must be
0 after), `fuse-nms` at conf 0.00005 against the runtime's host NMS, and `convert --to ncnn` (fp32,
checked against onnxruntime); prints the op-count table.

`--fastest`: Yolo-Fastest 1.1 (../shared/models/darknet, the project's COCO release) exported with the
cfg's preprocessing (resize) and with --letterbox, each `lossless`, `int8-x86` and `int8` (calibrated on
COCO128's calibration half through that preprocessing), each evaluated on the holdout half; its README
reports 24.4 % mAP@0.5 on COCO val2017 at 320 (a harder set than these 64 images). On x86 onnxruntime
runs the `int8` recipe's S8S8 QDQ graph as its float reference (it fuses S8S8 only on Arm): that column
is x86 reference arithmetic, not the Pi's int8 kernels.

PyTorch_YOLOv4 (default): for each cfg the repo (a temp copy of ../shared/repos/PyTorch_YOLOv4) builds `Darknet(cfg)` with
random weights and randomized BN statistics and writes real `.weights` with its own `save_weights`;
graphopt exports cfg + weights (decode=scaled, BN eps 1e-4: what the repo's model computes) and is
compared with the repo's eval-mode output on real COCO128 holdout images. Then: `lossless` (BN left),
`fuse-nms` at conf 0.00005 against the runtime's host NMS (detections compared), and
`convert --to ncnn` (fp32 weights) against onnxruntime.

Needs ../shared and graphopt[all] (torch for the repo's reference, pnnx for NCNN; --official and --fastest
need no torch).
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


def official(size: int, names: list[str], as_json: bool) -> None:
    from frontends.darknet import export_darknet, weights_layout
    from graphopt.compile.ncnn import convert_to_ncnn
    from graphopt.core.model import load_model, op_histogram, save_model
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import Pipeline
    from tests.helpers import write_darknet_weights

    folder = SHARED / "models" / "darknet" / "cfg"
    cfgs = [folder / n for n in names] if names else sorted(folder.glob("*.cfg"))
    holdout = SHARED / "data" / "coco128" / "holdout.txt"
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-darknet-official-") as tmp:
        work = Path(tmp)
        for cfg in cfgs:
            start = time.perf_counter()
            text = cfg.read_text()
            weights = write_darknet_weights(work / f"{cfg.stem}.weights", text)
            out = work / f"{cfg.stem}.onnx"
            report = export_darknet(cfg, weights, out, imgsz=size)
            feeds = FeedSource(holdout, samples=2)
            lossless = Pipeline.from_recipe("lossless", feeds=feeds).run(load_model(out))
            after = op_histogram(lossless.model)
            nms = Pipeline.from_passes(["fuse-nms"], {"fuse-nms": {"conf": 0.00005}}, feeds=feeds).run(
                lossless.model
            )
            lossless_path = work / f"{cfg.stem}.lossless.onnx"
            save_model(lossless.model, lossless_path)
            ncnn = convert_to_ncnn(lossless_path, work / f"ncnn-{cfg.stem}", fp16=False)
            rows.append(
                {
                    "cfg": cfg.name,
                    "params": sum(b.size for b in weights_layout(text)),
                    "weights_bytes": weights.stat().st_size,
                    "imgsz": report["imgsz"],
                    "preprocess": report["preprocess"],
                    "exported_ops": report["ops"],
                    "lossless_ops": after,
                    "lossless_verified": all(
                        r.verification is None or r.verification["ok"] for r in lossless.reports
                    ),
                    "fuse_nms_check": nms.reports[0].verification,
                    "ncnn_max_abs_diff": max(ncnn["max_abs_diff"].values()),
                    "ncnn_rel_to_range": ncnn["max_rel_to_range"],
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
            for p in work.iterdir():  # the big cfgs' weights and models: keep the disk use to one cfg
                if p.is_file():
                    p.unlink()
            if not as_json:
                print(f"{cfg.name}: done in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    print(
        f"official AlexeyAB cfgs, seeded weights, exported at {size}; lossless verified on 2 COCO128 holdout images"
    )
    print(
        "| cfg | params | exported nodes | Conv | BN | lossless nodes | BN after | other ops after lossless | "
        "fuse-nms vs host NMS | NCNN fp32 max abs diff (of range) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        ex, lo = r["exported_ops"], r["lossless_ops"]
        other = ", ".join(f"{k} {v}" for k, v in sorted(lo.items(), key=lambda kv: -kv[1]) if k != "Conv")
        v = r["fuse_nms_check"] or {}
        check = "ok" if v.get("ok") else f"FAILED {v}"
        print(
            f"| {r['cfg']} | {r['params']:,} | {sum(ex.values())} | {ex.get('Conv', 0)} | "
            f"{ex.get('BatchNormalization', 0)} | {sum(lo.values())} | {lo.get('BatchNormalization', 0)} | {other} | "
            f"{check} | {r['ncnn_max_abs_diff']:.1e} ({r['ncnn_rel_to_range']:.1e}) |"
        )


def fastest(as_json: bool) -> None:
    from frontends.darknet import export_darknet
    from graphopt.core.model import load_model, save_model
    from graphopt.data.feeds import FeedSource
    from graphopt.eval.evaluate import evaluate
    from graphopt.passes.pipeline import Pipeline

    folder = SHARED / "models" / "darknet"
    cfg, weights = folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights"
    split = SHARED / "data" / "coco128" / "split.yaml"
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-fastest-") as tmp:
        work = Path(tmp)
        for letterbox in (None, True):
            mode = "letterbox" if letterbox else "resize"
            exported = work / f"fastest-{mode}.onnx"
            export_darknet(cfg, weights, exported, letterbox=letterbox)
            for recipe in ("lossless", "int8-x86", "int8"):
                out = work / f"fastest-{mode}.{recipe}.onnx"
                start = time.perf_counter()
                result = Pipeline.from_recipe(recipe, feeds=FeedSource(split)).run(load_model(exported))
                save_model(result.model, out)
                seconds = time.perf_counter() - start
                ev = evaluate(out, split, progress=False)
                rows.append(
                    {
                        "preprocess": ev.settings["preprocess"],
                        "recipe": recipe,
                        "map50": ev.map50,
                        "map50_95": ev.map50_95,
                        "images": ev.images,
                        "instances": ev.instances,
                        "optimize_seconds": round(seconds, 1),
                        "arithmetic": "x86 reference (S8S8 QDQ run as float)" if recipe == "int8" else "x86",
                    }
                )
    for r in rows:
        base = next(b for b in rows if b["preprocess"] == r["preprocess"] and b["recipe"] == "lossless")
        r["loss_map50_95_points"] = round(100 * (base["map50_95"] - r["map50_95"]), 2)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"Yolo-Fastest 1.1 (COCO, 320), COCO128 holdout ({rows[0]['images']} images, {rows[0]['instances']} "
        "instances); published: 24.4 % mAP@0.5 on COCO val2017"
    )
    print("| preprocess | recipe | mAP50 | mAP50-95 | int8 loss (mAP50-95 points) | arithmetic |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['preprocess']} | {r['recipe']} | {100 * r['map50']:.1f} | {100 * r['map50_95']:.1f} | "
            f"{r['loss_map50_95_points']:+.2f} | {r['arithmetic']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", action="store_true", help="every official AlexeyAB cfg downstream")
    parser.add_argument("--fastest", action="store_true", help="Yolo-Fastest 1.1 judged by mAP")
    parser.add_argument("--cfg", action="append", default=[], help="--official: only this cfg (repeatable)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.official:
        official(args.size or 256, args.cfg, args.json)
    elif args.fastest:
        fastest(args.json)
    else:
        pytorch_yolov4(args.size or 416, args.images, args.json)


def pytorch_yolov4(size: int, images: int, as_json: bool) -> None:
    from frontends.darknet import export_darknet
    from graphopt.compile.ncnn import convert_to_ncnn
    from graphopt.core.model import load_model, op_histogram, save_model
    from graphopt.core.ort_session import run
    from graphopt.data.feeds import FeedSource
    from graphopt.passes.pipeline import Pipeline
    from runtime.preprocess import Preprocess
    from runtime.sources import read_image
    from tests import upstream

    holdout = SHARED / "data" / "coco128" / "holdout.txt"
    paths = FeedSource(holdout).images[:images]
    pre = Preprocess.from_meta(None)
    x = np.concatenate([pre(read_image(p), (size, size))[0] for p in paths])
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
                repo / "cfg" / cfg, weights, out, imgsz=size, decode="scaled", bn_eps=1e-4
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
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    print(f"{len(x)} COCO128 holdout images at {size}")
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
