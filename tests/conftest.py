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


@pytest.fixture(autouse=True)
def _fresh_input_registry() -> None:
    """Each test is its own "command": files another test read are not this test's inputs."""
    from runtime.files import forget_inputs

    forget_inputs()


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


VERIFY_IMAGE = COCO128 / "images" / "train2017" / "000000000368.jpg"


@pytest.fixture
def record_torch_load(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every torch.load call's weights_only value."""
    import torch

    calls: list[bool] = []
    original = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("weights_only")))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def _export_real(checkpoint: Path, factory: pytest.TempPathFactory) -> Path:
    """The frontend's export of a real checkpoint, verified on a real image."""
    from frontends import export

    need_shared(checkpoint)
    out = factory.mktemp(checkpoint.stem) / f"{checkpoint.stem}.onnx"
    export(checkpoint, out, image=need_shared(VERIFY_IMAGE))
    return out


@pytest.fixture(scope="session")
def yolov9t_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_real(YOLOV9T, tmp_path_factory)


@pytest.fixture(scope="session")
def yolov5n_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_real(YOLOV5N, tmp_path_factory)


@pytest.fixture(scope="session")
def yolov5n_lossless(yolov5n_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from graphopt.model import load_model, save_model
    from graphopt.pipeline import Pipeline

    out = tmp_path_factory.mktemp("v5lossless") / "yolov5n-coco.lossless.onnx"
    save_model(Pipeline.from_recipe("lossless").run(load_model(yolov5n_onnx)).model, out)
    return out


ZOO_IMGSZ = 128


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - returns a callable
    """zoo_onnx(name) → path of the zoo fixture `name` exported at 128 px (cached for the session)."""
    from frontends import export
    from frontends.zoo import BUILDERS

    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = folder / f"{name}.onnx"
            export(BUILDERS[name](), cache[name], imgsz=ZOO_IMGSZ)
        return cache[name]

    return get
