"""Inputs for checking and calibrating a model: real letterboxed images from `--data` for an image
input (through the model's own preprocessing), seeded random values otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.core.errors import GraphoptError
from graphopt.core.model import io_signature, read_metadata
from graphopt.core.ort_session import Feed
from graphopt.data.datasets import resolve_images
from runtime.metadata import input_size_problem, parse_metadata
from runtime.preprocess import Preprocess
from runtime.sources import ImageProblem, load_image

# A made-up input larger than this (1 GiB of float32) is not a model's: its declared shape is damaged.
MAX_FEED_ELEMENTS = 1 << 28


class Feeds(list):
    """The feeds for one model (a list of {input name: array}) and what they are, for reports."""

    def __init__(self, feeds: list[Feed], description: str) -> None:
        super().__init__(feeds)
        self.description = description


class ImageStream:
    """Up to `count` image tensors, read lazily (calibration streams them). Unreadable files (and images
    above the megapixel limit) are skipped; `skipped` names them, `reasons` says why, both complete once
    the stream is exhausted."""

    def __init__(self, paths: list[Path], hw: tuple[int, int], preprocess: Preprocess, count: int) -> None:
        self.paths, self.hw, self.preprocess, self.count = paths, hw, preprocess, count
        self.skipped: list[str] = []
        self.reasons: list[str] = []
        self.problems: list[ImageProblem] = []
        self.produced = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            if self.produced >= self.count:
                return
            try:
                image = load_image(path)
            except ImageProblem as exc:
                self.skipped.append(path.name)
                self.reasons.append(f"{path.name}: {exc.reason}")
                self.problems.append(exc)
                continue
            self.produced += 1
            yield self.preprocess(image, self.hw)[0]


class FeedSource:
    """Where feeds come from: `data` (folder, image or data.yaml) for image inputs, else seeded random."""

    def __init__(self, data: str | Path | None = None, samples: int = 2, seed: int = 0) -> None:
        self.data = Path(data) if data is not None else None
        self.images = resolve_images(data) if data is not None else []
        self.samples = samples
        self.seed = seed

    @property
    def labeled_yaml(self) -> Path | None:
        """The data.yaml when the images came with labels (accuracy can then be measured as mAP)."""
        return self.data if self.data is not None and self.data.suffix.lower() in (".yaml", ".yml") else None

    def image_stream(self, hw: tuple[int, int], preprocess: dict[str, Any] | None, count: int) -> ImageStream:
        return ImageStream(self.images, hw, Preprocess.from_meta(preprocess), count)

    def feeds_for(self, model: onnx.ModelProto) -> Feeds:
        """`samples` feeds for `model`'s inputs."""
        inputs = io_signature(model)["inputs"]
        meta = parse_metadata(read_metadata(model))
        rng = np.random.default_rng(self.seed)
        feeds: list[Feed] = [{} for _ in range(self.samples)]
        used_images = False
        for entry in inputs:
            shape = _concrete_shape(entry["shape"], meta.imgsz)
            if self.images and _is_image_input(entry):
                used_images = True
                stream = self.image_stream((shape[2], shape[3]), meta.preprocess, self.samples)
                readable = list(stream)
                if not readable:
                    raise GraphoptError(none_readable(self.data, stream))
                for i, feed in enumerate(feeds):
                    feed[entry["name"]] = readable[i % len(readable)]
            else:
                for feed in feeds:
                    feed[entry["name"]] = _random(rng, shape, entry["dtype"])
        kind = "real image(s)" if used_images else "seeded random input(s)"
        return Feeds(feeds, f"{self.samples} {kind}")


def none_readable(data: Path | None, stream: ImageStream) -> str:
    """The one line for "no image could be used", with the first reason (a single `--data huge.png` says
    why it was refused)."""
    if len(stream.problems) == 1 and (data is None or stream.problems[0].path == data):
        return str(stream.problems[0])
    first = f"; {stream.reasons[0]}" if stream.reasons else ""
    return f"{data}: none of its images could be read ({len(stream.skipped)} unreadable{first})"


def _is_image_input(entry: dict[str, Any]) -> bool:
    shape = entry["shape"]
    return entry["dtype"].startswith("float") and shape is not None and len(shape) == 4 and shape[1] == 3


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
    if len(dims) == 4 and dims[1] == 3 and (problem := input_size_problem(dims[2], dims[3])):
        raise GraphoptError(f"model input {shape}: {problem}")
    if int(np.prod(dims, dtype=np.float64)) > MAX_FEED_ELEMENTS:
        raise GraphoptError(
            f"model input {shape} has {float(np.prod(dims, dtype=np.float64)):.3g} elements, more than a "
            f"made-up check input may have ({MAX_FEED_ELEMENTS:,}); its declared shape looks damaged"
        )
    return dims


def _random(rng: np.random.Generator, shape: list[int], dtype: str) -> np.ndarray:
    np_dtype = np.dtype(dtype) if dtype != "unknown" else np.dtype(np.float32)
    if np_dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(np_dtype)
    if np_dtype.kind in "iu":
        return rng.integers(0, 8, size=shape).astype(np_dtype)
    if np_dtype.kind == "b":
        return rng.random(shape) > 0.5
    raise GraphoptError(f"cannot make random input of type {dtype}")
