"""Fixtures. Shared helpers and constants live in tests/helpers.py.

Markers: `real` (needs ../shared: checkpoints, COCO128, upstream repos), `torch` (needs PyTorch),
`slow` (minutes). Modules named test_real_* are real; tests using torch are marked by
`pytest.importorskip("torch")` in their module, so `pytest -m "not real"` runs without torch.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.helpers import COCO128, FIXTURES, VERIFY_IMAGE, YOLOV5N, YOLOV9T, need_shared
from tools.make_demo_model import build_demo_model
from tools.make_test_fixtures import fixture_name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.split(".")[-1].startswith("test_real_"):
            item.add_marker(pytest.mark.real)


@pytest.fixture(autouse=True)
def _fresh_input_registry() -> None:
    """Each test is its own "command": files another test read are not this test's inputs."""
    from runtime.files import forget_inputs

    forget_inputs()


@pytest.fixture
def coco128() -> Path:
    return need_shared(COCO128)


@pytest.fixture
def demo_model(tmp_path: Path) -> Path:
    path = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(path))
    return path


@pytest.fixture
def record_torch_load(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every torch.load call's weights_only value."""
    torch = pytest.importorskip("torch")

    calls: list[bool] = []
    original = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("weights_only")))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def _export_real(checkpoint: Path, factory: pytest.TempPathFactory) -> Path:
    """The frontend's export of a real checkpoint, verified on a real image."""
    pytest.importorskip("torch")
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
    from graphopt.core.model import load_model, save_model
    from graphopt.passes.pipeline import Pipeline

    out = tmp_path_factory.mktemp("v5lossless") / "yolov5n-coco.lossless.onnx"
    save_model(Pipeline.from_recipe("lossless").run(load_model(yolov5n_onnx)).model, out)
    return out


@pytest.fixture(scope="session")
def zoo_onnx():  # noqa: ANN201 - returns a callable
    """zoo_onnx(name) → the checked-in ONNX of zoo fixture `name` at 128 px (no torch needed)."""

    def get(name: str) -> Path:
        return FIXTURES / fixture_name(name)

    return get
