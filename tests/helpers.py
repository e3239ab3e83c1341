"""Helpers shared by the tests (not a test module; fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from time import time_ns

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COCO128 = SHARED / "data" / "coco128"
YOLOV5N = SHARED / "models" / "yolov5n-coco.pt"
YOLOV9T = SHARED / "models" / "yolov9t-ball.pt"
VERIFY_IMAGE = COCO128 / "images" / "train2017" / "000000000368.jpg"
FIXTURES = REPO / "tests" / "fixtures"  # small checked-in ONNX models (tools/make_test_fixtures.py)
ZOO_IMGSZ = 128


def need_shared(path: Path) -> Path:
    """Skip (with the reason) when the shared material is absent, as in a user's fresh clone."""
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives in ../shared, present in CI)")
    return path


def need_pnnx() -> None:
    """Skip unless pnnx's converter is installed (found without importing it: the package imports torch)."""
    import importlib.util

    if importlib.util.find_spec("pnnx") is None:
        pytest.skip("pnnx is not installed (pip install --no-deps pnnx)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: object) -> CliResult:
    """Run `graphopt ARGS` in-process through the real entry point (exit codes and error lines included)."""
    from graphopt.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    return CliResult(code, out.getvalue(), err.getvalue())


def one_error_line(r: CliResult, code: int = 2) -> str:
    """A user's mistake: exit `code`, and stderr is exactly one `error:` line that is not an internal error."""
    lines = r.err.strip().splitlines()
    assert r.code == code and len(lines) == 1 and lines[0].startswith("error: "), (r.code, r.err)
    assert "internal error" not in lines[0]
    return lines[0]


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under `folder`: equal before and after means nothing was written."""
    return {
        str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def write_images(folder: Path, count: int, bad: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i:02d}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    for i in range(bad):
        (folder / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    return folder


def write_video(path: Path, frames: int = 10, corrupt_frame: int | None = None) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(frames):
        writer.write(np.full((96, 128, 3), i * 20, np.uint8))
    writer.release()
    if corrupt_frame is not None:
        data = bytearray(path.read_bytes())
        starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
        s = starts[corrupt_frame]
        data[s + 2 : s + 200] = bytes(198)
        path.write_bytes(bytes(data))
    return path


def write_dataset(root: Path, count: int = 4, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    """A small labeled YOLO dataset (random images, one box each): root/data.yaml, train = val."""
    import yaml

    write_images(root / "images" / "train", count)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / "labels" / "train" / f"img{i:02d}.txt").write_text(f"{i % len(names)} 0.5 0.5 0.3 0.3\n")
    cfg = {"path": ".", "train": "images/train", "val": "images/train", "names": dict(enumerate(names))}
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


DARKNET = SHARED / "models" / "darknet"


def write_darknet_weights(path: Path, cfg_text: str, seed: int = 0) -> Path:
    """Seeded `.weights` of exactly the size the cfg implies (Darknet v0.2.5 header: 20 bytes, then 4 bytes
    per parameter), drawn so the activations of a deep net stay in a trained net's range (else the box
    decode's exp overflows and saturated scores tie): centred kernels with He's gain, BN variances and
    shortcut weights positive, a small BN scale on each residual branch's last conv (the conv a
    [shortcut] adds to, as zero-init-residual training starts) and half the gain on the convs a [yolo]
    reads."""
    from frontends.darknet import parse_cfg, weights_layout

    layers = parse_cfg(cfg_text)[1:]
    residual = {i for i in range(len(layers) - 1) if layers[i + 1].kind == "shortcut"}
    head = {i for i in range(len(layers) - 1) if layers[i + 1].kind == "yolo"}
    rng = np.random.default_rng(seed)
    with path.open("wb") as f:
        f.write(np.array([0, 2, 5], "<i4").tobytes() + np.array([1000], "<i8").tobytes())
        for block in weights_layout(cfg_text):
            if block.role == "kernel":
                fan_in = int(np.prod(block.shape[1:]))
                values = rng.normal(0, (0.25 if block.layer in head else 2) ** 0.5 / fan_in**0.5, block.size)
            elif block.role == "bn_gamma" and block.layer in residual:
                values = rng.uniform(0.05, 0.15, block.size)
            elif block.role in ("bn_gamma", "bn_var", "shortcut"):
                values = rng.uniform(0.5, 1.5, block.size)
            else:  # bn_beta, bn_mean, bias
                values = rng.uniform(-0.1, 0.1, block.size)
            f.write(values.astype("<f4").tobytes())
    return path


@dataclass
class ChildResult(CliResult):
    peak_mib: float  # the child's own VmHWM (peak resident memory since exec)


_CHILD = """
import atexit, sys
sys.path.insert(0, {repo!r})
def _peak():
    with open('/proc/self/status') as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
    with open({peak!r}, 'w') as f:
        f.write(str(kib))
atexit.register(_peak)
from graphopt.cli import main
main({args!r})
"""


def run_cli_child(*args: object, tmp: Path, timeout: float = 300) -> ChildResult:
    """Run `graphopt ARGS` in a fresh interpreter: native libraries' own writes to stderr are seen, and
    its peak RSS is its own VmHWM from /proc/self/status (ru_maxrss would carry the parent's RSS at fork)."""
    import os
    import subprocess

    peak = tmp / f".vmhwm-{os.getpid()}-{time_ns()}"
    script = _CHILD.format(repo=str(REPO), peak=str(peak), args=[str(a) for a in args])
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=tmp
    )
    try:
        kib = int(peak.read_text())
    finally:
        peak.unlink(missing_ok=True)
    return ChildResult(proc.returncode, proc.stdout, proc.stderr, kib / 1024)


_EXPORT_CHILD = """
import json, sys
sys.path.insert(0, {repo!r})
from frontends import export
for kwargs in json.loads(sys.argv[1]):
    if isinstance(kwargs.get("imgsz"), list):
        kwargs["imgsz"] = tuple(kwargs["imgsz"])
    export(kwargs.pop("model"), kwargs.pop("out"), **kwargs)
"""


def export_in_child(model: Path, out: Path, timeout: float = 900, **kwargs: object) -> Path:
    """`frontends.export(model, out, **kwargs)` in a fresh interpreter: torch and the traced model leave
    with it, so a test (and the worker running it) keeps only the ONNX it then loads."""
    return exports_in_child([(model, out, kwargs)], timeout)[0]


def exports_in_child(jobs: list[tuple[Path, Path, dict[str, object]]], timeout: float = 900) -> list[Path]:
    """Several exports in one fresh interpreter (torch is imported once)."""
    import json
    import subprocess

    args = [
        {"model": str(model), "out": str(out)} | {k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}
        for model, out, kw in jobs
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT_CHILD.format(repo=str(REPO)), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [out for _, out, _ in jobs]


def write_png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit greyscale PNG of width × height (all black): ~50 KB on disk for 20000 × 20000, yet
    OpenCV would decode it into width·height·3 bytes of BGR."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
