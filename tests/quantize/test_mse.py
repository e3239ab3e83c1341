"""calibration=mse: the threshold of least expected int8 error, from a histogram of |x|."""

from __future__ import annotations

import numpy as np

from graphopt.quantize.histogram import UniformAbsHistogram
from graphopt.quantize.mse import mse_threshold


def _int8_mse(values: np.ndarray, low: float, high: float) -> float:
    """The squared error of quantizing `values` to 256 levels over [low, high] (as onnxruntime)."""
    step = (high - low) / 255
    q = np.clip(np.round((values - low) / step), 0, 255) * step + low
    return float(np.mean((values - q) ** 2))


def _threshold(values: np.ndarray) -> tuple[float, float, float]:
    hist, edges = np.histogram(np.abs(values), bins=2048)
    low, high = float(values.min()), float(values.max())
    return mse_threshold(hist, edges, low, high), low, high


def test_mse_clips_a_long_thin_tail_and_quantizes_it_with_less_error() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 1_000_000), [40.0, -35.0]])  # two outliers in a million
    t, low, high = _threshold(values)
    assert t < 0.3 * high  # the outliers are not worth the levels they would take
    at_t = _int8_mse(values, max(-t, low), min(t, high))
    assert at_t < 0.5 * _int8_mse(values, low, high)
    for other in (0.7 * t, 1.4 * t):  # and it is the least, near it
        assert at_t <= _int8_mse(values, max(-other, low), min(other, high))


def test_mse_keeps_the_whole_range_of_a_bounded_tensor() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, 100_000)
    t, _, high = _threshold(values)
    assert t > 0.97 * high


def test_mse_collector_gives_ranges_clamped_to_the_values_seen() -> None:
    rng = np.random.default_rng(2)
    silu = rng.normal(0, 2, (2, 8, 16, 16)).astype(np.float32)
    silu = silu / (1 + np.exp(-silu))  # SiLU: small negative side, long positive one
    collector = UniformAbsHistogram(2048, 128, 99.999, criterion="mse")
    collector.collect_absolute_value({"t": silu})
    collector.collect_absolute_value({"t": silu * 1.1})
    low, high, *_ = collector.compute_collection_result()["t"]
    assert float(low) == np.float32(silu.min() * 1.1)  # the lower bound is the minimum seen, not -t
    assert 0 < float(high) <= float(silu.max()) * 1.1
    percentile = UniformAbsHistogram(2048, 128, 99.999)
    percentile.collect_absolute_value({"t": silu})
    assert float(percentile.compute_collection_result()["t"][1]) > 0  # the default criterion still works
