"""Build fake training-repo checkpoints: zoo models pickled under a repo's `models.*` class names.

Real YOLOv5/yolov7/yolov9 checkpoints reference classes of their repo's `models` package; this
writes such a package (subclasses of our zoo blocks) into a folder, so tests can make checkpoints
that need `--repo` (and `--trust`) without the real repos.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

COMMON = """
from frontends.zoo import blocks as _b
for _name in ("Conv", "C3", "Bottleneck", "SPPF", "Concat", "RepNCSPELAN4", "RepNCSP", "RepNBottleneck",
              "RepConvN", "ADown", "SPPELAN", "CBLinear", "CBFuse"):
    globals()[_name] = type(_name, (getattr(_b, _name),), {"__module__": __name__})
GhostConv = type("GhostConv", (_b.Conv,), {"__module__": __name__})  # a class graphopt has no stand-in for
"""

YOLO = """
from frontends.zoo import blocks as _b
from frontends.zoo.models import YOLO as _YOLO
Model = type("Model", (_YOLO,), {"__module__": __name__})
DetectionModel = type("DetectionModel", (_YOLO,), {"__module__": __name__})
for _name in ("Detect", "DDetect", "DualDDetect"):
    globals()[_name] = type(_name, (getattr(_b, _name),), {"__module__": __name__})
"""


def write_repo(root: Path) -> Path:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "common.py").write_text(COMMON)
    (root / "models" / "yolo.py").write_text(YOLO)
    return root


def _forget_models() -> None:
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]


@contextlib.contextmanager
def repo_importable(root: Path) -> Iterator[None]:
    _forget_models()
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        _forget_models()


def save_as_repo_checkpoint(
    model: torch.nn.Module, root: Path, out: Path, top: str = "Model", replace: dict[str, str] | None = None
) -> Path:
    """Re-class every module onto the repo's classes of the same name and torch.save it like a trainer."""
    write_repo(root)
    replace = replace or {}
    with repo_importable(root):
        import models.common as common
        import models.yolo as yolo

        meta = model.meta
        for m in model.modules():
            name = replace.get(type(m).__name__, type(m).__name__)
            cls = getattr(yolo, name, None) or getattr(common, name, None)
            if cls is not None and m is not model:
                m.__class__ = cls
        model.__class__ = getattr(yolo, top)
        del model.meta  # real checkpoints carry names/stride, not our ZooMeta
        model.names = [meta.names[i] for i in sorted(meta.names)]
        model.stride = torch.tensor(meta.strides, dtype=torch.float32)
        torch.save({"model": model.half(), "epoch": -1, "date": "2026-01-01"}, out)
    return out
