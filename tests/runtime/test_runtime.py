"""runtime/: decode, NMS, letterbox, Detector (metadata-driven and probing), stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.decode import Candidates, decode, infer_head_format
from runtime.detector import Detector
from runtime.metadata import parse_metadata
from runtime.nms import nms
from runtime.preprocess import letterbox
from runtime.stats import cpu_temp_c, latency_summary, throttled


def test_decode_yolov5_rows() -> None:
    nc = 3
    pred = np.zeros((1, 4, 5 + nc), np.float32)
    pred[0, 0] = [100, 100, 20, 40, 0.9, 0.1, 0.8, 0.0]  # class 1, score .72
    pred[0, 1] = [200, 50, 10, 10, 0.1, 0.9, 0.0, 0.0]  # score .09: filtered at .25
    pred[0, 2] = [300, 300, 40, 20, 0.8, 0.5, 0.0, 0.6]  # classes 0 (.4) and 2 (.48)
    c = decode({"output0": pred}, "yolov5", conf=0.25)
    assert c.class_ids.tolist() == [1, 2]
    np.testing.assert_allclose(c.scores, [0.72, 0.48], rtol=1e-6)
    np.testing.assert_allclose(c.boxes[0], [90, 80, 110, 120])
    multi = decode({"output0": pred}, "yolov5", conf=0.25, multi_label=True)
    assert sorted(
        zip(multi.class_ids.tolist(), np.round(multi.scores.astype(np.float64), 2).tolist(), strict=True)
    ) == [
        (0, 0.4),
        (1, 0.72),
        (2, 0.48),
    ]


def test_decode_anchor_free_columns() -> None:
    pred = np.zeros((1, 4 + 2, 3), np.float32)
    pred[0, :, 0] = [50, 60, 10, 20, 0.3, 0.9]
    pred[0, :, 1] = [10, 10, 4, 4, 0.1, 0.2]
    c = decode({"output0": pred}, "anchor-free", conf=0.25)
    assert c.class_ids.tolist() == [1] and np.allclose(c.boxes, [[45, 50, 55, 70]])


def test_decode_end2end() -> None:
    outputs = {
        "num_dets": np.array([[2]], np.int64),
        "det_boxes": np.array([[[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]], np.float32),
        "det_scores": np.array([[0.9, 0.2, 0.0]], np.float32),
        "det_classes": np.array([[3, 1, 0]], np.int64),
    }
    c = decode(outputs, "end2end", conf=0.1)
    assert c.final and c.class_ids.tolist() == [3, 1]
    assert nms(c, 0.5) is c  # NMS already ran in the graph


def test_infer_head_format() -> None:
    assert infer_head_format({"o": (1, 25200, 85)}, 80) == "yolov5"
    assert infer_head_format({"o": (1, 84, 8400)}, 80) == "anchor-free"
    assert infer_head_format({"o": (1, 5, 8400)}) == "anchor-free"
    assert infer_head_format({"o": (1, 8400, 6)}) == "yolov5"
    with pytest.raises(ValueError):
        infer_head_format({"o": (1, 10)})


def test_nms_is_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    c = Candidates(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1]))
    kept = nms(c, iou=0.5)
    assert sorted(kept.class_ids.tolist()) == [0, 1] and 0.8 not in kept.scores.tolist()


def test_nms_keeps_the_best_max_det_of_all_candidates() -> None:
    """max_det caps the result, not the candidates (OpenCV's top_k would cap the candidates)."""
    n = 500
    x = np.arange(n, dtype=np.float32) * 20  # disjoint boxes
    boxes = np.stack([x, np.zeros(n), x + 10, np.full(n, 10)], 1).astype(np.float32)
    scores = np.random.default_rng(0).permutation(n).astype(np.float32) / n
    # a duplicate of every box with a slightly lower score, to be suppressed
    c = Candidates(
        np.concatenate([boxes, boxes]), np.concatenate([scores, scores - 1e-4]), np.zeros(2 * n, int)
    )
    kept = nms(c, iou=0.5, max_det=300)
    assert len(kept.scores) == 300
    np.testing.assert_allclose(kept.scores, np.sort(scores)[::-1][:300])


def test_letterbox_maps_boxes_back() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    boxed, lb = letterbox(image, (320, 320))
    assert boxed.shape == (320, 320, 3) and lb.scale == 0.5 and lb.pad_y == 40 and lb.pad_x == 0
    np.testing.assert_allclose(lb.boxes_to_original(np.array([[0, 40, 320, 280]])), [[0, 0, 640, 480]])
    assert (boxed[:40] == 114).all()


def test_metadata_reads_ultralytics_keys() -> None:
    meta = parse_metadata({"names": "{0: 'ball', 1: 'bat'}", "stride": "32", "imgsz": "[480, 640]"})
    assert meta.names == {0: "ball", 1: "bat"} and meta.imgsz == (480, 640) and meta.strides == [8, 16, 32]


def test_detector_without_metadata_probes_the_head(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    model = onnx.load(str(zoo_onnx("yolov8")))
    frame = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    with_meta = Detector(zoo_onnx("yolov8"), conf=0.004)  # the random fixture scores ~0.0043 at most
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    bare = Detector(tmp_path / "bare.onnx", conf=0.004)
    assert bare.head == with_meta.head == "anchor-free"
    a, b = with_meta(frame), bare(frame)
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes)
    assert b.names == [str(c) for c in b.class_ids]  # no names: ids as names
    assert a.names == [with_meta.names[int(c)] for c in a.class_ids]
    assert a.boxes[:, [0, 2]].max() <= 300 and a.boxes[:, [1, 3]].max() <= 200  # clipped to the frame


def test_detector_uses_main_output_of_a_dual_model(zoo_onnx) -> None:  # noqa: ANN001
    det = Detector(zoo_onnx("yolov9-dual"), conf=0.01)
    assert det.output_name == "output1"
    det(np.zeros((128, 128, 3), np.uint8))


def test_latency_summary() -> None:
    s = latency_summary([10.0, 20.0, 30.0, 40.0])
    assert s["avg_ms"] == 25.0 and s["min_ms"] == 10.0 and s["max_ms"] == 40.0 and s["fps"] == 40.0
    assert latency_summary([])["avg_ms"] is None


def test_cpu_temperature_and_throttle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51234\n")
    assert cpu_temp_c(tmp_path) == pytest.approx(51.234)
    assert cpu_temp_c(tmp_path / "none") is None
    flags = tmp_path / "get_throttled"
    flags.write_text("50005\n")
    t = throttled(flags)
    assert t == {
        "raw": "0x50005",
        "now": ["under-voltage", "throttled"],
        "since_boot": ["under-voltage occurred", "throttling occurred"],
    }
    monkeypatch.setattr("shutil.which", lambda _name: None)  # no vcgencmd either: not a Pi
    assert throttled(tmp_path / "missing") is None


def test_resize_stretches_each_axis_and_maps_boxes_back() -> None:
    """Darknet's preprocessing (no letter_box): the frame is resized to the input, aspect not kept."""
    import cv2

    from runtime.preprocess import Preprocess, to_input_tensor

    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x, lb = Preprocess(mode="resize")(image, (320, 256))
    want = to_input_tensor(cv2.resize(image, (256, 320), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(x, want)
    assert (lb.scale, lb.scale_y, lb.pad_x, lb.pad_y) == (256 / 640, 320 / 480, 0, 0)
    np.testing.assert_allclose(
        lb.boxes_to_original(np.array([[0, 0, 256, 320], [64, 80, 128, 160]])),
        [[0, 0, 640, 480], [160, 120, 320, 240]],
        rtol=1e-6,
    )


def test_preprocess_mode_comes_from_metadata_and_defaults_to_letterbox() -> None:
    from runtime.metadata import MetadataError
    from runtime.preprocess import Preprocess

    assert Preprocess.from_meta(parse_metadata({}).preprocess) == Preprocess(114, True, 1 / 255, "letterbox")
    old = parse_metadata(
        {"graphopt.preprocess": '{"letterbox_pad": 114, "rgb": true, "scale": 0.00392156862745098}'}
    )
    assert Preprocess.from_meta(old.preprocess).mode == "letterbox"  # models written before the key
    meta = parse_metadata({"graphopt.preprocess": '{"mode": "resize"}'})
    assert Preprocess.from_meta(meta.preprocess).mode == "resize"
    with pytest.raises(MetadataError, match="'mode' = 'crop'"):
        parse_metadata({"graphopt.preprocess": '{"mode": "crop"}'})


def test_every_consumer_preprocesses_as_the_model_says(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    """The Detector (detect, eval), verification feeds and the calibration/prune image stream all go
    through the model's one Preprocess: a `resize` model is resized everywhere."""
    import cv2

    from graphopt.data.feeds import FeedSource
    from runtime.preprocess import Preprocess

    model = onnx.load(str(zoo_onnx("yolov8")))
    for prop in model.metadata_props:
        if prop.key == "graphopt.preprocess":
            prop.value = '{"letterbox_pad": 114, "rgb": true, "scale": 0.00392156862745098, "mode": "resize"}'
    path = tmp_path / "resize.onnx"
    onnx.save(model, str(path))
    frame = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame)
    want = Preprocess(mode="resize")(frame, (128, 128))[0]
    assert not np.array_equal(want, Preprocess()(frame, (128, 128))[0])
    det = Detector(path)
    assert det.preprocess_mode == "resize"
    np.testing.assert_array_equal(det.preprocess(frame)[0], want)
    np.testing.assert_array_equal(FeedSource(image, samples=1).feeds_for(model)[0]["images"], want)
    stream = FeedSource(image).image_stream(
        (128, 128), parse_metadata({p.key: p.value for p in model.metadata_props}).preprocess, 1
    )
    np.testing.assert_array_equal(next(iter(stream)), want)
