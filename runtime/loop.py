"""The threaded detection loop: capture, inference and post-processing overlap.

Capture runs in its own thread. For live sources it keeps only the newest frame (a stale frame
is dropped and counted, so latency never queues up); for files every frame is processed.
Post-processing (drawing, saving, printing) runs in a worker thread while the next frame infers.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.detector import Detections, Detector
from runtime.sources import Frame, Source
from runtime.stats import cpu_temp_c, latency_summary, throttled

_END = object()


@dataclass
class LoopReport:
    frames: int = 0  # frames inferred
    dropped: int = 0  # stale live frames replaced by newer ones
    skipped: int = 0  # unreadable images / undecodable frames
    skip_reasons: list[str] = field(default_factory=list)
    detections: int = 0
    infer_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)  # preprocess + inference + decode/NMS
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "skip_reasons": self.skip_reasons,
            "detections": self.detections,
            "inference": latency_summary(self.infer_ms),
            "per_frame": latency_summary(self.frame_ms),
            "throughput_fps": self.frames / self.wall_s if self.wall_s > 0 else None,
            "cpu_temp_c": cpu_temp_c(),
            "throttled": throttled(),
        }


class _Slot:
    """Capture → inference hand-over: a one-frame slot that drops stale frames (live) or blocks (files)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.q: queue.Queue = queue.Queue(maxsize=1 if live else 2)
        self.dropped = 0

    def put(self, item: object) -> None:
        if not self.live or item is _END:
            self.q.put(item)
            return
        try:
            self.q.put_nowait(item)
        except queue.Full:
            try:
                self.q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self.q.put_nowait(item)


def run_loop(
    detector: Detector,
    source: Source,
    on_result: Callable[[Frame, Detections], None] | None = None,
    max_frames: int | None = None,
) -> LoopReport:
    report = LoopReport()
    slot = _Slot(source.live)
    stop = threading.Event()
    errors: list[BaseException] = []

    def capture() -> None:
        try:
            for frame in source:
                if stop.is_set():
                    break
                slot.put(frame)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            slot.put(_END)

    post_q: queue.Queue = queue.Queue(maxsize=4)

    def post() -> None:
        while (item := post_q.get()) is not _END:
            try:
                on_result(*item)  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()

    threads = [threading.Thread(target=capture, daemon=True, name="capture")]
    if on_result is not None:
        threads.append(threading.Thread(target=post, daemon=True, name="post"))
    for t in threads:
        t.start()
    start = time.perf_counter()
    try:
        while not stop.is_set():
            frame = slot.q.get()
            if frame is _END:
                break
            t0 = time.perf_counter()
            det = detector(frame.image)  # type: ignore[union-attr]
            report.frame_ms.append((time.perf_counter() - t0) * 1000)
            report.infer_ms.append(det.timings_ms["infer"])
            report.frames += 1
            report.detections += len(det)
            if on_result is not None:
                post_q.put((frame, det))
            if max_frames is not None and report.frames >= max_frames:
                break
    finally:
        stop.set()
        report.wall_s = time.perf_counter() - start
        if on_result is not None:
            post_q.put(_END)
        while slot.q.qsize():  # unblock a capture thread waiting on a full slot
            try:
                slot.q.get_nowait()
            except queue.Empty:
                break
        for t in threads:
            t.join(timeout=5)
        source.close()
    report.dropped = slot.dropped
    report.skipped = source.stats.skipped
    report.skip_reasons = list(source.stats.reasons)
    if errors:
        raise errors[0]
    return report
