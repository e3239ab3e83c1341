"""PyTorch → ONNX, once, as trained: verified against torch, with graphopt metadata.

Exporter: torch.onnx's TorchScript exporter (`dynamo=False`) with constant folding off. Measured
on yolov9t-ball (torch 2.14.1): it keeps all 227 BatchNormalization nodes and the 42 RepConv 1x1
branches (its eval-mode BN folding runs only with constant folding on), needs no onnxscript, and
exports in ~1.5 s. The dynamo exporter keeps BN only with `optimize=False`, at 2278 nodes and 14 s.
Folding and simplification are graphopt's passes, checked numerically there.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

# DEFAULT_ATOL/RTOL (the tolerance: |onnx - torch| <= atol + rtol * |torch|) and DEFAULT_OPSET live
# in frontends/__init__ (torch-free). Box coordinates are pixels up to 640 and fp32 noise grows with
# them (on 16 COCO128 images, torch fp32 itself differs from torch fp64 by up to 2.1e-3 px on
# yolov5n), so the relative term covers boxes while atol holds scores in [0, 1].
from frontends import DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL  # noqa: F401 - re-exported
from frontends.families import LoadedModel
from graphopt.core.errors import GraphoptError, VerificationError
from graphopt.core.model import op_histogram, save_model, write_metadata
from runtime import metadata as keys


@dataclass
class ExportReport:
    output: str
    family: str
    imgsz: tuple[int, int]
    opset: int
    inputs: str  # what the verification ran on
    max_abs_diff: float
    per_output: dict[str, float]
    atol: float
    rtol: float
    ops: dict[str, int]
    seconds: float
    outputs: list[dict[str, Any]] = field(default_factory=list)
    main_output: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "family": self.family,
            "imgsz": list(self.imgsz),
            "opset": self.opset,
            "verified_on": self.inputs,
            "max_abs_diff": self.max_abs_diff,
            "per_output_max_abs_diff": self.per_output,
            "atol": self.atol,
            "rtol": self.rtol,
            "ops": self.ops,
            "conv": self.ops.get("Conv", 0),
            "batchnorm": self.ops.get("BatchNormalization", 0),
            "outputs": self.outputs,
            "main_output": self.main_output,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
        }


def _hw(imgsz: int | tuple[int, int] | list[int], strides: list[int]) -> tuple[int, int]:
    from runtime.metadata import input_size_problem

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    if problem := input_size_problem(h, w):
        raise GraphoptError(f"--imgsz: {problem}")
    top = max(strides or [32])
    if h % top or w % top:
        raise GraphoptError(
            f"--imgsz {h}x{w} must be a positive multiple of the model's largest stride ({top})"
        )
    return h, w


def input_tensor(hw: tuple[int, int], image: str | Path | None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """A letterboxed real image (the runtime's preprocessing) when given, else seeded uniform noise."""
    if image is None:
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(1, 3, *hw, generator=gen), "seeded random input"
    from runtime.preprocess import Preprocess
    from runtime.sources import ImageProblem, load_image

    try:
        frame = load_image(image)
    except ImageProblem as exc:
        raise GraphoptError(str(exc)) from None
    x, _ = Preprocess.from_meta(keys.DEFAULT_PREPROCESS)(frame, hw)  # what the export's metadata says
    return torch.from_numpy(x), f"image {Path(image).name}"


def export_loaded(
    loaded: LoadedModel,
    out: str | Path,
    *,
    imgsz: int | tuple[int, int] = 640,
    opset: int = DEFAULT_OPSET,
    image: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ExportReport:
    start = time.perf_counter()
    hw = _hw(imgsz, loaded.strides)
    module = loaded.module.eval()
    x, described = input_tensor(hw, image)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")  # a training repo's deprecation noise; stdout may carry --json
        reference = module(x)
    reference = [reference] if torch.is_tensor(reference) else list(reference)
    if len(reference) != len(loaded.output_names):
        raise GraphoptError(
            f"the model returns {len(reference)} outputs, expected {len(loaded.output_names)} ({loaded.family})"
        )
    with tempfile.TemporaryDirectory(prefix="graphopt-export-") as tmp:
        raw_path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), _export_errors(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                module,
                (x,),
                str(raw_path),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=False,  # keeps BatchNormalization: folding is graphopt's job
                input_names=["images"],
                output_names=loaded.output_names,
            )
        model = onnx.load(str(raw_path))
    model.producer_name = "graphopt.frontends"
    write_metadata(model, _metadata(loaded, hw))
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        # A fake-quantized (QAT) model: torch and onnxruntime may round a value at a quantization step
        # differently, which moves it by one step; the tolerance allows that, and the report says so.
        atol, rtol = max(atol, 0.05), max(rtol, 2e-3)
        loaded.notes.append(
            "fake-quantized model exported as QDQ: verified with tolerance "
            f"{atol:g} + {rtol:g}·|value| (one quantization step of rounding may differ)"
        )
    per_output, within = _verify(model, x, reference, loaded.output_names, atol, rtol)
    worst = max(per_output.values())
    if not within:
        raise VerificationError(
            f"exported ONNX differs from torch: max abs diff {worst:.3g} (tolerance {atol:g} + {rtol:g}·|value|) "
            f"on {described}; nothing was written"
        )
    path = save_model(model, out)
    outputs = [
        {"name": o.name, "shape": [d.dim_value for d in o.type.tensor_type.shape.dim]}
        for o in model.graph.output
    ]
    return ExportReport(
        output=str(path),
        family=loaded.family,
        imgsz=hw,
        opset=opset,
        inputs=described,
        max_abs_diff=worst,
        per_output=per_output,
        atol=atol,
        rtol=rtol,
        ops=op_histogram(model),
        seconds=time.perf_counter() - start,
        outputs=outputs,
        main_output=loaded.main_output,
        notes=list(loaded.notes),
    )


@contextlib.contextmanager
def _export_errors() -> Iterator[None]:
    """torch.onnx errors carry the whole TorchScript graph: keep the sentence that says what failed."""
    try:
        yield
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
        text = str(exc).split("[Caused by", 1)[0].strip().splitlines()
        raise GraphoptError(f"torch.onnx could not export the model: {(text or ['?'])[0][:300]}") from exc


def _metadata(loaded: LoadedModel, hw: tuple[int, int]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        keys.NAMES: {str(k): v for k, v in loaded.names.items()},
        keys.IMGSZ: list(hw),
        keys.STRIDES: loaded.strides,
        keys.HEAD: loaded.head,
        keys.PREPROCESS: keys.DEFAULT_PREPROCESS,
        keys.SOURCE: {
            "family": loaded.family,
            "exporter": f"torch.onnx TorchScript (torch {torch.__version__})",
            **loaded.source,
        },
    }
    if loaded.main_output:
        meta[keys.MAIN_OUTPUT] = loaded.main_output
    return meta


def _verify(
    model: onnx.ModelProto,
    x: torch.Tensor,
    reference: list[torch.Tensor],
    names: list[str],
    atol: float,
    rtol: float,
) -> tuple[dict[str, float], bool]:
    """onnxruntime (graph optimizations off: the graph as written) against torch on the same input."""
    from graphopt.core.compare import abs_diff, within
    from graphopt.core.ort_session import session

    got = session(model).run(names, {"images": x.numpy()})
    per_output, ok = {}, True
    for name, g, r in zip(names, got, reference, strict=True):
        ref = r.numpy()
        if np.isnan(ref).any():
            raise GraphoptError(
                f"the model's own output '{name}' contains NaN on this input; nothing to export"
            )
        per_output[name] = float(abs_diff(g, ref).max())
        ok &= within(g, ref, atol, rtol)
    return per_output, ok
