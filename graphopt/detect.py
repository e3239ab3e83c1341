"""`graphopt detect`: the runtime loop over a source, with optional annotated output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import cv2

from graphopt.errors import GraphoptError


def run_detect(
    model: str | Path,
    source: str,
    *,
    save_dir: str | Path | None = None,
    backend: str | None = None,
    threads: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    max_frames: int | None = None,
    collect: bool = False,
) -> dict[str, Any]:
    from runtime.backends import RuntimeModelError
    from runtime.detector import Detector
    from runtime.draw import draw
    from runtime.loop import run_loop
    from runtime.sources import ImageSource, SourceError, open_source

    try:
        detector = Detector(model, backend=backend, threads=threads, conf=conf, iou=iou)
        src = open_source(source)
    except (RuntimeModelError, SourceError) as exc:
        raise GraphoptError(str(exc)) from exc
    out_dir = Path(save_dir) if save_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    per_class: Counter[str] = Counter()
    frames: list[dict[str, Any]] = []
    writer: dict[str, Any] = {}

    def on_result(frame: Any, det: Any) -> None:
        per_class.update(det.names)
        if collect:
            frames.append({"frame": frame.name, "detections": det.as_dicts()})
        if out_dir is None:
            return
        annotated = draw(frame.image, det)
        if isinstance(src, ImageSource):
            cv2.imwrite(str(out_dir / frame.name), annotated)
            return
        if "video" not in writer:
            h, w = annotated.shape[:2]
            fps = src.capture.get(cv2.CAP_PROP_FPS) if hasattr(src, "capture") else 0
            name = Path(str(source)).stem if not str(source).isdigit() else f"camera{source}"
            writer["path"] = out_dir / f"{name}.mp4"
            writer["video"] = cv2.VideoWriter(
                str(writer["path"]), cv2.VideoWriter_fourcc(*"mp4v"), fps or 30, (w, h)
            )
        writer["video"].write(annotated)

    try:
        report = run_loop(detector, src, on_result, max_frames=max_frames)
    finally:
        if "video" in writer:
            writer["video"].release()
    summary = report.as_dict()
    if report.frames == 0:
        reasons = "; ".join(report.skip_reasons[:3]) or "the source produced no frames"
        raise GraphoptError(f"{source}: nothing could be processed ({reasons})")
    summary.update(
        {
            "model": str(model),
            "source": str(source),
            "backend": detector.backend.name,
            "per_class": dict(per_class.most_common()),
            "saved_to": str(out_dir) if out_dir else None,
        }
    )
    if collect:
        summary["results"] = frames
    return summary
