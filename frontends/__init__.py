"""PyTorch → ONNX exporters per checkpoint family, and the reference YOLO zoo used by tests.

from frontends import export
export("yolov5n.pt", "yolov5n.onnx", imgsz=640)            # a checkpoint (family detected)
export(my_module, "m.onnx", names={0: "ball"}, head="anchor-free", strides=[8, 16, 32])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ExportReport", "LoadedModel", "export", "load_checkpoint", "loaded_from_module"]

# The exporter's defaults (frontends.exporter uses these): opset, and the torch-vs-onnxruntime tolerance.
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-5

# torch is imported only by what needs it: `frontends.darknet` (no torch) imports this package too.
_LAZY = {
    "ExportReport": "frontends.exporter",
    "export_loaded": "frontends.exporter",
    "LoadedModel": "frontends.families",
    "load_checkpoint": "frontends.families",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'frontends' has no attribute {name!r}")


def check_request(imgsz: int | tuple[int, int] | list[int] | None, image: str | Path | None) -> None:
    """What an export is asked for, checked before any checkpoint or cfg is read: the input size within
    the one bound on input sizes (runtime.metadata.MAX_INPUT_SIDE; 0 is refused, never taken as the
    default) and the verification image usable (its header is read before it is decoded)."""
    from graphopt.core.errors import GraphoptError
    from runtime.metadata import input_size_problem
    from runtime.sources import ImageProblem, load_image

    if imgsz is not None:
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        if problem := input_size_problem(h, w):
            raise GraphoptError(f"--imgsz: {problem}")
    if image is not None:
        try:
            load_image(image)
        except ImageProblem as exc:
            raise GraphoptError(str(exc)) from None


def loaded_from_module(
    module: Any,
    *,
    names: dict[int, str] | list[str] | None = None,
    head: str | None = None,
    strides: list[int] | None = None,
    output_names: list[str] | None = None,
    main_output: str | None = None,
) -> Any:
    """Describe any torch.nn.Module for export; zoo models describe themselves (their `meta`)."""
    from frontends.families import LoadedModel
    from frontends.families.common import InferenceOutputs, names_dict

    meta = getattr(module, "meta", None)
    names = names if names is not None else (meta.names if meta else None)
    if names is None or head is None and meta is None:
        raise ValueError("a plain module needs names= and head= ('yolov5' or 'anchor-free')")
    return LoadedModel(
        module=InferenceOutputs(module).eval(),
        family="module",
        names=names_dict(names),
        strides=list(strides or (meta.strides if meta else [8, 16, 32])),
        head=head or meta.head,
        output_names=list(output_names or (meta.output_names if meta else ["output0"])),
        main_output=main_output or (meta.main_output if meta else None),
        source={"module": type(module).__name__},
    )


def export(
    model: str | Path | Any,
    out: str | Path,
    *,
    imgsz: int | tuple[int, int] = 640,
    opset: int = DEFAULT_OPSET,
    repo: str | Path | None = None,
    trust: bool = False,
    image: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    **module_info: Any,
) -> Any:
    """Export a checkpoint path or a torch.nn.Module to ONNX, verified against torch (an ExportReport)."""
    from frontends.exporter import export_loaded
    from frontends.families import load_checkpoint

    check_request(imgsz, image)
    if isinstance(model, (str, Path)):
        loaded = load_checkpoint(model, repo=repo, trust=trust)
    else:
        loaded = loaded_from_module(model, **module_info)
    return export_loaded(loaded, out, imgsz=imgsz, opset=opset, image=image, atol=atol, rtol=rtol)
