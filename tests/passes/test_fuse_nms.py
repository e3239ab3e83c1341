"""fuse-nms: end-to-end outputs equal the runtime's host NMS; layouts, errors, NCNN refusal, after quantize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from graphopt.core.errors import GraphoptError
from graphopt.core.model import io_signature, load_model, read_metadata, save_model
from graphopt.data.feeds import FeedSource
from graphopt.passes.pipeline import Pipeline
from runtime.detector import Detector
from tests.helpers import run_cli, write_images


def _fused(path: Path, out: Path, data: Path | None = None, **options: object) -> Path:
    feeds = FeedSource(data, samples=3) if data else None
    result = Pipeline.from_passes(
        ["simplify", "fuse-nms"], {"fuse-nms": options} if options else None, feeds=feeds
    ).run(load_model(path))
    save_model(result.model, out)
    return out


@pytest.mark.parametrize("fixture", ["yolov5", "yolov8", "yolov9-dual"])
def test_end2end_outputs(zoo_onnx, tmp_path: Path, fixture: str) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx(fixture), tmp_path / "e2e.onnx", conf=0.05, max_det=20)
    sig = io_signature(load_model(out))
    assert [(o["name"], o["shape"]) for o in sig["outputs"]] == [
        ("num_dets", [1, 1]),
        ("det_boxes", [1, 20, 4]),
        ("det_scores", [1, 20]),
        ("det_classes", [1, 20]),
    ]
    meta = read_metadata(load_model(out))
    assert meta["graphopt.head"] == "end2end"
    assert json.loads(meta["graphopt.nms"]) == {
        "max_det": 20,
        "iou": 0.45,
        "conf": 0.05,
        "multi_label": False,
    }
    onnx.checker.check_model(load_model(out))


@pytest.mark.parametrize("fixture", ["yolov5", "yolov8"])
def test_detections_equal_host_nms(zoo_onnx, tmp_path: Path, fixture: str) -> None:  # noqa: ANN001
    images = write_images(tmp_path / "imgs", 5)
    conf = 1e-4  # random weights with YOLO bias priors: scores are tiny
    out = _fused(zoo_onnx(fixture), tmp_path / "e2e.onnx", data=images, conf=conf, iou=0.5, max_det=50)
    host = Detector(zoo_onnx(fixture), conf=conf, iou=0.5, max_det=50)
    fused = Detector(out, conf=conf)
    assert fused.head == "end2end"
    total = 0
    for path in sorted(images.glob("*.jpg")):
        import cv2

        frame = cv2.imread(str(path))
        a, b = host(frame), fused(frame)
        oa, ob = np.lexsort((a.class_ids, -a.scores)), np.lexsort((b.class_ids, -b.scores))
        assert a.class_ids[oa].tolist() == b.class_ids[ob].tolist()
        np.testing.assert_allclose(b.boxes[ob], a.boxes[oa], atol=1e-3)
        np.testing.assert_allclose(b.scores[ob], a.scores[oa], atol=1e-5)
        total += len(a)
    assert total > 0


def test_max_det_caps_and_pads(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx("yolov8"), tmp_path / "e2e.onnx", conf=0.0, max_det=3)
    from graphopt.core.ort_session import run

    model = load_model(out)
    res = run(model, FeedSource(samples=1).feeds_for(model))[0]
    assert int(res["num_dets"][0, 0]) == 3 and res["det_boxes"].shape == (1, 3, 4)
    out2 = _fused(zoo_onnx("yolov8"), tmp_path / "e2e2.onnx", conf=0.999, max_det=5)
    res2 = run(load_model(out2), FeedSource(samples=1).feeds_for(load_model(out2)))[0]
    assert int(res2["num_dets"][0, 0]) == 0 and not res2["det_boxes"].any()


def test_after_quantize(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    images = write_images(tmp_path / "imgs", 10)
    result = Pipeline.from_passes(
        ["quantize", "fuse-nms"],
        {"quantize": {"calibration": "minmax", "samples": 8}, "fuse-nms": {"conf": 0.05}},
        feeds=FeedSource(images, samples=2),
    ).run(load_model(zoo_onnx("yolov5")))
    assert result.reports[1].verification["ok"]
    ops = {n.op_type for n in result.model.graph.node}
    assert "NonMaxSuppression" in ops and "QuantizeLinear" in ops


def test_errors_and_ncnn_refusal(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    out = _fused(zoo_onnx("yolov5"), tmp_path / "e2e.onnx")
    with pytest.raises(GraphoptError, match="already has end-to-end NMS"):
        Pipeline.from_passes(["fuse-nms"]).run(load_model(out))
    r = run_cli("convert", out, "--to", "ncnn", "-o", tmp_path / "ncnn")
    assert r.code == 2 and "NMS inside the graph" in r.err and "fuse-nms" in r.err
    from tools.make_demo_model import GraphBuilder

    b = GraphBuilder(0)
    y = b.conv("x", 3, 4, 3)
    odd = tmp_path / "odd.onnx"
    onnx.save(b.model([("x", [1, 3, 8, 8])], [y]), str(odd))
    with pytest.raises(GraphoptError, match="expected a static decoded YOLO head"):
        Pipeline.from_passes(["fuse-nms"]).run(load_model(odd))


# --- the equivalence check, modulo ties (issue 24) -------------------------------------------------

NMS_SETTINGS = {"max_det": 3, "iou": 0.45, "conf": 0.25, "multi_label": False}


def _raw(rows: list[tuple[float, float, float, float, float, float]]) -> np.ndarray:
    """A decoded YOLOv5 head [1, N, 5 + 2]: (cx, cy, w, h, class-0 score, class-1 score), objectness 1."""
    return np.array([[*r[:4], 1.0, *r[4:]] for r in rows], np.float32)[None]


# A and B score exactly alike and overlap (IoU 0.82): NMS keeps either. D and E tie at the K = 3 cut.
# F's two class scores tie: its class is either.
TIED = _raw(
    [
        (50, 50, 20, 20, 0.9, 0.1),  # A
        (51, 50, 20, 20, 0.9, 0.1),  # B
        (200, 200, 30, 30, 0.1, 0.8),  # C
        (300, 300, 30, 30, 0.7, 0.1),  # D
        (400, 400, 30, 30, 0.1, 0.7),  # E
    ]
)


def _e2e(dets: list[tuple[tuple[float, ...], float, int]], k: int = 3) -> dict[str, np.ndarray]:
    """End-to-end outputs from (xywh, score, class) rows, padded to K."""
    boxes = np.zeros((1, k, 4), np.float32)
    scores, classes = np.zeros((1, k), np.float32), np.zeros((1, k), np.int64)
    for i, ((cx, cy, w, h), s, c) in enumerate(dets):
        boxes[0, i] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        scores[0, i], classes[0, i] = s, c
    return {"num_dets": np.array([[len(dets)]], np.int64), "det_boxes": boxes, "det_scores": scores, "det_classes": classes}


def _check(raw: np.ndarray, fused: dict[str, np.ndarray], **settings: object) -> object:
    from graphopt.passes.fuse_nms import compare_with_host_nms

    meta = {"graphopt.nms": json.dumps(NMS_SETTINGS | settings), "graphopt.nms_source_head": "yolov5"}
    return compare_with_host_nms([{"output0": raw}], [fused], meta, 1e-4, 1e-3)


# the same rows as detections: (xywh, score, class)
A = ((50, 50, 20, 20), 0.9, 0)
B = ((51, 50, 20, 20), 0.9, 0)
C = ((200, 200, 30, 30), 0.8, 1)
D = ((300, 300, 30, 30), 0.7, 0)
E = ((400, 400, 30, 30), 0.7, 1)


def test_either_side_of_a_tie_is_host_nms() -> None:
    """What host NMS keeps (A, C, D) and the other tie-breaks (B for A, E for D at the cut) all pass."""
    assert _check(TIED, _e2e([A, C, D])).ok
    alternative = _check(TIED, _e2e([B, C, E]))
    assert alternative.ok and "2 tie-broken" in alternative.reason
    tied_classes = _raw([(60, 60, 20, 20, 0.6, 0.6)])
    assert _check(tied_classes, _e2e([((60, 60, 20, 20), 0.6, 1)])).ok  # host's argmax says class 0


@pytest.mark.parametrize(
    ("fused", "message"),
    [
        ([A, C], "drops"),  # D (or E) is left out with room below K: a real loss
        ([C, D, E], "drops"),  # A and B both gone
        ([A, B, C], "overlap with IoU"),  # both sides of a suppression kept
        ([A, C, ((300, 310, 30, 30), 0.7, 0)], "not a candidate"),  # a box host decoding never had
        ([A, C, ((300, 300, 30, 30), 0.5, 0)], "not a candidate"),  # D's box with another score
        ([A, C, ((300, 300, 30, 30), 0.7, 1)], "not a candidate"),  # D with a class that is not its best
    ],
)
def test_a_real_difference_still_fails(fused: list, message: str) -> None:
    result = _check(TIED, _e2e(fused))
    assert not result.ok and message in result.reason, result.reason


def test_multi_label_keeps_every_class_above_conf() -> None:
    raw = _raw([(60, 60, 20, 20, 0.6, 0.5)])
    both = [((60, 60, 20, 20), 0.6, 0), ((60, 60, 20, 20), 0.5, 1)]
    assert _check(raw, _e2e(both), multi_label=True).ok
    result = _check(raw, _e2e(both[:1]), multi_label=True)
    assert not result.ok and "class-1 box" in result.reason and "drops" in result.reason


def test_the_pipeline_refuses_a_fused_graph_that_drops_a_detection(
    zoo_onnx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """End to end: a fuse-nms whose graph loses its best detection is caught by the check (exit 1)."""
    import graphopt.passes.fuse_nms as fuse

    original = fuse._named

    def drop_first(b, op, inputs, name, dtype, shape):  # noqa: ANN001, ANN202
        if name == "num_dets":  # one detection fewer than NMS kept
            inputs = [b.op("Sub", [inputs[0], b.const([1])], dtype=np.int64), inputs[1]]
        return original(b, op, inputs, name, dtype, shape)

    monkeypatch.setattr(fuse, "_named", drop_first)
    images = write_images(tmp_path / "imgs", 3)
    args = ["--passes", "simplify,fuse-nms", "--set", "fuse-nms.conf=0.0001", "--data", images]
    r = run_cli("optimize", zoo_onnx("yolov5"), "-o", tmp_path / "o.onnx", *args)
    assert r.code == 1 and "drops" in r.err and not (tmp_path / "o.onnx").exists(), r.err
