from __future__ import annotations

import hashlib
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from tools.make_demo_model import build_demo_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COCO128 = SHARED / "data" / "coco128"
YOLOV5N = SHARED / "models" / "yolov5n-coco.pt"
YOLOV9T = SHARED / "models" / "yolov9t-ball.pt"


def need_shared(path: Path) -> Path:
    """Skip (with the reason) when the shared material is absent, as in a user's fresh clone."""
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives in ../shared, present in CI)")
    return path


@pytest.fixture
def coco128() -> Path:
    return need_shared(COCO128)


@pytest.fixture
def demo_model(tmp_path: Path) -> Path:
    path = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(path))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
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
