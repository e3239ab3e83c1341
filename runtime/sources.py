"""Frame sources: an image, a folder of images, a video file, a camera index, or picamera2.

Unreadable images and corrupt video frames are skipped and counted, never fatal; a source that
yields nothing at all is an error (raised by the loop, not here). Every image graphopt reads — the
runtime's, calibration's, verification's, evaluation's, export's — comes through `load_image()`:
its header is read first and an image above the megapixel limit is refused before it is decoded.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import imagesize
import numpy as np

from runtime.files import MAX_IMAGE_ENV, FileProblem, input_file, max_image_pixels, note_input
from runtime.logs import library_output

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
MAX_CONSECUTIVE_BAD_FRAMES = 30  # a video that keeps failing has ended, not hiccupped
FFMPEG_CONTEXT = re.compile(r"^\[[^]]*\]\s*")  # "[mov,mp4 @ 0x55…] " before FFmpeg's message


MAX_IMAGE_BYTES = 512 << 20  # an image file larger than this is not a photo


class SourceError(Exception):
    """A source that cannot be opened at all (one-line message)."""


class ImageProblem(SourceError):
    """An image file that cannot be used; `reason` is the message without the path (for skip lists)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def size_problem(width: float, height: float) -> str | None:
    """Why a `width` x `height` image (or video frame) is refused, or None when it is within the limit."""
    limit = max_image_pixels()
    if width * height <= limit:
        return None
    return (
        f"{int(width)}x{int(height)} ({width * height / 1e6:,.0f} MP) is above the {limit / 1e6:g} MP "
        f"image limit; downscale it, or raise the limit with {MAX_IMAGE_ENV}=N"
    )


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file's header alone — imagesize reads PNG, JPEG, BMP, GIF, TIFF, WebP,
    AVIF/HEIF, JPEG 2000 and Netpbm headers — or None for a header it does not know."""
    try:
        width, height = imagesize.get(str(path))
    except Exception:  # noqa: BLE001 - a damaged header; OpenCV's own check still applies
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


def load_image(path: str | Path) -> np.ndarray:
    """The BGR image in a regular file (never a FIFO or device, which would block or never end), noted
    as an input. Its header's size is checked before anything is decoded; the decoders' own messages
    (libjpeg's "Premature end of JPEG file", …) become the reason instead of reaching the terminal.
    Raises ImageProblem with the one-line reason."""
    try:
        p = input_file(path, "image", MAX_IMAGE_BYTES)
    except FileProblem as exc:
        raise ImageProblem(path, str(exc).removeprefix(f"{path}: ")) from None
    size = image_size(p)
    if size is not None and (problem := size_problem(*size)):
        raise ImageProblem(p, problem)
    image, refused = None, ""
    with library_output() as log:
        try:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        except cv2.error as exc:  # OpenCV's own pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS), or its decoder
            refused = str(exc)
    if "validateInputImageSize" in refused:
        raise ImageProblem(p, "above OpenCV's image size limit (OPENCV_IO_MAX_IMAGE_PIXELS)")
    if image is None or image.size == 0:
        # the decoder's own words (libjpeg, libpng), not OpenCV's "can't read" wrapper around them
        said = next((line for line in log if "imread" not in line and "loadsave" not in line), "")
        raise ImageProblem(p, "unreadable image" + (f" ({said[:160]})" if said else ""))
    return image


def read_image(path: str | Path) -> np.ndarray | None:
    """`load_image`, or None when the file is not a usable image (the caller counts it as skipped)."""
    try:
        return load_image(path)
    except ImageProblem:
        return None


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
            try:
                image = load_image(path)
            except ImageProblem as exc:
                self.stats.skip(f"{path.name}: {exc.reason}")
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
            with library_output():  # a damaged frame makes FFmpeg's decoder print; it is counted instead
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


# Kernel filesystems: their entries are not files, and /proc's come and go while they are listed.
SPECIAL_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _special_devices() -> dict[int, str]:
    devices = {}
    for root in SPECIAL_FILESYSTEMS:
        with contextlib.suppress(OSError):
            devices.setdefault(os.stat(root).st_dev, root)
    return devices


def images_in(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, folder links followed once), sorted; shared with the
    compiler's dataset reader. A folder on /proc, /sys or /dev is refused (SourceError: the user's
    mistake); sub-folders there are not entered, and entries that vanish or cannot be listed while
    the walk runs are passed over, as an unreadable image would be."""
    special = _special_devices()
    try:
        top = os.stat(folder)
    except OSError as exc:
        raise SourceError(f"{folder}: cannot read ({exc.strerror or exc})") from None
    if top.st_dev in special:
        raise SourceError(
            f"{folder}: on the {special[top.st_dev]} kernel filesystem, not a folder of images"
        )
    seen = {(top.st_dev, top.st_ino)}
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True, onerror=lambda _exc: None):
        keep = []
        for d in dirs:
            try:
                st = os.stat(os.path.join(root, d))
            except OSError:
                continue  # vanished, or a dangling link
            key = (st.st_dev, st.st_ino)
            if st.st_dev not in special and key not in seen:  # a link loop is entered once
                seen.add(key)
                keep.append(d)
        dirs[:] = sorted(keep)
        for name in names:
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                p = Path(root) / name
                if p.is_file():
                    found.append(p)
    return sorted(found)


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
        with _quiet_opencv(), library_output():  # a missing camera: several backends' complaints
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
        size = image_size(path)
        if size is not None and (problem := size_problem(*size)):
            raise ImageProblem(path, problem)  # one image: refused now, with its reason
        return ImageSource([path])
    with library_output() as log:  # FFmpeg's "moov atom not found" becomes the reason
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        said = f" ({FFMPEG_CONTEXT.sub('', log[0])[:160]})" if log else ""
        raise SourceError(f"{path}: cannot open as an image or a video{said}")
    frame_w, frame_h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if problem := size_problem(frame_w, frame_h):
        cap.release()
        raise SourceError(f"{path}: a video frame of {problem}")
    return VideoSource(cap, path.name, live=False)
