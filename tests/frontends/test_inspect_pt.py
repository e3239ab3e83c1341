"""tools/inspect_pt.py: describes checkpoints, running no code from them unless --trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs PyTorch (checkpoints)")

from frontends.zoo import yolov9_dual_tiny  # noqa: E402
from tests.fake_repo import save_as_repo_checkpoint  # noqa: E402
from tests.helpers import REPO, YOLOV9T, need_shared  # noqa: E402
from tools.inspect_pt import inspect_checkpoint  # noqa: E402


def test_untrusted_repo_checkpoint_is_described_without_unpickling(tmp_path: Path) -> None:
    ckpt = save_as_repo_checkpoint(
        yolov9_dual_tiny(), tmp_path / "repo", tmp_path / "v9.pt", top="DetectionModel"
    )
    info = inspect_checkpoint(ckpt)
    assert info["family"] == "yolov9-repo"
    assert info["loaded"] is False and "--trust" in info["not_loaded_because"]
    assert "models.yolo.DualDDetect" in info["classes_referenced"]
    assert info["tensor_storages"] > 0
    trusted = inspect_checkpoint(ckpt, trust=True, repo=tmp_path / "repo")
    assert trusted["loaded"] and trusted["head"] == "DualDDetect" and trusted["classes"] == 3
    assert trusted["date"] == "2026-01-01" and trusted["dtype"] == "float16"


@pytest.mark.real
def test_real_ultralytics_checkpoint_cli() -> None:
    pytest.importorskip("ultralytics")
    need_shared(YOLOV9T)
    result = subprocess.run(
        [sys.executable, "tools/inspect_pt.py", str(YOLOV9T), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["family"] == "ultralytics" and info["loaded"] is True
    assert info["names"] == {"0": "ball"} and info["version"] == "8.3.3"
    assert info["train_args"]["epochs"] == 100
    assert 1_700_000 < info["params"] < 1_800_000


def test_missing_file_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "tools/inspect_pt.py", "nope.pt"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: nope.pt: no such file"]
