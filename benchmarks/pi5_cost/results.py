#!/usr/bin/env python3
"""The Pi 5 (estimated) section of benchmarks/RESULTS.md: every yolov5n variant the results speak of,
its instructions per inference counted under qemu -cpu cortex-a76, and the Pi 5 latency the validated
cost model gives for them (graphopt/compile/pi5_cost.json; an estimate, never a measurement).

    python benchmarks/pi5_cost/results.py make  [--work DIR]     # the variants (x86; torch for the export)
    python benchmarks/pi5_cost/results.py count [--work DIR] [--only K,K]   # root + the counting qemu
    python benchmarks/pi5_cost/results.py write [--write benchmarks/RESULTS.md]   # from counts.json only

Variants, all of the bundled yolov5n-coco.pt (COCO, 80 classes): yolov5's own export.py ONNX at 640
(the peers table's baseline); graphopt's lossless stage at 640, 512, 416 and 320; prune to 0.85 and 0.7
of the MACs (lstsq recovery on the 32 bundled images) of the 640 lossless model; `compile --target
pi5-ort`'s int8 S8S8 stage; `compile --target pi5-ncnn`'s fp16 NCNN model and its `--int8 all` NCNN
int8 model. Counted on one thread, the second inference (the first allocates), NCNN with benchncnn's
options; ONNX models are counted without NMS (the stage files), so the rows compare the networks.

`make` is resumable (a variant already in DIR is kept); `count` caches by model content
(pi5cost.py), records the counts in counts.json under `results` with each model's MACs and sha256,
and `write` needs neither qemu nor the models.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.pi5_cost import pi5cost  # noqa: E402
from benchmarks.results_md import replace_section  # noqa: E402
from graphopt.compile import pi5_cost  # noqa: E402

CKPT = REPO / "graphopt" / "assets" / "yolov5n-coco.pt"
CALIB = REPO / "graphopt" / "assets" / "calib"
GROUP = "results"
DEFAULT_WORK = pi5cost.CACHE / "results"
BASELINE = "export-640"

# key, what the row is, the file under WORK, runtime, precision, input size
VARIANTS: list[tuple[str, str, str, str, str, int]] = [
    ("export-640", "yolov5 export.py ONNX (the peers' baseline)", "export-640.onnx", "ort", "fp32", 640),
    ("lossless-640", "graphopt lossless", "lossless-640.onnx", "ort", "fp32", 640),
    ("lossless-512", "graphopt lossless, input 512", "lossless-512.onnx", "ort", "fp32", 512),
    ("lossless-416", "graphopt lossless, input 416", "lossless-416.onnx", "ort", "fp32", 416),
    ("lossless-320", "graphopt lossless, input 320", "lossless-320.onnx", "ort", "fp32", 320),
    ("prune-0.85", "graphopt lossless + prune 0.85 of the MACs", "prune-0.85.onnx", "ort", "fp32", 640),
    ("prune-0.7", "graphopt lossless + prune 0.7 of the MACs", "prune-0.7.onnx", "ort", "fp32", 640),
    ("int8-s8s8", "pi5-ort int8 S8S8 (QDQ) stage", "pi5-ort/stages/2-int8.onnx", "ort", "int8", 640),
    ("ncnn-fp16", "pi5-ncnn: NCNN fp16", "pi5-ncnn/ncnn", "ncnn", "fp16", 640),
    ("ncnn-int8", "pi5-ncnn --int8 all: NCNN int8", "pi5-ncnn-int8/ncnn", "ncnn", "int8", 640),
    # the NCNN int8 sections' Yolo-Fastest 1.1 (Darknet frontend; benchmarks/ncnn_int8.py --fastest --keep)
    ("fastest-fp32", "Yolo-Fastest 1.1: NCNN fp32 weights", "fastest/fp32", "ncnn", "fp16", 320),
    ("fastest-fp16", "Yolo-Fastest 1.1: NCNN fp16", "fastest/fp16", "ncnn", "fp16", 320),
    ("fastest-int8-kl", "Yolo-Fastest 1.1: NCNN int8 mixed, KL", "fastest/int8-mixed-kl", "ncnn", "int8", 320),
    ("fastest-int8-aciq", "Yolo-Fastest 1.1: NCNN int8 mixed, ACIQ", "fastest/int8-mixed-aciq", "ncnn", "int8", 320),
]
YOLOV5N = {k for k, *_ in VARIANTS if not k.startswith("fastest-")}
THREADS = {"ort": 4, "ncnn": 1}  # the thread counts the cost model validated for each runtime


def say(msg: str) -> None:
    print(f"pi5 results: {msg}", file=sys.stderr, flush=True)


def graphopt(*args: object) -> None:
    cmd = [sys.executable, "-m", "graphopt", *map(str, args)]
    say(" ".join(cmd[2:]))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        pi5cost.die(f"graphopt {' '.join(map(str, args))} failed: {proc.stderr.strip().splitlines()[-1:]}")


def make(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "export-640.onnx").exists():
        from benchmarks.compare import yolov5_export

        with tempfile.TemporaryDirectory(prefix="pi5-results-") as tmp:
            shutil.copy(yolov5_export(Path(tmp)), work / "export-640.onnx")
    for size in (640, 512, 416, 320):
        lossless = work / f"lossless-{size}.onnx"
        if not lossless.exists():
            raw = work / f"raw-{size}.onnx"
            graphopt("export", CKPT, "--imgsz", size, "-o", raw)
            graphopt("optimize", raw, "--recipe", "lossless", "-o", lossless)
            raw.unlink()
    for macs in ("0.85", "0.7"):
        if not (work / f"prune-{macs}.onnx").exists():
            graphopt("optimize", work / "lossless-640.onnx", "--passes", "prune", "--set", f"prune.macs={macs}",
                     "--data", CALIB, "-o", work / f"prune-{macs}.onnx")
    for target, folder, extra in (("pi5-ort", "pi5-ort", ()), ("pi5-ncnn", "pi5-ncnn", ()),
                                  ("pi5-ncnn", "pi5-ncnn-int8", ("--int8", "all"))):
        out = work / folder
        if not (out / "report.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            graphopt("compile", "--target", target, "-o", out, "--rounds", 1, *extra)
    if not (work / "fastest" / "made.json").exists():
        say("benchmarks/ncnn_int8.py --fastest --keep (Yolo-Fastest 1.1: fp32, fp16, int8 KL and ACIQ)")
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ncnn_int8.py"), "--fastest", "--no-speed",
                               "--keep", str(work / "fastest")], cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            pi5cost.die(f"benchmarks/ncnn_int8.py --fastest failed: {proc.stderr.strip().splitlines()[-1:]}")
    for key, _, rel, *_ in VARIANTS:
        if not (work / rel).exists():
            pi5cost.die(f"{key}: {work / rel} was not made")
    say(f"the {len(VARIANTS)} variants are in {work}")


def model_file(path: Path) -> Path:
    """The file a variant is hashed by: the ONNX itself, or an NCNN folder's .param."""
    return next(iter(sorted(path.glob("*.param")))) if path.is_dir() else path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    for p in ([path] if path.suffix == ".onnx" else [path, path.with_suffix(".bin")]):
        h.update(p.read_bytes())
    return h.hexdigest()


def count(work: Path, only: set[str] | None) -> None:
    chosen = [v for v in VARIANTS if only is None or v[0] in only]
    jobs = [pi5cost.model_job(work / rel, key, precision) for key, _, rel, _, precision, _ in chosen]
    results = pi5cost.count_jobs(jobs)
    extra = {j["name"]: {"macs": pi5cost.model_macs(j), "sha256": sha256(Path(j["model"])), "imgsz": v[5]}
             for j, v in zip(jobs, chosen, strict=True)}
    pi5cost.record(results, GROUP, extra)
    for r in results:
        say(f"{r['name']}: {r['insns'] / 1e6:.1f} M instructions per inference")


@functools.lru_cache(maxsize=4)
def _recorded(path: Path) -> dict:
    """counts.json's `results` group (read once per process: compare.py asks for every row)."""
    return json.loads(path.read_text()).get(GROUP, {}) if path.exists() else {}


def estimate_for(path: Path, runtime: str) -> dict:
    """The Pi 5 estimate of a model another benchmark made (compare.py's rows): from its counted
    instructions when counts.json holds a count of this very file (sha256), else from its MACs as
    compile shows it; `ms` None with `why` where there is none. Always an estimate."""
    if runtime not in THREADS:
        return {"ms": None, "estimate": True, "why": f"no Pi 5 cost model for {runtime}"}
    path = Path(path)
    digest = sha256(model_file(path))
    for key, r in _recorded(pi5cost.COUNTS).items():
        if r.get("sha256") == digest:
            est = pi5_cost.estimate(r["insns"], runtime, r["precision"], THREADS[runtime])
            if est is not None:
                return est.as_dict() | {"counted_as": key}
            return {"ms": None, "estimate": True, "counted_as": key,
                    "why": pi5_cost.why_not(runtime, r["precision"], THREADS[runtime])}
    return pi5_cost.model_estimate(path, threads=THREADS[runtime])


def _ms(ms: float) -> str:
    return f"{ms:.1f}" if ms < 20 else f"{ms:.0f}"


def _fmt_err(e: dict) -> str:
    return f"median {e['median']:.0%}, worst {e['worst']:.0%}"


def markdown(counts: dict) -> str:
    rows = counts.get(GROUP, {})
    missing = [k for k, *_ in VARIANTS if k not in rows]
    if missing:
        pi5cost.die(f"counts.json has no {GROUP} count of {', '.join(missing)}: run `results.py count` first")
    data = pi5_cost.load()
    base = rows[BASELINE]["insns"]
    lines = [
        "## Raspberry Pi 5 (estimated)",
        "",
        "**Estimates, not measurements: no Pi 5 ran these.** Instructions per inference are counted under "
        "`qemu-aarch64 -cpu cortex-a76` (the Pi 5's CPU features, so the same aarch64 onnxruntime and ncnn "
        "kernels run), one thread, the second inference; the estimate divides them by the rate of the "
        "model's runtime × precision class fitted on published Pi 5 latencies (benchmarks/pi5_cost/VALIDATION.md), "
        "at the thread count where that rate was validated: onnxruntime fp32 at 4 threads (Ultralytics' Pi 5 "
        "tables), NCNN at 1 thread (benchncnn's). onnxruntime int8 has no published Pi 5 figure to validate a "
        "rate on, so it gets instructions and no milliseconds. The error beside each is its class's validation "
        f"error against the published figures. What it cannot see: {pi5_cost.LIMITS}. "
        "All variants are of the bundled yolov5n-coco.pt; ONNX ones without NMS. "
        "`python benchmarks/pi5_cost/results.py write` writes this section from counts.json.",
        "",
        "| model | runtime, precision | input | GMACs | instructions (M, 1 thread) | × export's instructions "
        "| Pi 5 estimate (ms) | threads | validation error | from MACs (what compile shows) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    proxy_errors: list[tuple[str, float]] = []
    estimated: dict[str, str] = {}  # key: its estimate as the table prints it
    for key, label, _, runtime, precision, size in VARIANTS:
        r = rows[key]
        threads = THREADS[runtime]
        est = pi5_cost.estimate(r["insns"], runtime, precision, threads, data=data)
        estimated[key] = _ms(est.ms) if est else "no estimate"
        ms = f"**{_ms(est.ms)}**" if est else "–"
        err = _fmt_err(est.error) if est else pi5_cost.why_not(runtime, precision, threads, data)
        proxy = pi5_cost.estimate_from_macs(r.get("macs"), runtime, precision, threads, data=data)
        proxy_ms = _ms(proxy["ms"]) if proxy.get("ms") is not None else "–"
        if est is not None and proxy.get("ms") is not None:
            proxy_errors.append((key, proxy["ms"] / est.ms - 1))
        macs = f"{r['macs'] / 1e9:.2f}" if r.get("macs") else "–"
        ratio = f"{r['insns'] / base:.2f}" if key in YOLOV5N else "–"
        lines.append(f"| {label} | {runtime} {precision} | {size} | {macs} | {r['insns'] / 1e6:.1f} | {ratio} | "
                     f"{ms} | {threads} | {err} | {proxy_ms} |")
    if proxy_errors:
        errs = sorted(abs(e) for _, e in proxy_errors)
        worst = max(proxy_errors, key=lambda ke: abs(ke[1]))
        proxy_fit = data.get("proxy", {}).get("ort-fp32", {})
        lines += ["", f"The MACs proxy that `compile` and `bench --pi5-estimate` use (no qemu there: instructions = "
                  f"MACs × {proxy_fit.get('insns_per_mac', 0):.4f}, fitted on these and YOLO11n/YOLO26n; leave-one-out "
                  f"error {proxy_fit.get('median_error', 0):.1%} median, {proxy_fit.get('worst_error', 0):.1%} worst, "
                  f"in VALIDATION.md) against the counts: median {statistics.median(errs):.1%}, worst "
                  f"{worst[1]:+.1%} ({worst[0]}), over {len(errs)} onnxruntime fp32 models; "
                  + ", ".join(f"{k} {e:+.1%}" for k, e in proxy_errors) + "."]
    lines += ["", "Ratios between estimates (same class, same threads, so the rate cancels):", ""]

    def ratio(a: str, b: str) -> str:
        return f"{rows[a]['insns'] / rows[b]['insns']:.2f}"

    speedup = data["ncnn_speedup_1_to_4_threads"]
    bench = counts.get("benchncnn", {}).get("yolo-fastest-1.1")
    published = next((t["published_ms"] for t in data["classes"]["ncnn-fp16"]["rates"]["1"].get("table", [])
                      if t["name"] == "yolo-fastest-1.1"), None)
    bench_fastest = (f" (ncnn's own benchncnn yolo-fastest-1.1 at 320: {bench['insns'] / 1e6:.1f} M, published "
                     f"{published:.2f} ms on a Pi 5)" if bench and published else "")
    lines += [
        f"- onnxruntime fp32: lossless / export.py = {ratio('lossless-640', 'export-640')} of the instructions "
        f"(onnxruntime folds BN and fuses at load either way); input 512 / 416 / 320 = "
        f"{ratio('lossless-512', 'lossless-640')} / {ratio('lossless-416', 'lossless-640')} / "
        f"{ratio('lossless-320', 'lossless-640')} of 640's; prune 0.85 / 0.7 = {ratio('prune-0.85', 'lossless-640')} / "
        f"{ratio('prune-0.7', 'lossless-640')}.",
        f"- int8 S8S8 / fp32 on onnxruntime, 1 thread: {ratio('int8-s8s8', 'lossless-640')} of the instructions "
        "(no Pi 5 rate for onnxruntime int8, so no milliseconds).",
        f"- NCNN int8 / NCNN fp16, 1 thread: {ratio('ncnn-int8', 'ncnn-fp16')} of the instructions; "
        f"estimated {estimated['ncnn-int8']} vs {estimated['ncnn-fp16']} ms.",
        f"- Yolo-Fastest 1.1 (320), graphopt's Darknet frontend → NCNN fp16: {rows['fastest-fp16']['insns'] / 1e6:.1f} M "
        f"instructions, ~{estimated['fastest-fp16']} ms{bench_fastest}. Its int8 mixed model (what "
        f"`--int8 mixed` picks) executes {ratio('fastest-int8-kl', 'fastest-fp16')}× fp16's instructions: by this estimate NCNN int8 does not pay for it on the Pi 5, "
        "as on x86 (the NCNN int8 sections above).",
        f"- onnxruntime fp32 (4 threads) vs NCNN fp16 (1 thread): {estimated['lossless-640']} vs "
        f"{estimated['ncnn-fp16']} ms; NCNN at 4 threads has no accepted rate (the Pi 5's "
        f"published 1→4-thread speed-ups of the benchncnn set range {speedup['min']:.2f}–{speedup['max']:.2f}×).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("make", "count"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"the variants' folder [{DEFAULT_WORK}]")
        if name == "count":
            p.add_argument("--only", default=None, help="comma-separated variant keys")
    w = sub.add_parser("write")
    w.add_argument("--write", type=Path, default=None, help="the markdown to put the section in")
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.work)
    elif args.cmd == "count":
        keys = {k for k, *_ in VARIANTS}
        only = set(args.only.split(",")) if args.only else None
        if only and only - keys:
            pi5cost.die(f"--only: unknown variant(s) {', '.join(sorted(only - keys))} (known: {', '.join(sorted(keys))})")
        count(args.work, only)
    else:
        text = markdown(json.loads(pi5cost.COUNTS.read_text()))
        print(text)
        if args.write:
            replace_section(args.write, "pi5-estimated", text)


if __name__ == "__main__":
    main()
