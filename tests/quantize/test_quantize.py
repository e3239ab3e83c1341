"""The `quantize` pass on zoo fixtures: head kept float, target types, sensitivity, budget, QAT, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from graphopt.core.errors import GraphoptError
from graphopt.core.graph import to_graph
from graphopt.core.head import find_head_tail
from graphopt.core.model import load_model, op_histogram, save_model
from graphopt.core.ort_session import run
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from tests.helpers import ZOO_IMGSZ, run_cli, write_images


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("calib"), 12)


def _quantize(model_path: Path, calib: Path, **options: object):  # noqa: ANN202
    opts = {"calibration": "minmax", "samples": 8, **options}
    return Pipeline.from_passes(["quantize"], {"quantize": opts}, feeds=FeedSource(calib, samples=2)).run(
        load_model(model_path)
    )


def _dq_fed(model: onnx.ModelProto, inputs: slice = slice(None)) -> set[str]:
    """Names of nodes reading a DequantizeLinear output among `inputs` (int8 data or int8 weights)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return {
        n.name
        for n in model.graph.node
        if any(
            producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
            for i in n.input[inputs]
        )
    }


@pytest.mark.parametrize("fixture", ["yolov5", "gelan"])
def test_head_stays_float_and_outputs_survive(zoo_onnx, calib: Path, fixture: str) -> None:  # noqa: ANN001
    source = load_model(zoo_onnx(fixture))
    result = _quantize(zoo_onnx(fixture), calib, target="x86")
    model = result.model
    ops = op_histogram(model)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    tail = find_head_tail(to_graph(source))
    assert not (_dq_fed(model) & {n.name for n in tail.nodes})  # the tail computes on float values only
    output_convs = {n.name for n in tail.output_convs}
    assert output_convs and not (_dq_fed(model, slice(1, None)) & output_convs)  # their weights stay float
    report = result.reports[0]
    assert report.lossless is False and report.verification["cosine"] > 0.98
    assert any("head tail" in n for n in report.notes) and any(
        "output convs stay float" in n for n in report.notes
    )
    onnx.checker.check_model(model)


@pytest.mark.parametrize(
    ("target", "dtype"), [("arm", onnx.TensorProto.INT8), ("x86", onnx.TensorProto.UINT8)]
)
def test_target_types(zoo_onnx, calib: Path, target: str, dtype: int) -> None:  # noqa: ANN001
    model = _quantize(zoo_onnx("yolov8"), calib, target=target).model
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert zero_points and all(z.data_type == dtype for z in zero_points)


def test_recipe_target_is_used(zoo_onnx, calib: Path, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "q.onnx"
    r = run_cli(
        "optimize",
        zoo_onnx("yolov5"),
        "-o",
        out,
        "--recipe",
        "int8-x86",
        "--data",
        calib,
        "--set",
        "quantize.calibration=minmax",
        "--set",
        "quantize.samples=8",
        "--json",
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)  # nothing from onnxruntime's quantizer pollutes stdout
    q = report["passes"][-1]
    assert (
        q["pass"] == "quantize"
        and q["details"]["target"] == "x86"
        and q["details"]["calibration_images"] == 8
    )
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["graphopt.quantized"])["target"] == "x86"


def test_sensitivity_table(zoo_onnx, calib: Path) -> None:  # noqa: ANN001
    result = _quantize(zoo_onnx("yolov5"), calib, sensitivity=True, sensitivity_samples=2)
    table = result.reports[0].details["sensitivity"]
    convs = op_histogram(load_model(zoo_onnx("yolov5")))["Conv"] - 3  # output convs stay float
    assert len(table) == convs
    drops = [row["sqnr_drop_db"] for row in table]
    assert drops == sorted(drops, reverse=True) and [r["rank"] for r in table] == list(range(1, convs + 1))
    assert all(r["sqnr_out_db"] is not None and 10 < r["sqnr_out_db"] < 80 for r in table)  # int8 noise, dB
    json.dumps(table, allow_nan=False)  # the --report carries it


def test_budget_returns_sensitive_layers_to_float(zoo_onnx, calib: Path) -> None:  # noqa: ANN001
    loose = _quantize(zoo_onnx("yolov5"), calib, budget=100.0, sensitivity_samples=2).reports[0].details
    assert [s["float_layers"] for s in loose["budget_steps"]] == [0]
    all_int8_loss = loose["budget_steps"][0]["loss_score_points"]
    budget = all_int8_loss * 0.6
    fitted = _quantize(zoo_onnx("yolov5"), calib, budget=budget, sensitivity_samples=2).reports[0]
    steps = fitted.details["budget_steps"]
    assert [s["float_layers"] for s in steps] == sorted(s["float_layers"] for s in steps) and len(steps) > 1
    assert steps[-1]["loss_score_points"] <= budget or steps[-1].get("budget_not_met")
    kept = steps[-1]["float_layers"]
    most_sensitive = [row["node"] for row in fitted.details["sensitivity"][:kept]]
    assert set(most_sensitive) <= set(fitted.details["float_nodes"])
    impossible = _quantize(zoo_onnx("yolov5"), calib, budget=0.0, sensitivity_samples=2).reports[0]
    assert impossible.details["budget_steps"][-1]["budget_not_met"] and any(
        "not met" in n for n in impossible.notes
    )


def test_dynamic_mode(zoo_onnx) -> None:  # noqa: ANN001
    result = Pipeline.from_passes(["quantize"], {"quantize": {"mode": "dynamic"}}).run(
        load_model(zoo_onnx("yolov5"))
    )
    ops = op_histogram(result.model)
    assert ops.get("ConvInteger", 0) + ops.get("DynamicQuantizeLinear", 0) > 0
    assert result.reports[0].verification["cosine"] > 0.95


def test_pre_quantized_model_passes_through(tmp_path: Path, calib: Path) -> None:
    torch = pytest.importorskip("torch")
    from frontends import export
    from frontends.zoo import yolov5_tiny
    from frontends.zoo.qat import fake_quantize
    from runtime.detector import Detector

    qat = fake_quantize(
        yolov5_tiny(), torch.rand(1, 3, ZOO_IMGSZ, ZOO_IMGSZ, generator=torch.Generator().manual_seed(0))
    )
    report = export(qat, tmp_path / "qat.onnx", imgsz=ZOO_IMGSZ)
    assert any("fake-quantized" in n for n in report.notes)
    before = op_histogram(load_model(tmp_path / "qat.onnx"))
    assert before["QuantizeLinear"] > 0
    result = Pipeline.from_passes(["quantize"], feeds=FeedSource(calib)).run(
        load_model(tmp_path / "qat.onnx")
    )
    assert not result.reports[0].changed and "not quantized twice" in result.reports[0].notes[0]
    assert op_histogram(result.model)["QuantizeLinear"] == before["QuantizeLinear"]
    save_model(result.model, tmp_path / "qat2.onnx")
    Detector(tmp_path / "qat2.onnx", conf=0.01)(np.zeros((100, 120, 3), np.uint8))  # still runs


def test_errors(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(GraphoptError, match="needs calibration images"):
        Pipeline.from_passes(["quantize"]).run(load_model(zoo_onnx("yolov5")))
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"nope")
    with pytest.raises(GraphoptError, match="none of its images could be read \\(3 unreadable"):
        _quantize(zoo_onnx("yolov5"), bad)  # verification inputs fail first
    unverified = Pipeline.from_passes(["quantize"], verify_outputs=False, feeds=FeedSource(bad))
    with pytest.raises(GraphoptError, match="no usable calibration image \\(3 unreadable"):
        unverified.run(load_model(zoo_onnx("yolov5")))
    mixed = write_images(tmp_path / "mixed", 9, bad=2)
    details = _quantize(zoo_onnx("yolov5"), mixed, samples=20).reports[0].details
    assert details["calibration_images"] == 9 and len(details["unreadable_images"]) == 2
    with pytest.raises(GraphoptError, match="quantize.target must be one of arm, x86"):
        _quantize(zoo_onnx("yolov5"), mixed, target="riscv")


def test_model_without_quantizable_ops(tmp_path: Path, calib: Path) -> None:
    from tools.make_demo_model import GraphBuilder

    b = GraphBuilder(0)
    y = b.node("Sigmoid", [b.node("Add", ["x", "x"])])
    path = tmp_path / "noconv.onnx"
    onnx.save(b.model([("x", [1, 3, 8, 8])], [y]), str(path))
    with pytest.raises(GraphoptError, match="no quantizable convolution"):
        _quantize(path, calib)


def test_naive_quantization_would_break_the_head(zoo_onnx, calib: Path) -> None:  # noqa: ANN001
    """Without head exclusion, quantized outputs drift further from float than with it."""
    source = load_model(zoo_onnx("yolov5"))
    feeds = FeedSource(calib, samples=2).feeds_for(source)
    ref = run(source, feeds)
    keep = _quantize(zoo_onnx("yolov5"), calib).model
    naive = _quantize(zoo_onnx("yolov5"), calib, exclude_head=False, float_output_convs=False).model

    def err(model: onnx.ModelProto) -> float:
        return float(
            np.mean(
                [
                    np.abs(a["output0"][..., 4:] - b["output0"][..., 4:]).mean()
                    for a, b in zip(ref, run(model, feeds), strict=True)
                ]
            )
        )

    assert err(keep) < err(naive)


def _int8_weight_absmax(model: onnx.ModelProto) -> int:
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert weights
    return max(int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int16)).max()) for t in weights)


@pytest.mark.parametrize("no_vnni", [True, False])
def test_x86_weights_are_7_bit_only_on_a_host_without_vnni(
    zoo_onnx, calib: Path, monkeypatch: pytest.MonkeyPatch, no_vnni: bool  # noqa: ANN001
) -> None:
    """AVX2-only x86 kernels sum u8·s8 products in 16 bits and saturate 8-bit weights: there (and only
    for target=x86) the weights get 7 bits; the Pi's S8S8 never does; the option overrides the host."""
    from graphopt.quantize import ort

    monkeypatch.setattr(ort, "x86_without_vnni", lambda: no_vnni)
    x86 = _quantize(zoo_onnx("yolov8"), calib, target="x86")
    assert x86.reports[0].details["reduce_range"] is no_vnni
    assert (_int8_weight_absmax(x86.model) <= 64) is no_vnni  # 7-bit weights: [-64, 64]
    assert any("7-bit" in n for n in x86.reports[0].notes) is no_vnni
    arm = _quantize(zoo_onnx("yolov8"), calib, target="arm")
    assert arm.reports[0].details["reduce_range"] is False and _int8_weight_absmax(arm.model) == 127
    forced = _quantize(zoo_onnx("yolov8"), calib, target="arm", reduce_range=True)
    assert _int8_weight_absmax(forced.model) <= 64


def test_budget_map_loss_is_fitted_on_the_train_split_never_the_val_split(
    zoo_onnx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    import graphopt.eval.evaluate as evaluate_module
    from graphopt.quantize import sensitivity

    splits: list[str] = []

    class Result:
        map50_95 = 0.5

    def spy(model: Path, data: Path, **kwargs: object) -> Result:
        splits.append(str(kwargs.get("split", "val")))
        return Result()

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    model = load_model(zoo_onnx("yolov5"))
    sensitivity.map_loss(model, model, tmp_path / "data.yaml", tmp_path)
    assert splits == ["train", "train"]


@pytest.mark.parametrize(
    ("target", "options", "input_conv_float", "percentile"),
    [
        ("arm", {}, False, 99.999),
        ("x86", {"float_input_conv": True}, True, 99.999),
        ("arm", {"float_input_conv": True, "percentile": 99.99}, True, 99.99),
    ],
)
def test_float_input_conv_keeps_the_conv_reading_the_image_float(  # noqa: PLR0913
    zoo_onnx, calib: Path, target: str, options: dict, input_conv_float: bool, percentile: float  # noqa: ANN001
) -> None:
    source = load_model(zoo_onnx("yolov5"))
    first = [n.name for n in source.graph.node if n.op_type == "Conv" and n.input[0] == source.graph.input[0].name]
    assert len(first) == 1
    result = _quantize(zoo_onnx("yolov5"), calib, target=target, calibration="percentile", **options)
    weights_int8 = _dq_fed(result.model, slice(1, None))
    assert (first[0] not in weights_int8) is input_conv_float
    assert (first[0] in result.reports[0].details["float_nodes"]) is input_conv_float
    assert result.reports[0].details["percentile"] == percentile
    assert any("input conv(s) stay float" in n for n in result.reports[0].notes) is input_conv_float
    onnx.checker.check_model(result.model)
