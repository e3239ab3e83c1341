"""Bias correction of int8 weights on a tiny conv: the rounding's mean shift, removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from graphopt.quantize.bias_correction import conv_input_means, correct_biases


def _conv_model(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[3, 3])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(model: onnx.ModelProto, images: list[np.ndarray], tmp_path: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"x": item}

    src, out = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save_model(model, str(src))
    quantize_static(
        str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return onnx.load(str(out))


def _outputs(model: onnx.ModelProto, images: list[np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x})[0] for x in images])


def test_bias_correction_removes_the_mean_shift_of_int8_weight_rounding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # every weight but each channel's largest lies 0.4 of an int8 step above a level: rounding moves
    # them all down by the same amount, so the output mean moves by -0.4·step·Σ E[x] per channel
    step = 1.0 / 127  # onnxruntime: symmetric int8 weights, scale = max|w| / 127
    levels = rng.integers(-100, 100, size=(4, 3, 3, 3)).astype(np.float64)
    weights = (levels + 0.4) * step
    weights[:, 0, 0, 0] = 1.0  # the channel's |max|: sets the step
    weights = weights.astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    images = [rng.uniform(0.2, 0.9, size=(1, 3, 10, 10)).astype(np.float32) for _ in range(16)]
    model = _conv_model(weights, bias)
    qdq = _quantized(model, images, tmp_path)
    reference = _outputs(model, images)
    before = (_outputs(qdq, images) - reference).mean(axis=(0, 2, 3))

    means = conv_input_means(model, iter(images))
    np.testing.assert_allclose(means["x"], np.mean(np.concatenate(images), axis=(0, 2, 3)), rtol=1e-6)
    result = correct_biases(qdq, model, means)
    assert result.convs == 1
    after = (_outputs(qdq, images) - reference).mean(axis=(0, 2, 3))

    # the shift removed is ΔW·E[x], with ΔW what the int8 weights dequantize to, minus the float ones
    producer = {o: n for n in qdq.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    conv = next(n for n in qdq.graph.node if n.op_type == "Conv")
    w_dq = producer[conv.input[1]]
    w_int8 = inits[w_dq.input[0]].astype(np.float64) * inits[w_dq.input[1]].reshape(-1, 1, 1, 1)
    expected = np.einsum("oikl,i->o", w_int8 - weights, means["x"])
    np.testing.assert_allclose(before, expected, atol=2e-3)  # what the uncorrected model shows
    assert np.abs(expected).min() > 0.02
    assert np.abs(after).max() < 0.1 * np.abs(before).min()
    onnx.checker.check_model(qdq)


def test_a_float_conv_keeps_its_bias(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = _conv_model(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32))
    images = [rng.uniform(size=(1, 3, 10, 10)).astype(np.float32) for _ in range(4)]
    untouched = onnx.ModelProto()
    untouched.CopyFrom(model)
    result = correct_biases(untouched, model, conv_input_means(model, iter(images)))
    assert result.convs == 0
    assert untouched.SerializeToString() == model.SerializeToString()
