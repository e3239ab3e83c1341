"""Exports of the real checkpoints in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest

pytest.importorskip("torch", reason="needs PyTorch (the exporter)")


from frontends import export  # noqa: E402
from graphopt.core.model import op_histogram, read_metadata  # noqa: E402
from tests.helpers import COCO128, YOLOV5N, YOLOV9T, need_shared  # noqa: E402

IMAGE = COCO128 / "images" / "train2017" / "000000000368.jpg"


def _rep_branch_adds(model: onnx.ModelProto) -> int:
    """Add nodes summing a 3x3 conv-BN branch and a 1x1 conv-BN branch (RepConv in training form)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def kernel(tensor: str) -> tuple[int, ...] | None:
        bn = producer.get(tensor)
        conv = producer.get(bn.input[0]) if bn is not None and bn.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv":
            return None
        return tuple(next(a.ints for a in conv.attribute if a.name == "kernel_shape"))

    return sum(
        1
        for n in model.graph.node
        if n.op_type == "Add" and sorted(filter(None, map(kernel, n.input))) == [(1, 1), (3, 3)]
    )


def _export_with_report(checkpoint: Path, factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    need_shared(checkpoint)
    need_shared(IMAGE)
    out = factory.mktemp(checkpoint.stem) / f"{checkpoint.stem}.onnx"
    return out, export(checkpoint, out, image=IMAGE).as_dict()


@pytest.fixture(scope="module")
def yolov9t_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _export_with_report(YOLOV9T, tmp_path_factory)


@pytest.fixture(scope="module")
def yolov5n_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _export_with_report(YOLOV5N, tmp_path_factory)


def test_yolov9t_export_keeps_training_form(yolov9t_export: tuple[Path, dict]) -> None:
    path, report = yolov9t_export
    model = onnx.load(str(path))
    ops = op_histogram(model)
    assert ops["Conv"] == 234 and ops["BatchNormalization"] == 227
    assert _rep_branch_adds(model) == 42  # RepConv: 3x3 + 1x1 branches still separate
    assert report["family"] == "ultralytics"
    assert report["outputs"] == [{"name": "output0", "shape": [1, 5, 8400]}]
    assert report["max_abs_diff"] <= 1e-3  # pixels up to 640, on a real COCO128 image
    meta = read_metadata(model)
    assert json.loads(meta["graphopt.names"]) == {"0": "ball"}
    assert meta["graphopt.head"] == "anchor-free"


def test_yolov5n_export(yolov5n_export: tuple[Path, dict]) -> None:
    path, report = yolov5n_export
    model = onnx.load(str(path))
    ops = op_histogram(model)
    assert ops["Conv"] == 60 and ops["BatchNormalization"] == 57
    assert report["family"] == "yolov5"
    assert report["outputs"] == [{"name": "output0", "shape": [1, 25200, 85]}]  # no leaked training outputs
    assert report["max_abs_diff"] <= 1e-3
    assert not list(path.parent.glob("*.data"))
    meta = read_metadata(model)
    names = json.loads(meta["graphopt.names"])
    assert len(names) == 80 and names["0"] == "person"
    assert json.loads(meta["graphopt.strides"]) == [8, 16, 32]
    assert meta["graphopt.head"] == "yolov5"
    assert json.loads(meta["graphopt.source"])["sha256"].startswith("4f180cf2")
    assert "models" not in sys.modules and "yolov5" not in sys.modules


def test_cli_export_json(tmp_path: Path) -> None:
    need_shared(YOLOV5N)
    from tests.helpers import run_cli

    result = run_cli("export", YOLOV5N, "-o", tmp_path / "m.onnx", "--imgsz", "320", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)  # no banner or log line pollutes --json
    assert data["outputs"][0]["shape"] == [1, 6300, 85]
    assert data["imgsz"] == [320, 320]


def test_real_checkpoints_load_with_weights_only(record_torch_load: list[bool]) -> None:
    """Neither real checkpoint needs --trust: both rebuild through torch's weights_only unpickler."""
    from frontends import load_checkpoint

    need_shared(YOLOV5N)
    need_shared(YOLOV9T)
    assert load_checkpoint(YOLOV5N).family == "yolov5"
    assert load_checkpoint(YOLOV9T).family == "ultralytics"
    assert record_torch_load == [True, True]


def test_missing_ultralytics_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from frontends import load_checkpoint
    from graphopt.core.errors import GraphoptError

    need_shared(YOLOV9T)
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails as if not installed
    with pytest.raises(
        GraphoptError, match=r"needs the 'ultralytics' package: pip install 'graphopt\[torch\]'"
    ):
        load_checkpoint(YOLOV9T)
