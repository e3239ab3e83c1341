"""Sources and the threaded loop: skip-and-count on bad input, drop stale live frames, never crash."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.detector import Detector
from runtime.loop import run_loop
from runtime.sources import Frame, ImageSource, Source, SourceError, open_source
from tests.helpers import write_images, write_video


def test_image_folder_skips_unreadable(tmp_path: Path) -> None:
    src = open_source(str(write_images(tmp_path / "imgs", 3, bad=2)))
    frames = list(src)
    assert len(frames) == 3 and src.stats.skipped == 2
    assert all("unreadable image" in r for r in src.stats.reasons)


def test_empty_folder_and_missing_camera(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="camera 97 does not open"):
        open_source("97")
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(tmp_path / "notes.txt"))


def test_corrupt_frame_mid_video_is_skipped(tmp_path: Path) -> None:
    src = open_source(str(write_video(tmp_path / "v.avi", 10, corrupt_frame=4)))
    frames = list(src)
    assert len(frames) == 9 and src.stats.skipped == 1
    assert [f.name for f in frames][4] == "frame 000005"


class FakeLive(Source):
    """A camera delivering frames faster than inference can use them."""

    live = True

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            time.sleep(0.002)
            self.stats.read += 1
            yield Frame(np.zeros((64, 64, 3), np.uint8), f"frame {i}", i, time.time())


class SlowDetector:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, image: np.ndarray):  # noqa: ANN204
        from runtime.detector import Detections

        time.sleep(self.delay)
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), [], {"infer": self.delay * 1000})


def test_live_source_drops_stale_frames() -> None:
    report = run_loop(SlowDetector(0.02), FakeLive(60))  # type: ignore[arg-type]
    assert report.dropped > 0
    assert report.frames + report.dropped == 60


def test_file_source_processes_every_frame(tmp_path: Path) -> None:
    seen: list[str] = []
    src = ImageSource(sorted(write_images(tmp_path / "i", 6).glob("*.jpg")))
    report = run_loop(SlowDetector(0.005), src, lambda f, d: seen.append(f.name))  # type: ignore[arg-type]
    assert report.frames == 6 and report.dropped == 0 and len(seen) == 6


def test_loop_with_a_real_model(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    det = Detector(zoo_onnx("yolov5"), conf=0.05)
    report = run_loop(det, open_source(str(write_video(tmp_path / "v.avi", 5))))
    summary = report.as_dict()
    assert summary["frames"] == 5 and summary["inference"]["p95_ms"] >= summary["inference"]["p50_ms"] > 0
    assert set(summary) >= {"cpu_temp_c", "throttled", "per_frame", "dropped", "skipped"}


def test_post_processing_error_surfaces(tmp_path: Path) -> None:
    src = ImageSource(sorted(write_images(tmp_path / "i", 3).glob("*.jpg")))

    def boom(frame: Frame, det: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_loop(SlowDetector(0.0), src, boom)  # type: ignore[arg-type]
