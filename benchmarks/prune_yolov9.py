"""`prune` through YOLOv9's RepNCSPELAN4 (Split/Concat) structure: three YOLOv9 ONNX models, speed ratios.

- yolov9t-ball: Ultralytics YOLOv9t, exported by graphopt;
- yolov9t-ball (Ultralytics' export): the same checkpoint through Ultralytics' own `model.export(format="onnx")`
  (fused by Ultralytics, no graphopt metadata) — an ONNX we did not make;
- yolov9-t (WongKinYiu, dual head, 1 epoch on COCO128): exported with `--repo` (a temp copy of
  ../shared/repos/yolov9) `--trust`.

Each goes through `lossless`, then `prune` at every `--macs` (recover=lstsq, calibrated on COCO128's
first half). Printed: MACs kept, Conv count, output shapes (must equal the unpruned model's) and the
onnxruntime speed ratio against the same model unpruned (interleaved, 2 threads, spinning off,
median of per-round ratios). No mAP: the ball model's class is not in COCO, and the 1-epoch model's
scores are ~2e-4 — `benchmarks/prune.py` measures accuracy on yolov5n.

    python benchmarks/prune_yolov9.py [--macs 0.85 0.7] [--rounds 20] [--json]

Needs ../shared and graphopt[torch,peers] (ultralytics, the yolov9 repo's requirements).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.prune import graphopt  # noqa: E402
from benchmarks.timing import interleaved, ort_runner, speedup  # noqa: E402

SHARED = ROOT.parent / "shared"
SPLIT = SHARED / "data" / "coco128" / "split.yaml"
BALL = SHARED / "models" / "yolov9t-ball.pt"
V9T = SHARED / "models" / "yolov9-t-coco128-1ep.pt"

# Prepended to the peers' export scripts: they predate torch 2.14's dynamo default.
TORCHSCRIPT = """
import sys, torch
_export = torch.onnx.export
def _torchscript(*args, **kwargs):
    kwargs.setdefault("dynamo", False)
    return _export(*args, **kwargs)
torch.onnx.export = _torchscript
"""

ULTRALYTICS_EXPORT = (
    TORCHSCRIPT
    + """
from ultralytics import YOLO
print(YOLO(sys.argv[1]).export(format="onnx", simplify=False, imgsz=int(sys.argv[2])))
"""
)


def ultralytics_export(ckpt: Path, work: Path, imgsz: int = 640) -> Path:
    """Ultralytics' own ONNX of `ckpt` at `imgsz`, written in `work` (offline: nothing is downloaded)."""
    local = work / ckpt.name
    shutil.copy(ckpt, local)
    env = os.environ | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "ultralytics-config")}
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ULTRALYTICS_EXPORT), str(local), str(imgsz)],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return local.with_suffix(".onnx")


def shapes(path: Path) -> list[list[int]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=float, nargs="+", default=[0.85, 0.7])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-prune-v9-") as tmp:
        work = Path(tmp)
        repo = work / "yolov9"
        shutil.copytree(
            SHARED / "repos" / "yolov9", repo, ignore=shutil.ignore_patterns("__pycache__", "runs")
        )
        sources = {
            "yolov9t-ball (graphopt export)": (
                work / "ball.onnx",
                ("export", BALL, "-o", work / "ball.onnx"),
            ),
            "yolov9t-ball (Ultralytics export)": (ultralytics_export(BALL, work), None),
            "yolov9-t WongKinYiu (dual head)": (
                work / "v9t.onnx",
                ("export", V9T, "-o", work / "v9t.onnx", "--repo", repo, "--trust"),
            ),
        }
        for name, (path, command) in sources.items():
            if command:
                graphopt(*command, "--json")
            base = path.with_name(path.stem + ".lossless.onnx")
            graphopt("optimize", path, "-o", base, "--recipe", "lossless", "--data", SPLIT, "--json")
            models = {"unpruned": base}
            entries = []
            for target in args.macs:
                out = path.with_name(f"{path.stem}.p{target}.onnx")
                report = graphopt(
                    "optimize", base, "-o", out, "--passes", "prune", "--data", SPLIT, "--json",
                    "--set", f"prune.macs={target}", "--set", "prune.recover=lstsq",
                )  # fmt: skip
                models[str(target)] = out
                details = report["passes"][0]["details"]
                entries.append(
                    {
                        "model": name,
                        "macs_target": target,
                        "macs_kept": details["macs_kept"],
                        "conv": report["after"]["ops"].get("Conv"),
                        "outputs": shapes(out),
                        "outputs_unchanged": shapes(out) == shapes(base),
                        "cosine": report["passes"][0]["verification"].get("cosine"),
                        "key": str(target),
                    }
                )
            times = interleaved({k: ort_runner(str(p))[0] for k, p in models.items()}, rounds=args.rounds)
            for e in entries:
                e["speedup"] = round(speedup(times, "unpruned", e.pop("key")), 3)
            rows.extend(entries)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        "| model | MACs target | MACs kept | Conv | outputs (unchanged?) | cosine vs unpruned | speed vs unpruned |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        cos = "-" if r["cosine"] is None else f"{r['cosine']:.4f}"
        print(
            f"| {r['model']} | {r['macs_target']} | {r['macs_kept']:.3f} | {r['conv']} | "
            f"{r['outputs']} ({'yes' if r['outputs_unchanged'] else 'NO'}) | {cos} | {r['speedup']:.3f}× |"
        )


if __name__ == "__main__":
    main()
