"""Numerical verification: feeds (real letterboxed images or seeded random) and output comparison.

The reference side runs with onnxruntime graph optimizations disabled, so what is compared is
the graph as written, not what ORT would rewrite it into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from graphopt.data import resolve_images
from graphopt.errors import GraphoptError
from graphopt.model import io_signature, read_metadata
from runtime.metadata import parse_metadata
from runtime.preprocess import letterbox, to_input_tensor
from runtime.sources import read_image

Feeds = dict[str, np.ndarray]


def session(model: onnx.ModelProto, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise GraphoptError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:300]}") from exc


def run(model: onnx.ModelProto, feeds: list[Feeds]) -> list[dict[str, np.ndarray]]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    results = []
    for feed in feeds:
        values = sess.run(names, {k: v for k, v in feed.items() if k in inputs})
        results.append(dict(zip(names, values, strict=True)))
    return results


def _is_image_input(entry: dict[str, Any]) -> bool:
    shape = entry["shape"]
    return entry["dtype"].startswith("float") and shape is not None and len(shape) == 4 and shape[1] == 3


class FeedSource:
    """Inputs for a model: real images from `data` for an image input, seeded random otherwise."""

    def __init__(self, data: str | Path | None = None, samples: int = 2, seed: int = 0) -> None:
        self.data = Path(data) if data is not None else None
        self.images = resolve_images(data) if data is not None else []
        self.samples = samples
        self.seed = seed
        self.description = ""

    def image_paths(self, count: int | None = None) -> list[Path]:
        return self.images[: count or len(self.images)]

    def feeds_for(self, model: onnx.ModelProto) -> list[Feeds]:
        inputs = io_signature(model)["inputs"]
        meta = parse_metadata(read_metadata(model))
        rng = np.random.default_rng(self.seed)
        feeds: list[Feeds] = [{} for _ in range(self.samples)]
        used_images = False
        for entry in inputs:
            shape = _concrete_shape(entry["shape"], meta.imgsz)
            if self.images and _is_image_input(entry):
                used_images = True
                tensors, skipped = self.image_batches((shape[2], shape[3]), meta.preprocess, self.samples)
                readable = list(tensors)
                if not readable:
                    raise GraphoptError(
                        f"{self.data}: none of its images could be read ({len(skipped)} unreadable)"
                    )
                for i, feed in enumerate(feeds):
                    feed[entry["name"]] = readable[i % len(readable)]
            else:
                for feed in feeds:
                    feed[entry["name"]] = _random(rng, shape, entry["dtype"])
        self.description = (
            f"{self.samples} real image(s)" if used_images else f"{self.samples} seeded random input(s)"
        )
        return feeds

    @property
    def labeled_yaml(self) -> Path | None:
        """The data.yaml when the images came with labels (accuracy can then be measured as mAP)."""
        return self.data if self.data is not None and self.data.suffix.lower() in (".yaml", ".yml") else None

    def image_batches(self, hw: tuple[int, int], preprocess: dict[str, Any], count: int):  # noqa: ANN201
        """Up to `count` letterboxed image tensors; unreadable files are skipped and reported back."""
        skipped: list[str] = []

        def generate():  # noqa: ANN202
            produced = 0
            for path in self.images:
                if produced >= count:
                    return
                try:
                    tensor = _image_tensor(path, hw, preprocess)
                except GraphoptError:
                    skipped.append(path.name)
                    continue
                produced += 1
                yield tensor

        return generate(), skipped


def _concrete_shape(shape: list[int | str] | None, imgsz: tuple[int, int] | None) -> list[int]:
    if shape is None:
        raise GraphoptError("model input has no shape; cannot make verification inputs")
    dims = []
    for axis, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif axis >= 2 and len(shape) == 4:
            dims.append((imgsz or (640, 640))[axis - 2])
        else:
            dims.append(1)
    return dims


def _image_tensor(path: Path, hw: tuple[int, int], preprocess: dict[str, Any]) -> np.ndarray:
    image = read_image(path)
    if image is None:
        raise GraphoptError(f"{path}: cannot read image")
    boxed, _ = letterbox(image, hw, pad_value=int(preprocess.get("letterbox_pad", 114)))
    return to_input_tensor(
        boxed, rgb=bool(preprocess.get("rgb", True)), scale=float(preprocess.get("scale", 1 / 255))
    )


def _random(rng: np.random.Generator, shape: list[int], dtype: str) -> np.ndarray:
    np_dtype = np.dtype(dtype) if dtype != "unknown" else np.dtype(np.float32)
    if np_dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(np_dtype)
    if np_dtype.kind in "iu":
        return rng.integers(0, 8, size=shape).astype(np_dtype)
    if np_dtype.kind == "b":
        return rng.random(shape) > 0.5
    raise GraphoptError(f"cannot make random input of type {dtype}")


@dataclass
class Comparison:
    ok: bool
    max_abs: float
    max_rel: float
    worst_output: str | None
    compared: list[str]
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "max_abs_err": self.max_abs,
            "max_rel_err": self.max_rel,
            "worst_output": self.worst_output,
            "outputs": self.compared,
            "reason": self.reason,
        }


def compare(
    reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]], atol: float, rtol: float
) -> Comparison:
    """Element-wise `|a - b| <= atol + rtol * |b|` over every reference output, by name: a reference
    output the candidate lacks fails (the pipeline drops announced removals from the reference)."""
    common = [k for k in reference[0] if k in candidate[0]]
    missing = [k for k in reference[0] if k not in candidate[0]]
    if missing:
        return Comparison(
            False, float("inf"), float("inf"), missing[0], common, f"output(s) {', '.join(missing)} missing"
        )
    if not common:
        return Comparison(False, float("inf"), float("inf"), None, [], "no output names in common")
    max_abs = max_rel = 0.0
    worst, ok, reason = None, True, ""
    for ref, cand in zip(reference, candidate, strict=True):
        for name in common:
            a, b = np.asarray(cand[name]), np.asarray(ref[name])
            if a.shape != b.shape:
                return Comparison(
                    False, float("inf"), float("inf"), name, common, f"shape {a.shape} != {b.shape}"
                )
            if a.size == 0:
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            both_nan = np.isnan(a64) & np.isnan(b64)
            diff = np.where(both_nan, 0.0, np.abs(a64 - b64))
            diff = np.where(np.isnan(diff), np.inf, diff)
            err = float(diff.max())
            big = np.abs(b64) > atol
            rel = float((diff[big] / np.abs(b64[big])).max()) if big.any() else 0.0
            if err > max_abs:
                max_abs, worst = err, name
            max_rel = max(max_rel, rel)
            if not np.all(diff <= atol + rtol * np.abs(np.nan_to_num(b64))):
                ok = False
                reason = reason or f"output '{name}' differs"
    return Comparison(ok, max_abs, max_rel, worst, common, reason)


def cosine(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> float:
    """Cosine similarity of all common outputs flattened together (for lossy passes)."""
    common = [k for k in reference[0] if k in candidate[0]]
    a = np.concatenate([np.ravel(r[k]).astype(np.float64) for r in reference for k in common])
    b = np.concatenate([np.ravel(c[k]).astype(np.float64) for c in candidate for k in common])
    if a.shape != b.shape:
        return float("nan")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float("nan")
