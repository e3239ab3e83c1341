"""Convolution algebra shared by the folding passes (pure numpy, no graph)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ConvKernel:
    """A 2-D convolution as numbers: weight [Cout, Cin/g, kh, kw], bias [Cout], and its geometry."""

    weight: np.ndarray
    bias: np.ndarray
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    strides: tuple[int, int]
    group: int

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    def padded_to(self, kh: int, kw: int) -> ConvKernel | None:
        """The same convolution with a zero-padded (centred) kh x kw kernel, or None if not centred."""
        dh, dw = kh - self.kernel[0], kw - self.kernel[1]
        if dh < 0 or dw < 0 or dh % 2 or dw % 2:
            return None
        ph, pw = dh // 2, dw // 2
        weight = np.pad(self.weight, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        t, l_, b, r = self.pads
        return ConvKernel(weight, self.bias, (t + ph, l_ + pw, b + ph, r + pw), self.strides, self.group)


def bn_scale_shift(
    scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization (inference) as y = x * s + t per channel, computed in float64."""
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    t = bias.astype(np.float64) - mean.astype(np.float64) * s
    return s, t


def fold_bn_after(k: ConvKernel, s: np.ndarray, t: np.ndarray) -> ConvKernel:
    """Conv followed by per-output-channel affine (BN): scale each filter, fold the shift into the bias."""
    w = k.weight.astype(np.float64) * s.reshape(-1, 1, 1, 1)
    b = k.bias.astype(np.float64) * s + t
    return ConvKernel(w, b, k.pads, k.strides, k.group)


def fold_bn_before(k: ConvKernel, s: np.ndarray, t: np.ndarray) -> ConvKernel | None:
    """Per-input-channel affine (BN) followed by Conv. Exact only without zero padding (the padded
    border would see 0, not the BN's shift), so padded convolutions are refused (None)."""
    if any(k.pads):
        return None
    cout, cin_g = k.weight.shape[:2]
    # input channel feeding weight[o, i]: group(o) * cin_g + i
    groups_of_out = np.arange(cout) // (cout // k.group)
    channel = groups_of_out[:, None] * cin_g + np.arange(cin_g)[None, :]
    w64 = k.weight.astype(np.float64)
    w = w64 * s[channel][:, :, None, None]
    b = k.bias.astype(np.float64) + (w64 * t[channel][:, :, None, None]).sum(axis=(1, 2, 3))
    return ConvKernel(w, b, k.pads, k.strides, k.group)


def identity_kernel(
    channels: int, group: int, scale: np.ndarray | None = None, shift: np.ndarray | None = None
) -> ConvKernel:
    """x (optionally x * s + t per channel) as a 1x1 convolution with `group` groups."""
    cin_g = channels // group
    w = np.zeros((channels, cin_g, 1, 1))
    w[np.arange(channels), np.arange(channels) % cin_g, 0, 0] = 1.0 if scale is None else scale
    b = np.zeros(channels) if shift is None else shift.astype(np.float64)
    return ConvKernel(w, b, (0, 0, 0, 0), (1, 1), group)


def merge_parallel(kernels: list[ConvKernel]) -> ConvKernel | None:
    """Sum of parallel convolutions over one input as one convolution, or None if incompatible."""
    kh = max(k.kernel[0] for k in kernels)
    kw = max(k.kernel[1] for k in kernels)
    padded = [k.padded_to(kh, kw) for k in kernels]
    if any(p is None for p in padded):
        return None
    first = padded[0]
    for p in padded[1:]:
        if (p.pads, p.strides, p.group, p.weight.shape) != (
            first.pads,
            first.strides,
            first.group,
            first.weight.shape,
        ):
            return None
    weight = sum(p.weight.astype(np.float64) for p in padded)
    bias = sum(p.bias.astype(np.float64) for p in padded)
    return ConvKernel(weight, bias, first.pads, first.strides, first.group)
