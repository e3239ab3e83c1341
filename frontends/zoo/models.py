"""Small YOLO models built from the zoo blocks, for fixtures and demos (random weights, random BN stats).

A model is a list of layers with `from` indices, like the YAML-defined YOLO models: layer i reads
the previous output (-1), one earlier layer, or a list of them. Layer 0 passes the image through,
so that a second backbone (YOLOv9's auxiliary branch) can start from the input.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from frontends.zoo.blocks import (
    C3,
    SPPELAN,
    SPPF,
    ADown,
    C2f,
    CBFuse,
    CBLinear,
    Concat,
    Conv,
    DDetect,
    Detect,
    DualDDetect,
    RepNCSPELAN4,
)

From = int | list[int]

YOLOV5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]


@dataclass
class ZooMeta:
    """What the exporter writes into metadata for a zoo model."""

    head: str  # "yolov5" | "anchor-free"
    names: dict[int, str]
    strides: list[int] = field(default_factory=lambda: list(STRIDES))
    output_names: list[str] = field(default_factory=lambda: ["output0"])
    main_output: str | None = None


class YOLO(nn.Module):
    """Layers run in order; each reads its inputs from its `f` attribute (as YOLOv5 pickles its layers).

    Real YOLOv5 checkpoints unpickle onto this class (`models.yolo.Model`): only `model` and each
    layer's `f` are used.
    """

    def __init__(self, layers: list[tuple[From, nn.Module]], meta: ZooMeta | None = None) -> None:
        super().__init__()
        for i, (f, m) in enumerate(layers):
            m.f, m.i = f, i
        self.model = nn.ModuleList(m for _, m in layers)
        self.meta = meta

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - a tensor, or a tuple for multi-output heads
        outputs: list = []
        for m in self.model:
            f = m.f
            if isinstance(f, list):
                x = [x if j == -1 else outputs[j] for j in f]
            elif f != -1:
                x = outputs[f]
            x = m(x)
            outputs.append(x)
        return x


def _names(nc: int) -> dict[int, str]:
    return {i: f"class{i}" for i in range(nc)}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so that folding BN is actually tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
    return model.eval()


def _deterministic(build: Callable[..., YOLO]) -> Callable[..., YOLO]:
    """Build under torch's RNG seeded with `seed` (restored afterwards): constructor-drawn values such as
    conv biases then depend on the seed alone, not on whatever ran before in the process."""

    @functools.wraps(build)
    def wrapper(*args: Any, seed: int = 0, **kwargs: Any) -> YOLO:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(*args, seed=seed, **kwargs)

    return wrapper


def _init(model: YOLO, seed: int) -> YOLO:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
            nn.init.kaiming_uniform_(m.weight, a=5**0.5)
    return randomize_bn(model, seed)


@_deterministic
def yolov5_tiny(nc: int = 3, width: tuple[int, int, int, int] = (8, 16, 32, 64), seed: int = 0) -> YOLO:
    """YOLOv5 v6 topology (6x6 stem, C3, SPPF, PANet, anchor Detect) at a small width."""
    w0, w1, w2, w3 = width
    layers: list[tuple[From, nn.Module]] = [
        (-1, nn.Identity()),  # 0 input
        (-1, Conv(3, w0, 6, 2, 2)),  # 1 P1/2
        (-1, Conv(w0, w1, 3, 2)),  # 2 P2/4
        (-1, C3(w1, w1, 1)),
        (-1, Conv(w1, w2, 3, 2)),  # 4 P3/8
        (-1, C3(w2, w2, 2)),
        (-1, Conv(w2, w3, 3, 2)),  # 6 P4/16
        (-1, C3(w3, w3, 1)),
        (-1, Conv(w3, w3, 3, 2)),  # 8 P5/32
        (-1, C3(w3, w3, 1)),
        (-1, SPPF(w3, w3)),  # 10
        (-1, Conv(w3, w2, 1)),  # 11
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 7], Concat()),
        (-1, C3(w2 + w3, w2, 1, False)),
        (-1, Conv(w2, w1, 1)),  # 15
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 5], Concat()),
        (-1, C3(w1 + w2, w1, 1, False)),  # 18 P3 out
        (-1, Conv(w1, w1, 3, 2)),
        ([-1, 15], Concat()),
        (-1, C3(2 * w1, w2, 1, False)),  # 21 P4 out
        (-1, Conv(w2, w2, 3, 2)),
        ([-1, 11], Concat()),
        (-1, C3(2 * w2, w3, 1, False)),  # 24 P5 out
        ([18, 21, 24], Detect(nc, YOLOV5_ANCHORS, [w1, w2, w3], STRIDES)),
    ]
    return _init(YOLO(layers, ZooMeta("yolov5", _names(nc))), seed)


@_deterministic
def yolov8_tiny(nc: int = 3, width: tuple[int, int, int, int] = (8, 16, 32, 64), seed: int = 0) -> YOLO:
    """YOLOv8 topology (C2f, SPPF, PAN, DFL anchor-free head) at a small width."""
    w0, w1, w2, w3 = width
    layers: list[tuple[From, nn.Module]] = [
        (-1, nn.Identity()),
        (-1, Conv(3, w0, 3, 2)),
        (-1, Conv(w0, w1, 3, 2)),
        (-1, C2f(w1, w1, 1, True)),
        (-1, Conv(w1, w2, 3, 2)),
        (-1, C2f(w2, w2, 2, True)),  # 5
        (-1, Conv(w2, w3, 3, 2)),
        (-1, C2f(w3, w3, 1, True)),  # 7
        (-1, Conv(w3, w3, 3, 2)),
        (-1, C2f(w3, w3, 1, True)),
        (-1, SPPF(w3, w3)),  # 10
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 7], Concat()),
        (-1, C2f(2 * w3, w3, 1)),  # 13
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 5], Concat()),
        (-1, C2f(w3 + w2, w2, 1)),  # 16 P3 out
        (-1, Conv(w2, w2, 3, 2)),
        ([-1, 13], Concat()),
        (-1, C2f(w2 + w3, w3, 1)),  # 19 P4 out
        (-1, Conv(w3, w3, 3, 2)),
        ([-1, 10], Concat()),
        (-1, C2f(2 * w3, w3, 1)),  # 22 P5 out
        ([16, 19, 22], DDetect(nc, [w2, w3, w3], STRIDES)),
    ]
    return _init(YOLO(layers, ZooMeta("anchor-free", _names(nc))), seed)


def _gelan_layers(width: tuple[int, int, int, int]) -> list[tuple[From, nn.Module]]:
    """YOLOv9 GELAN backbone + neck (layers 0-22); P3/P4/P5 outputs at 16, 19, 22."""
    w0, w1, w2, w3 = width
    return [
        (-1, nn.Identity()),  # 0 input (YOLOv9's Silence)
        (-1, Conv(3, w0, 3, 2)),  # 1 P1/2
        (-1, Conv(w0, w1, 3, 2)),  # 2 P2/4
        (-1, RepNCSPELAN4(w1, w1, w1, w1 // 2, 1)),
        (-1, ADown(w1, w2)),  # 4 P3/8
        (-1, RepNCSPELAN4(w2, w2, w2, w2 // 2, 1)),  # 5
        (-1, ADown(w2, w3)),  # 6 P4/16
        (-1, RepNCSPELAN4(w3, w3, w3, w3 // 2, 1)),  # 7
        (-1, ADown(w3, w3)),  # 8 P5/32
        (-1, RepNCSPELAN4(w3, w3, w3, w3 // 2, 1)),  # 9
        (-1, SPPELAN(w3, w3, w3 // 2)),  # 10
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 7], Concat()),
        (-1, RepNCSPELAN4(2 * w3, w3, w3, w3 // 2, 1)),  # 13
        (-1, nn.Upsample(scale_factor=2, mode="nearest")),
        ([-1, 5], Concat()),
        (-1, RepNCSPELAN4(w3 + w2, w2, w2, w2 // 2, 1)),  # 16 P3 out
        (-1, ADown(w2, w2)),
        ([-1, 13], Concat()),
        (-1, RepNCSPELAN4(w2 + w3, w3, w3, w3 // 2, 1)),  # 19 P4 out
        (-1, ADown(w3, w3)),
        ([-1, 10], Concat()),
        (-1, RepNCSPELAN4(2 * w3, w3, w3, w3 // 2, 1)),  # 22 P5 out
    ]


@_deterministic
def gelan_tiny(nc: int = 3, width: tuple[int, int, int, int] = (8, 16, 32, 64), seed: int = 0) -> YOLO:
    """YOLOv9 inference form (GELAN, RepConvN branches unfused) with a DFL head."""
    w2, w3 = width[2], width[3]
    layers = [*_gelan_layers(width), ([16, 19, 22], DDetect(nc, [w2, w3, w3], STRIDES))]
    return _init(YOLO(layers, ZooMeta("anchor-free", _names(nc))), seed)


@_deterministic
def yolov9_dual_tiny(nc: int = 3, width: tuple[int, int, int, int] = (8, 16, 32, 64), seed: int = 0) -> YOLO:
    """YOLOv9 training form with PGI: GELAN + auxiliary reversible branch (CBLinear/CBFuse) + DualDDetect.

    Outputs (auxiliary, main), named output0 and output1, as WongKinYiu's yolov9 exports them.
    """
    w0, w1, w2, w3 = width
    layers = [
        *_gelan_layers(width),
        (5, CBLinear(w2, [w2])),  # 23
        (7, CBLinear(w3, [w2, w3])),  # 24
        (9, CBLinear(w3, [w2, w3, w3])),  # 25
        (0, Conv(3, w0, 3, 2)),  # 26 auxiliary backbone from the image
        (-1, Conv(w0, w1, 3, 2)),
        (-1, RepNCSPELAN4(w1, w1, w1, w1 // 2, 1)),
        (-1, ADown(w1, w2)),  # 29
        ([23, 24, 25, -1], CBFuse([0, 0, 0])),  # 30
        (-1, RepNCSPELAN4(w2, w2, w2, w2 // 2, 1)),  # 31 A3
        (-1, ADown(w2, w3)),
        ([24, 25, -1], CBFuse([1, 1])),
        (-1, RepNCSPELAN4(w3, w3, w3, w3 // 2, 1)),  # 34 A4
        (-1, ADown(w3, w3)),
        ([25, -1], CBFuse([2])),
        (-1, RepNCSPELAN4(w3, w3, w3, w3 // 2, 1)),  # 37 A5
        ([31, 34, 37, 16, 19, 22], DualDDetect(nc, [w2, w3, w3, w2, w3, w3], STRIDES)),
    ]
    meta = ZooMeta("anchor-free", _names(nc), output_names=["output0", "output1"], main_output="output1")
    return _init(YOLO(layers, meta), seed)


def single_branch_from_dual(dual: YOLO) -> YOLO:
    """The GELAN model that a dual-branch model becomes without its auxiliary branch (same weights)."""
    head = dual.model[-1]
    assert isinstance(head, DualDDetect)
    layers = [(m.f, copy.deepcopy(m)) for m in dual.model[:23]]
    layers.append(([16, 19, 22], copy.deepcopy(head.main)))
    meta = ZooMeta("anchor-free", dict(dual.meta.names), list(dual.meta.strides))
    return YOLO(layers, meta).eval()


BUILDERS = {
    "yolov5": yolov5_tiny,
    "yolov8": yolov8_tiny,
    "gelan": gelan_tiny,
    "yolov9-dual": yolov9_dual_tiny,
}
