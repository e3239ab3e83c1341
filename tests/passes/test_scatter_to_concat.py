"""scatter-to-concat on tiny hand-written graphs: which ScatterND become Slice + Concat, the exact op
delta, the checker, and equal outputs on onnxruntime (optimizations off on the reference side)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphopt.core import ort_session
from graphopt.core.model import op_histogram
from graphopt.passes.pipeline import Pipeline
from tools.make_demo_model import GraphBuilder

SHAPE = [1, 3, 4, 4, 7]  # a yolov7/yolov5 Detect map: [batch, anchors, h, w, 5 + classes]


def _grid(ranges: list[range]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(r.start, r.stop) for r in ranges], indexing="ij"), -1).astype(np.int64)


def _scatter(indices: np.ndarray, updates_shape: list[int], **attrs: object) -> onnx.ModelProto:
    """y = ScatterND(sigmoid(x), indices, updates) with the updates computed from x too."""
    b = GraphBuilder(0)
    data = b.node("Sigmoid", ["x"])
    upd = b.node("Mul", [b.node("Slice", ["u", b.const(np.zeros(5, np.int64)), b.const(np.asarray(updates_shape))]),
                         b.const(np.float32(3.0))])
    y = b.node("ScatterND", [data, b.const(indices, "indices"), upd], **attrs)
    # shapes inferred, as simplify leaves them before this pass in the lossless recipe
    return onnx.shape_inference.infer_shapes(b.model([("x", SHAPE), ("u", SHAPE)], [y], opset=18))


def _apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    result = Pipeline.from_passes(["scatter-to-concat"]).run(model)
    onnx.checker.check_model(result.model, full_check=True)
    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal(SHAPE).astype(np.float32) for n in ("x", "u")}
    got, want = ort_session.run(result.model, [feed])[0], ort_session.run(model, [feed])[0]
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)  # a copy, not arithmetic: bit-identical
    return result.model, result.reports[0].ops_delta


@pytest.mark.parametrize(
    ("last", "slices"),
    [(range(0, 2), 1), (range(2, 4), 2), (range(4, 7), 1)],  # y[..., 0:2], y[..., 2:4], y[..., 4:]
)
def test_a_slice_assignment_on_the_last_axis_becomes_slice_and_concat(last: range, slices: int) -> None:
    ranges = [range(d) for d in SHAPE[:-1]] + [last]
    model, delta = _apply(_scatter(_grid(ranges), [*SHAPE[:-1], len(last)]))
    assert delta == {"ScatterND": -1, "Concat": 1, "Slice": slices}
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    assert onnx.helper.get_attribute_value(concat.attribute[0]) == len(SHAPE) - 1


def test_indices_over_leading_axes_only_slice_that_axis() -> None:
    """k < rank: indices name [batch, anchor] pairs; the trailing axes are written whole (y[:, 1:3] = ...)."""
    indices = _grid([range(1), range(1, 2)])  # y[:, 1:2] of 3 anchors: kept before and after it
    model, delta = _apply(_scatter(indices, [1, 1, *SHAPE[2:]]))
    assert delta == {"ScatterND": -1, "Concat": 1, "Slice": 2}
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    assert onnx.helper.get_attribute_value(concat.attribute[0]) == 1


def test_negative_indices_are_the_same_slice() -> None:
    ranges = [range(d) for d in SHAPE[:-1]] + [range(5, 7)]
    indices = _grid(ranges)
    indices[..., -1] -= SHAPE[-1]  # y[..., -2:]
    _, delta = _apply(_scatter(indices, [*SHAPE[:-1], 2]))
    assert delta == {"ScatterND": -1, "Concat": 1, "Slice": 1}


def test_a_scatter_into_data_of_unknown_shape_is_kept() -> None:
    ranges = [range(d) for d in SHAPE[:-1]] + [range(0, 2)]
    model = _scatter(_grid(ranges), [*SHAPE[:-1], 2])
    del model.graph.value_info[:]
    result = Pipeline.from_passes(["scatter-to-concat"]).run(model)
    assert op_histogram(result.model)["ScatterND"] == 1
    assert result.reports[0].details["kept"]


@pytest.mark.parametrize("case", ["gathered", "reordered", "two-axes", "reduction"])
def test_any_other_scatter_is_kept(case: str) -> None:
    ranges = [range(d) for d in SHAPE[:-1]] + [range(0, 2)]
    indices, attrs, upd = _grid(ranges), {}, [*SHAPE[:-1], 2]
    if case == "gathered":  # positions 0 and 3: not contiguous
        indices[..., 1, -1] = 3
    elif case == "reordered":  # the right positions, written in another order
        indices = indices[..., ::-1, :].copy()
    elif case == "two-axes":  # a block partial on two axes: Concat can't write it along one
        indices, upd = _grid([range(1), range(1, 3), range(4), range(4), range(0, 2)]), [1, 2, 4, 4, 2]
    else:
        attrs = {"reduction": "add"}
    _, delta = _apply(_scatter(indices, upd, **attrs))
    assert delta == {}
