"""The README's newcomer command works verbatim."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO


def test_newcomer_optimize_command(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    command = next(c for c in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "graphopt optimize" in c)
    shutil.copytree(REPO / "tools", tmp_path / "tools")
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo.opt.onnx").exists()
    assert "simplify" in result.stdout
