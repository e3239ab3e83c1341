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
# JSON {"letterbox_pad": 114, "rgb": true, "scale": 1/255, "mode": "letterbox" | "resize"}; no "mode": letterbox
PREPROCESS = PREFIX + "preprocess"
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
# How the frame becomes the network input: letterbox (keep aspect, pad) or resize (stretch to the input).
PREPROCESS_MODES = ("letterbox", "resize")


# A metadata value larger than this is not something graphopt or Ultralytics wrote.
MAX_VALUE_CHARS = 4 << 20

# The one bound on a network input's side, wherever a size comes from (export --imgsz, a Darknet
# [net], metadata, a model's declared shape, eval --imgsz): memory grows with its square — a 60000 px
# Darknet input ran into the OOM killer at 22 GB — and YOLO models are trained at 320-1536.
MAX_INPUT_SIDE = 4096


def input_size_problem(h: Any, w: Any) -> str | None:
    """Why (h, w) cannot be a network input size, or None when it can (1..MAX_INPUT_SIDE each)."""
    for value in (h, w):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INPUT_SIDE:
            return f"input size {h}x{w} is outside 1..{MAX_INPUT_SIDE} pixels a side"
    return None


class MetadataError(ValueError):
    """A `graphopt.*` metadata value that cannot be what graphopt wrote (damaged or hostile model)."""


def _loads(value: str) -> Any:
    """Parse a metadata value: JSON first, then a Python literal (Ultralytics writes `str(dict)`)."""
    if len(value) > MAX_VALUE_CHARS:
        raise MetadataError(f"a metadata value of {len(value):,} characters")
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        pass
    except RecursionError:
        raise MetadataError("a metadata value nested too deeply") from None
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError):
        return value
    except RecursionError:
        raise MetadataError("a metadata value nested too deeply") from None


def _as_names(raw: Any) -> dict[int, str]:
    if isinstance(raw, dict):
        return {_index(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return dict(enumerate(map(str, raw)))
    raise ValueError(f"expected a mapping of class ids to names, got {type(raw).__name__}")


def _index(key: Any) -> int:
    value = int(key)
    if value < 0 or str(key).strip() != str(value):
        raise ValueError(f"class id {key!r} is not a non-negative integer")
    return value


def _positive(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
        raise ValueError(f"{value!r} is not a positive integer")
    return int(value)


def _as_hw(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        hw = _positive(raw), _positive(raw)
    elif isinstance(raw, (list, tuple)) and len(raw) == 2:
        hw = _positive(raw[0]), _positive(raw[1])
    else:
        raise ValueError(f"expected N or [h, w], got {raw!r}"[:120])
    if problem := input_size_problem(*hw):
        raise ValueError(problem)
    return hw


def _as_preprocess(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping")
    out: dict[str, Any] = {}
    if "mode" in raw:
        if raw["mode"] not in PREPROCESS_MODES:
            raise ValueError(
                f"'mode' = {str(raw['mode'])[:40]!r} (expected one of {', '.join(PREPROCESS_MODES)})"
            )
        out["mode"] = raw["mode"]
    for key, kind in (("letterbox_pad", int), ("rgb", bool), ("scale", float)):
        if key not in raw:
            continue
        value = raw[key]
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not ok or (key == "letterbox_pad" and not 0 <= value <= 255):
            raise ValueError(f"'{key}' = {value!r}"[:120])
        out[key] = kind(value)
    return out


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
    """Read graphopt keys, falling back to Ultralytics' `names`/`stride`/`imgsz`.

    A malformed `graphopt.*` value raises MetadataError naming the key (graphopt wrote it, so the
    model is damaged); a malformed foreign key is ignored, as if absent.
    """
    meta = ModelMeta()
    own = _Strict(props)
    foreign = _Lenient(props)
    meta.names = own.get(NAMES, _as_names) if NAMES in props else foreign.get("names", _as_names) or {}
    meta.imgsz = own.get(IMGSZ, _as_hw) if IMGSZ in props else foreign.get("imgsz", _as_hw)
    if STRIDES in props:
        meta.strides = own.get(STRIDES, lambda raw: [_positive(v) for v in raw])
    elif "stride" in props:
        top = foreign.get("stride", _positive)
        meta.strides = [s for s in (8, 16, 32, 64) if top and s <= top]
    meta.head = own.get(HEAD, _as_head) if HEAD in props else None
    if PREPROCESS in props:
        meta.preprocess.update(own.get(PREPROCESS, _as_preprocess))
    if MAIN_OUTPUT in props:
        meta.main_output = props[MAIN_OUTPUT]
    if HISTORY in props:
        meta.history = own.get(HISTORY, _as_list)
    return meta


def _as_head(raw: Any) -> str:
    if raw not in HEAD_FORMATS:
        raise ValueError(f"unknown head format {str(raw)[:60]!r} (known: {', '.join(HEAD_FORMATS)})")
    return raw


def _as_list(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError("expected a list")
    return raw


class _Strict:
    def __init__(self, props: dict[str, str]) -> None:
        self.props = props

    def get(self, key: str, convert: Any) -> Any:
        raw = self.props[key]
        try:
            value = _loads(raw) if key != HEAD else raw
            return convert(value)
        except MetadataError as exc:
            raise MetadataError(f"model metadata '{key}' is malformed ({exc})") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise MetadataError(f"model metadata '{key}' is malformed ({str(exc)[:160]})") from None


class _Lenient(_Strict):
    def get(self, key: str, convert: Any) -> Any:
        if key not in self.props:
            return None
        try:
            return super().get(key, convert)
        except MetadataError:
            return None
