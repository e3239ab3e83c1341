"""graphopt: an ONNX graph-surgery compiler for YOLO detectors on the Raspberry Pi 5.

The names users import come from here, loaded on first use: `graphopt detect` on a runtime-only
install (no onnx) imports this package too.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "graphopt.passes.pipeline",
    "load_model": "graphopt.core.model",
    "save_model": "graphopt.core.model",
    "GraphoptError": "graphopt.core.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")
