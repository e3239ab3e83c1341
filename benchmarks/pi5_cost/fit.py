"""Fit the Pi 5 cost model from counts.json and the published Pi 5 latencies; print the validation
table; `--write`: graphopt/compile/pi5_cost.json (the model compile and bench use) and VALIDATION.md.

    python benchmarks/pi5_cost/fit.py [--write]

Published figures: ncnn's benchncnn on a Raspberry Pi 5 (../shared/data/ncnn-benchmark/pi5-cpu-results.md;
1 thread: avg of 10 loops; 4 threads: min of 10 loops, as the set's README advises, its 4-thread mobilenet
avg being noisy), and Ultralytics' Pi 5 onnxruntime figures (4 threads, 640, fp32; copied below with
their source, as they are not in ../shared).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from graphopt.compile import pi5_cost  # noqa: E402

SHARED = REPO.parent / "shared"
PUBLISHED_NCNN = SHARED / "data/ncnn-benchmark/pi5-cpu-results.md"
BENCH_MODELS = SHARED / "data/ncnn-benchmark/models"
# Ultralytics docs, Raspberry Pi 5 benchmarks (onnxruntime, fp32, 640): YOLO11n (ultralytics 8.3.39) and
# YOLO26n (8.4.1), run by ultralytics' benchmark() with onnxruntime's default threads (the Pi 5's 4 cores)
PUBLISHED_ORT = {"yolo11n": 168.1, "yolo26n": 130.33}
ULTRALYTICS_THREADS = 4
# the same tables' NCNN figures (ncnn's default threads: the Pi 5's 4 big cores): an out-of-sample check of
# the ncnn-fp16 4-thread rate (our NCNN models are graphopt's pnnx conversion of the same ONNX, fp16)
PUBLISHED_NCNN_ULTRA = {"yolo11n-ncnn": 88.0, "yolo26n-ncnn": 67.69}


def published_ncnn(path: Path = PUBLISHED_NCNN) -> dict[int, dict[str, float]]:
    """{threads: {model: ms}}: 1 thread avg, 4 threads min."""
    if not path.exists():
        raise SystemExit(f"error: {path}: not found (the ncnn benchmark set lives in ../shared/data/ncnn-benchmark)")
    out: dict[int, dict[str, float]] = {}
    threads = None
    for line in path.read_text().splitlines():
        if m := re.match(r"num_threads = (\d+)", line):
            threads = int(m.group(1))
            out[threads] = {}
        elif threads and (m := re.match(r"\s*(\S+)\s+min =\s*([\d.]+)\s+max =\s*([\d.]+)\s+avg =\s*([\d.]+)", line)):
            out[threads][m.group(1)] = float(m.group(4) if threads == 1 else m.group(2))
    return out


WEIGHT_KEYS = {"Convolution": "6", "ConvolutionDepthWise": "6", "Deconvolution": "6", "DeconvolutionDepthWise": "6",
               "InnerProduct": "2", "MultiHeadAttention": "2"}


def weight_elements(param: Path) -> int:
    """Weights an NCNN .param declares (weight_data_size of its convolutions, fully-connected and
    attention layers — attention: q, k, v and out projections — and constant-B Gemms), what an
    inference reads from memory."""
    total = 0
    for line in param.read_text().splitlines()[2:]:
        parts = line.split()
        if not parts or parts[0] not in (*WEIGHT_KEYS, "Gemm"):
            continue
        kv = dict(p.split("=", 1) for p in parts[6:] if "=" in p and not p.startswith("-"))
        if parts[0] == "Gemm":  # a constant B (5=1): constantN x constantK weights
            total += int(kv.get("8", "0")) * int(kv.get("9", "0")) if kv.get("5") == "1" else 0
            continue
        n = int(kv.get(WEIGHT_KEYS[parts[0]], "0"))
        total += 4 * n if parts[0] == "MultiHeadAttention" else n
    return total


def memory_bound(table: list[dict], precision: str, models_dir: Path) -> dict | None:
    """The set's most memory-bound models (weight bytes read per instruction executed, fp16: 2 bytes
    a weight, int8: 1) and their errors beside the rest's."""
    if not models_dir.is_dir():
        return None
    per = []
    for t in table:
        param = models_dir / f"{t['name']}.param"
        if param.exists():
            nbytes = weight_elements(param) * (1 if precision == "int8" else 2)
            per.append({"name": t["name"], "weight_mb": round(nbytes / 1e6, 1),
                        "bytes_per_insn": round(nbytes / t["insns"], 4), "error": t["error"]})
    if len(per) < 6:
        return None
    per.sort(key=lambda r: -r["bytes_per_insn"])
    top, rest = per[:4], per[4:]
    return {
        "what": "the 4 models reading the most weight bytes per instruction (zero weights still stream from memory)",
        "models": top,
        "median_abs_error": round(statistics.median(abs(r["error"]) for r in top), 4),
        "rest_median_abs_error": round(statistics.median(abs(r["error"]) for r in rest), 4),
    }


def fit(counts: dict, published: dict[int, dict[str, float]]) -> dict:
    classes: dict[str, dict] = {}
    bench = counts.get("benchncnn", {})
    for klass, prec in (("ncnn-fp16", "fp16"), ("ncnn-int8", "int8")):
        rates = {}
        for threads, figures in sorted(published.items()):
            rows = [{"name": n, "insns": c["insns"], "published_ms": figures[n]}
                    for n, c in sorted(bench.items()) if c["precision"] == prec and n in figures]
            if rows:
                rates[str(threads)] = pi5_cost.validate(rows, threads)
        one = rates.get("1")
        classes[klass] = {
            "accepted": any(r["accepted"] for r in rates.values()),
            "rates": rates,
            "memory_bound": memory_bound(one["table"], prec, BENCH_MODELS) if one else None,
            "validated_on": "ncnn benchncnn models (zero weights, benchncnn's inputs and options) vs their "
                            "published Raspberry Pi 5 latencies",
        }
    ultra = counts.get("ultralytics", {})
    fp16_4 = classes["ncnn-fp16"]["rates"].get(str(ULTRALYTICS_THREADS))
    if fp16_4:
        checks = []
        for n, ms in PUBLISHED_NCNN_ULTRA.items():
            if n in ultra:
                pred = ultra[n]["insns"] / fp16_4["rate_insns_per_ms"]
                checks.append({"name": n, "insns": ultra[n]["insns"], "published_ms": ms,
                               "predicted_ms": round(pred, 3), "error": round(pred / ms - 1, 4)})
        classes["ncnn-fp16"]["checks"] = {
            "what": "out of sample (not in the fit): Ultralytics' Pi 5 NCNN figures at 4 threads, 640",
            "table": checks}
    rows = [{"name": n, "insns": c["insns"], "published_ms": PUBLISHED_ORT[n]}
            for n, c in sorted(ultra.items()) if n in PUBLISHED_ORT and c["runtime"] == "ort"]
    if rows:
        r = pi5_cost.validate(rows, ULTRALYTICS_THREADS)
        classes["ort-fp32"] = {
            "accepted": r["accepted"],
            "rates": {str(ULTRALYTICS_THREADS): r},
            "validated_on": "YOLO11n/YOLO26n (ultralytics yamls, random weights, fp32 ONNX, 640) vs Ultralytics' "
                            "Pi 5 onnxruntime figures",
            "threads_model": (
                "a 4-thread rate fitted directly: 1-thread instruction counts over Ultralytics' 4-thread times, so "
                "onnxruntime's parallel speed-up on the Pi 5 is inside the one fitted number (no 1-thread "
                "onnxruntime figure of a Pi 5 is published, so none is estimated)"
            ),
            "note": "fitted on 2 models with 1 parameter: a weak validation",
        }
    classes["ort-int8"] = {
        "accepted": False, "rates": {},
        "validated_on": "nothing: no published Pi 5 latency of an onnxruntime int8 model is at hand",
    }
    # ncnn's parallel speed-up, 1 -> 4 threads, from the published table (for the record)
    speedups = {n: published[1][n] / published[4][n] for n in published.get(1, {}) if n in published.get(4, {})}
    proxy = fit_proxy(counts)
    return {
        "about": "Raspberry Pi 5 latency estimate = instructions per inference (qemu 7.2 -cpu cortex-a76, "
                 "benchmarks/pi5_cost) / a rate per runtime x precision class and thread count; written by "
                 "benchmarks/pi5_cost/fit.py --write from benchmarks/pi5_cost/counts.json",
        "acceptance": {"median_error": pi5_cost.MAX_MEDIAN_ERROR, "worst_error": pi5_cost.MAX_WORST_ERROR},
        "limits": pi5_cost.LIMITS,
        "ncnn_speedup_1_to_4_threads": {
            "median": round(statistics.median(speedups.values()), 3) if speedups else None,
            "min": round(min(speedups.values()), 3) if speedups else None,
            "max": round(max(speedups.values()), 3) if speedups else None,
        },
        "classes": classes,
        "proxy": proxy,
    }


def fit_proxy(counts: dict) -> dict:
    """Instructions per MAC per class, over the counted ONNX-derived models that carry their MACs
    (groups 'ultralytics' and 'results': RESULTS.md's yolov5n variants, pruned and at smaller inputs,
    where instructions per MAC differ most; 'models' where there is no 'results', its yolov5n stages
    being results' 640 ones again); only with three or more, its error leave-one-out."""
    by_class: dict[str, list[tuple[str, float, float]]] = {}
    own = counts.get("results") or counts.get("models", {})
    for name, c in sorted({**counts.get("ultralytics", {}), **own}.items()):
        if c.get("macs"):
            by_class.setdefault(pi5_cost.class_of(c["runtime"], c["precision"]), []).append(
                (name, float(c["insns"]), float(c["macs"])))
    out = {}
    for klass, rows in by_class.items():
        if len(rows) < 3:  # its error must be measured on models it was not fitted on
            continue
        k = pi5_cost.fit_rate([r[1] for r in rows], [r[2] for r in rows])  # instructions per MAC
        errs = []
        for j in range(len(rows)):
            rest = rows[:j] + rows[j + 1:]
            kj = pi5_cost.fit_rate([r[1] for r in rest], [r[2] for r in rest])
            errs.append(abs(rows[j][2] * kj / rows[j][1] - 1))
        out[klass] = {
            "insns_per_mac": round(k, 5),
            "models": [r[0] for r in rows],
            "median_error": round(statistics.median(errs), 4),
            "worst_error": round(max(errs), 4),
            "error_kind": "leave-one-out",
            # held to the same rule as a class: a proxy that misses more is not used
            "accepted": statistics.median(errs) <= pi5_cost.MAX_MEDIAN_ERROR and max(errs) <= pi5_cost.MAX_WORST_ERROR,
        }
    return out


def markdown(model: dict, counted: dict | None = None) -> str:
    lines = ["# Pi 5 cost model: validation", "",
             "Written by `python benchmarks/pi5_cost/fit.py --write` from `counts.json`. Predicted = counted "
             "instructions per inference / the class's fitted rate. Error = predicted / published - 1.", ""]
    for klass, c in model["classes"].items():
        lines.append(f"## {klass}: {'accepted' if c['accepted'] else 'NOT accepted'}")
        lines.append("")
        lines.append(f"Validated on: {c['validated_on']}.")
        if c.get("threads_model"):
            lines.append(f"Threads: {c['threads_model']}.")
        lines.append("")
        for threads, r in c["rates"].items():
            lines.append(
                f"**{threads} thread(s)**: rate {r['rate_insns_per_ms'] / 1e6:.3f} M instructions/ms, "
                f"median error {r['median_error']:.1%}, worst {r['worst_error']:.1%}"
                + (f" (leave-one-out: median {r['loo_median_error']:.1%}, worst {r['loo_worst_error']:.1%})"
                   if r.get("loo_median_error") is not None else "")
                + f" over {r['models']} models — {'accepted' if r['accepted'] else 'not accepted'}")
            lines.append("")
            lines.append("| model | M instructions | published ms | predicted ms | error |")
            lines.append("|---|---:|---:|---:|---:|")
            for t in r["table"]:
                lines.append(f"| {t['name']} | {t['insns'] / 1e6:.1f} | {t['published_ms']:.2f} | "
                             f"{t['predicted_ms']:.2f} | {t['error']:+.1%} |")
            lines.append("")
        mb = c.get("memory_bound")
        if mb:
            lines.append(f"Memory-bound models (1 thread; {mb['what']}): " + ", ".join(
                f"{r['name']} ({r['weight_mb']} MB of weights, {r['bytes_per_insn']:.3f} B/instruction, "
                f"{r['error']:+.1%})" for r in mb["models"])
                + f"; their median |error| {mb['median_abs_error']:.1%} against {mb['rest_median_abs_error']:.1%} "
                "for the rest.")
            lines.append("")
        if c.get("checks", {}).get("table"):
            lines.append(f"Check, {c['checks']['what']}:")
            lines.append("")
            lines.append("| model | M instructions | published ms | predicted ms | error |")
            lines.append("|---|---:|---:|---:|---:|")
            for t in c["checks"]["table"]:
                lines.append(f"| {t['name']} | {t['insns'] / 1e6:.1f} | {t['published_ms']:.2f} | "
                             f"{t['predicted_ms']:.2f} | {t['error']:+.1%} |")
            lines.append("")
    if model.get("proxy"):
        lines.append("## MACs proxy (a model that was not counted)")
        lines.append("")
        lines.append("Instructions = MACs x the class's instructions per MAC (fitted on counted models), held to the "
                     "same acceptance rule (median <= 15 %, worst <= 35 %, leave-one-out); a class without an accepted "
                     "proxy gets an estimate only where its model was counted.")
        lines.append("")
        lines.append("| class | instructions per MAC | fitted on | median error | worst error | kind | used |")
        lines.append("|---|---:|---|---:|---:|---|---|")
        for klass, p in model["proxy"].items():
            lines.append(f"| {klass} | {p['insns_per_mac']:.4f} | {', '.join(p['models'])} | "
                         f"{p['median_error']:.1%} | {p['worst_error']:.1%} | {p['error_kind']} | "
                         f"{'yes' if p['accepted'] else 'no'} |")
        lines.append("")
    if counted:
        lines.append("## Counted models: estimated Pi 5 latency (counted instructions, not proxied)")
        lines.append("")
        lines.append("| model | class | M instructions (1 thread) | Pi 5 estimate, 1 thread (ms) | Pi 5 estimate, 4 threads (ms) |")
        lines.append("|---|---|---:|---:|---:|")
        for name, c in counted.items():
            klass = pi5_cost.class_of(c["runtime"], c["precision"])
            est = {t: pi5_cost.estimate(c["insns"], c["runtime"], c["precision"], t, data=model) for t in (1, 4)}
            cells = [f"{est[t].ms:.1f}" if est[t] else "– (not validated)" for t in (1, 4)]
            lines.append(f"| {name} | {klass} | {c['insns'] / 1e6:.1f} | {cells[0]} | {cells[1]} |")
        lines.append("")
        trio = [counted.get(f"yolov5n-{k}") for k in ("lossless", "int8", "ncnn")]
        if all(trio):
            fp32, int8, ncnn = (t["insns"] for t in trio)  # type: ignore[index]
            lines.append(
                f"yolov5n, instructions per inference at 1 thread: onnxruntime fp32 / int8 S8S8 = {fp32 / int8:.2f}, "
                f"onnxruntime fp32 / NCNN fp16 = {fp32 / ncnn:.2f}, onnxruntime int8 / NCNN fp16 = {int8 / ncnn:.2f}.")
            e_ort = pi5_cost.estimate(fp32, "ort", "fp32", 4, data=model)
            e_ncnn = pi5_cost.estimate(ncnn, "ncnn", "fp16", 4, data=model)
            if e_ort and e_ncnn:
                lines.append(f"Estimated at 4 threads: onnxruntime fp32 / NCNN fp16 = {e_ort.ms / e_ncnn.ms:.2f} "
                             f"({e_ort.ms:.1f} / {e_ncnn.ms:.1f} ms).")
            lines.append("")
    lines.append(f"Limits: {model['limits']}.")
    return "\n".join(lines) + "\n"


def main(write: bool = False) -> None:
    counts = json.loads((HERE / "counts.json").read_text())
    model = fit(counts, published_ncnn())
    text = markdown(model, counts.get("models"))
    print(text)
    if write:
        from runtime.files import atomic_write

        body = json.dumps(model, indent=1) + "\n"
        atomic_write(pi5_cost.DATA, lambda tmp: tmp.write_text(body), what="Pi 5 cost model")
        atomic_write(HERE / "VALIDATION.md", lambda tmp: tmp.write_text(text), what="validation table")
        print(f"wrote {pi5_cost.DATA} and {HERE / 'VALIDATION.md'}", file=sys.stderr)


if __name__ == "__main__":
    main(write="--write" in sys.argv[1:])
