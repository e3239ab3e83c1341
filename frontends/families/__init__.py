"""Checkpoint families: each turns a `.pt` into a `LoadedModel` (an nn.Module returning inference outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.core.errors import GraphoptError


@dataclass
class LoadedModel:
    """A model ready to export: `module(x)` returns only inference outputs, plus what metadata needs."""

    module: Any  # torch.nn.Module
    family: str
    names: dict[int, str]
    strides: list[int]
    head: str  # "yolov5" | "anchor-free"
    output_names: list[str] = field(default_factory=lambda: ["output0"])
    main_output: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# class-name hints for repo checkpoints (WongKinYiu yolov7 / yolov9), after the `models.` prefix
_YOLOV9_HINTS = {
    "DualDDetect",
    "TripleDDetect",
    "DDetect",
    "DualDetect",
    "TripleDetect",
    "RepNCSPELAN4",
    "ADown",
    "CBLinear",
    "CBFuse",
    "SPPELAN",
}
_PYTORCH_YOLOV4_HINTS = {"Darknet", "YOLOLayer", "FeatureConcat", "FeatureConcat_l", "WeightedFeatureFusion"}
_YOLOV7_HINTS = {
    "IDetect",
    "IAuxDetect",
    "IBin",
    "IKeypoint",
    "ImplicitA",
    "ImplicitM",
    "SPPCSPC",
    "RepConv",
    "MP",
}


def detect_family(path: Path, globals_: list[str], unsafe: list[str]) -> str:
    """Family from the classes the pickle references (read without running code)."""
    if any(g.startswith("ultralytics.") for g in globals_):
        return "ultralytics"
    repo_classes = {g.rsplit(".", 1)[1] for g in globals_ if g.startswith(("models.", "utils."))}
    if repo_classes & _PYTORCH_YOLOV4_HINTS:
        return "pytorch-yolov4"
    if repo_classes & _YOLOV9_HINTS:
        return "yolov9-repo"
    if repo_classes & _YOLOV7_HINTS:
        return "yolov7-repo"
    if repo_classes & {"Model", "DetectionModel"}:
        return "yolov5"
    if not unsafe:
        raise GraphoptError(
            f"{path}: holds only weights (a state_dict), not a model; export the module with the Python "
            "API frontends.export(module, out, names=…) instead"
        )
    foreign = [g for g in unsafe if not g.startswith("torch.")] or unsafe
    shown = ", ".join(foreign[:5])
    raise GraphoptError(
        f"{path}: unknown checkpoint family (it references {shown}); supported: "
        "YOLOv5, Ultralytics, WongKinYiu yolov7/yolov9/PyTorch_YOLOv4 (--repo)"
    )


@dataclass
class Checkpoint:
    """A checkpoint read as far as allowed: its family, referenced classes and (when loaded) its dict."""

    path: Path
    family: str
    globals: list[str]
    unsafe: list[str]
    data: dict[str, Any]
    repo: Path | None = None


def read_checkpoint(path: str | Path, *, repo: str | Path | None = None, trust: bool = False) -> Checkpoint:
    """Identify the family (no code runs), then unpickle as its family allows."""
    from frontends.checkpoint import pickle_globals, unsafe_globals
    from frontends.families import repo as repo_family
    from frontends.families import ultralytics, yolov5

    p = Path(path)
    globals_ = pickle_globals(p)
    unsafe = unsafe_globals(p)
    family = detect_family(p, globals_, unsafe)
    repo_path = Path(repo) if repo is not None else None
    if family == "ultralytics":
        data = ultralytics.read(p, unsafe, trust)
    elif family == "yolov5" and repo_path is None:
        data = yolov5.read(p, unsafe, trust)
    elif family == "pytorch-yolov4":
        from frontends.families.pytorch_yolov4 import STANDINS

        data = repo_family.read(p, family, unsafe, repo_path, trust, standins=STANDINS)
    else:
        data = repo_family.read(p, family, unsafe, repo_path, trust)
    return Checkpoint(p, family, globals_, unsafe, data, repo_path)


def load_checkpoint(path: str | Path, *, repo: str | Path | None = None, trust: bool = False) -> LoadedModel:
    from frontends.checkpoint import sha256
    from frontends.families import repo as repo_family
    from frontends.families import ultralytics, yolov5

    ckpt = read_checkpoint(path, repo=repo, trust=trust)
    if ckpt.family == "ultralytics":
        loaded = ultralytics.describe(ckpt.path, ckpt.data)
    elif ckpt.family == "pytorch-yolov4":
        from frontends.families import pytorch_yolov4

        loaded = pytorch_yolov4.describe(ckpt.path, ckpt.data, ckpt.repo)  # type: ignore[arg-type]
    elif ckpt.repo is None:
        loaded = yolov5.describe(ckpt.path, ckpt.data)
    else:
        loaded = repo_family.describe(ckpt.path, ckpt.family, ckpt.data, ckpt.repo)
    loaded.source = {"checkpoint": ckpt.path.name, "sha256": sha256(ckpt.path), **loaded.source}
    return loaded
