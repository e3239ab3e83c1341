"""The README's newcomer command works verbatim: compile the bundled model, detect on the bundled image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_newcomer_compile_command(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the bundled model is a .pt: compiling it exports it with PyTorch")
    readme = (REPO / "README.md").read_text()
    command = next(c for c in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "graphopt compile" in c)
    shutil.copytree(REPO / "graphopt" / "assets", tmp_path / "graphopt" / "assets")  # the paths it names
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "compiled" / "report.json").read_text())
    names = [d.split()[0] for d in report["sample_detections"]]
    assert "bus" in names and names.count("person") >= 3  # bus.jpg: a bus and four people
    assert (tmp_path / "out" / "bus.jpg").is_file() and "bus" in result.stdout
