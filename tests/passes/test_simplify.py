"""`simplify`: exact op delta on a tiny graph, equivalence, never grows, fallback, idempotence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core import ort_session
from graphopt.core.model import load_model, op_histogram
from graphopt.passes.pipeline import Pipeline


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> np.ndarray:
    (out,) = ort_session.run(model, [{model.graph.input[0].name: x}], optimize=optimize)
    return next(iter(out.values()))


def _tiny() -> onnx.ModelProto:
    """x → Identity → Mul(x, 2*3) → Reshape(to Shape(x)-derived [1, -1]): 6 nodes, 3 foldable + Identity."""
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("Mul", ["two", "three"], ["six"]),
        helper.make_node("Mul", ["xi", "six"], ["y"]),
        helper.make_node("Shape", ["y"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one", "zero"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["y", "target"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_exact_op_delta_and_equivalence() -> None:
    model = _tiny()
    result = Pipeline.from_passes(["simplify"]).run(model)
    assert op_histogram(result.model) == {"Mul": 1, "Reshape": 1}
    assert result.reports[0].ops_delta == {"Concat": -1, "Identity": -1, "Mul": -1, "Shape": -1, "Slice": -1}
    onnx.checker.check_model(result.model, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        _run(result.model, x, optimize=True), _run(model, x, optimize=False), rtol=1e-6
    )


def test_idempotent(demo_model: Path) -> None:
    once = Pipeline.from_passes(["simplify"]).run(load_model(demo_model))
    twice = Pipeline.from_passes(["simplify"]).run(once.model)
    assert twice.reports[0].changed is False
    assert op_histogram(twice.model) == op_histogram(once.model)


def test_keeps_batchnorm_by_default_and_fuses_when_asked(demo_model: Path) -> None:
    kept = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).model
    assert op_histogram(kept)["BatchNormalization"] == 3
    fused = (
        Pipeline.from_passes(["simplify"], {"simplify": {"fuse_bn": True}}).run(load_model(demo_model)).model
    )
    assert "BatchNormalization" not in op_histogram(fused)


def test_falls_back_to_graphsurgeon_when_onnxsim_fails(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxsim

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] unsupported op\nsecond line")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    report = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).reports[0]
    assert any("onnxsim failed (" in n and "fell back to onnx-graphsurgeon" in n for n in report.notes)
    assert report.changed and report.ops_delta.get("Shape") == -1  # graphsurgeon folded the shape chain
    assert report.verification["ok"]


def test_never_grows_the_op_count(demo_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def bloat(model: onnx.ModelProto, **_k: object) -> tuple[onnx.ModelProto, bool]:
        grown = onnx.ModelProto()
        grown.CopyFrom(model)
        out = grown.graph.output[0].name
        grown.graph.node[-1].output[0] = out + "_pre"
        grown.graph.node.extend(
            [
                helper.make_node("Identity", [out + "_pre"], [out + "_a"]),
                helper.make_node("Identity", [out + "_a"], [out]),
            ]
        )
        return grown, True

    monkeypatch.setattr(onnxsim, "simplify", bloat)
    model = load_model(demo_model)
    result = Pipeline.from_passes(["simplify"]).run(model)
    report = result.reports[0]
    assert not report.changed
    assert any("would grow" in n for n in report.notes)
    assert sum(op_histogram(result.model).values()) <= sum(op_histogram(model).values())
