"""Preprocessing — letterbox (YOLOv5/Ultralytics, and Darknet with `letter_box=1`) or a plain resize to the
network size (Darknet's default) — the one implementation used by the runtime, verification, calibration,
pruning and evaluation, chosen by the model's `graphopt.preprocess` metadata."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.metadata import PREPROCESS_MODES as MODES


@dataclass(frozen=True)
class Letterbox:
    """How an original image maps into the network input: `x_in = x_orig * scale + pad_x`,
    `y_in = y_orig * scale_y + pad_y` (`scale_y` is `scale` for a letterbox; a plain resize scales
    each axis on its own)."""

    scale: float
    pad_x: float
    pad_y: float
    orig_h: int
    orig_w: int
    scale_y: float | None = None

    def boxes_to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map xyxy boxes from network-input pixels back to original-image pixels (clipped)."""
        out = np.asarray(xyxy, dtype=np.float32).copy()
        out[..., [0, 2]] = (out[..., [0, 2]] - self.pad_x) / self.scale
        out[..., [1, 3]] = (out[..., [1, 3]] - self.pad_y) / (
            self.scale if self.scale_y is None else self.scale_y
        )
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, self.orig_w)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, self.orig_h)
        return out


def as_bgr(frame: object) -> np.ndarray:
    """A frame as HxWx3 uint8 BGR (grey and BGRA converted); a clear error for anything else."""
    if frame is None:
        raise ValueError("no image (None): the file could not be read or the camera returned no frame")
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
        shape = getattr(frame, "shape", None)
        raise ValueError(
            f"expected an HxWx3 BGR image array, got {type(frame).__name__} {shape or ''}".strip()
        )
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (as cv2.imread returns), got {frame.dtype}")
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[2] != 3:
        raise ValueError(f"expected 1, 3 or 4 colour channels, got {frame.shape[2]}")
    return frame


def letterbox(
    image: np.ndarray, size: tuple[int, int], pad_value: int = 114, scaleup: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad to `size` (h, w), centred, as YOLOv5/Ultralytics do."""
    h, w = image.shape[:2]
    out_h, out_w = size
    scale = min(out_h / h, out_w / w)
    if not scaleup:
        scale = min(scale, 1.0)
    new_w, new_h = round(w * scale), round(h * scale)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, bottom = round(pad_y - 0.1), round(pad_y + 0.1)
    left, right = round(pad_x - 0.1), round(pad_x + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, Letterbox(scale=scale, pad_x=left, pad_y=top, orig_h=h, orig_w=w)


def resize(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize to `size` (h, w) without keeping the aspect ratio (bilinear), as Darknet's own inference does
    unless its cfg sets `letter_box=1`."""
    h, w = image.shape[:2]
    out_h, out_w = size
    if (out_h, out_w) != (h, w):
        image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return image, Letterbox(scale=out_w / w, pad_x=0, pad_y=0, orig_h=h, orig_w=w, scale_y=out_h / h)


@dataclass(frozen=True)
class Preprocess:
    """A model's preprocessing (its `graphopt.preprocess` metadata): `mode` letterbox (with `pad_value`;
    the default, and what a model without the key gets) or resize, BGR→RGB, scale to [0, 1]. The one
    implementation behind the runtime, verification, calibration, pruning, evaluation and export."""

    pad_value: int = 114
    rgb: bool = True
    scale: float = 1.0 / 255.0
    mode: str = "letterbox"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocess mode {self.mode!r}: expected one of {', '.join(MODES)}")

    @classmethod
    def from_meta(cls, preprocess: dict | None) -> Preprocess:
        p = preprocess or {}
        return cls(
            pad_value=int(p.get("letterbox_pad", 114)),
            rgb=bool(p.get("rgb", True)),
            scale=float(p.get("scale", 1 / 255)),
            mode=str(p.get("mode", "letterbox")),
        )

    def __call__(self, frame_bgr: object, hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
        """(NCHW float32 input of size `hw`, how it maps back to the frame)."""
        frame = as_bgr(frame_bgr)
        if self.mode == "resize":
            boxed, lb = resize(frame, hw)
        else:
            boxed, lb = letterbox(frame, hw, pad_value=self.pad_value)
        return to_input_tensor(boxed, rgb=self.rgb, scale=self.scale), lb


def to_input_tensor(image_bgr: np.ndarray, rgb: bool = True, scale: float = 1.0 / 255.0) -> np.ndarray:
    """HWC uint8 BGR → NCHW float32 in [0, 1] (RGB by default), batch 1."""
    if rgb:
        image_bgr = image_bgr[..., ::-1]
    chw = np.ascontiguousarray(image_bgr.transpose(2, 0, 1), dtype=np.float32)
    return (chw * np.float32(scale))[None]
