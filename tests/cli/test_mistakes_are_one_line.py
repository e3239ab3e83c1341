"""A user's mistake in any command is one `error:` line and exit 2, never a traceback: bad files,
data.yaml and labels, metadata, options, golden files, old opsets, unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml

from tests.helpers import one_error_line, run_cli, tree_hashes

NAMES = {0: "a", 1: "b", 2: "c"}


def _images(folder: Path, count: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


def _dataset(root: Path, labels: dict[int, str] | None = None, **yaml_extra: object) -> Path:
    _images(root / "images" / "train")
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        text = (labels or {}).get(i, "0 0.5 0.5 0.2 0.2\n")
        (root / "labels" / "train" / f"{i}.txt").write_text(text)
    cfg = {"path": ".", "train": "images/train", "val": "images/train", "names": NAMES} | yaml_extra
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"




def test_external_data_outside_the_model_folder_or_missing(demo: Path, tmp_path: Path) -> None:
    model = onnx.load(str(demo))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    inner = tmp_path / "models"
    inner.mkdir()
    onnx.save_model(model, str(inner / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    m = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save_model(m, str(inner / "escape.onnx"))
    assert "outside the model's folder" in one_error_line(run_cli("inspect", inner / "escape.onnx"))
    (inner / "m.data").unlink()
    assert "external data" in one_error_line(run_cli("inspect", inner / "m.onnx"))


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ({"names": {"x": "a", "y": "b"}}, "'names' keys must be class ids"),
        ({"nc": "abc"}, "'nc' must be an integer"),
        ({"val": 5}, "'val' must be a path"),
        ({"path": ["a", 3]}, "'path' must be a path"),
        ({"names": {0: "a", 2: "c"}}, "without gaps"),
    ],
)
def test_bad_data_yaml(demo: Path, tmp_path: Path, edit: dict, expect: str) -> None:
    data = _dataset(tmp_path / "ds", **edit)
    before = tree_hashes(tmp_path)
    assert expect in one_error_line(run_cli("eval", demo, "--data", data))
    assert tree_hashes(tmp_path) == before


def test_binary_data_yaml(demo: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert "binary content" in one_error_line(run_cli("eval", demo, "--data", data))
    assert "binary content" in one_error_line(
        run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", "--data", data)
    )


def test_label_file_not_utf8_or_a_folder_is_skipped_and_reported(demo: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    labels = tmp_path / "ds" / "labels" / "train"
    (labels / "0.txt").write_bytes(b"0 0.5 \xff\xfe 0.2 0.2\n")
    (labels / "1.txt").unlink()
    (labels / "1.txt").mkdir()
    result = run_cli("eval", demo, "--data", data, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["images"] == 1 and out["skipped_images"] == 2
    problem = " ".join(out["problems"])
    assert "label file cannot be read" in problem and "not UTF-8" in problem and "directory" in problem


def test_polygon_labels_become_boxes(tmp_path: Path) -> None:
    from graphopt.data.datasets import load_dataset

    polygon = "1 0.2 0.2 0.6 0.2 0.6 0.5 0.2 0.5\n"
    data = _dataset(tmp_path / "ds", labels={0: polygon, 1: "0 0.5 0.5 0.2 0.2 0.9\n"})
    ds = load_dataset(data)
    np.testing.assert_allclose(ds.items[0].labels, [[1, 0.4, 0.35, 0.4, 0.3]], atol=1e-6)
    assert len(ds.items[1].labels) == 0 and ds.skipped_labels == 1  # 6 fields: neither a box nor a polygon
    assert any("polygon" in p for p in ds.problems)


def _with_metadata(demo: Path, tmp_path: Path, key: str, value: str) -> Path:
    model = onnx.load(str(demo))
    model.metadata_props.add(key=key, value=value)
    path = tmp_path / f"meta-{abs(hash((key, value[:50])))}.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("graphopt.names", "[" * 100_000),
        ("graphopt.names", '{"x": "a"}'),
        ("graphopt.imgsz", '"big"'),
        ("graphopt.head", "mystery"),
        ("graphopt.strides", "8"),
        ("graphopt.preprocess", '{"scale": "x"}'),
        ("graphopt.history", '{"not": "a list"}'),
    ],
)
def test_malformed_metadata(demo: Path, tmp_path: Path, key: str, value: str) -> None:
    model = _with_metadata(demo, tmp_path, key, value)
    images = _images(tmp_path / "imgs", 1)
    assert f"'{key}' is malformed" in one_error_line(run_cli("detect", model, images))
    assert f"'{key}' is malformed" in one_error_line(run_cli("bench", model, "--runs", "1"))
    if key == "graphopt.history":
        line = one_error_line(run_cli("optimize", model, "-o", tmp_path / "o.onnx", "--recipe", "simplify"))
        assert f"'{key}' is malformed" in line


def test_unwritable_output_locations(demo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = one_error_line(run_cli("optimize", demo, "-o", blocker / "o.onnx", "--recipe", "simplify"))
    assert "cannot write" in line
    assert "cannot write" in one_error_line(run_cli("check", demo, "--golden", "/proc/graphopt.json", "--update"))
    images = _images(tmp_path / "imgs", 1)
    assert "cannot create" in one_error_line(run_cli("detect", demo, images, "--save", blocker / "out"))


@pytest.mark.parametrize(
    "args",
    [
        ["--iou", "-1"],
        ["--iou", "2"],
        ["--conf", "2"],
        ["--conf", "nan"],
        ["--conf", "inf"],
        ["--max-frames", "0"],
        ["--max-frames", "-1"],
        ["--threads", "0"],
    ],
)
def test_detect_option_ranges(demo: Path, tmp_path: Path, args: list[str]) -> None:
    images = _images(tmp_path / "imgs", 1)
    one_error_line(run_cli("detect", demo, images, *args))


@pytest.mark.parametrize("args", [["--atol", "nan"], ["--atol", "-1"], ["--rtol", "inf"], ["--verify-samples", "0"]])
def test_optimize_option_ranges(demo: Path, tmp_path: Path, args: list[str]) -> None:
    one_error_line(run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", *args))
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    "golden",
    [
        {"ops": 5},
        {"ops": {"Conv": "many"}},
        {"ops": {"Conv": 1}, "params": -3},
        {"ops": {"Conv": 1}, "outputs": "output0"},
        [1, 2],
    ],
)
def test_malformed_golden(demo: Path, tmp_path: Path, golden: object) -> None:
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(golden))
    assert "golden" in one_error_line(run_cli("check", demo, "--golden", path))


def test_old_opset_is_refused_clearly(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 7)],
    )
    model.ir_version = 3
    path = tmp_path / "op7.onnx"
    onnx.save_model(model, str(path))
    assert run_cli("inspect", path).code == 0  # reading it is fine
    line = one_error_line(run_cli("optimize", path, "-o", tmp_path / "o.onnx", "--recipe", "lossless"))
    assert "opset 7 is older" in line and "convert_version" in line


def test_detector_on_an_unreadable_image_says_so(demo: Path) -> None:
    from runtime.detector import Detector

    det = Detector(demo)
    with pytest.raises(ValueError, match="no image .None.: the file could not be read"):
        det(None)
    grey = det(np.zeros((40, 50), np.uint8))  # grey frames are converted, not rejected
    assert grey.boxes.shape[1] == 4


def test_calibration_refuses_what_memory_cannot_hold(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphopt.quantize.ort as q

    monkeypatch.setattr(q, "available_memory", lambda: 1 << 10)
    images = _images(tmp_path / "imgs", 8, size=(64, 64))
    result = run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--passes", "quantize", "--data", images)
    assert "calibration needs about" in one_error_line(result) and "available" in result.err


def test_eval_of_a_fused_nms_model_says_what_caps_it(demo: Path, tmp_path: Path) -> None:
    fused = tmp_path / "fused.onnx"
    # --no-verify: the random demo head makes boxes with negative widths, which host and ONNX NMS treat
    # differently; real heads never do (the real-model test checks fuse-nms against host NMS)
    assert run_cli("optimize", demo, "-o", fused, "--passes", "fuse-nms", "--no-verify").code == 0
    data = _dataset(tmp_path / "ds")
    result = run_cli("eval", fused, "--data", data, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["nms_in_graph"] is True and out["conf"] == 0.25 and out["max_det"] == 100  # the graph's
    assert any("NMS is inside this model's graph" in p for p in out["problems"])
    table = run_cli("eval", fused, "--data", data)
    assert "warning: NMS is inside this model's graph" in table.out
