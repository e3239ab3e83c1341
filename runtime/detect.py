"""`graphopt detect`: the runtime loop over a source, with optional annotated output (runtime only:
numpy, OpenCV and one backend).

Saved files go through the one write guard (runtime.files): never onto a source image or video,
atomic (a video is written to a temp file and renamed when the run ends), nothing left behind
when the run fails or is stopped.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import cv2

from runtime.detector import open_detector
from runtime.draw import draw
from runtime.files import (
    FileProblem,
    atomic_output,
    atomic_write,
    check_output,
    is_input,
    note_input,
    output_dir,
)
from runtime.loop import run_loop
from runtime.sources import ImageSource, SourceError, open_source


def _image_outputs(src: Any, source: str, out_dir: Path) -> dict[int, Path]:
    """Where each source image's annotated copy goes (sub-folders kept, so names cannot collide)."""
    root = Path(source)
    planned = {}
    for i, path in enumerate(src.paths):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        planned[i] = out_dir / rel
    clashes = [p for p in planned.values() if is_input(p)]
    if clashes:
        raise FileProblem(
            f"--save {out_dir}: would overwrite the source image(s) {', '.join(str(c) for c in clashes[:3])}; "
            "choose a folder that is not the source"
        )
    return planned


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
    if not (0 <= conf <= 1 and 0 <= iou <= 1):
        raise ValueError("conf and iou must be between 0 and 1")
    if max_frames is not None and max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    note_input(model)
    detector = open_detector(model, backend=backend, threads=threads, conf=conf, iou=iou)
    src = open_source(source)
    out_dir = Path(save_dir) if save_dir else None
    image_paths: dict[int, Path] = {}
    video_path = None
    if out_dir is not None:
        try:
            output_dir(out_dir, "--save folder")
            if isinstance(src, ImageSource):
                image_paths = _image_outputs(src, source, out_dir)
            else:
                name = Path(str(source)).stem if not str(source).isdigit() else f"camera{source}"
                video_path = check_output(out_dir / f"{name}.mp4", "annotated video")
        except FileProblem:
            src.close()
            raise
    per_class: Counter[str] = Counter()
    frames: list[dict[str, Any]] = []
    video: dict[str, Any] = {}
    cleanup = contextlib.ExitStack()

    def on_result(frame: Any, det: Any) -> None:
        per_class.update(det.names)
        if collect:
            frames.append({"frame": frame.name, "detections": det.as_dicts()})
        if out_dir is None:
            return
        annotated = draw(frame.image, det)
        if image_paths:
            target = image_paths[frame.index]

            def encode(tmp: Path) -> None:
                if not cv2.imwrite(str(tmp), annotated):
                    raise FileProblem(f"{target}: OpenCV cannot write this image format")

            atomic_write(target, encode, what="annotated image", keep_suffix=True)
            return
        if "writer" not in video:
            h, w = annotated.shape[:2]
            fps = src.capture.get(cv2.CAP_PROP_FPS) if hasattr(src, "capture") else 0
            tmp = cleanup.enter_context(atomic_output(video_path, "annotated video", keep_suffix=True))
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps or 30, (w, h))
            if not writer.isOpened():
                raise FileProblem(f"{video_path}: OpenCV cannot write an mp4 video here")
            cleanup.callback(writer.release)  # runs before the rename (callbacks unwind in reverse)
            video["writer"] = writer
        video["writer"].write(annotated)

    with cleanup:
        report = run_loop(detector, src, on_result, max_frames=max_frames)
    summary = report.as_dict()
    if report.frames == 0:
        reasons = "; ".join(report.skip_reasons[:3]) or "the source produced no frames"
        raise SourceError(f"{source}: nothing could be processed ({reasons})")
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
