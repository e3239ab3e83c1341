"""runtime/ must import with torch, onnx and onnx-graphsurgeon unavailable (a Pi installs none of them)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'onnx', 'onnx_graphsurgeon', 'onnxsim', 'graphopt', 'frontends'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import runtime, runtime.metadata, runtime.preprocess, runtime.detector, runtime.loop, runtime.sources, runtime.stats, runtime.draw, runtime.backends, runtime.nms, runtime.decode
from runtime.detector import Detector
import numpy as np
import sys as _s
d = Detector(_s.argv[1], conf=0.01)
d(np.zeros((64, 80, 3), np.uint8))
assert not any(m.split(".")[0] in {"torch", "onnx", "onnx_graphsurgeon", "graphopt"} for m in _s.modules)
print('ok')
"""


def test_runtime_imports_without_compiler_dependencies(zoo_onnx) -> None:  # noqa: ANN001
    """Import every runtime module and run a detection with torch, onnx and graphopt blocked."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(zoo_onnx("yolov5"))], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
