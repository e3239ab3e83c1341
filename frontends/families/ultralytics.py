"""Ultralytics checkpoints (YOLOv5u/v8/v9/v10/11), rebuilt with the installed `ultralytics` package.

Loaded with torch's weights_only unpickler, allow-listing only `ultralytics.nn` and `torch.nn`
module classes; a checkpoint needing anything else requires --trust.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from frontends.checkpoint import full_load, library_module_class, refuse_untrusted, safe_load
from frontends.families import LoadedModel
from frontends.families.common import (
    InferenceOutputs,
    head_layer,
    model_from_checkpoint,
    names_dict,
    set_export_mode,
    strides_list,
)
from frontends.inert import INERT_NAMES
from graphopt.core.errors import GraphoptError


def _import_ultralytics() -> None:
    # No network probe, no settings file in the user's home, no banner on stdout (it would break --json).
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "graphopt-ultralytics"))
    try:
        import ultralytics  # noqa: F401
    except ImportError as exc:
        raise GraphoptError(
            "this is an Ultralytics checkpoint and needs the 'ultralytics' package: pip install 'graphopt[torch]'"
        ) from exc


def read(path: Path, unsafe: list[str], trust: bool) -> dict[str, Any]:
    """The checkpoint dict, via the weights_only unpickler unless it needs more (then only with trust)."""
    _import_ultralytics()
    allow, rest = [], []
    for name in unsafe:
        cls = library_module_class(name)
        if cls is not None:
            allow.append((cls, name))
        elif name not in INERT_NAMES:
            rest.append(name)
    if rest and not trust:
        raise refuse_untrusted(path, rest)
    return full_load(path) if rest else safe_load(path, allow)


def describe(path: Path, ckpt: dict[str, Any]) -> LoadedModel:
    model = model_from_checkpoint(path, ckpt)
    head = head_layer(path, model)
    kind = type(head).__name__
    if kind not in ("Detect", "v10Detect"):
        raise GraphoptError(
            f"{path}: a model with a {kind} head; only detection (Detect) models are supported"
        )
    set_export_mode(head)
    notes = []
    if getattr(head, "end2end", False):
        # The one-to-one (NMS-free) branch; export the one-to-many branch that host NMS expects.
        head.end2end = False
        notes.append("end-to-end head: exported its one-to-many branch (decoded [1, 4+nc, N], host NMS)")
    train_args = ckpt.get("train_args") or {}
    source = {
        "date": str(ckpt.get("date") or ""),
        "ultralytics_version": str(ckpt.get("version") or ""),
        "yaml": str(getattr(model, "yaml", {}).get("yaml_file", ""))
        if isinstance(getattr(model, "yaml", None), dict)
        else "",
        "train_imgsz": train_args.get("imgsz") if isinstance(train_args, dict) else None,
    }
    return LoadedModel(
        module=InferenceOutputs(model).eval(),
        family="ultralytics",
        names=names_dict(getattr(model, "names", None), getattr(head, "nc", None)),
        strides=strides_list(getattr(model, "stride", None)),
        head="anchor-free",
        source=source,
        notes=notes,
    )
