"""Model I/O: loading, atomic saving, metadata, summaries."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.errors import GraphoptError
from graphopt.core.model import (
    io_signature,
    load_model,
    op_histogram,
    param_count,
    read_metadata,
    save_model,
    summarize,
    write_metadata,
)
from tests.helpers import sha256


def test_op_histogram_equals_independent_count(demo_model: Path) -> None:
    model = onnx.load(str(demo_model))
    assert op_histogram(load_model(demo_model)) == dict(Counter(n.op_type for n in model.graph.node))


def test_param_count_counts_weights_not_shape_constants() -> None:
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w, shape],
    )
    assert param_count(helper.make_model(graph)) == 4 * 3 * 3 * 3


def test_io_signature(demo_model: Path) -> None:
    sig = io_signature(load_model(demo_model))
    assert sig["inputs"] == [{"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert sig["outputs"] == [{"name": "output0", "shape": [1, 7, 256], "dtype": "float32"}]


def test_metadata_roundtrip(demo_model: Path, tmp_path: Path) -> None:
    model = load_model(demo_model)
    write_metadata(model, {"graphopt.strides": [8, 16, 32], "graphopt.head": "yolov5"})
    out = save_model(model, tmp_path / "m.onnx")
    meta = read_metadata(load_model(out))
    assert meta["graphopt.strides"] == "[8, 16, 32]"
    assert meta["graphopt.head"] == "yolov5"
    assert meta["graphopt.imgsz"] == "[64, 64]"  # existing keys kept


def test_save_refuses_the_input_path(demo_model: Path) -> None:
    before = sha256(demo_model)
    with pytest.raises(GraphoptError, match="would overwrite an input"):
        save_model(load_model(demo_model), demo_model, input_path=demo_model)
    assert sha256(demo_model) == before


def test_save_is_atomic_on_failure(demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", boom)
    with pytest.raises(GraphoptError, match="cannot write the model .disk full"):
        save_model(load_model(demo_model), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_loads_external_data(demo_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(demo_model))
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    onnx.save_model(model, str(ext), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert (ext.parent / "m.onnx.data").exists()
    loaded = load_model(ext)
    assert summarize(loaded)["params"] == summarize(model)["params"]
    w = next(t for t in loaded.graph.initializer if t.dims)
    assert numpy_helper.to_array(w).size > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not an ONNX model"), (b"PK\x03\x04 not a protobuf at all \xff\xff\xff", "not")],
)
def test_load_rejects_garbage(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(GraphoptError, match=message):
        load_model(path)


def test_load_rejects_truncated(demo_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(demo_model.read_bytes()[:2000])
    with pytest.raises(GraphoptError):
        load_model(path)


def test_saved_files_have_ordinary_permissions(demo_model: Path, tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        out = save_model(load_model(demo_model), tmp_path / "m.onnx")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
