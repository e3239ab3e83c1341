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


@contextlib.contextmanager
def stage(text: str) -> Iterator[None]:
    """A spinner on a terminal's stderr while a step without a natural progress count runs (stdout may
    carry --json); nothing when stderr is not a terminal."""
    import sys

    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(file=sys.stderr).status(text):
        yield


def activation_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every float intermediate tensor of one inference: what calibration holds per image."""
    sizes = 0
    for vi in list(model.graph.value_info) + list(model.graph.output):
        ttype = vi.type.tensor_type
        if ttype.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value for d in ttype.shape.dim] if ttype.HasField("shape") else []
        if dims and all(d > 0 for d in dims):
            sizes += int(np.prod(dims, dtype=np.int64)) * (4 if ttype.elem_type == onnx.TensorProto.FLOAT else 2)
    return sizes


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux, the Pi included), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(model: onnx.ModelProto) -> int:
    """Refuse before calibrating when one image's activations (plus onnxruntime's copies) cannot fit:
    an out-of-memory kill would leave only the shell's `Killed`."""
    need = 3 * activation_bytes(model) + 3 * model.ByteSize()  # session arena + returned copies + models
    free = available_memory()
    if free is not None and need > free:
        raise GraphoptError(
            f"quantize: calibration needs about {need / 2**30:.1f} GiB of memory, {free / 2**30:.1f} GiB are "
            "available; free memory or quantize a smaller input size (graphopt export --imgsz)"
        )
    return need


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
    """Calibrates once (cached ranges), then quantizes as often as the sensitivity/budget steps need.

    Calibration streams: each image's intermediate tensors are reduced into onnxruntime's range /
    histogram collectors and dropped before the next image runs, so peak memory is one image's
    activations whatever the number of samples (onnxruntime's own `quantize_static` keeps every
    image's activations until the end: ~260 MB per image on yolov5n at 640).
    """

    def __init__(self, model: onnx.ModelProto, config: QuantConfig, workdir: Path) -> None:
        self.model = model
        self.config = config
        self.workdir = workdir
        self.cache = workdir / f"calibration-{config.method}.json"
        self.source = workdir / "float.onnx"
        onnx.save_model(model, str(self.source))

    def calibrate(self, reader: ImageReader) -> None:
        """Collect activation ranges image by image into the range cache that `quantize` reads."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        with quiet():
            calibrator = create_calibrator(
                self.source,
                sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
                augmented_model_path=str(self.workdir / "augmented.onnx"),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[self.config.method]),
                extra_options=self._calibrator_options(),
            )
            while (feed := reader.get_next()) is not None:
                calibrator.collect_data(_OneFeed(feed))
        if not reader.used:
            raise ValueError("no calibration data")
        with quiet():
            save_tensors_data(calibrator.compute_data(), self.cache)
        del calibrator

    def _calibrator_options(self) -> dict[str, Any]:
        if self.config.method == "percentile":
            return {"percentile": self.config.percentile}
        return {}

    def quantize(
        self,
        nodes_to_quantize: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> onnx.ModelProto:
        """QDQ model from the cached ranges (`calibrate` must have run)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        act, weight = TARGET_TYPES[self.config.target]
        out = self.workdir / "quantized.onnx"
        with quiet():
            quantize_static(
                str(self.source),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=self.config.per_channel,
                activation_type=getattr(QuantType, act),
                weight_type=getattr(QuantType, weight),
                nodes_to_quantize=nodes_to_quantize,
                nodes_to_exclude=list(self.config.exclude) + list(exclude or []),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[self.config.method]),
                calibration_cache_path=str(self.cache),
            )
        return onnx.load(str(out))


class _OneFeed:
    """A CalibrationDataReader that yields one feed, so each image is reduced before the next runs."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


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
