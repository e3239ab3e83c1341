"""fold-bn, fold-reparam, drop-aux on tiny hand-written graphs: exact op deltas, checker, equivalence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphopt.core import ort_session
from graphopt.core.errors import GraphoptError
from graphopt.core.model import op_histogram
from graphopt.passes.pipeline import Pipeline
from tools.make_demo_model import GraphBuilder

C, HW = 8, 10


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return ort_session.run(model, [{"x": x}])[0]  # optimizations off: the reference side


def _apply(model: onnx.ModelProto, *passes: str, **options: dict) -> tuple[onnx.ModelProto, list]:
    result = Pipeline.from_passes(list(passes), options or None).run(model)
    onnx.checker.check_model(result.model, full_check=True)
    x = np.random.default_rng(5).standard_normal((1, C, HW, HW)).astype(np.float32)
    got, want = _run(result.model, x), _run(model, x)
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], atol=1e-4, rtol=1e-4)
    return result.model, result.reports


def _model(b: GraphBuilder, *outputs: str) -> onnx.ModelProto:
    return b.model([("x", [1, C, HW, HW])], list(outputs))


# --- fold-bn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [1, 2, C])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_bn_folds(group: int, bias: bool) -> None:
    b = GraphBuilder(1)
    y = b.bn(b.conv("x", C, C, 3, group=group, bias=bias), C)
    model, reports = _apply(_model(b, y), "fold-bn")
    assert reports[0].ops_delta == {"BatchNormalization": -1}
    assert op_histogram(model) == {"Conv": 1}


def test_bn_conv_folds_without_padding_only() -> None:
    b = GraphBuilder(2)
    unpadded = b.conv(b.bn("x", C), C, 4, k=1)
    padded = b.conv(b.bn("x", C), C, 4, k=3)  # padding would see 0 where BN's shift belongs
    model, reports = _apply(_model(b, unpadded, padded), "fold-bn")
    assert reports[0].ops_delta == {"BatchNormalization": -1}
    assert reports[0].details["bn_conv"] == 1 and len(reports[0].details["kept"]) == 1


def test_grouped_bn_conv_folds() -> None:
    b = GraphBuilder(3)
    y = b.conv(b.bn("x", C), C, C, k=1, group=4, pad=0)
    model, _ = _apply(_model(b, y), "fold-bn")
    assert op_histogram(model) == {"Conv": 1}


def test_shared_conv_output_is_not_folded() -> None:
    b = GraphBuilder(4)
    conv = b.conv("x", C, C, 3)
    out = b.bn(conv, C)
    model, reports = _apply(_model(b, out, conv), "fold-bn")  # the conv output is also a graph output
    assert not reports[0].changed and op_histogram(model)["BatchNormalization"] == 1


def test_shared_weights_are_not_mutated() -> None:
    """Two Convs reading one weight initializer: folding one BN must leave the other Conv intact."""
    b = GraphBuilder(5)
    w = b.const(np.random.default_rng(0).standard_normal((C, C, 3, 3)).astype(np.float32), "shared")
    a = b.bn(b.node("Conv", ["x", w], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), C)
    plain = b.node("Conv", ["x", w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model, reports = _apply(_model(b, a, plain), "fold-bn")
    assert reports[0].ops_delta == {"BatchNormalization": -1}


# --- fold-reparam ----------------------------------------------------------------------------------


def _repvgg(
    b: GraphBuilder, identity: str, bn: bool = True, stride: int = 1, extra: int | None = None
) -> str:
    def branch(k: int) -> str:
        y = b.conv("x", C, C, k, stride=stride)
        return b.bn(y, C) if bn else y

    total = b.node("Add", [branch(3), branch(1)])
    if extra:
        total = b.node("Add", [total, branch(extra)])
    if identity == "plain":
        total = b.node("Add", [total, "x"])
    elif identity == "bn":
        total = b.node("Add", [total, b.bn("x", C)])
    elif identity == "zero":  # torch's `conv1(x) + conv2(x) + 0` (RepConvN without identity)
        total = b.node("Add", [total, b.const(np.array(0.0, np.float32), "zero")])
    return b.silu(total)


@pytest.mark.parametrize("identity", ["none", "plain", "bn", "zero"])
def test_repvgg_branches_merge_with_bn_still_present(identity: str) -> None:
    b = GraphBuilder(6)
    model, reports = _apply(_model(b, _repvgg(b, identity)), "fold-reparam")
    ops = op_histogram(model)
    assert ops == {"Conv": 1, "Sigmoid": 1, "Mul": 1}, ops


def test_repvgg_after_fold_bn() -> None:
    b = GraphBuilder(7)
    model, reports = _apply(_model(b, _repvgg(b, "bn")), "fold-bn", "fold-reparam")
    assert reports[0].ops_delta == {"BatchNormalization": -2}
    assert reports[1].ops_delta == {"Add": -2, "BatchNormalization": -1, "Conv": -1}
    assert op_histogram(model)["Conv"] == 1


def test_three_kernel_sizes_merge() -> None:
    b = GraphBuilder(8)
    model, _ = _apply(_model(b, _repvgg(b, "none", extra=5)), "fold-reparam")
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert list(next(a.ints for a in conv.attribute if a.name == "kernel_shape")) == [5, 5]


def test_strided_branches_merge() -> None:
    b = GraphBuilder(9)
    model, _ = _apply(_model(b, _repvgg(b, "none", stride=2)), "fold-reparam")
    assert op_histogram(model)["Conv"] == 1


def test_off_centre_kernels_do_not_merge() -> None:
    b = GraphBuilder(9)
    w2 = b.const(np.random.default_rng(1).standard_normal((C, C, 2, 2)).astype(np.float32), "w2")
    even = b.node("Conv", ["x", w2], kernel_shape=[2, 2], pads=[0, 0, 1, 1])  # a 1x1 cannot be centred in it
    model, reports = _apply(_model(b, b.node("Add", [even, b.conv("x", C, C, 1)])), "fold-reparam")
    assert not reports[0].changed


def test_non_parallel_add_is_left_alone() -> None:
    b = GraphBuilder(10)
    y = b.node("Add", [b.conv("x", C, C, 3), b.conv(b.conv("x", C, C, 1), C, C, 3)])  # residual, not parallel
    model, reports = _apply(_model(b, y), "fold-reparam")
    assert not reports[0].changed


def test_idempotent() -> None:
    b = GraphBuilder(11)
    model, _ = _apply(_model(b, _repvgg(b, "bn")), "fold-bn", "fold-reparam")
    again = Pipeline.from_passes(["fold-bn", "fold-reparam"]).run(model)
    assert not any(r.changed for r in again.reports)


# --- drop-aux --------------------------------------------------------------------------------------


def _head(b: GraphBuilder, x: str, nc: int = 2) -> str:
    """A decoded anchor-free head output [1, 4 + nc, HW*HW] (what drop-aux recognizes)."""
    return b.node("Reshape", [b.conv(x, C, 4 + nc, 1), b.const(np.array([1, 4 + nc, -1], np.int64))])


def _dual(b: GraphBuilder) -> tuple[str, str]:
    """A main branch, and an auxiliary one that restarts from the input and fuses main features."""
    f1 = b.conv_bn_silu("x", C, C, 3)
    main = _head(b, b.conv_bn_silu(f1, C, C, 3))
    aux_stem = b.conv_bn_silu("x", C, C, 3)
    fused = b.node("Add", [aux_stem, b.conv(f1, C, C, 1)])  # CBLinear/CBFuse-like routing
    aux = _head(b, b.conv_bn_silu(fused, C, C, 3))
    return aux, main


def test_drop_aux_finds_the_main_output() -> None:
    b = GraphBuilder(12)
    aux, main = _dual(b)
    model, reports = _apply(_model(b, aux, main), "drop-aux")
    assert [o.name for o in model.graph.output] == [main]
    notes = " ".join(reports[0].notes)
    assert f"'{aux}' is auxiliary" in notes and "second backbone" in notes and f"'{main}' is main" in notes
    assert op_histogram(model)["Conv"] == 3
    assert reports[0].removed_outputs == [aux]


def test_drop_aux_keep_option_and_errors() -> None:
    b = GraphBuilder(13)
    aux, main = _dual(b)
    model = _model(b, aux, main)
    kept = Pipeline.from_passes(["drop-aux"], {"drop-aux": {"keep": aux}}).run(model).model
    assert [o.name for o in kept.graph.output] == [aux]
    with pytest.raises(GraphoptError, match="not an output of the model"):
        Pipeline.from_passes(["drop-aux"], {"drop-aux": {"keep": "nope"}}).run(model)


def test_drop_aux_keeps_outputs_that_are_not_detection_heads() -> None:
    """A non-YOLO two-output model whose second output is Add(features, input) — it restarts from the
    input like a PGI branch, but it is not a detection head: both outputs stay (issue 10, defect 3)."""
    b = GraphBuilder(16)
    features = b.conv_bn_silu("x", C, C, 3)
    main = _head(b, features)
    residual = b.node("Add", [b.conv(features, C, C, 3), "x"])
    model, reports = _apply(_model(b, main, residual), "drop-aux")
    assert [o.name for o in model.graph.output] == [main, residual]
    assert not reports[0].changed and reports[0].removed_outputs == []
    assert "not a decoded detection head" in " ".join(reports[0].notes)
    lossless = Pipeline.from_recipe("lossless").run(_model(b, main, residual))
    assert [o.name for o in lossless.model.graph.output] == [main, residual]


def test_an_output_that_disappears_unannounced_fails_verification() -> None:
    from graphopt.core.errors import VerificationError
    from graphopt.passes.registry import PassResult, register, unregister

    @register("test-silent-drop", lossless=True)
    def silent_drop(graph, ctx):  # noqa: ANN001, ANN202
        graph.outputs = graph.outputs[:1]
        return PassResult(changed=True)

    b = GraphBuilder(17)
    aux, main = _dual(b)
    try:
        with pytest.raises(VerificationError, match=f"removed graph output\\(s\\) {main} without saying so"):
            Pipeline.from_passes(["test-silent-drop"]).run(_model(b, aux, main))
    finally:
        unregister("test-silent-drop")


def test_drop_aux_noop_cases() -> None:
    b = GraphBuilder(14)
    y = b.conv_bn_silu("x", C, C, 3)
    single = Pipeline.from_passes(["drop-aux"]).run(_model(b, y)).reports[0]
    assert not single.changed and "single-output" in single.notes[0]
    b = GraphBuilder(15)
    f = b.conv_bn_silu("x", C, C, 3)
    a, c = _head(b, f), _head(b, f)
    two_heads = _model(b, a, c)  # two alike heads off shared features: nothing tells the main one
    with pytest.raises(GraphoptError, match=f"cannot tell which of the detection outputs {a}, {c}.*keep=NAME"):
        Pipeline.from_passes(["drop-aux"]).run(two_heads)
    kept = Pipeline.from_passes(["drop-aux"], {"drop-aux": {"keep": c}}).run(two_heads).model
    assert [o.name for o in kept.graph.output] == [c]


def test_drop_aux_second_neck_layout() -> None:
    """yolov9-t/s/m: the auxiliary branch is a top-down-only neck off the shared backbone, the main one a
    PAN that downsamples again."""
    b = GraphBuilder(18)
    p3 = b.conv_bn_silu("x", C, C, 3)  # shared backbone
    p4 = b.conv_bn_silu(p3, C, C, 3, stride=2)
    up = b.node("Resize", [p4, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    aux = _head(b, b.conv_bn_silu(b.node("Add", [up, p3]), C, C, 3))  # FPN only
    up2 = b.node("Resize", [p4, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    td = b.conv_bn_silu(b.node("Add", [up2, p3]), C, C, 3)
    bu = b.conv_bn_silu(td, C, C, 3, stride=2)  # PAN bottom-up
    main = _head(b, b.node("Resize", [bu, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest"))
    model, reports = _apply(_model(b, aux, main), "drop-aux")
    assert [o.name for o in model.graph.output] == [main]
    notes = " ".join(reports[0].notes)
    assert "top-down-only neck" in notes and "PAN neck" in notes
