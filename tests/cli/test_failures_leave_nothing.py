"""A command that fails or is stopped leaves nothing half-written: convert's failed verification,
SIGTERM during a write, devices and FIFOs refused without blocking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.helpers import REPO, need_pnnx, one_error_line, run_cli

NAMES = {0: "a", 1: "b", 2: "c"}


def _images(folder: Path, count: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


def _dataset(root: Path, labels: dict[int, str] | None = None, **yaml_extra: object) -> Path:
    _images(root / "images" / "train")
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        text = (labels or {}).get(i, "0 0.5 0.5 0.2 0.2\n")
        (root / "labels" / "train" / f"{i}.txt").write_text(text)
    cfg = {"path": ".", "train": "images/train", "val": "images/train", "names": NAMES} | yaml_extra
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"




def test_convert_failing_verification_leaves_nothing(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_pnnx()
    import graphopt.compile.ncnn as convert

    monkeypatch.setattr(convert, "NCNN_FP32_TOLERANCE", -1.0)  # every conversion now fails its check
    out = tmp_path / "ncnn"
    result = run_cli("convert", demo, "--to", "ncnn", "-o", out, "--fp32")
    one_error_line(result, code=1)
    assert "nothing was written" in result.err
    assert list(out.iterdir()) == []




def test_sigterm_during_a_write_leaves_nothing(tmp_path: Path) -> None:
    """The CLI turns SIGTERM into an exception, so the atomic write removes its temp file."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from graphopt.cli import install_signal_handlers
        from runtime.files import atomic_write
        install_signal_handlers()
        def slow(tmp):
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(30)
        atomic_write({str(tmp_path / "out.onnx")!r}, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_sigterm_through_the_cli(demo: Path, tmp_path: Path) -> None:
    """A real command stopped by SIGTERM: exit 143, one line, no output and no temp file."""
    images = _images(tmp_path / "imgs", 40, size=(480, 640))
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graphopt", "detect", str(demo), str(images), "--save", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    while not (tmp_path / "out").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the command finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: terminated")
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no hidden temp file


def test_inspect_refuses_devices_and_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error_line(run_cli("inspect", "/dev/zero"))
    assert "not a regular file" in one_error_line(run_cli("inspect", fifo))  # would block forever if opened
    data = _dataset(tmp_path / "ds")
    assert "not a regular file" in one_error_line(run_cli("eval", fifo, "--data", data))
    os.mkfifo(tmp_path / "data.yaml")
    assert "not a regular file" in one_error_line(run_cli("eval", fifo, "--data", tmp_path / "data.yaml"))


def test_fifo_image_does_not_block(demo: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "frame.jpg"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error_line(run_cli("detect", demo, fifo))
