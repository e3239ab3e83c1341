"""graphopt's own NCNN int8 calibration table: activation scales from the fp32 NCNN model's blobs.

The fp32 model runs on the calibration images (the same images and preprocessing as `quantize`:
a data.yaml's train split, letterboxed or resized as the runtime does); ncnn's Extractor hands out
every blob a quantized layer reads. Two streaming passes, as ncnn2table does: the blob's absmax,
then a 2048-bin histogram of |x| over [0, absmax] (nothing is kept per image). Methods:

- `kl`: ncnn2table's KL: the threshold bin t in [128, 2048) whose clipped distribution, merged into
  128 levels and expanded back, diverges least; threshold = (t + 0.5)·absmax/2048.
- `aciq`: ncnn2table's ACIQ: a Gaussian clip from absmax and the blob's element count N,
  threshold = 3.924·(absmax·2·0.175·(1+√(π·ln 4)))/√(2·ln N).

Scale = 127/threshold. Weight scales are per output channel (per group for ConvolutionDepthWise):
127/absmax, and 31/absmax for 3×3 stride-1 dilation-1 Convolutions, whose int8 Winograd F43 path
needs 6-bit weights (ncnn2table).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from graphopt.compile.ncnn_format import NcnnLayer
from graphopt.core.errors import GraphoptError

HISTOGRAM_BINS = 2048
TARGET_BINS = 128
KL_EPS = 1e-4
METHODS = ("kl", "aciq")
ACIQ_ALPHA_8BIT = 3.92403714


def weight_scales(layer: NcnnLayer) -> np.ndarray:
    """Per output channel (per group for ConvolutionDepthWise), as ncnn2table computes them."""
    w = layer.arrays[0]
    if layer.type == "ConvolutionDepthWise":
        rows = w.reshape(layer.geti(7, 1), -1)
        limit = 127.0
    else:
        rows = w.reshape(layer.geti(0), -1)
        kw, kh = layer.geti(1), layer.geti(11, layer.geti(1))
        dw, dh = layer.geti(2, 1), layer.geti(12, layer.geti(2, 1))
        sw, sh = layer.geti(3, 1), layer.geti(13, layer.geti(3, 1))
        limit = 31.0 if (kw, kh, dw, dh, sw, sh) == (3, 3, 1, 1, 1, 1) else 127.0
    absmax = np.abs(rows).max(1)
    # an all-zero channel quantizes to zeros whatever its scale; 1 keeps the file's scales positive
    return np.where(absmax > 0, limit / np.maximum(absmax, 1e-30), 1.0).astype(np.float32)


def quantize_weights(layer: NcnnLayer, scales: np.ndarray) -> np.ndarray:
    """int8 values of the layer's weights (ncnn's float2int8: round half away from zero, clamp ±127)."""
    w = layer.arrays[0]
    groups = scales.size
    scaled = w.reshape(groups, -1) * scales[:, None]
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(q, -127, 127).reshape(w.shape).astype(np.float32)


@dataclass
class BlobStat:
    absmax: float = 0.0
    elements: int = 0  # per image (ACIQ's N)
    histogram: np.ndarray | None = None


def kl_threshold(histogram: np.ndarray, absmax: float) -> float:
    """ncnn2table's KL threshold, exactly, for every candidate threshold bin t at once.

    The expanded distribution is constant (the level's mean q_j) over the bins a level covers
    whole, so its KL terms sum from prefix sums of p and p·log p; only the one bin split by each
    fractional level edge is taken alone. That is O(128) per t instead of O(t)."""
    total = histogram.sum()
    if total == 0 or absmax == 0:
        return absmax or 1.0
    h = histogram.astype(np.float64) / total
    p = h + KL_EPS
    cum = np.concatenate([[0.0], np.cumsum(h)])  # mass of bins [0, k)
    psum = np.concatenate([[0.0], np.cumsum(p)])
    plogp = np.concatenate([[0.0], np.cumsum(p * np.log(p))])
    tail = cum[-1] - cum[:-1]  # mass of bins [k, 2048)
    t = np.arange(TARGET_BINS, HISTOGRAM_BINS)[:, None]
    per = t / TARGET_BINS
    edges = np.arange(TARGET_BINS + 1) * per  # [T, 129] fractional level edges
    lower = np.floor(edges).astype(np.int64)
    frac = edges - lower
    hpad = np.append(h, 0.0)
    at = cum[lower] + frac * hpad[lower]  # mass up to each edge
    q = np.diff(at, axis=1) / per + KL_EPS  # the expanded value of a bin a level covers whole
    whole_lo = np.where(frac[:, :-1] > 0, lower[:, :-1] + 1, lower[:, :-1])  # first whole bin of level j
    whole_hi = lower[:, 1:]  # one past its last whole bin
    last = t[:, 0] - 1  # bin t-1 also holds the clipped mass beyond t
    p_last = tail[last] + KL_EPS
    mass = psum[whole_hi] - psum[whole_lo]
    mass[:, -1] += p_last - p[last]  # level 127 ends at bin t-1
    cross = (mass * np.log(q)).sum(1)
    split = frac[:, 1:-1] > 0  # the bin under inner edge j+1, shared by levels j and j+1
    kb = lower[:, 1:-1]
    shared = frac[:, 1:-1] * (q[:, :-1] - KL_EPS) + (1 - frac[:, 1:-1]) * (q[:, 1:] - KL_EPS) + KL_EPS
    cross += np.where(split, p[kb] * np.log(shared), 0.0).sum(1)
    self_term = plogp[last] + p_last * np.log(p_last)
    kl = self_term - cross
    best = int(t[int(np.argmin(kl)), 0])
    return (best + 0.5) * absmax / HISTOGRAM_BINS


def aciq_threshold(absmax: float, elements: int) -> float:
    if absmax == 0 or elements < 2:
        return absmax or 1.0
    gaussian = 0.5 * 0.35 * (1 + math.sqrt(math.pi * math.log(4)))
    std = absmax * 2 * gaussian / math.sqrt(2 * math.log(elements))
    return ACIQ_ALPHA_8BIT * std


class Calibrator:
    """Streams images through the fp32 NCNN model and collects each blob's statistics."""

    def __init__(self, param: str, weights: str, input_blob: str, blobs: list[str], threads: int = 2) -> None:
        import ncnn

        from runtime.backends import default_spinning

        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        if not default_spinning():
            self.net.opt.openmp_blocktime = 0
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_int8_inference"):
            setattr(self.net.opt, flag, False)  # the reference is fp32 arithmetic
        if self.net.load_param(param) != 0 or self.net.load_model(weights) != 0:
            raise GraphoptError(f"{param}: ncnn cannot load the fp32 model")
        self.input_blob, self.blobs = input_blob, blobs
        self.stats = {b: BlobStat() for b in blobs}
        self.images = 0

    def _blobs(self, x: np.ndarray) -> Iterable[tuple[str, np.ndarray]]:
        ex = self.net.create_extractor()
        # light mode: a blob is freed once the layers reading it have run. The blobs are extracted in
        # layer order, so each extract continues from the blobs still pending; same statistics, and
        # the extractor holds the network's frontier instead of every activation of the image.
        ex.set_light_mode(True)
        ex.input(self.input_blob, self._ncnn.Mat(np.ascontiguousarray(x[0])))
        for b in self.blobs:
            ret, mat = ex.extract(b)
            if ret != 0:
                raise GraphoptError(f"ncnn could not compute blob '{b}' of the fp32 model")
            yield b, np.abs(np.array(mat, dtype=np.float32))

    def absmax_pass(self, images: Iterable[np.ndarray]) -> None:
        for x in images:
            self.images += 1
            for b, a in self._blobs(x):
                s = self.stats[b]
                s.absmax = max(s.absmax, float(a.max()) if a.size else 0.0)
                s.elements = a.size

    def histogram_pass(self, images: Iterable[np.ndarray]) -> None:
        for x in images:
            for b, a in self._blobs(x):
                s = self.stats[b]
                if s.histogram is None:
                    s.histogram = np.zeros(HISTOGRAM_BINS, np.int64)
                if s.absmax == 0:
                    continue
                nz = a[a != 0]  # ncnn2table leaves exact zeros (ReLU's) out of the histogram
                idx = np.minimum((nz / s.absmax * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
                s.histogram += np.bincount(idx, minlength=HISTOGRAM_BINS)

    def scales(self, method: str) -> dict[str, float]:
        out = {}
        for b, s in self.stats.items():
            if method == "kl":
                hist = s.histogram if s.histogram is not None else np.zeros(HISTOGRAM_BINS, np.int64)
                threshold = kl_threshold(hist, s.absmax)
            else:
                threshold = aciq_threshold(s.absmax, s.elements)
            out[b] = 127.0 / threshold if threshold > 0 else 1.0
        return out
