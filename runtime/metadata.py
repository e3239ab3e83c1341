"""Model metadata keys shared by the compiler (writes them) and the runtime (reads them).

ONNX `metadata_props` is a flat string→string map, so structured values are JSON strings.
Ultralytics' own keys (`names`, `stride`, `imgsz`) are read as a fallback so that a peer's
export runs unchanged.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

PREFIX = "graphopt."
NAMES = PREFIX + "names"  # JSON object {"0": "person", ...}
IMGSZ = PREFIX + "imgsz"  # JSON [h, w]
STRIDES = PREFIX + "strides"  # JSON [8, 16, 32]
HEAD = PREFIX + "head"  # one of HEAD_FORMATS
PREPROCESS = PREFIX + "preprocess"  # JSON {"letterbox_pad": 114, "rgb": true, "scale": 1/255}
HISTORY = PREFIX + "history"  # JSON list of applied passes
MAIN_OUTPUT = PREFIX + "main_output"  # name of the inference output when a model has several
VERSION = PREFIX + "version"  # graphopt version that last wrote the model
SOURCE = PREFIX + "source"  # JSON: checkpoint family, file, sha256, exporter

HEAD_FORMATS = {
    "yolov5": "anchor-based, decoded in graph: [1, N, 5 + nc] (xywh, objectness, class scores)",
    "anchor-free": "decoded, no objectness: [1, 4 + nc, N] (xywh, class scores)",
    "end2end": "NMS in graph: num_dets, det_boxes, det_scores, det_classes",
}

DEFAULT_PREPROCESS: dict[str, Any] = {"letterbox_pad": 114, "rgb": True, "scale": 1.0 / 255.0}


def _loads(value: str) -> Any:
    """Parse a metadata value: JSON first, then a Python literal (Ultralytics writes `str(dict)`)."""
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _as_names(raw: Any) -> dict[int, str]:
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return dict(enumerate(map(str, raw)))
    return {}


def _as_hw(raw: Any) -> tuple[int, int] | None:
    if isinstance(raw, (int, float)):
        return int(raw), int(raw)
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        return int(raw[0]), int(raw[1])
    return None


@dataclass
class ModelMeta:
    """What the runtime needs to know about a model, from graphopt or Ultralytics metadata."""

    names: dict[int, str] = field(default_factory=dict)
    imgsz: tuple[int, int] | None = None
    strides: list[int] = field(default_factory=list)
    head: str | None = None
    preprocess: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PREPROCESS))
    main_output: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def parse_metadata(props: dict[str, str]) -> ModelMeta:
    """Read graphopt keys, falling back to Ultralytics' `names`/`stride`/`imgsz`."""
    meta = ModelMeta()
    names = _loads(props[NAMES]) if NAMES in props else _loads(props.get("names", "{}"))
    meta.names = _as_names(names)
    meta.imgsz = _as_hw(_loads(props[IMGSZ] if IMGSZ in props else props.get("imgsz", "null")))
    if STRIDES in props:
        meta.strides = [int(s) for s in _loads(props[STRIDES])]
    elif "stride" in props:
        top = int(_loads(props["stride"]))
        meta.strides = [s for s in (8, 16, 32, 64) if s <= top]
    meta.head = props.get(HEAD)
    if PREPROCESS in props:
        meta.preprocess.update(_loads(props[PREPROCESS]))
    meta.main_output = props.get(MAIN_OUTPUT)
    history = _loads(props.get(HISTORY, "[]"))
    meta.history = history if isinstance(history, list) else []
    return meta
