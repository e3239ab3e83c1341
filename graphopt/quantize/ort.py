"""The `quantize` pass's onnxruntime adapter: streaming calibration from images, QDQ insertion with
onnxruntime's quantizer, dynamic quantization, and the memory pre-flight. The decisions (what stays
float, which types for which target) are the pass's; onnxruntime inserts QDQ and computes ranges."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from graphopt.core.errors import GraphoptError

# target → (activation type, weight type): what each CPU's int8 kernels want.
#   arm (Raspberry Pi 5, Cortex-A76 SDOT): signed × signed
#   x86 (VNNI / AVX2 u8·s8 instructions): unsigned activations × signed weights
TARGET_TYPES = {"arm": ("QInt8", "QInt8"), "x86": ("QUInt8", "QInt8")}
Target = Literal["arm", "x86"]
Method = Literal["minmax", "percentile", "entropy", "mse"]


def x86_without_vnni() -> bool:
    """An x86 host whose int8 kernels have no VNNI (AVX2 only): onnxruntime's u8·s8 kernels there sum
    pairs of products in 16 bits (vpmaddubsw), which saturate with 8-bit weights; onnxruntime advises 7-bit
    weights (reduce_range) on such CPUs. Measured on an AVX2-only EPYC, yolov5n at 640, split.yaml
    holdout: U8S8 loses 2.2 mAP50-95 points with 8-bit weights, 1.3 with 7-bit."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return False
    return flags is not None and not {"avx512_vnni", "avx_vnni"} & set(flags)
# onnxruntime's calibrator each method runs on; mse: the percentile calibrator's histograms, with
# graphopt's threshold search (graphopt.quantize.mse) instead of a fixed percentile
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": "Percentile"}


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
    reduce_range: bool = False  # 7-bit weights (x86 without VNNI: see x86_without_vnni)


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
        # conv input means (graphopt.quantize.bias_correction): when set, every model `quantize`
        # returns has its int8 biases corrected for the weights' rounding
        self.bias_means: dict[str, np.ndarray] | None = None
        self.bias_correction: Any = None  # the last correction's BiasCorrection
        onnx.save_model(model, str(self.source))

    def calibrate(self, reader: ImageReader) -> None:
        """Collect activation ranges image by image into the range cache that `quantize` reads."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        from graphopt.quantize.histogram import UniformAbsHistogram

        with quiet():
            calibrator = create_calibrator(
                self.source,
                sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
                augmented_model_path=str(self.workdir / "augmented.onnx"),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[self.config.method]),
                extra_options=self._calibrator_options(),
            )
            # percentile: our collector counts without sorting each tensor (quantize/histogram.py)
            calibrator.collector = UniformAbsHistogram.replacing(
                calibrator, "mse" if self.config.method == "mse" else "percentile"
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
                reduce_range=self.config.reduce_range,
            )
        quantized = onnx.load(str(out))
        if self.bias_means is not None:
            from graphopt.quantize.bias_correction import correct_biases

            self.bias_correction = correct_biases(quantized, self.model, self.bias_means)
        return quantized


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


def require_images(count: int, skipped: list[str], wanted: int) -> None:
    """`skipped`: each unreadable image with its reason ("x.png: not a readable image")."""
    if count == 0:
        raise GraphoptError(
            f"quantize: no usable calibration image ({len(skipped)} unreadable: {'; '.join(skipped[:3])})"
        )
    if count < wanted and count < 8:
        raise GraphoptError(
            f"quantize: only {count} calibration image(s); give at least 8 (asked for {wanted})"
        )
