"""`graphopt bench`: latency of a model on this machine, with the Pi's temperature and throttling
(runtime only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import RuntimeModelError
from runtime.detector import open_detector
from runtime.sources import read_image
from runtime.stats import cpu_temp_c, latency_summary, throttled


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
    detector = open_detector(model, backend=backend, threads=threads)
    frame = None
    if image is not None:
        frame = read_image(image)
        if frame is None:
            raise RuntimeModelError(f"{image}: cannot read image")
    x = (
        detector.preprocess(frame)[0]
        if frame is not None
        else np.random.default_rng(0).random((1, 3, *detector.input_hw), dtype=np.float32)
    )
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
