"""int8 machinery behind the `quantize` pass: calibration from images, onnxruntime's QDQ quantizer,
per-layer sensitivity, and the budget loop. The decisions (what stays float, which types for
which target) are the pass's; onnxruntime does the QDQ insertion and range calibration."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.errors import GraphoptError

# target → (activation type, weight type): what each CPU's int8 kernels want.
#   arm (Raspberry Pi 5, Cortex-A76 SDOT): signed × signed
#   x86 (VNNI / AVX2 u8·s8 instructions): unsigned activations × signed weights
TARGET_TYPES = {"arm": ("QInt8", "QInt8"), "x86": ("QUInt8", "QInt8")}
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def ensure_node_names(model: onnx.ModelProto) -> None:
    """onnxruntime's quantizer addresses nodes by name: give unnamed nodes unique ones."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime's quantizer prints progress to stdout and logs advice on the root logger: keep both
    out of our output (stdout carries --json)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class ImageReader:
    """onnxruntime CalibrationDataReader over letterboxed images, with a progress bar."""

    def __init__(self, input_name: str, tensors: Iterator[np.ndarray], total: int, desc: str) -> None:
        from tqdm import tqdm

        self.input_name = input_name
        self.bar = tqdm(total=total, desc=desc, unit="img", disable=None, leave=False)
        self.tensors = tensors
        self.used = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self.tensors, None)
        if tensor is None:
            self.bar.close()
            return None
        self.used += 1
        self.bar.update(1)
        return {self.input_name: tensor}


@dataclass
class QuantConfig:
    target: str
    method: str
    per_channel: bool
    percentile: float
    exclude: list[str] = field(default_factory=list)


class Quantizer:
    """Calibrates once (cached ranges), then quantizes as often as the sensitivity/budget steps need."""

    def __init__(self, model: onnx.ModelProto, config: QuantConfig, workdir: Path) -> None:
        self.model = model
        self.config = config
        self.workdir = workdir
        self.cache = workdir / f"calibration-{config.method}.json"
        self.source = workdir / "float.onnx"
        onnx.save_model(model, str(self.source))

    def calibrate(self, reader: ImageReader) -> None:
        self.quantize(reader=reader)  # writes the range cache as a side effect

    def quantize(
        self,
        nodes_to_quantize: list[str] | None = None,
        exclude: list[str] | None = None,
        reader: ImageReader | None = None,
    ) -> onnx.ModelProto:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        act, weight = TARGET_TYPES[self.config.target]
        out = self.workdir / "quantized.onnx"
        with quiet():
            quantize_static(
                str(self.source),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=self.config.per_channel,
                activation_type=getattr(QuantType, act),
                weight_type=getattr(QuantType, weight),
                nodes_to_quantize=nodes_to_quantize,
                nodes_to_exclude=list(self.config.exclude) + list(exclude or []),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[self.config.method]),
                extra_options={"CalibPercentile": self.config.percentile},
                calibration_cache_path=str(self.cache),
            )
        return onnx.load(str(out))


def dynamic_quantize(model: onnx.ModelProto, exclude: list[str], per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="graphopt-dyn-") as tmp:
        src, out = Path(tmp) / "float.onnx", Path(tmp) / "dynamic.onnx"
        onnx.save_model(model, str(src))
        with quiet():
            quantize_dynamic(
                str(src),
                str(out),
                per_channel=per_channel,
                weight_type=QuantType.QUInt8,
                nodes_to_exclude=exclude,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            )
        return onnx.load(str(out))


# --- measuring what int8 costs ---------------------------------------------------------------------


@dataclass
class HeadError:
    """Detection-relevant error of a candidate vs the float model on the same inputs."""

    score_error: float  # mean |Δ best class score| over anchors the float model finds confident
    box_error_px: float  # mean |Δ xywh| (pixels) over the same anchors
    cosine: float  # cosine similarity of the whole output

    def as_dict(self) -> dict[str, float]:
        return {"score_error": self.score_error, "box_error_px": self.box_error_px, "cosine": self.cosine}


def head_error(
    reference: list[np.ndarray], candidate: list[np.ndarray], head: str, confident: float = 0.05
) -> HeadError:
    from runtime.decode import head_arrays

    score_d, box_d, dots, na, nb = [], [], 0.0, 0.0, 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        rb, rs = head_arrays(ref, head)
        cb, cs = head_arrays(cand, head)
        best = rs.max(1)
        mask = best > confident
        if not mask.any():
            mask = best >= np.sort(best)[-min(100, len(best))]  # no confident anchor: the top ones
        score_d.append(np.abs(cs[mask].max(1) - best[mask]))
        box_d.append(np.abs(cb[mask] - rb[mask]).mean(1))
        a, b = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        dots += float(a @ b)
        na += float(a @ a)
        nb += float(b @ b)
    return HeadError(
        float(np.concatenate(score_d).mean()),
        float(np.concatenate(box_d).mean()),
        dots / np.sqrt(na * nb) if na and nb else float("nan"),
    )


def run_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], output: str) -> list[np.ndarray]:
    from graphopt.verify import session

    sess = session(model, optimize=True)
    return [sess.run([output], feed)[0] for feed in feeds]


def sensitivity(
    quantizer: Quantizer,
    candidates: list[str],
    feeds: list[dict[str, np.ndarray]],
    output: str,
    head: str,
    reference: list[np.ndarray],
) -> list[dict[str, Any]]:
    """Each candidate layer quantized alone: its effect on the head outputs, most harmful first."""
    from tqdm import tqdm

    rows = []
    for name in tqdm(candidates, desc="sensitivity", unit="layer", disable=None, leave=False):
        model = quantizer.quantize(nodes_to_quantize=[name])
        err = head_error(reference, run_outputs(model, feeds, output), head)
        rows.append({"node": name, **err.as_dict()})
    rows.sort(key=lambda r: (-r["score_error"], -r["box_error_px"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def map_loss(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    data_yaml: Path,
    workdir: Path,
    float_map: float | None = None,
) -> tuple[float, float, float]:
    """(float mAP50-95, int8 mAP50-95, loss in points) on a labeled data.yaml."""
    from graphopt.evaluate import evaluate

    if float_map is None:
        onnx.save_model(float_model, str(workdir / "eval-float.onnx"))
        float_map = evaluate(workdir / "eval-float.onnx", data_yaml, progress=False).map50_95
    onnx.save_model(quant_model, str(workdir / "eval-int8.onnx"))
    q_map = evaluate(workdir / "eval-int8.onnx", data_yaml, progress=False).map50_95
    return float_map, q_map, 100.0 * (float_map - q_map)


def require_images(count: int, skipped: list[str], wanted: int) -> None:
    if count == 0:
        raise GraphoptError(
            f"quantize: no usable calibration image ({len(skipped)} unreadable: {', '.join(skipped[:3])})"
        )
    if count < wanted and count < 8:
        raise GraphoptError(
            f"quantize: only {count} calibration image(s); give at least 8 (asked for {wanted})"
        )
