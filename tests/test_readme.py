"""The README's newcomer command works verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_newcomer_optimize_command(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    command = next(c for c in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "graphopt optimize" in c)
    shutil.copytree(REPO / "tools", tmp_path / "tools")
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo.opt.onnx").exists()
    assert "simplify" in result.stdout
