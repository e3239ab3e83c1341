"""Fixtures. Shared helpers and constants live in tests/helpers.py.

Markers (registered in pyproject.toml): `real` (needs ../shared: checkpoints, COCO128, upstream repos)
and `slow` (minutes). Modules named test_real_* are real; tests that need PyTorch skip through
`pytest.importorskip("torch")` in their module, so `pytest -m "not real"` runs without torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from tests.helpers import COCO128, FIXTURES, VERIFY_IMAGE, YOLOV5N, YOLOV9T, export_in_child, need_shared
from tools.make_demo_model import build_demo_model
from tools.make_test_fixtures import fixture_name

# --record-passed / --skip-passed: CI's two environments run each test once (tests/run_once.py)
pytest_plugins = ["tests.run_once"]

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
def _fresh_command() -> None:
    """Each test is its own "command": files another test read are not this test's inputs, and
    library output is routed again (an in-process CLI test that ended in an error gave the terminal
    back: `release_terminal` turns routing off for the rest of that process)."""
    from runtime.files import forget_inputs
    from runtime.logs import route_library_output

    forget_inputs()
    route_library_output(True)


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


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder that `build(folder)` fills once per test run, for every xdist worker: the first worker to
    ask builds it, another asking meanwhile waits for it (a session fixture alone is built per worker).
    A build that fails leaves nothing marked built, so the next asker fails the same way."""
    import fcntl
    import shutil

    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the controller's temp folder, shared by the workers of this run
    folder = root / f"built-{name}"
    with open(root / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def _export_real(checkpoint: Path, factory: pytest.TempPathFactory, imgsz: int = 640) -> Path:
    """The frontend's export of a real checkpoint, verified on a real image (in a child process: the
    session keeps the ONNX, not torch's memory); once per run."""
    pytest.importorskip("torch")
    need_shared(checkpoint)
    image = need_shared(VERIFY_IMAGE)
    name = f"{checkpoint.stem}.onnx"
    folder = built_once(
        factory,
        f"{checkpoint.stem}-{imgsz}",
        lambda d: export_in_child(checkpoint, d / name, image=image, imgsz=imgsz),
    )
    return folder / name


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

    name = "yolov5n-coco.lossless.onnx"

    def build(folder: Path) -> None:
        save_model(Pipeline.from_recipe("lossless").run(load_model(yolov5n_onnx)).model, folder / name)

    return built_once(tmp_path_factory, "yolov5n-lossless", build) / name


@pytest.fixture(scope="session")
def yolov5n_lossless_map(yolov5n_lossless: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    """mAP50-95 of `yolov5n_lossless` on COCO128's data.yaml (all 128 images), evaluated once per run:
    the fp32 reference of the int8, NCNN, fused-NMS and yolov5-val tests."""
    import json

    from graphopt.eval.evaluate import evaluate

    def build(folder: Path) -> None:
        result = evaluate(yolov5n_lossless, need_shared(COCO128) / "data.yaml", progress=False)
        (folder / "map.json").write_text(json.dumps({"map50_95": result.map50_95}))

    folder = built_once(tmp_path_factory, "yolov5n-lossless-map", build)
    return float(json.loads((folder / "map.json").read_text())["map50_95"])


@pytest.fixture(scope="session")
def readme_compile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The README's newcomer command run verbatim, once per run (it compiles the bundled model, as
    `graphopt compile` with no arguments does): (its working folder, {returncode, stdout, stderr})."""
    import json
    import re
    import shutil
    import subprocess
    import sys

    from tests.helpers import REPO

    pytest.importorskip("torch", reason="the bundled model is a .pt: compiling it exports it with PyTorch")

    def build(folder: Path) -> None:
        readme = (REPO / "README.md").read_text()
        command = next(c for c in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "graphopt compile" in c)
        shutil.copytree(REPO / "graphopt" / "assets", folder / "graphopt" / "assets")  # the paths it names
        env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        proc = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True, env=env)
        result = {"command": command, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        (folder / "result.json").write_text(json.dumps(result))

    folder = built_once(tmp_path_factory, "readme-compile", build)
    return folder, json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="session")
def zoo_onnx():  # noqa: ANN201 - returns a callable
    """zoo_onnx(name) → the checked-in ONNX of zoo fixture `name` at 128 px (no torch needed)."""

    def get(name: str) -> Path:
        return FIXTURES / fixture_name(name)

    return get
