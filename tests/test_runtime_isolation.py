"""runtime/ must import with torch, onnx and onnx-graphsurgeon unavailable (a Pi installs none of them)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'onnx', 'onnx_graphsurgeon', 'onnxsim', 'graphopt', 'frontends'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import runtime, runtime.metadata, runtime.preprocess
print('ok')
"""


def test_runtime_imports_without_compiler_dependencies() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
