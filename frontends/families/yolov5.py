"""Original ultralytics/yolov5 checkpoints, loaded without the yolov5 code.

The pickle references `models.yolo.Model`, `models.common.C3`, …; our zoo classes carry the same
state layout, so torch's weights_only unpickler rebuilds the model onto them (allow-listed under
the pickled names). No code from the file runs and no yolov5 package (with its hub downloads) is
needed. Checkpoints with classes we do not have go through `--repo PATH --trust` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frontends.checkpoint import full_load, library_module_class, refuse_untrusted, safe_load
from frontends.families import LoadedModel
from frontends.families.common import (
    InferenceOutputs,
    head_layer,
    model_from_checkpoint,
    names_dict,
    strides_list,
)
from frontends.inert import INERT_NAMES
from frontends.zoo import blocks
from frontends.zoo.models import YOLO
from graphopt.core.errors import GraphoptError

STANDINS: dict[str, type] = {
    "models.yolo.Model": YOLO,
    "models.yolo.DetectionModel": YOLO,
    "models.yolo.Detect": blocks.Detect,
    "models.common.Conv": blocks.Conv,
    "models.common.DWConv": blocks.DWConv,
    "models.common.Bottleneck": blocks.Bottleneck,
    "models.common.C3": blocks.C3,
    "models.common.SPPF": blocks.SPPF,
    "models.common.SPP": blocks.SPP,
    "models.common.Focus": blocks.Focus,
    "models.common.Concat": blocks.Concat,
}


def read(path: Path, unsafe: list[str], trust: bool) -> dict[str, Any]:
    """The checkpoint dict, rebuilt onto our classes by the weights_only unpickler (trust not needed)
    when it holds only classes we rebuild and inert data (frontends.inert); with --trust, anything
    else is unpickled fully while yolov5's own classes still map onto ours (no repo needed)."""
    allow: list = []
    missing = []
    for name in unsafe:
        if name in STANDINS:
            allow.append((STANDINS[name], name))
        elif (cls := library_module_class(name)) is not None:
            allow.append((cls, name))
        elif name not in INERT_NAMES:
            missing.append(name)
    if not missing:
        return safe_load(path, allow)
    repo_classes = [m for m in missing if m.startswith("models.")]
    if repo_classes:
        raise GraphoptError(
            f"{path}: a YOLOv5 checkpoint with classes graphopt does not rebuild ({', '.join(repo_classes[:5])}); "
            "load it with its own code: --repo PATH_TO_YOLOV5 --trust"
        )
    if not trust:
        raise refuse_untrusted(path, missing)
    return full_load(path, standins=STANDINS)


def describe(path: Path, ckpt: dict[str, Any]) -> LoadedModel:
    model = model_from_checkpoint(path, ckpt)
    head = head_layer(path, model)
    if not isinstance(head, blocks.Detect):
        raise GraphoptError(f"{path}: last layer is {type(head).__name__}, not a YOLOv5 Detect head")
    source = {"date": str(ckpt.get("date") or ""), "epoch": ckpt.get("epoch")}
    return LoadedModel(
        module=InferenceOutputs(model).eval(),
        family="yolov5",
        names=names_dict(getattr(model, "names", None), head.nc),
        strides=strides_list(getattr(model, "stride", head.stride)),
        head="yolov5",
        source=source,
        notes=[
            "rebuilt onto graphopt's YOLOv5 blocks with torch's weights_only unpickler (no code from the file ran)"
        ],
    )
