"""`prune`: channel groups found on the graph (Concat/Split/Add/depthwise), exactness on dead channels,
the MACs target, recovery modes, errors — on hand-built graphs and the checked-in fixtures (no torch)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphopt.core.errors import GraphoptError
from graphopt.core.graph import constant_value, infer_shapes, tidy, to_model
from graphopt.core.macs import macs_summary
from graphopt.core.model import load_model, op_histogram
from graphopt.core.ort_session import run
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from graphopt.prune import channels
from tests.helpers import run_cli, write_images
from tools.make_demo_model import GraphBuilder

HW = 12


def _silu_conv(b: GraphBuilder, x: str, cin: int, cout: int, k: int = 3, group: int = 1) -> str:
    return b.silu(b.conv(x, cin, cout, k, group=group, bias=True))


@st.composite
def random_graphs(draw: st.DrawFn) -> onnx.ModelProto:
    """Convolution stacks with residual Adds, Concats, channel Splits, depthwise convs, pooling and
    per-channel scales, ending in a 'head' whose channels a Reshape reads (protected)."""
    b = GraphBuilder(draw(st.integers(0, 10_000)))
    x, c = "x", 4
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "residual", "concat", "split", "depthwise", "pool", "scale"]))
        width = draw(st.sampled_from([4, 6, 8]))
        if kind == "conv":
            x, c = _silu_conv(b, x, c, width, draw(st.sampled_from([1, 3]))), width
        elif kind == "residual":
            x = b.node("Add", [x, _silu_conv(b, _silu_conv(b, x, c, c, 1), c, c, 3)])
        elif kind == "concat":
            x, c = (
                b.node("Concat", [_silu_conv(b, x, c, width, 1), _silu_conv(b, x, c, 4, 3)], axis=1),
                width + 4,
            )
        elif kind == "split":
            h = _silu_conv(b, x, c, 2 * width, 1)
            split = b.const(np.array([width, width], np.int64))
            y1, y2 = b.name("split"), b.name("split")
            b.nodes.append(onnx.helper.make_node("Split", [h, split], [y1, y2], name=b.name("Split"), axis=1))
            x, c = b.node("Concat", [_silu_conv(b, y1, width, width, 3), y2], axis=1), 2 * width
        elif kind == "depthwise":
            x = _silu_conv(b, x, c, c, 3, group=c)
        elif kind == "pool":
            x = b.node("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        else:
            scale = b.const(b.rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32))
            x = b.node("Mul", [x, scale])
    head = b.conv(x, c, 6, 1, bias=True)
    out = b.node("Reshape", [head, b.const(np.array([1, 6, -1], np.int64))])
    return b.model([("x", [1, 4, HW, HW])], [out])


def _zero_units(graph: gs.Graph, cg: channels.ChannelGraph, units: set[int]) -> None:
    """Zero every producer filter and bias of `units` (and depthwise biases on them): dead channels."""
    nodes = {n.name: n for n in graph.nodes}
    for table in (cg.producers, cg.depthwise):
        for name, us in table.items():
            node = nodes[name]
            w = constant_value(node.inputs[1]).copy()
            bias = constant_value(node.inputs[2]).copy()
            for k, u in enumerate(us):
                if cg.root(u) in units:
                    bias[k] = 0
                    if table is cg.producers:
                        w[k] = 0
            node.inputs[1] = gs.Constant(node.inputs[1].name + "_z", w)
            node.inputs[2] = gs.Constant(node.inputs[2].name + "_z", bias)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_graphs(), data=st.data())
def test_pruning_dead_channels_is_exact(model: onnx.ModelProto, data: st.DataObject) -> None:
    graph = gs.import_onnx(model)
    cg = channels.analyse(graph)
    candidates = sorted({u for g in cg.groups() for u in g.units})
    if not candidates:
        return
    dead = set(data.draw(st.lists(st.sampled_from(candidates), min_size=1, unique=True)))
    _zero_units(graph, cg, dead)
    zeroed = to_model(graph.copy(), model)
    x = {"x": np.random.default_rng(1).standard_normal((1, 4, HW, HW)).astype(np.float32)}
    want = run(zeroed, [x])[0]
    pruned_graph = gs.import_onnx(zeroed)
    cg2 = channels.analyse(pruned_graph)
    changed = channels.apply(cg2, dead)
    assert changed
    pruned = infer_shapes(to_model(tidy(pruned_graph), model))
    onnx.checker.check_model(pruned, full_check=True)
    assert all(v.type.tensor_type.HasField("shape") for v in pruned.graph.value_info)
    got = run(pruned, [x])[0]
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_graphs(), data=st.data())
def test_candidates_from_one_analysis_equal_fresh_prunes_and_leave_it_unchanged(
    model: onnx.ModelProto, data: st.DataObject
) -> None:
    from graphopt.prune.alloc import PrunedModels

    candidates = PrunedModels(model)
    units = sorted({u for g in candidates.cg.groups() for u in g.units})
    if not units:
        return
    before = to_model(candidates.cg.graph, model).SerializeToString()
    x = {"x": np.random.default_rng(2).standard_normal((1, 4, HW, HW)).astype(np.float32)}
    for _ in range(3):  # several candidates in a row: each starts from the unpruned graph
        removed = set(data.draw(st.lists(st.sampled_from(units), min_size=1, unique=True)))
        for group in candidates.cg.groups():
            removed.discard(group.units[0])  # a conv keeps one channel at least, as the pass does
        fresh_graph = gs.import_onnx(model)
        channels.apply(channels.analyse(fresh_graph), removed)
        fresh = to_model(tidy(fresh_graph), model)
        candidate = candidates(removed)
        onnx.checker.check_model(candidate)
        assert op_histogram(candidate) == op_histogram(fresh)
        for name, value in run(fresh, [x])[0].items():
            np.testing.assert_array_equal(run(candidate, [x])[0][name], value)
        assert to_model(candidates.cg.graph, model).SerializeToString() == before


def test_groups_couple_residuals_and_follow_splits() -> None:
    b = GraphBuilder(3)
    a = _silu_conv(b, "x", 4, 8, 1)
    r = b.node("Add", [a, _silu_conv(b, a, 8, 8, 3)])  # couples a's conv with the second conv
    h = _silu_conv(b, r, 8, 16, 1)
    y1, y2 = b.name("s"), b.name("s")
    b.nodes.append(onnx.helper.make_node("Split", [h, b.const(np.array([8, 8], np.int64))], [y1, y2], axis=1))
    out = b.node("Concat", [_silu_conv(b, y1, 8, 8, 3), y2], axis=1)
    head = b.node("Reshape", [b.conv(out, 16, 6, 1), b.const(np.array([1, 6, -1], np.int64))])
    cg = channels.analyse(gs.import_onnx(b.model([("x", [1, 4, HW, HW])], [head])))
    sizes = sorted((len(g.convs), g.size) for g in cg.groups())
    assert (2, 8) in sizes  # the residual pair
    assert (1, 16) in sizes  # the split conv: one group over both halves
    assert len(cg.splits) == 1


def _fixture(zoo_onnx, name: str) -> onnx.ModelProto:  # noqa: ANN001
    return Pipeline.from_recipe("lossless", verify_outputs=False).run(load_model(zoo_onnx(name))).model


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return write_images(tmp_path_factory.mktemp("calib"), 6)


@pytest.mark.parametrize(
    ("name", "recover"), [("yolov5", "none"), ("yolov5", "bn"), ("gelan", "lstsq"), ("yolov9-dual", "none")]
)
def test_prune_meets_the_macs_target(zoo_onnx, calib, name: str, recover: str) -> None:  # noqa: ANN001
    model = _fixture(zoo_onnx, name)
    options = {"prune": {"macs": 0.8, "recover": recover, "round_to": 4, "min_channels": 8, "samples": 4}}
    result = Pipeline.from_passes(["prune"], options, feeds=FeedSource(calib, samples=2)).run(model)
    pruned, report = result.model, result.reports[0]
    onnx.checker.check_model(pruned, full_check=True)
    assert [(o.name, o.type.tensor_type.shape) for o in pruned.graph.output] == [
        (o.name, o.type.tensor_type.shape) for o in model.graph.output
    ]
    d = report.details
    assert d["macs_after"] <= d["macs_target"] and macs_summary(pruned)["macs"] == d["macs_after"]
    assert not report.lossless and report.verification["cosine"] > 0.5
    assert all(g["kept"] % 4 == 0 or g["kept"] == g["channels"] for g in d["groups"])
    if recover != "none":
        assert d["recovered_layers"] > 0 and d["recovery_seconds"] >= 0
    assert op_histogram(pruned)["Conv"] == op_histogram(model)["Conv"]


def test_least_squares_recovers_more_than_nothing(zoo_onnx, calib) -> None:  # noqa: ANN001
    model = _fixture(zoo_onnx, "yolov8")
    cosines = {}
    for recover in ("none", "lstsq"):
        options = {"prune": {"macs": 0.7, "recover": recover, "round_to": 4, "min_channels": 8, "samples": 6}}
        report = (
            Pipeline.from_passes(["prune"], options, feeds=FeedSource(calib, samples=2)).run(model).reports[0]
        )
        cosines[recover] = report.verification["cosine"]  # outputs vs the unpruned model
    assert 1 - cosines["lstsq"] < 0.5 * (1 - cosines["none"])


def test_a_model_cut_at_inner_tensors_computes_them_with_only_the_nodes_they_need(zoo_onnx) -> None:  # noqa: ANN001
    from graphopt.prune.alloc import _cut_with_graphsurgeon, cut_at

    model = _fixture(zoo_onnx, "gelan")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    names = [convs[3].output[0], convs[len(convs) // 2].output[0]]
    cut, reference = cut_at(model, names), _cut_with_graphsurgeon(model, names)
    onnx.checker.check_model(cut, full_check=True)
    assert [o.name for o in cut.graph.output] == names
    assert op_histogram(cut) == op_histogram(reference) and op_histogram(cut) != op_histogram(model)
    assert sorted(t.name for t in cut.graph.initializer) == sorted(t.name for t in reference.graph.initializer)
    feed = {"images": np.random.default_rng(0).random((1, 3, 128, 128), np.float32)}
    assert model.graph.input[0].name == "images"
    for got, want in zip(run(cut, [feed])[0].values(), run(reference, [feed])[0].values(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_dead_only_is_lossless(zoo_onnx) -> None:  # noqa: ANN001
    model = _fixture(zoo_onnx, "yolov5")
    graph = gs.import_onnx(model)
    cg = channels.analyse(graph)
    group = max(cg.groups(), key=lambda g: g.size)
    _zero_units(graph, cg, set(group.units[:3]))
    zeroed = to_model(graph, model)
    result = Pipeline.from_passes(["prune"], {"prune": {"dead_only": True}}).run(zeroed)
    report = result.reports[0]
    assert report.lossless and report.changed and report.verification["ok"]
    assert report.details["dead_units"] == 3
    again = Pipeline.from_passes(["prune"], {"prune": {"dead_only": True}}).run(result.model).reports[0]
    assert not again.changed


def test_prune_errors(zoo_onnx, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    src = tmp_path / "m.onnx"
    onnx.save_model(_fixture(zoo_onnx, "yolov5"), str(src))
    r = run_cli("optimize", src, "-o", tmp_path / "o.onnx", "--passes", "prune")
    assert r.code == 2 and "pass 'prune' needs calibration images" in r.err
    r = run_cli("optimize", src, "-o", tmp_path / "o.onnx", "--passes", "prune", "--set", "prune.macs=1.5")
    assert r.code == 2 and "macs must be in (0, 1]" in r.err
    with pytest.raises(GraphoptError, match="prune.protect names unknown"):
        Pipeline.from_passes(
            ["prune"], {"prune": {"protect": ["nope"]}}, feeds=FeedSource(write_images(tmp_path / "c", 2))
        ).run(load_model(src))
    import graphopt.passes.pipeline

    monkeypatch.setattr(graphopt.passes.pipeline, "_installed", lambda module: module != "onnx2torch")
    r = run_cli(
        "optimize", src, "-o", tmp_path / "o.onnx", "--passes", "simplify,prune", "--data", tmp_path / "c",
        "--set", "prune.recover=distill",
    )  # fmt: skip
    assert r.code == 2 and "needs PyTorch and onnx2torch: pip install 'graphopt[torch]'" in r.err
    assert "simplify" not in r.out  # refused before the first pass ran


def test_macs_of_a_conv() -> None:
    b = GraphBuilder(0)
    y = b.conv("x", 4, 8, 3)
    m = b.model([("x", [1, 4, HW, HW])], [y])
    assert macs_summary(m) == {"macs": HW * HW * 8 * 4 * 9, "macs_by_op": {"Conv": HW * HW * 8 * 4 * 9}}


def test_importance_tool_ranks_a_dead_filter_first(zoo_onnx, calib, tmp_path, capsys) -> None:  # noqa: ANN001
    import json

    from tools.importance import main as importance

    model = _fixture(zoo_onnx, "yolov5")
    graph = gs.import_onnx(model)
    cg = channels.analyse(graph)
    group = max(cg.groups(), key=lambda g: g.size)
    conv = next(name for name, units in cg.producers.items() if cg.root(units[0]) in set(group.units))
    node = next(n for n in graph.nodes if n.name == conv)
    w = constant_value(node.inputs[1]).copy()
    w[1] = 0  # filter 1 of this conv contributes nothing: the least important filter by L2
    node.inputs[1] = gs.Constant(node.inputs[1].name + "_z", w)
    path = tmp_path / "m.onnx"
    onnx.save_model(to_model(graph, model), str(path))
    assert importance([str(path), "--data", str(calib), "--samples", "2", "--top", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["filters"][0]["conv"] == conv and report["filters"][0]["filter"] == 1
    assert report["filters"][0]["l2"] == 0 and len(report["filters"]) == 5
    sens = [r["sensitivity"] for r in report["layers"] if r["sensitivity"] is not None]
    assert sens and sens == sorted(sens) and all(s >= 0 for s in sens)
    assert sum(r["near_zero_filters"] for r in report["layers"]) >= 1
    assert importance([str(path), "--probe", "1.5"]) == 2
    assert importance([str(tmp_path / "missing.onnx")]) == 2
    assert "error:" in capsys.readouterr().err
