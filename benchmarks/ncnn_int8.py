"""NCNN int8 (graphopt's own calibration table and writer) against the fp32/fp16 NCNN models.

    python benchmarks/ncnn_int8.py --fastest [--keep DIR] [--json]     # Yolo-Fastest 1.1: mAP, .bin sizes, speed
    python benchmarks/ncnn_int8.py --yolov5n [--keep DIR] [--json]     # yolov5n (SiLU): mixed and all, per-layer table
    python benchmarks/ncnn_int8.py --yolov7-tiny [--keep DIR] [--json] # yolov7-tiny (LeakyReLU, 1 epoch): agreement
    python benchmarks/ncnn_int8.py --from DIR [--json]                 # score folders written by --keep again
    ... --write [FILE]   # also put the tables in this model's section of benchmarks/RESULTS.md (per arithmetic)

Every model is judged on ../shared/data/coco128/split.yaml: calibrated on its train half (calib.txt,
64 images), mAP50-95 on the holdout half (holdout.txt), through the runtime's NCNN backend. The int8
loss is against the model's own fp32 NCNN conversion. KL and ACIQ calibration are measured side by
side. `--agreement` (on by default for yolov7-tiny, whose 1-epoch weights make its mAP meaningless)
also compares each model's raw head with the fp32 NCNN model's on the same holdout tensors: cosine,
best-class score and box error on the fp32 model's top anchors, the rank correlation of the anchors'
scores and how many of the fp32 top-100 anchors stay in the top 100. Speed: fp32, fp16 and int8 NCNN in ONE interleaved run (OpenMP blocktime 0, so idle threads do
not spin on the cores the others time on), the median of per-round ratios — a figure of this host's
NCNN kernels (x86 here), not the Pi's.

`--keep DIR` leaves the NCNN folders in DIR; `--from DIR` scores them again without converting, which
is how the Pi's arithmetic is measured inside the arm64 root (ARM's int8 kernels on the same files):
    python benchmarks/ncnn_int8.py --fastest --keep /tmp/ncnn-int8
    benchmarks/arm64/run python benchmarks/ncnn_int8.py --from /tmp/ncnn-int8 --no-speed
Needs ../shared, pnnx (pip install --no-deps pnnx) and ncnn; --yolov5n and --yolov7-tiny need torch for
their export (yolov7-tiny is loaded with a copy of ../shared/repos/yolov7, as `--repo --trust` does).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
SPLIT = SHARED / "data" / "coco128" / "split.yaml"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SAMPLE = REPO / "graphopt" / "assets" / "bus.jpg"


def _onnx_fastest(work: Path) -> Path:
    from frontends.darknet import export_darknet

    folder = SHARED / "models" / "darknet"
    exported = work / "yolo-fastest-1.1.onnx"
    export_darknet(folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights", exported)
    return _lossless(exported)


def _onnx_yolov5n(work: Path) -> Path:
    from frontends import export

    exported = work / "yolov5n.onnx"
    export(SHARED / "models" / "yolov5n-coco.pt", exported, imgsz=640)
    return _lossless(exported)


def _onnx_yolov7_tiny(work: Path) -> Path:
    import shutil

    from frontends import export

    repo = work / "yolov7"  # the repo's code is imported from a copy: nothing is written under ../shared
    shutil.copytree(SHARED / "repos" / "yolov7", repo, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    exported = work / "yolov7-tiny.onnx"
    export(SHARED / "models" / "yolov7-tiny-coco128-1ep.pt", exported, imgsz=640, repo=repo, trust=True)
    return _lossless(exported)


def _lossless(exported: Path) -> Path:
    from graphopt.core.model import load_model, save_model
    from graphopt.passes.pipeline import Pipeline

    out = exported.with_suffix(".lossless.onnx")
    save_model(Pipeline.from_recipe("lossless").run(load_model(exported)).model, out)
    return out


def convert_all(onnx: Path, out: Path, variants: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """fp32, fp16 and each (mode, method) int8 NCNN folder of `onnx` under `out`."""
    from graphopt.compile.ncnn import convert_to_ncnn
    from graphopt.compile.ncnn_int8 import convert_to_ncnn_int8
    from graphopt.core.errors import GraphoptError

    made: dict[str, dict[str, Any]] = {}
    for name, fp16 in (("fp32", False), ("fp16", True)):
        r = convert_to_ncnn(onnx, out / name, fp16=fp16)
        made[name] = {"folder": str(out / name), "bin_bytes": Path(r["bin"]).stat().st_size}
    for mode, method in variants:
        name = f"int8-{mode}-{method}"
        try:
            r = convert_to_ncnn_int8(onnx, out / name, SPLIT, mode, method)
        except GraphoptError as exc:  # e.g. mixed on a SiLU model: no conv pays in int8
            from graphopt.compile.ncnn_format import read_model
            from graphopt.compile.ncnn_int8 import decide_layers

            fp32 = Path(made["fp32"]["folder"])
            model = read_model(next(fp32.glob("*.param")), next(fp32.glob("*.bin")))
            made[name] = {"refused": str(exc), "layers": [d.as_dict() for d in decide_layers(model, mode)]}
            continue
        made[name] = {
            "folder": str(out / name),
            "bin_bytes": r["bin_bytes"],
            "int8_layers": r["int8_layers"],
            "conv_layers": r["conv_layers"],
            "requantize_fused": r["requantize_fused"],
            "verified": r["verified"],
            "layers": r["layers"],
        }
    return made


def score(made: dict[str, dict[str, Any]], speed: bool, rounds: int) -> None:
    from graphopt.eval.evaluate import evaluate

    scored = {n: m for n, m in made.items() if "folder" in m}
    for m in scored.values():
        ev = evaluate(m["folder"], SPLIT, backend="ncnn", threads=2, progress=False)
        m.update(map50=ev.map50, map50_95=ev.map50_95, images=ev.images)
    ref = made["fp32"]["map50_95"]
    for m in scored.values():
        m["loss_points_vs_fp32"] = round(100 * (ref - m["map50_95"]), 2)
    if speed:
        from graphopt.compile.compiler import time_models

        times = time_models([(n, Path(m["folder"]), "ncnn") for n, m in scored.items()], SAMPLE, 2, rounds)
        for n, m in scored.items():
            m["median_ms"] = statistics.median(times[n])
            m["speed_vs_fp32"] = statistics.median(a / b for a, b in zip(times["fp32"], times[n], strict=True))
            m["speed_vs_fp16"] = statistics.median(a / b for a, b in zip(times["fp16"], times[n], strict=True))


TOP = 100  # anchors compared by rank: as many as a detector keeps per image


def agreement(made: dict[str, dict[str, Any]]) -> None:
    """Each model's raw head against the fp32 NCNN model's on the same holdout tensors."""
    from graphopt.data.datasets import split_images
    from graphopt.data.feeds import ImageStream
    from graphopt.eval.head_error import head_error
    from runtime.backends import NcnnBackend
    from runtime.decode import head_arrays
    from runtime.metadata import parse_metadata
    from runtime.preprocess import Preprocess

    ref_net = NcnnBackend(made["fp32"]["folder"], threads=2)
    meta = parse_metadata(ref_net.metadata)
    shape = ref_net.input_shape
    stream = ImageStream(split_images(SPLIT, "val"), (shape[2], shape[3]), Preprocess.from_meta(meta.preprocess), 10**6)
    images = list(stream)
    name = ref_net.output_names[0]
    ref = [ref_net.run(x)[name] for x in images]
    for n, m in made.items():
        if n == "fp32" or "folder" not in m:
            continue
        net = NcnnBackend(m["folder"], threads=2)
        got = [net.run(x)[name] for x in images]
        err = head_error(ref, got, meta.head)
        ranks, kept = [], []
        for r, g in zip(ref, got, strict=True):
            rs, gs = head_arrays(r, meta.head)[1].max(1), head_arrays(g, meta.head)[1].max(1)
            ranks.append(_spearman(rs, gs))
            top_r, top_g = np.argsort(-rs)[:TOP], np.argsort(-gs)[:TOP]
            kept.append(len(np.intersect1d(top_r, top_g)) / len(top_r))
        m["agreement"] = {
            "images": len(images),
            **err.as_dict(),
            "score_rank_correlation": float(np.median(ranks)),
            f"top{TOP}_kept": float(np.mean(kept)),
        }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def report(title: str, made: dict[str, dict[str, Any]], as_json: bool, layers: bool = True) -> str:
    """The tables (or JSON) of one run; `layers=False` leaves out the per-layer decisions."""
    from graphopt.compile.targets import emulated

    # Under benchmarks/arm64/run the kernels are the Pi's (ARM's int8 and fp16 code), the clock is not.
    machine = emulated()
    where = (
        f"{platform.machine()} NCNN kernels, emulated ({machine}): the Pi's arithmetic, not its speed"
        if machine
        else f"{platform.machine()} NCNN kernels (this host, not the Pi)"
    )
    if as_json:
        return json.dumps({"model": title, "arithmetic": where, "results": made}, indent=2, default=str)
    out: list[str] = []
    emit = out.append
    first = next(iter(made.values()))
    emit(f"{title}: COCO128 holdout ({first.get('images')} images), {where}\n")
    emit("| model | .bin bytes | int8 convs | mAP50 | mAP50-95 | loss vs fp32 (pt) | ms | × fp32 | × fp16 |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in made.items():
        if "refused" in m:
            emit(f"| {n} | – | 0/{len(m['layers'])} | – | – | – | – | – | – |")
            continue
        convs = f"{m['int8_layers']}/{m['conv_layers']}" if "int8_layers" in m else "–"
        ms = f"{m['median_ms']:.1f} | {m['speed_vs_fp32']:.2f} | {m['speed_vs_fp16']:.2f}" if "median_ms" in m else "– | – | –"
        emit(
            f"| {n} | {m['bin_bytes']:,} | {convs} | {100 * m['map50']:.1f} | {100 * m['map50_95']:.1f} | "
            f"{m['loss_points_vs_fp32']:+.2f} | {ms} |"
        )
    agreed = {n: m["agreement"] for n, m in made.items() if "agreement" in m}
    if agreed:
        first_agreed = next(iter(agreed.values()))
        emit(f"\nAgreement with the fp32 NCNN model: raw head on the same {first_agreed['images']} holdout tensors\n")
        emit(f"| model | cosine | score error | box error (px) | score rank corr. (median) | fp32 top-{TOP} kept |")
        emit("|---|---:|---:|---:|---:|---:|")
        for n, a in agreed.items():
            emit(
                f"| {n} | {a['cosine']:.5f} | {a['score_error']:.2e} | {a['box_error_px']:.3f} | "
                f"{a['score_rank_correlation']:.4f} | {100 * a[f'top{TOP}_kept']:.1f} % |"
            )
    if not layers:  # the refusal is said with the per-layer table; without it, here
        for n, m in made.items():
            if "refused" in m:
                emit(f"\n{n}: not written — {m['refused']}")
    for mode in ("mixed", "all"):  # what --calibration auto keeps: the lower score error vs fp32 (calibration images)
        tried = {n: m for n, m in made.items() if n.startswith(f"int8-{mode}-") and "verified" in m}
        if len(tried) > 1:
            pick = min(tried, key=lambda n: tried[n]["verified"].get("score_error", 1 - tried[n]["verified"]["cosine"]))
            emit(f"\n--calibration auto ({mode}) keeps {pick.rsplit('-', 1)[1]}")
    for n, m in made.items():
        if layers and "layers" in m and n.endswith("-kl"):
            emit(f"\n{n}: per-layer decisions" + (f" — not written: {m['refused']}" if "refused" in m else ""))
            emit("| layer | type | activation | precision | why |")
            emit("|---|---|---|---|---|")
            for d in m["layers"]:
                precision = ("int8 → int8" if d["requantize"] else "int8") if d["int8"] else "fp16"
                emit(f"| {d['layer']} | {d['type']} | {d['activation']} | {precision} | {d['reason']} |")
    return "\n".join(out)


def publish(title: str, made: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the report; with --write, also put its tables in RESULTS.md's section for this model and arithmetic."""
    from graphopt.compile.targets import emulated

    print(report(title, made, args.json))
    if not args.write:
        return
    from benchmarks.results_md import replace_section

    arith = f"{platform.machine()}{'-emulated' if emulated() else ''}"
    command = "python benchmarks/ncnn_int8.py " + " ".join(sys.argv[1:])
    if emulated():
        command = "benchmarks/arm64/run " + command
    heading = f"### NCNN int8: {title}, {arith}\n\nMeasured {time.strftime('%Y-%m-%d')} with `{command}`.\n"
    section = f"ncnn-int8 {re.sub(r'[^a-z0-9]+', '-', title.lower())}{arith}"
    replace_section(Path(args.write), section, heading + "\n" + report(title, made, False, layers=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--fastest", action="store_true", help="Yolo-Fastest 1.1 (Darknet, LeakyReLU, depthwise)")
    what.add_argument("--yolov5n", action="store_true", help="yolov5n (SiLU): int8 mixed and all")
    what.add_argument("--yolov7-tiny", action="store_true", help="yolov7-tiny (LeakyReLU, 1 epoch): judged by agreement")
    what.add_argument("--from", dest="source", help="score the NCNN folders a --keep run left in this folder")
    parser.add_argument("--keep", help="leave the NCNN folders here (for --from, e.g. inside benchmarks/arm64/run)")
    parser.add_argument("--no-speed", action="store_true", help="skip the interleaved timing")
    parser.add_argument(
        "--agreement", action="store_true", help="compare the raw head with fp32's on holdout (yolov7-tiny: always)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds [10]")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(RESULTS),
        help="also put the tables (no per-layer table) in their own section of this file [benchmarks/RESULTS.md]",
    )
    args = parser.parse_args()
    if not SPLIT.exists():
        sys.exit(f"error: {SPLIT} is absent (the benchmark needs ../shared)")
    if args.source:
        made = json.loads((Path(args.source) / "made.json").read_text())
        score(made["results"], not args.no_speed, args.rounds)
        if args.agreement or made.get("agreement"):
            agreement(made["results"])
        publish(made["model"], made["results"], args)
        return
    if args.fastest:
        title, build, variants = "Yolo-Fastest 1.1 (320)", _onnx_fastest, [("mixed", "kl"), ("mixed", "aciq")]
    elif args.yolov7_tiny:
        title, build, variants = "yolov7-tiny 1 epoch (640)", _onnx_yolov7_tiny, [("mixed", "kl"), ("mixed", "aciq")]
        args.agreement = True
    else:
        title, build = "yolov5n (640)", _onnx_yolov5n
        variants = [("mixed", "kl"), ("all", "kl"), ("all", "aciq")]
    with tempfile.TemporaryDirectory(prefix="graphopt-ncnn-int8-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        onnx = build(Path(tmp))
        try:
            made = convert_all(onnx, out, variants)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what failed, in one line
            sys.exit(f"error: {exc}")
        if args.keep:
            kept = {"model": title, "agreement": args.agreement, "results": made}
            (out / "made.json").write_text(json.dumps(kept, default=str))
        score(made, not args.no_speed, args.rounds)
        if args.agreement:
            agreement(made)
        publish(title, made, args)


if __name__ == "__main__":
    main()
