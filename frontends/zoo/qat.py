"""Fake-quantized (QAT-style) zoo models: int8 fake quantization on every conv's input (per tensor)
and weights (per channel), as quantization-aware training leaves them. Exported with torch.onnx,
the fake-quant ops become QuantizeLinear/DequantizeLinear pairs: a pre-quantized ONNX fixture."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FakeQuantConv(nn.Module):
    def __init__(self, conv: nn.Conv2d, input_scale: float, input_zero_point: int) -> None:
        super().__init__()
        self.conv = conv
        self.input_scale = input_scale
        self.input_zero_point = input_zero_point
        w = conv.weight.detach()
        self.register_buffer("weight_scale", (w.abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-8))
        self.register_buffer("weight_zero_point", torch.zeros(w.shape[0], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.fake_quantize_per_tensor_affine(x, self.input_scale, self.input_zero_point, 0, 255)
        w = torch.fake_quantize_per_channel_affine(
            self.conv.weight, self.weight_scale, self.weight_zero_point, 0, -128, 127
        )
        c = self.conv
        return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def fake_quantize(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """Replace every Conv2d (but fixed DFL kernels) with its fake-quantized form, input ranges observed
    on `calibration` (uint8 activations: scale = range / 255)."""
    ranges: dict[int, tuple[float, float]] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
    hooks = [
        c.register_forward_pre_hook(
            lambda m, a: ranges.__setitem__(id(m), (float(a[0].min()), float(a[0].max())))
        )
        for c in convs
    ]
    with torch.no_grad():
        model(calibration)
    for h in hooks:
        h.remove()
    targets = {id(c) for c in convs}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in targets:
                lo, hi = ranges[id(child)]
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                scale = max(hi - lo, 1e-6) / 255
                setattr(parent, name, FakeQuantConv(child, scale, int(round(-lo / scale))))
    return model.eval()
