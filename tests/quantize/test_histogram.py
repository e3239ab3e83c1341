"""Percentile calibration's histograms (graphopt/quantize/histogram.py) against onnxruntime's collector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization.calibrate import HistogramCollector

from graphopt.quantize.histogram import UniformAbsHistogram


def _stream(seed: int) -> list[np.ndarray]:
    """Images whose activation ranges grow (the case where onnxruntime re-bins against edge arrays)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((4, 64, 64)) * scale).astype(np.float32)
        for scale in rng.uniform(0.5, 3.0, size=6)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_histogram_counts_every_value_in_equal_bins_and_agrees_with_onnxruntime(seed: int) -> None:
    images = _stream(seed)
    ours = UniformAbsHistogram(num_bins=2048, num_quantized_bins=128, percentile=99.99)
    theirs = HistogramCollector("percentile", True, 2048, 128, 99.99, "same")
    for x in images:
        ours.collect({"t": [x]})
        theirs.collect({"t": [x]})
    hist, edges, low, high = ours.histogram_dict["t"]
    start = np.abs(
        images[0]
    ).min()  # as onnxruntime: values below the first image's least |x| are not counted
    assert hist.sum() == sum(int((np.abs(x) >= start).sum()) for x in images)
    assert edges[-1] >= max(np.abs(x).max() for x in images)  # grown to cover every later value
    width = np.diff(edges.astype(np.float64))
    assert np.allclose(width, width[0], rtol=1e-3)  # equal bins throughout
    assert low == min(x.min() for x in images) and high == max(x.max() for x in images)

    # the same thresholds as onnxruntime's collector, to within a bin (its grown edges drift with np.arange)
    t_ours = ours.compute_collection_result()["t"]
    t_theirs = theirs.compute_collection_result()["t"]
    assert abs(float(t_ours[1]) - float(t_theirs[1])) <= 1.01 * width[0]
    assert float(t_ours[0]) == -float(t_ours[1])


def test_a_constant_first_image_still_gives_a_range() -> None:
    ours = UniformAbsHistogram(num_bins=2048, num_quantized_bins=128, percentile=99.999)
    ours.collect({"t": [np.zeros((8, 8), np.float32)]})  # numpy's histogram of one value: a unit range
    ours.collect({"t": [np.full((8, 8), 3.0, np.float32)]})
    hist, edges, _, _ = ours.histogram_dict["t"]
    assert hist.sum() == 128 and edges[-1] >= 3.0


def test_percentile_calibration_uses_the_uniform_histogram(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from graphopt.core.model import load_model
    from graphopt.quantize.ort import ImageReader, QuantConfig, Quantizer

    counted: list[int] = []
    collect = UniformAbsHistogram.collect_absolute_value

    def spy(self: UniformAbsHistogram, name_to_arr: dict) -> None:
        counted.append(len(name_to_arr))
        collect(self, name_to_arr)

    monkeypatch.setattr(UniformAbsHistogram, "collect_absolute_value", spy)
    model = load_model(demo_model)
    quantizer = Quantizer(model, QuantConfig("arm", "percentile", True, 99.999), tmp_path)
    rng = np.random.default_rng(0)
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    tensors = iter([rng.random(shape, dtype=np.float32) for _ in range(3)])
    quantizer.calibrate(ImageReader(name, tensors, 3, "calibrating"))
    assert quantizer.cache.is_file() and len(counted) == 3 and counted[0] > 0  # each image, every tensor

    percentile = create_calibrator(
        demo_model,
        [],
        calibrate_method=CalibrationMethod.Percentile,
        augmented_model_path=str(tmp_path / "a.onnx"),
    )
    assert isinstance(UniformAbsHistogram.replacing(percentile), UniformAbsHistogram)
    minmax = create_calibrator(
        demo_model,
        [],
        calibrate_method=CalibrationMethod.MinMax,
        augmented_model_path=str(tmp_path / "b.onnx"),
    )
    assert UniformAbsHistogram.replacing(minmax) is None  # other methods keep onnxruntime's collector
