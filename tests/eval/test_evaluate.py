"""graphopt eval / bench / detect / convert, and tools/filter_classes.py."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import runtime.detector as detector_module
from runtime.detector import Detections
from tests.helpers import need_pnnx, run_cli, write_images
from tools.filter_classes import filter_dataset

NAMES = {0: "cat", 1: "dog", 2: "bird"}


def make_dataset(root: Path, images: int = 6, bad_label: bool = False) -> Path:
    """A YOLO dataset: random images, 1-3 boxes each, data.yaml with val = train."""
    rng = np.random.default_rng(1)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(images):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 500))
        cv2.imwrite(
            str(root / "images" / "train" / f"{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        )
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = rng.uniform(0.1, 0.4, 2)
            cx, cy = rng.uniform(0.25, 0.75, 2)
            rows.append(f"{int(rng.integers(0, 3))} {cx:.5f} {cy:.5f} {bw:.5f} {bh:.5f}")
        if bad_label and i == 0:
            rows.append("7 0.5 0.5 0.1 0.1")  # class id beyond nc=3
        (root / "labels" / "train" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train", "names": NAMES})
    )
    return data


class GroundTruthDetector:
    """Returns each image's own labels as detections: a perfect model, for checking the mAP plumbing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.names = NAMES
        self.head = "yolov5"
        self.input_hw = (640, 640)
        self.preprocess_mode = "letterbox"
        self.backend = type("B", (), {"name": "fake"})()
        self.labels: dict[tuple[int, int, int], np.ndarray] = {}

    def __call__(self, frame: np.ndarray) -> Detections:
        rows = self.labels[tuple(frame.shape)]
        h, w = frame.shape[:2]
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        return Detections(
            boxes, np.full(len(rows), 0.9), rows[:, 0].astype(int), [NAMES[int(c)] for c in rows[:, 0]]
        )


def test_eval_of_a_perfect_model_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.data.datasets import load_dataset
    from graphopt.eval.evaluate import evaluate

    data = make_dataset(tmp_path / "ds")
    fake = GroundTruthDetector()
    for item in load_dataset(data).items:
        fake.labels[tuple(cv2.imread(str(item.path)).shape)] = item.labels
    monkeypatch.setattr(detector_module, "Detector", lambda *a, **k: fake)
    result = evaluate("unused.onnx", data, progress=False)
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    assert result.precision == pytest.approx(1.0) and result.recall == pytest.approx(1.0)
    assert result.images == 6 and result.instances == load_dataset(data).instances


def test_eval_cli_json_and_bad_labels(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    data = make_dataset(tmp_path / "ds", bad_label=True)
    (tmp_path / "ds" / "images" / "train" / "broken.jpg").write_bytes(b"nope")
    result = run_cli("eval", zoo_onnx("yolov8"), "--data", data, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert {"map50", "map50_95", "images", "instances"} <= set(out)
    assert out["images"] == 6 and out["skipped_images"] == 1 and out["skipped_labels"] == 1
    assert any("class id outside 0..2" in p for p in out["problems"])
    assert 0.0 <= out["map50_95"] <= out["map50"] <= 1.0


def test_eval_errors(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    data = make_dataset(tmp_path / "ds", images=2)
    for img in (tmp_path / "ds" / "images" / "train").glob("*.jpg"):
        img.write_bytes(b"broken")
    r = run_cli("eval", zoo_onnx("yolov8"), "--data", data)
    assert r.code == 2 and "none of the 2 images could be read" in r.err
    r = run_cli("eval", zoo_onnx("yolov8"), "--data", tmp_path / "missing.yaml")
    assert r.code == 2 and r.err.startswith("error: ") and "no such file" in r.err


def test_bench_json_keys(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    image = write_images(tmp_path / "i", 1) / "img00.jpg"
    r = run_cli("bench", zoo_onnx("yolov5"), "--runs", "3", "--warmup", "1", "--image", image, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert {"avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "fps", "cpu_temp_c", "throttled"} <= set(out)
    assert out["min_ms"] <= out["p50_ms"] <= out["max_ms"] and out["end_to_end"]["avg_ms"] > 0


def test_detect_cli(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    folder = write_images(tmp_path / "imgs", 3, bad=1)
    r = run_cli("detect", zoo_onnx("yolov5"), folder, "--save", tmp_path / "out", "--conf", "0.01", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["frames"] == 3 and out["skipped"] == 1 and len(out["results"]) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img00.jpg", "img01.jpg", "img02.jpg"]
    table = run_cli("detect", zoo_onnx("yolov5"), folder)
    assert table.code == 0 and "3 frame(s)" in table.out and "1 skipped" in table.out


def test_detect_video_is_saved(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    from tests.helpers import write_video

    video = write_video(tmp_path / "clip.avi", 6, corrupt_frame=2)
    r = run_cli("detect", zoo_onnx("yolov5"), video, "--save", tmp_path / "out", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["frames"] == 5
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_detect_nothing_processable(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    r = run_cli("detect", zoo_onnx("yolov5"), folder)
    assert r.code == 2 and "nothing could be processed" in r.err and len(r.err.strip().splitlines()) == 1
    r = run_cli("detect", zoo_onnx("yolov5"), "96")
    assert r.code == 2 and "camera 96 does not open" in r.err


def test_convert_to_ncnn_matches_ort(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    need_pnnx()
    pytest.importorskip("ncnn")
    r = run_cli("convert", zoo_onnx("yolov5"), "--to", "ncnn", "-o", tmp_path / "ncnn", "--fp32", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert sorted(p.name for p in (tmp_path / "ncnn").iterdir()) == [
        "yolov5.ncnn.bin",
        "yolov5.ncnn.json",
        "yolov5.ncnn.param",
    ]
    assert out["max_rel_to_range"] < 1e-3
    frame = np.random.default_rng(3).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    a = detector_module.Detector(zoo_onnx("yolov5"), conf=0.05)(frame)
    b = detector_module.Detector(tmp_path / "ncnn", conf=0.05)(frame)
    assert b.class_ids.tolist() == a.class_ids.tolist()
    np.testing.assert_allclose(b.boxes, a.boxes, atol=0.05)


def test_convert_errors(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    r = run_cli("convert", tmp_path / "none.onnx", "--to", "ncnn", "-o", tmp_path / "x")
    assert r.code == 2 and "no such file" in r.err
    r = run_cli("convert", zoo_onnx("yolov5"), "--to", "tflite", "-o", tmp_path / "x")
    assert r.code == 2 and "tflite" in r.err


def test_filter_classes_remaps_ids(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", images=8)
    result = filter_dataset(data, tmp_path / "out", ["bird", "cat"])
    cfg = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert cfg["nc"] == 2 and cfg["names"] == {0: "bird", 1: "cat"}
    ids = {
        int(line.split()[0])
        for f in (tmp_path / "out" / "labels" / "train").glob("*.txt")
        for line in f.read_text().splitlines()
    }
    assert ids <= {0, 1}
    from graphopt.data.datasets import load_dataset

    ds = load_dataset(tmp_path / "out" / "data.yaml")
    assert ds.skipped_labels == 0 and ds.instances == result["labels"]
    src = load_dataset(data)
    expected = sum(int(((i.labels[:, 0] == 2) | (i.labels[:, 0] == 0)).sum()) for i in src.items)
    assert result["labels"] == expected


def test_filter_classes_errors(tmp_path: Path) -> None:
    from graphopt.core.errors import GraphoptError

    data = make_dataset(tmp_path / "ds", images=2)
    with pytest.raises(GraphoptError, match="unknown class 'horse'"):
        filter_dataset(data, tmp_path / "o1", ["horse"])
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "x").write_text("")
    with pytest.raises(GraphoptError, match="not empty"):
        filter_dataset(data, tmp_path / "o2", ["cat"])
