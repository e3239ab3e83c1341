"""Helpers shared by the checkpoint families."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphopt.core.errors import GraphoptError


def model_from_checkpoint(path: Any, ckpt: dict[str, Any]) -> nn.Module:
    """The EMA weights when present (what YOLO trainers evaluate), as fp32, in eval mode."""
    model = next((m for m in (ckpt.get("ema"), ckpt.get("model")) if isinstance(m, nn.Module)), None)
    if not isinstance(model, nn.Module):
        raise GraphoptError(
            f"{path}: no model object under 'ema' or 'model' (keys: {', '.join(map(str, ckpt))})"
        )
    _check_complete(path, model)
    return model.float().eval()


def _check_complete(path: Any, model: nn.Module) -> None:
    """Every module restored from the file carries nn.Module's own bookkeeping (a damaged or crafted
    checkpoint can restore a module from partial state, which fails later in confusing ways)."""
    stack, seen = [model], set()
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        state = vars(module)
        for key in ("_parameters", "_buffers", "_modules"):
            if not isinstance(state.get(key), dict):
                raise GraphoptError(
                    f"{path}: corrupt checkpoint ({type(module).__name__} restored without its '{key}')"
                )
        for child in state["_modules"].values():
            if child is not None and not isinstance(child, nn.Module):
                raise GraphoptError(f"{path}: corrupt checkpoint (a sub-module is a {type(child).__name__})")
            if child is not None:
                stack.append(child)


def head_layer(path: Any, model: nn.Module) -> nn.Module:
    """The model's last layer (YOLO models keep their layers in `model.model`), or a one-line error."""
    layers = getattr(model, "model", None)
    try:
        head = layers[-1] if layers is not None and len(layers) else None
    except (TypeError, IndexError, KeyError):
        head = None
    if not isinstance(head, nn.Module):
        raise GraphoptError(f"{path}: unexpected model layout (no layers under .model)")
    return head


def names_dict(names: Any, nc: int | None = None) -> dict[int, str]:
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return dict(enumerate(map(str, names)))
    return {i: f"class{i}" for i in range(nc or 0)}


def strides_list(stride: Any) -> list[int]:
    if stride is None:
        return []
    return [int(s) for s in torch.as_tensor(stride).float().flatten().tolist()]


def first_outputs(y: Any) -> Any:
    """Decoded inference outputs of a YOLO forward in eval mode, without the training-form extras.

    Heads return `pred`, `(pred, raw_maps)`, `(pred,)`, or for dual heads `[aux, main]`
    (in export mode) / `([aux, main], raw)`. A decoded output is 3-D ([1, N, 5+nc] or [1, 4+nc, N]);
    raw per-scale maps (4-D/5-D) are never taken for it: a head that returns only those is refused
    rather than exported as if its first map were the prediction.
    """
    if torch.is_tensor(y):
        if y.dim() != 3:
            raise GraphoptError(f"the model returns a {y.dim()}-D tensor, not a decoded detection output")
        return y
    if isinstance(y, (list, tuple)) and y:
        if all(torch.is_tensor(t) and t.dim() == 3 for t in y):
            return tuple(y) if len(y) > 1 else y[0]
        if torch.is_tensor(y[0]) and y[0].dim() == 3:
            return y[0]
        if isinstance(y[0], (list, tuple)) and y[0] and all(torch.is_tensor(t) and t.dim() == 3 for t in y[0]):
            return tuple(y[0]) if len(y[0]) > 1 else y[0][0]
        if all(torch.is_tensor(t) and t.dim() in (4, 5) for t in y):
            raise GraphoptError(
                f"the model returns {len(y)} raw head maps ({', '.join(str(list(t.shape)) for t in y)}) "
                "instead of decoded predictions (is the head in training or export mode?)"
            )
    raise GraphoptError(f"cannot find the inference output in the model's output ({type(y).__name__})")


class InferenceOutputs(nn.Module):
    """Wraps a model so that export sees only its inference outputs (no leaked training-form maps)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return first_outputs(self.model(x))


def set_export_mode(head: nn.Module) -> None:
    """Heads that know an `export` flag return only their decoded predictions with it set."""
    if hasattr(head, "export"):
        head.export = True
