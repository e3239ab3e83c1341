"""`Detector`: one frame in (BGR, any size), detections out (xyxy in original pixels)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import Backend, RuntimeModelError, open_backend
from runtime.decode import decode, infer_head_format
from runtime.metadata import input_size_problem, parse_metadata
from runtime.nms import nms
from runtime.preprocess import Letterbox, Preprocess


@dataclass
class Detections:
    boxes: np.ndarray  # [M, 4] xyxy, original image pixels
    scores: np.ndarray  # [M]
    class_ids: np.ndarray  # [M]
    names: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "box": [round(float(v), 2) for v in b],
                "score": round(float(s), 4),
                "class_id": int(c),
                "name": n,
            }
            for b, s, c, n in zip(self.boxes, self.scores, self.class_ids, self.names, strict=True)
        ]


class Detector:
    """Preprocess (letterbox or resize) → backend → decode → class-aware NMS, reading everything it needs
    from metadata."""

    def __init__(
        self,
        model_path: str | Path,
        backend: str | Backend | None = None,
        threads: int | None = None,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        multi_label: bool = False,
        imgsz: int | tuple[int, int] | None = None,
        spinning: bool | None = None,  # None: backends.default_spinning()
    ) -> None:
        # A name opens one of the runtime's backends; an object with the Backend protocol is used as
        # given (another runtime a benchmark compares with, e.g. OpenVINO).
        self.backend = (
            open_backend(model_path, backend, threads, spinning)
            if backend is None or isinstance(backend, str)
            else backend
        )
        self.meta = parse_metadata(self.backend.metadata)
        self.conf, self.iou, self.max_det, self.multi_label = conf, iou, max_det, multi_label
        self.input_hw = self._input_hw(imgsz)
        self.output_name = (
            self.meta.main_output if self.meta.main_output in self.backend.output_names else None
        )
        self.head = self.meta.head or self._probe_head()
        self.names = self.meta.names
        self._preprocess = Preprocess.from_meta(self.meta.preprocess)

    def _input_hw(self, imgsz: int | tuple[int, int] | None) -> tuple[int, int]:
        """The model's static input size, else `imgsz`, else its metadata's, else 640 — within the one
        bound on input sizes (runtime.metadata.MAX_INPUT_SIDE) wherever it came from."""
        shape = self.backend.input_shape
        if len(shape) == 4 and shape[2] > 0 and shape[3] > 0:
            hw, where = (int(shape[2]), int(shape[3])), "the model's input shape"
        elif imgsz is not None:
            hw, where = ((imgsz, imgsz) if isinstance(imgsz, int) else (imgsz[0], imgsz[1])), "imgsz"
        elif self.meta.imgsz:
            hw, where = self.meta.imgsz, "the model's metadata"
        else:
            hw, where = (640, 640), "the default"
        if problem := input_size_problem(*hw):
            raise RuntimeModelError(f"{problem} (from {where})")
        return hw

    def _probe_head(self) -> str:
        """No head metadata (a peer's export): run once on a blank image and read the output shapes."""
        blank = np.zeros((1, 3, *self.input_hw), self.backend.input_dtype)
        outputs = self.backend.run(blank)
        nc = len(self.meta.names) or None
        try:
            return infer_head_format({k: v.shape for k, v in outputs.items()}, nc)
        except ValueError as exc:
            raise RuntimeModelError(str(exc)) from exc

    def class_name(self, class_id: int) -> str:
        return self.names.get(int(class_id), str(int(class_id)))

    @property
    def preprocess_mode(self) -> str:
        """`letterbox` or `resize`: how frames become the network input (the model's metadata)."""
        return self._preprocess.mode

    def preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The letterboxed input tensor in the model's input dtype (float16 models get float16)."""
        x, lb = self._preprocess(frame_bgr, self.input_hw)
        dtype = self.backend.input_dtype
        if dtype == x.dtype:
            return x, lb
        if dtype.kind != "f":
            raise RuntimeModelError(
                f"the model's input is {dtype}; the runtime feeds letterboxed images as floats "
                "(graphopt.preprocess), so it can time this model on random input (bench without --image) "
                "but not run it on images"
            )
        return x.astype(dtype), lb

    def __call__(self, frame_bgr: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        x, lb = self.preprocess(frame_bgr)
        t1 = time.perf_counter()
        outputs = self.backend.run(x)
        t2 = time.perf_counter()
        cand = nms(
            decode(outputs, self.head, self.conf, self.multi_label, self.output_name), self.iou, self.max_det
        )
        boxes = lb.boxes_to_original(cand.boxes) if len(cand.boxes) else cand.boxes.reshape(0, 4)
        t3 = time.perf_counter()
        return Detections(
            boxes=boxes,
            scores=cand.scores,
            class_ids=cand.class_ids,
            names=[self.class_name(c) for c in cand.class_ids],
            timings_ms={"pre": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3},
        )


def open_detector(model: str | Path, **kwargs: Any) -> Any:
    """A runtime.detector.Detector; every way it can fail is a RuntimeModelError (one line)."""
    from runtime.metadata import MetadataError

    try:
        return Detector(model, **kwargs)
    except MetadataError as exc:
        raise RuntimeModelError(f"{model}: {exc}") from None
