"""One bound for every input size, typed ranges for every option that sizes a tensor, and inputs fed in
the dtype a model declares (issue 24, problems 3-7).

A network input side is 1..4096 wherever the size comes from — a Darknet [net], `export --imgsz`,
`graphopt.imgsz` metadata, a model's declared shape. Each refusal is one `error:` line, exit 2, no file
left; where memory was the problem (a 100000 px Darknet input was killed at 22 GB) the command's own
peak RSS is measured in a fresh interpreter.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.helpers import one_error_line, run_cli, run_cli_child, write_dataset, write_images
from tools.make_demo_model import build_demo_model

PEAK_MIB = 1024


# --- problem 3: Darknet [net] and [yolo] --------------------------------------------------------------

TINY_CFG = """
[net]
width={w}
height={h}
channels=3

[convolutional]
filters=18
size=1
stride=32
pad=0
activation=linear

[yolo]
mask=0,1,2
anchors={anchors}
num=3
classes=1
"""
ANCHORS = "10,13, 16,30, 33,23"


def _darknet(tmp_path: Path, w: int = 64, h: int = 64, anchors: str = ANCHORS) -> tuple[Path, Path]:
    """A one-conv Darknet detector: 1x1 conv at stride 32 into a 3-anchor [yolo] head of one class."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG.format(w=w, h=h, anchors=anchors))
    header = np.array([0, 2, 5], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    weights = tmp_path / "tiny.weights"
    rng = np.random.default_rng(0)
    weights.write_bytes(
        header + rng.normal(0, 0.1, 18 + 18 * 3).astype("<f4").tobytes()
    )  # bias, then filters
    return cfg, weights


def test_the_tiny_darknet_model_exports(tmp_path: Path) -> None:
    cfg, weights = _darknet(tmp_path)
    r = run_cli("export", cfg, "--weights", weights, "-o", tmp_path / "o.onnx", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["imgsz"] == [64, 64]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"w": 100000, "h": 100000}, "[net] height=100000: the input side must be 1..4096 pixels"),
        ({"w": 0}, "[net] width=0: the input side must be 1..4096 pixels"),  # was ZeroDivisionError, exit 3
        ({"anchors": "10,13, 16,30, 33"}, "[yolo] anchors= holds 5 numbers: anchors are w,h pairs"),  # was reshape
    ],
)
def test_darknet_net_and_yolo_values_are_bounded(tmp_path: Path, edit: dict, message: str) -> None:
    cfg, weights = _darknet(tmp_path, **edit)
    r = run_cli_child("export", cfg, "--weights", weights, "-o", tmp_path / "o.onnx", tmp=tmp_path)
    assert message in one_error_line(r)
    assert r.peak_mib < PEAK_MIB, r.peak_mib
    assert not (tmp_path / "o.onnx").exists()


def test_darknet_imgsz_override_is_bounded(tmp_path: Path) -> None:
    cfg, weights = _darknet(tmp_path)
    r = run_cli_child(
        "export", cfg, "--weights", weights, "-o", tmp_path / "o.onnx", "--imgsz", "60000", tmp=tmp_path
    )
    assert "--imgsz: input size 60000x60000 is outside 1..4096" in one_error_line(r)
    assert r.peak_mib < PEAK_MIB and not (tmp_path / "o.onnx").exists()


# --- problem 4: export --imgsz ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imgsz", "shown"), [("0", "0x0"), ("100000", "100000x100000"), ("640,-32", "640x-32")]
)
def test_export_imgsz_is_range_checked_before_the_checkpoint_loads(
    tmp_path: Path, imgsz: str, shown: str
) -> None:
    pytest.importorskip("torch")
    from frontends.zoo import yolov5_tiny
    from tests.fake_repo import save_as_repo_checkpoint

    ckpt = save_as_repo_checkpoint(yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt")
    r = run_cli_child("export", ckpt, "-o", tmp_path / "o.onnx", "--imgsz", imgsz, tmp=tmp_path)
    assert f"--imgsz: input size {shown} is outside 1..4096" in one_error_line(r)  # 0 is not 640
    assert r.peak_mib < PEAK_MIB, r.peak_mib  # 100000 asked torch for 120 GB
    assert not (tmp_path / "o.onnx").exists()


# --- problem 5: bench feeds each input's declared dtype ---------------------------------------------


def _with_input_dtype(tmp_path: Path, dtype: int, name: str) -> Path:
    """The demo model taking `dtype` input, cast to float inside (as fp16 or uint8-input exports do)."""
    model = build_demo_model()
    graph = model.graph
    inner = graph.input[0].name
    graph.input[0].name = "raw"
    graph.input[0].type.tensor_type.elem_type = dtype
    graph.node.insert(0, helper.make_node("Cast", ["raw"], [inner], to=TensorProto.FLOAT))
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(TensorProto.FLOAT16, "fp16"), (TensorProto.UINT8, "uint8"), (TensorProto.INT8, "int8")],
)
def test_bench_feeds_the_declared_dtype(tmp_path: Path, dtype: int, name: str) -> None:
    model = _with_input_dtype(tmp_path, dtype, name)
    r = run_cli("bench", model, "--runs", "2", "--warmup", "0", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["p50_ms"] > 0


def test_images_run_on_float16_inputs_and_integer_inputs_say_why_not(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", 1)
    fp16 = _with_input_dtype(tmp_path, TensorProto.FLOAT16, "fp16")
    assert run_cli("detect", fp16, images).code == 0
    assert run_cli("bench", fp16, "--runs", "1", "--image", next(images.iterdir())).code == 0
    uint8 = _with_input_dtype(tmp_path, TensorProto.UINT8, "uint8")
    line = one_error_line(run_cli("detect", uint8, images))
    assert "the model's input is uint8" in line and "bench without --image" in line


def test_bench_random_input_covers_each_dtype() -> None:
    from runtime.bench import random_input

    assert random_input((1, 3, 4, 4), np.dtype(np.float16)).dtype == np.float16
    u8 = random_input((1, 3, 32, 32), np.dtype(np.uint8))
    assert u8.dtype == np.uint8 and u8.max() > 128  # pixels, not [0, 1)
    i8 = random_input((1, 3, 32, 32), np.dtype(np.int8))
    assert i8.dtype == np.int8 and i8.min() < 0


# --- problem 6: metadata and declared input sizes ------------------------------------------------------


def _dynamic_with_imgsz(tmp_path: Path, imgsz: str) -> Path:
    model = build_demo_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    model.metadata_props.add(key="graphopt.imgsz", value=imgsz)
    path = tmp_path / "dynamic.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("command", ["detect", "bench", "eval"])
def test_absurd_imgsz_metadata_is_malformed_metadata(tmp_path: Path, command: str) -> None:
    model = _dynamic_with_imgsz(tmp_path, "[1000000, 1000000]")
    args = {
        "detect": [write_images(tmp_path / "imgs", 1)],
        "bench": ["--runs", "1"],
        "eval": ["--data", write_dataset(tmp_path / "ds", 2)],
    }[command]
    r = run_cli_child(command, model, *args, tmp=tmp_path)
    line = one_error_line(r)
    assert "'graphopt.imgsz' is malformed (input size 1000000x1000000 is outside 1..4096" in line
    assert r.peak_mib < PEAK_MIB, r.peak_mib  # OpenCV tried to allocate 2.25 TB


def test_sane_imgsz_metadata_still_sizes_a_dynamic_input(tmp_path: Path) -> None:
    model = _dynamic_with_imgsz(tmp_path, "[96, 128]")
    r = run_cli("bench", model, "--runs", "1", "--json")
    assert r.code == 0 and json.loads(r.out)["imgsz"] == [96, 128], r.err


def test_a_declared_input_shape_and_eval_imgsz_are_bounded(tmp_path: Path) -> None:
    model = build_demo_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 60000  # a hostile static shape: the checker accepts it
    path = tmp_path / "huge-input.onnx"
    onnx.save_model(model, str(path))
    r = run_cli_child("bench", path, "--runs", "1", tmp=tmp_path)
    assert (
        "input size 60000x60000 is outside 1..4096 pixels a side (from the model's input shape)"
        in one_error_line(r)
    )
    assert r.peak_mib < PEAK_MIB
    dynamic = _dynamic_with_imgsz(tmp_path, "[64, 64]")
    line = one_error_line(
        run_cli("eval", dynamic, "--data", write_dataset(tmp_path / "ds", 2), "--imgsz", "50000")
    )
    assert "input size 50000x50000 is outside 1..4096" in line


# --- problem 7: typed option ranges -----------------------------------------------------------------


def test_fuse_nms_max_det_is_bounded_before_any_pass_runs(tmp_path: Path) -> None:
    model = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(model))
    args = ["--passes", "fuse-nms", "--set", "fuse-nms.max_det=10000000000000"]
    r = run_cli_child("optimize", model, "-o", tmp_path / "o.onnx", *args, tmp=tmp_path)
    assert "option fuse-nms.max_det must be in [1, 100,000]; got 10000000000000" in one_error_line(r)
    assert not (tmp_path / "o.onnx").exists() and "\x1b[" not in r.err  # no onnxruntime log lines


def test_every_integer_pass_option_has_an_upper_bound() -> None:
    """An integer option sizes something (detections, images held, steps, widths): each states its range,
    checked on arrival, and `graphopt passes --json` shows it."""
    from graphopt.passes.options import describe
    from graphopt.passes.registry import all_passes

    for spec in all_passes():
        hints = typing.get_type_hints(spec.options)
        for f in dataclasses.fields(spec.options):
            if hints[f.name] is int:
                bounds = describe(spec.options)[f.name]["range"]
                assert bounds and bounds[1] is not None, f"{spec.name}.{f.name} has no upper bound"
    shown = {p["name"]: p for p in json.loads(run_cli("passes", "--json").out)}
    assert shown["fuse-nms"]["option_details"]["max_det"]["range"] == [1, 100_000]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("prune.samples=100000", "option prune.samples must be in [1, 256]"),
        ("prune.distill_size=100000", "option prune.distill_size must be in [32, 1,280]"),
        ("quantize.sensitivity_samples=5000", "option quantize.sensitivity_samples must be in [1, 64]"),
        ("fuse-nms.max_det=0", "option fuse-nms.max_det must be in [1, 100,000]; got 0"),
    ],
)
def test_options_that_size_tensors_are_refused_out_of_range(
    tmp_path: Path, setting: str, message: str
) -> None:
    model = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(model))
    data = write_images(tmp_path / "imgs", 2)
    name = setting.split(".")[0]
    r = run_cli(
        "optimize", model, "-o", tmp_path / "o.onnx", "--passes", name, "--set", setting, "--data", data
    )
    assert message in one_error_line(r) and not (tmp_path / "o.onnx").exists()
