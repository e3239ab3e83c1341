"""Frame sources: an image, a folder of images, a video file, a camera index, or picamera2.

Unreadable images and corrupt video frames are skipped and counted, never fatal; a source that
yields nothing at all is an error (raised by the loop, not here).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.files import FileProblem, input_file, note_input

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
MAX_CONSECUTIVE_BAD_FRAMES = 30  # a video that keeps failing has ended, not hiccupped


MAX_IMAGE_BYTES = 512 << 20  # an image file larger than this is not a photo


class SourceError(Exception):
    """A source that cannot be opened at all (one-line message)."""


def read_image(path: str | Path) -> np.ndarray | None:
    """cv2.imread of a regular file (never a FIFO or device, which would block or never end), noted
    as an input; None when it is not a readable image."""
    try:
        p = input_file(path, "image", MAX_IMAGE_BYTES)
    except FileProblem:
        return None
    return cv2.imread(str(p), cv2.IMREAD_COLOR)


@dataclass
class Frame:
    image: np.ndarray
    name: str  # file name, or "frame 000123"
    index: int
    timestamp: float


@dataclass
class SourceStats:
    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 20:
            self.reasons.append(reason)


class Source:
    """Iterates frames; `live` sources (cameras) may drop stale frames, files never do."""

    live = False

    def __init__(self) -> None:
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(Source):
    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            image = read_image(path)
            if image is None:
                self.stats.skip(f"{path.name}: unreadable image")
                continue
            self.stats.read += 1
            yield Frame(image, path.name, i, time.time())


class VideoSource(Source):
    def __init__(self, capture: cv2.VideoCapture, label: str, live: bool) -> None:
        super().__init__()
        self.capture = capture
        self.label = label
        self.live = live

    def __iter__(self) -> Iterator[Frame]:
        index = bad = 0
        total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not self.live else 0
        while True:
            ok, image = self.capture.read()
            if not ok or image is None or image.size == 0:
                if not self.live and total and index < total - 1 and bad < MAX_CONSECUTIVE_BAD_FRAMES:
                    bad += 1
                    index += 1
                    self.stats.skip(f"{self.label}: frame {index} could not be decoded")
                    continue
                if self.live and bad < MAX_CONSECUTIVE_BAD_FRAMES:
                    bad += 1
                    self.stats.skip(f"{self.label}: camera returned no frame")
                    continue
                return
            bad = 0
            self.stats.read += 1
            yield Frame(image, f"frame {index:06d}", index, time.time())
            index += 1

    def close(self) -> None:
        self.capture.release()


class PiCameraSource(Source):
    live = True

    def __init__(self, camera_num: int = 0, size: tuple[int, int] = (1280, 720)) -> None:
        super().__init__()
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picamera2 is not installed (sudo apt install python3-picamera2)") from exc
        try:
            self.cam = Picamera2(camera_num)
            self.cam.configure(self.cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
            self.cam.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises many types
            raise SourceError(f"picamera2 camera {camera_num} does not open ({exc})") from exc

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            image = self.cam.capture_array()  # RGB888 in picamera2 is BGR in memory, as OpenCV expects
            self.stats.read += 1
            yield Frame(image, f"frame {index:06d}", index, time.time())
            index += 1

    def close(self) -> None:
        self.cam.stop()


def images_in(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted; shared with the compiler's dataset reader."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def open_source(spec: str | int) -> Source:
    """`spec`: image or video path, folder, camera index ("0"), or "picamera2[:N]"."""
    text = str(spec)
    if text.startswith("picamera2"):
        num = text.partition(":")[2]
        return PiCameraSource(int(num) if num.isdigit() else 0)
    if text.isdigit():
        with _quiet_opencv():  # a missing camera makes OpenCV print several backends' complaints
            cap = cv2.VideoCapture(int(text))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {text} does not open (is it connected, and not in use?)")
        return VideoSource(cap, f"camera {text}", live=True)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"{path}: no such file, folder or camera")
    if path.is_dir():
        images = images_in(path)
        if not images:
            raise SourceError(f"{path}: no images in this folder")
        for image in images:
            note_input(image)
        return ImageSource(images)
    try:
        input_file(path, "image or video", max_bytes=None)
    except FileProblem as exc:
        raise SourceError(str(exc)) from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([path])
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{path}: cannot open as an image or a video")
    return VideoSource(cap, path.name, live=False)
