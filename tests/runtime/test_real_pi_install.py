"""The Pi install: `pip install "graphopt[runtime]"` in a fresh virtual environment gives `graphopt detect`,
`graphopt bench` and `from runtime import Detector` — with numpy, OpenCV (headless) and onnxruntime,
and no onnx, onnxsim, onnx-graphsurgeon or torch (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, need_shared

pytestmark = pytest.mark.slow
COMPILER_ONLY = {"onnx", "onnxsim", "onnx-graphsurgeon", "onnx_graphsurgeon", "torch", "torchvision", "pyyaml"}


@pytest.fixture(scope="module")
def pi_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pi") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{REPO}[runtime]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv


def test_runtime_installs_alone_and_runs(pi_venv: Path, yolov5n_onnx: Path, tmp_path: Path) -> None:
    listed = subprocess.run(
        [str(pi_venv / "bin" / "pip"), "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert not COMPILER_ONLY & set(installed), sorted(installed)
    assert {"numpy", "opencv-python-headless", "onnxruntime", "graphopt"} <= set(installed)
    graphopt = str(pi_venv / "bin" / "graphopt")
    bus = need_shared(REPO.parent / "shared" / "repos" / "yolov5" / "data" / "images" / "bus.jpg")
    detect = subprocess.run(
        [graphopt, "detect", str(yolov5n_onnx), str(bus), "--json", "--save", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert detect.returncode == 0, detect.stderr
    result = json.loads(detect.stdout)
    assert result["per_class"].get("person", 0) >= 3 and result["per_class"].get("bus", 0) >= 1
    assert (tmp_path / "out" / "bus.jpg").exists()
    bench = subprocess.run(
        [graphopt, "bench", str(yolov5n_onnx), "--runs", "3", "--warmup", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["p50_ms"] > 0
    api = subprocess.run(
        [str(pi_venv / "bin" / "python"), "-c", "from runtime import Detector; print(Detector.__name__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repo: the installed package
    )
    assert api.returncode == 0 and api.stdout.strip() == "Detector", api.stderr
    compiler = subprocess.run(
        [graphopt, "optimize", str(yolov5n_onnx), "-o", str(tmp_path / "x.onnx"), "--recipe", "lossless"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiler.returncode == 2
    assert compiler.stderr.strip() == (
        "error: this command needs 'onnx', which is not installed: pip install 'graphopt[compiler]'"
    )
