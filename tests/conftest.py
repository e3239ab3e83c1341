"""Fixtures. Shared helpers and constants live in tests/helpers.py.

Markers (registered in pyproject.toml): `real` (needs ../shared: checkpoints, COCO128, upstream repos)
and `slow` (minutes). Modules named test_real_* are real; tests that need PyTorch skip through
`pytest.importorskip("torch")` in their module, so `pytest -m "not real"` runs without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.helpers import COCO128, FIXTURES, VERIFY_IMAGE, YOLOV5N, YOLOV9T, export_in_child, need_shared
from tools.make_demo_model import build_demo_model
from tools.make_test_fixtures import fixture_name

# Two xdist workers share the two cores: inference threads that spin while idle would take the core
# the other worker computes on (tests time nothing that spinning would change; children inherit it).
os.environ.setdefault("GRAPHOPT_THREAD_SPIN", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.split(".")[-1].startswith("test_real_"):
            item.add_marker(pytest.mark.real)
    # Modules with long tests first (slow, then real), the many short ones after: two xdist workers then
    # finish together instead of one running the last long test alone. Whole modules move (stable), so
    # a module-scoped fixture is still built once per worker.
    rank: dict[str, int] = {}
    for item in items:
        here = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("real") else 2
        rank[item.module.__name__] = min(rank.get(item.module.__name__, 2), here)
    items.sort(key=lambda item: rank[item.module.__name__])


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """With GRAPHOPT_TEST_RSS_LOG=FILE, append each test's worker RSS and peak (MiB) to FILE: what grows."""
    log = os.environ.get("GRAPHOPT_TEST_RSS_LOG")
    if not log:
        return
    with open("/proc/self/status") as f:
        status = {k: v.split()[0] for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
    with open(log, "a") as f:
        f.write(f"{int(status['VmRSS']) // 1024}\t{int(status['VmHWM']) // 1024}\t{os.getpid()}\t{item.nodeid}\n")


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
    """The tiny demo detector (tools/make_demo_model.py), written fresh for each test."""
    path = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(path))
    return path


@pytest.fixture
def demo(demo_model: Path) -> Path:
    """The demo model, under the short name the CLI-behaviour tests use."""
    return demo_model


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


def _export_real(checkpoint: Path, factory: pytest.TempPathFactory, imgsz: int = 640) -> Path:
    """The frontend's export of a real checkpoint, verified on a real image (in a child process: the
    session keeps the ONNX, not torch's memory)."""
    pytest.importorskip("torch")
    need_shared(checkpoint)
    out = factory.mktemp(f"{checkpoint.stem}-{imgsz}") / f"{checkpoint.stem}.onnx"
    return export_in_child(checkpoint, out, image=need_shared(VERIFY_IMAGE), imgsz=imgsz)


@pytest.fixture(scope="session")
def yolov9t_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_real(YOLOV9T, tmp_path_factory)


@pytest.fixture(scope="session")
def yolov9t_onnx_320(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolov9t at 320: for tests of graph structure, where the input size changes nothing but the time
    (pruning's recovery fits scale with the pixels)."""
    return _export_real(YOLOV9T, tmp_path_factory, imgsz=320)


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
