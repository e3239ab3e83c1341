#!/usr/bin/env python3
"""Instructions per inference on an emulated Raspberry Pi 5 CPU (Cortex-A76), counted by qemu.

    python benchmarks/pi5_cost/pi5cost.py build                  # the counting qemu, once (cached)
    python benchmarks/pi5_cost/pi5cost.py count M.onnx [--int8-name]  # onnxruntime, 1 thread
    python benchmarks/pi5_cost/pi5cost.py count DIR_OR.param     # NCNN fp16 (benchncnn's options)
    python benchmarks/pi5_cost/pi5cost.py benchncnn              # ncnn's 35 benchmark models
    python benchmarks/pi5_cost/pi5cost.py yolo                   # YOLO11n/YOLO26n (random weights, 640)
    python benchmarks/pi5_cost/pi5cost.py fit [--write]          # rates + validation table

Counting: qemu 7.2 (Debian bookworm's source package) built with TCG plugins, and this folder's
countmark plugin, which adds each executed translation block's instruction count and prints the
running total at every marker syscall the guest makes (guest.py). Per inference = the instructions
between the marks around the second run (the first one allocates). The guest runs the arm64 root's
own python3.11 (benchmarks/arm64 builds the root; read-only here) under `-cpu cortex-a76 -L ROOT`, in
a private mount namespace where the root's Cortex-A76 cpuinfo lies over /proc/cpuinfo (qemu 7.2 does
not emulate it for aarch64, and onnxruntime's cpuinfo library crashes on an x86 one).

Counts are cached by model content and job in CACHE/counts/ and collected into counts.json here
(committed: CI and `fit` never need qemu). CACHE is $GRAPHOPT_PI5COST_CACHE, default
~/.cache/graphopt/pi5_cost. Needs root (apt-get, unshare, mount).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

CACHE = Path(os.environ.get("GRAPHOPT_PI5COST_CACHE") or Path.home() / ".cache/graphopt/pi5_cost")
ROOT = Path(os.environ.get("GRAPHOPT_ARM64_ROOT") or Path.home() / ".cache/graphopt/arm64")
SHARED = Path(os.environ.get("GRAPHOPT_SHARED") or REPO.parent / "shared")
BENCH_DIR = SHARED / "data/ncnn-benchmark"
COUNTS = HERE / "counts.json"
QEMU_VERSION = "7.2"
SRC_LIST = Path("/etc/apt/sources.list.d/graphopt-pi5cost-src.sources")
CONFIGURE = [
    "--target-list=aarch64-linux-user", "--enable-plugins", "--disable-system", "--disable-docs",
    "--disable-tools", "--disable-werror", "--disable-install-blobs",
]
MAX_MODEL_BYTES = 2 << 30
# benchncnn models counted on their first inference (no warm-up), to halve the emulation (fp16 arithmetic
# emulates at ~4 M instructions/s on this busy 2-core host): on the 14 benchncnn models counted both ways
# (first_insns and insns in counts.json) the two differ by under 0.05 %. vision_transformer alone is ~5 G.
NO_WARMUP = (
    "vision_transformer", "efficientnetv2_b0", "regnety_400m", "googlenet", "googlenet_int8", "resnet18",
    "resnet18_int8", "alexnet", "vgg16", "resnet50", "squeezenet_ssd", "squeezenet_ssd_int8", "mobilenet_ssd",
    "mobilenet_ssd_int8", "mobilenet_yolo", "mobilenetv2_yolov3", "yolov4-tiny", "nanodet_m", "yolo-fastest-1.1",
    "yolo-fastestv2", "FastestDet",
)


def die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def say(msg: str) -> None:
    print(f"pi5cost: {msg}", file=sys.stderr, flush=True)


def need_root() -> None:
    if os.geteuid() != 0:
        die("benchmarks/pi5_cost needs root (apt-get for qemu's source, unshare and mount for the guest's cpuinfo)")


def du(path: Path) -> str:
    out = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()
    return out[0] if out else "?"


# --- the counting qemu ----------------------------------------------------------------------------


def qemu_bin() -> Path:
    return CACHE / "qemu/build/qemu-aarch64"


def plugin_lib() -> Path:
    return CACHE / "libcountmark.so"


def _apt_source() -> Path:
    """qemu's Debian source package (deb-src with the main entry's Signed-By), downloaded once."""
    src = CACHE / "src"
    src.mkdir(parents=True, exist_ok=True)
    if not list(src.glob("qemu_7.2*.orig.tar.xz")):
        if not SRC_LIST.exists():
            SRC_LIST.write_text(
                "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "source", "--download-only", "qemu"], cwd=src, check=True, stdout=subprocess.DEVNULL)
    tars = sorted(src.glob("qemu_7.2*.orig.tar.xz"))
    if not tars:
        die(f"no qemu {QEMU_VERSION} source tarball in {src} (is this Debian bookworm?)")
    return tars[0]


def build(jobs: int = 2) -> None:
    need_root()
    start = time.time()
    if qemu_bin().exists() and plugin_lib().exists():
        say(f"counting qemu already built: {qemu_bin()} + {plugin_lib()} ({du(CACHE)} in {CACHE})")
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [p for p in ("meson", "ninja", "pkg-config") if shutil.which(p) is None]
    if missing or subprocess.run(["pkg-config", "--exists", "glib-2.0"]).returncode != 0:
        say("installing build tools: meson ninja-build libglib2.0-dev pkg-config")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "meson", "ninja-build", "libglib2.0-dev", "pkg-config"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    tar = _apt_source()
    tree = CACHE / "qemu"
    if not (tree / "configure").exists():
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        subprocess.run(["tar", "xf", str(tar), "-C", str(tmp)], check=True)
        shutil.rmtree(tree, ignore_errors=True)
        next(tmp.iterdir()).rename(tree)
        tmp.rmdir()
    if not qemu_bin().exists():
        say(f"building qemu {QEMU_VERSION} (aarch64-linux-user, TCG plugins) with -j{jobs} in {tree}")
        log = CACHE / "build.log"
        with open(log, "w") as f:
            for cmd in (["./configure", *CONFIGURE], ["ninja", "-C", "build", f"-j{jobs}", "qemu-aarch64"]):
                if subprocess.run(["nice", "-n", "10", *cmd], cwd=tree, stdout=f, stderr=subprocess.STDOUT).returncode:
                    die(f"qemu build failed ({' '.join(cmd)}): see {log}")
    _build_plugin(tree)
    say(f"built {qemu_bin()} and {plugin_lib()} in {time.time() - start:.0f} s; {du(CACHE)} in {CACHE}")


def _build_plugin(tree: Path) -> None:
    cflags = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True).stdout.split()
    tmp = plugin_lib().with_suffix(".tmp.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{tree}/include/qemu", *cflags, "-o", str(tmp),
                    str(HERE / "countmark.c")], check=True)
    tmp.rename(plugin_lib())


# --- counting ---------------------------------------------------------------------------------------


def _root_ready() -> tuple[Path, Path, Path]:
    py = ROOT / "usr/bin/python3.11"
    site = ROOT / "opt/venv/lib/python3.11/site-packages"
    cpuinfo = ROOT / ".graphopt/cpuinfo"
    for p, what in ((py, "python3.11"), (site / "onnxruntime", "onnxruntime"), (site / "ncnn", "ncnn"), (cpuinfo, "cpuinfo")):
        if not p.exists():
            die(f"the arm64 root at {ROOT} has no {what} ({p}): build it with benchmarks/arm64/run --build")
    return py, site, cpuinfo


def _digest(job: dict) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in job.items() if k not in ("model", "weights", "name")},
                                  sort_keys=True).encode())
    for key in ("model", "weights"):
        if job.get(key):
            with open(job[key], "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    h.update(plugin_lib().read_bytes() if plugin_lib().exists() else b"")
    return h.hexdigest()[:20]


def count_jobs(jobs: list[dict]) -> list[dict]:
    """Instructions of each job's first and later inferences; cached by content."""
    need_root()
    if not (qemu_bin().exists() and plugin_lib().exists()):
        die(f"no counting qemu in {CACHE}: run `{Path(__file__).name} build` first")
    py, site, cpuinfo = _root_ready()
    out_dir = CACHE / "counts"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict | None] = []
    todo: list[tuple[int, dict, Path]] = []
    for i, job in enumerate(jobs):
        path = out_dir / f"{job['name']}-{_digest(job)}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
        if results[-1] is None:
            todo.append((i, job, path))
    if todo:
        with tempfile.TemporaryDirectory(prefix="pi5cost-") as tmp:
            spec = Path(tmp) / "jobs.json"
            spec.write_text(json.dumps([j for _, j, _ in todo]))
            inner = (
                f"mount --bind {cpuinfo} /proc/cpuinfo && exec env -i PYTHONPATH={site} OMP_NUM_THREADS=1 "
                f"{qemu_bin()} -cpu cortex-a76 -L {ROOT} -plugin {plugin_lib()} {py} {HERE / 'guest.py'} {spec}"
            )
            say(f"counting {len(todo)} job(s) under qemu -cpu cortex-a76: " + ", ".join(j["name"] for _, j, _ in todo))
            proc = subprocess.Popen(["nice", "-n", "10", "unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            marks: dict[int, list[int]] = {}
            started = time.time()
            assert proc.stdout is not None
            for line in proc.stdout:
                if m := re.match(r"mark (\d+) (\d+)$", line.strip()):
                    tag, n = int(m.group(1)), int(m.group(2))
                    marks.setdefault(tag // 1000, []).append(n)
                elif m := re.match(r"done (\d+)$", line.strip()):
                    k = int(m.group(1))
                    i, job, path = todo[k]
                    ns = marks.get(k, [])
                    if len(ns) < 3:
                        die(f"{job['name']}: {len(ns)} marks, expected 3 or more")
                    warm = job.get("warmup", True)
                    rec = {
                        "name": job["name"], "runtime": job["runtime"], "precision": job["precision"],
                        "first_insns": ns[1] - ns[0],
                        "insns": ns[2] - ns[1] if warm else ns[1] - ns[0],
                        "counted": "the second inference" if warm else "the first inference (no warm-up)",
                        "more_insns": [b - a for a, b in zip(ns[2:], ns[3:], strict=False)],
                        "qemu": f"qemu {QEMU_VERSION} -cpu cortex-a76, countmark plugin",
                        "seconds": round(time.time() - started, 1),
                    }
                    tmp_rec = path.with_suffix(".tmp")
                    tmp_rec.write_text(json.dumps(rec))
                    tmp_rec.rename(path)  # atomically: a killed run leaves no half-written count
                    results[i] = rec
                    say(f"  {job['name']}: {rec['insns'] / 1e6:.1f} M instructions per inference "
                        f"(first {rec['first_insns'] / 1e6:.1f} M; {rec['seconds']:.0f} s emulated)")
                    started = time.time()
                elif line.strip() and not line.startswith(("job ", "insns ")):
                    print(f"  guest: {line.rstrip()}", file=sys.stderr)
            if proc.wait() != 0:
                die(f"the emulated run failed (exit {proc.returncode}); counts so far are cached in {out_dir}")
    return results  # type: ignore[return-value]


def record(results: list[dict], group: str, extra: dict[str, dict] | None = None) -> None:
    """Merge counts into counts.json (committed), under group."""
    data = json.loads(COUNTS.read_text()) if COUNTS.exists() else {}
    data.setdefault(group, {})
    for r in results:
        keys = ("runtime", "precision", "insns", "first_insns", "more_insns", "counted")
        data[group][r["name"]] = {**{k: r[k] for k in keys if k in r},
                                  **(extra or {}).get(r["name"], {})}
    data[group] = dict(sorted(data[group].items()))
    from runtime.files import atomic_write

    text = json.dumps(data, indent=1) + "\n"
    atomic_write(COUNTS, lambda tmp: tmp.write_text(text), what="counts")


# --- jobs -------------------------------------------------------------------------------------------


def benchncnn_jobs() -> list[dict]:
    """The 35 benchncnn models with benchncnn.cpp's inputs (zero weights)."""
    src = BENCH_DIR / "benchncnn.cpp"
    if not src.exists():
        die(f"{src}: not found (the ncnn benchmark set lives in ../shared/data/ncnn-benchmark)")
    jobs = []
    for name, w, h, c in re.findall(r'benchmark\("([^"]+)", ncnn::Mat\((\d+), (\d+), (\d+)\)', src.read_text()):
        # commented-out lines (mobilenet_v2_int8) are not run by benchncnn
        line = next(ln for ln in src.read_text().splitlines() if f'benchmark("{name}"' in ln)
        if line.strip().startswith("//"):
            continue
        jobs.append({"name": name, "runtime": "ncnn", "model": str(BENCH_DIR / "models" / f"{name}.param"),
                     "weights": None, "shape": [int(c), int(h), int(w)],
                     "precision": "int8" if name.endswith("_int8") else "fp16", "runs": 1})
    return jobs


def model_job(path: Path, name: str | None = None, precision: str | None = None) -> dict:
    from runtime.files import FileProblem, input_file

    if not path.exists():
        die(f"{path}: no such file or folder")
    try:
        if not path.is_dir():
            input_file(path, "model", max_bytes=MAX_MODEL_BYTES)
    except FileProblem as exc:
        die(str(exc))
    if path.is_dir():
        params = sorted(path.glob("*.param"))
        if not params:
            die(f"{path}: no NCNN .param in the folder")
        path = params[0]
    if path.suffix == ".param":
        weights = path.with_suffix(".bin")
        sidecar = next(iter(sorted(path.parent.glob("*.ncnn.json"))), None)
        shape = [3, 640, 640]
        if sidecar is not None:
            dims = json.loads(sidecar.read_text())["inputs"][0]["shape"]
            shape = [int(d) for d in dims[-3:]]
        return {"name": name or path.parent.name, "runtime": "ncnn", "model": str(path),
                "weights": str(weights) if weights.exists() else None, "shape": shape,
                "precision": precision or "fp16", "runs": 1}
    if path.suffix != ".onnx":
        die(f"{path}: expected an .onnx model, an NCNN .param or a folder holding one")
    if precision is None:
        from graphopt.compile.pi5_cost import INT8_OPS
        from graphopt.core.errors import GraphoptError
        from graphopt.core.model import load_model

        try:
            m = load_model(path)
        except GraphoptError as exc:
            die(str(exc))
        precision = "int8" if any(n.op_type in INT8_OPS for n in m.graph.node) else "fp32"
    return {"name": name or path.stem, "runtime": "ort", "model": str(path), "weights": None, "shape": None,
            "precision": precision, "runs": 1}


def model_macs(job: dict) -> int | None:
    """The graph's MACs (an NCNN model: from graphopt's sidecar), for the MACs proxy fit."""
    if job["runtime"] == "ncnn":
        sidecar = next(iter(sorted(Path(job["model"]).parent.glob("*.ncnn.json"))), None)
        return json.loads(sidecar.read_text()).get("macs") if sidecar else None
    from graphopt.core.macs import macs_summary
    from graphopt.core.model import load_model

    return int(macs_summary(load_model(job["model"]))["macs"])


def yolo_jobs(tmp: Path) -> list[dict]:
    """YOLO11n and YOLO26n from ultralytics' own yamls (random weights), fp32 ONNX at 640."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    jobs = []
    for name in ("yolo11n", "yolo26n"):
        out = CACHE / "yolo" / f"{name}.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            model = YOLO(f"{name}.yaml")
            # simplify off: ultralytics would pip-install onnxslim for it; onnxruntime folds the same at load
            exported = Path(model.export(format="onnx", imgsz=640, simplify=False, dynamic=False, verbose=False))
            shutil.move(str(exported), out)
        jobs.append({"name": name, "runtime": "ort", "model": str(out), "weights": None, "shape": None,
                     "precision": "fp32", "runs": 1})
        folder = out.with_name(f"{name}-ncnn")
        if not (folder / f"{name}.ncnn.param").exists():  # graphopt's own converter (pnnx), fp16 weights
            subprocess.run([sys.executable, "-m", "graphopt", "convert", str(out), "--to", "ncnn", "-o", str(folder)],
                           check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
        jobs.append(model_job(folder / f"{name}.ncnn.param", f"{name}-ncnn", "fp16"))
    return jobs


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("-j", type=int, default=2)
    c = sub.add_parser("count")
    c.add_argument("models", nargs="+", type=Path)
    c.add_argument("--name", action="append", help="a name per model (recorded in counts.json)")
    c.add_argument("--group", default=None, help="record the counts in counts.json under this group")
    c.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None)
    c.add_argument("--runs", type=int, default=1, help="counted inferences after the warm-up (1..5)")
    bn = sub.add_parser("benchncnn")
    bn.add_argument("--only", default=None, help="comma-separated model names")
    bn.add_argument("--no-warmup", default=",".join(NO_WARMUP),
                    help="models whose first inference is counted, not the second (default: those counted so here)")
    sub.add_parser("yolo")
    f = sub.add_parser("fit")
    f.add_argument("--write", action="store_true", help="write graphopt/compile/pi5_cost.json")
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.j)
    elif args.cmd == "count":
        if not 1 <= args.runs <= 5:
            die("--runs must be in 1..5")
        names = args.name or []
        if names and len(names) != len(args.models):
            die("--name: give one per model")
        jobs = [model_job(p, names[i] if names else None, args.precision) for i, p in enumerate(args.models)]
        for j in jobs:
            j["runs"] = args.runs
        results = count_jobs(jobs)
        for r in results:
            print(f"{r['name']}\t{r['runtime']}\t{r['precision']}\t{r['insns']}")
        if args.group:
            record(results, args.group, {j["name"]: {"macs": model_macs(j)} for j in jobs})
    elif args.cmd == "benchncnn":
        jobs = benchncnn_jobs()
        if args.only:
            keep = set(args.only.split(","))
            jobs = [j for j in jobs if j["name"] in keep]
        for j in jobs:
            if j["name"] in set(args.no_warmup.split(",")):
                j["warmup"] = False  # (absent otherwise: the job, and so its cache key, is as before)
        shapes = {j["name"]: {"input_chw": j["shape"]} for j in jobs}
        record(count_jobs(jobs), "benchncnn", shapes)
    elif args.cmd == "yolo":
        with tempfile.TemporaryDirectory() as tmp:
            jobs = yolo_jobs(Path(tmp))
        record(count_jobs(jobs), "ultralytics", {j["name"]: {"macs": model_macs(j)} for j in jobs})
    elif args.cmd == "fit":
        from benchmarks.pi5_cost.fit import main as fit_main

        fit_main(write=args.write)


if __name__ == "__main__":
    main()
