"""`graphopt bench`: latency of a model on this machine, with the Pi's temperature and throttling
(runtime only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.detector import open_detector
from runtime.sources import load_image
from runtime.stats import cpu_temp_c, latency_summary, throttled


def random_input(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Seeded random values in the input's declared dtype: floats in [0, 1) (what a letterboxed image
    is), integers over their type's range up to 0..255 (pixels), booleans half true."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 255), size=shape, endpoint=True).astype(dtype)
    return rng.random(shape) > 0.5


def run_bench(
    model: str | Path,
    *,
    backend: str | None = None,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 5,
    image: str | Path | None = None,
) -> dict[str, Any]:
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be at least 1 and warmup at least 0")
    frame = load_image(image) if image is not None else None  # refused before the model loads
    detector = open_detector(model, backend=backend, threads=threads)
    if frame is not None:
        x = detector.preprocess(frame)[0]
    else:
        shape = detector.backend.input_shape
        channels = shape[1] if len(shape) == 4 and shape[1] > 0 else 3
        x = random_input((1, channels, *detector.input_hw), detector.backend.input_dtype)
    temp_before = cpu_temp_c()
    for _ in range(warmup):
        detector.backend.run(x)
    infer = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector.backend.run(x)
        infer.append((time.perf_counter() - t0) * 1000)
    result: dict[str, Any] = {
        "model": str(model),
        "backend": detector.backend.name,
        "threads": getattr(detector.backend, "threads", threads),
        "imgsz": list(detector.input_hw),
        "runs": runs,
        **latency_summary(infer),
    }
    if frame is not None:
        full = []
        for _ in range(runs):
            t0 = time.perf_counter()
            detector(frame)
            full.append((time.perf_counter() - t0) * 1000)
        result["end_to_end"] = latency_summary(full)
    result["cpu_temp_c"] = cpu_temp_c()
    result["cpu_temp_start_c"] = temp_before
    result["throttled"] = throttled()
    return result
