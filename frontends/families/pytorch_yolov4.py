"""WongKinYiu PyTorch_YOLOv4 checkpoints: a pickled `models.models.Darknet` (what its train.py writes as
`init.pt`, and what its `models/export.py` loads), with the repo's code on sys.path (`--repo --trust`).

Its `utils/layers.py` imports `mish_cuda.MishCuda` when the CUDA extension is installed — the seed
team could not build it — and otherwise defines a plain `Mish`. A checkpoint pickled where the
extension existed names `mish_cuda.MishCuda`: that name is mapped to the plain Mish below (the same
function, x · tanh(softplus(x)), on the CPU), so such a file loads without the extension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from frontends.families import LoadedModel
from frontends.families.common import InferenceOutputs, names_dict
from graphopt.core.errors import GraphoptError


class MishCuda(nn.Module):
    """Stand-in for mish_cuda.MishCuda: the same activation without the CUDA extension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.softplus(x).tanh()


STANDINS: dict[str, type] = {"mish_cuda.MishCuda": MishCuda}


def describe(path: Path, ckpt: dict[str, Any], repo: Path) -> LoadedModel:
    model = next((m for m in (ckpt.get("ema"), ckpt.get("model")) if isinstance(m, nn.Module)), None)
    if model is None:
        raise GraphoptError(
            f"{path}: no Darknet model object in it (PyTorch_YOLOv4's train.py last.pt/best.pt hold a state_dict: "
            "build Darknet(cfg) with the repo, load_state_dict, and export it with frontends.export(module, …))"
        )
    heads = [m for m in model.modules() if type(m).__name__ == "YOLOLayer"]
    if not heads:
        raise GraphoptError(f"{path}: a Darknet model without YOLOLayer heads")
    model = model.float().eval()
    return LoadedModel(
        module=InferenceOutputs(model).eval(),
        family="pytorch-yolov4",
        names=names_dict(getattr(model, "names", None), int(heads[0].nc)),
        strides=[int(h.stride) for h in heads],
        head="yolov5",  # io = sigmoid(p) decoded: [1, N, 5 + nc] (xywh, objectness, classes)
        source={"repo": str(repo)},
        notes=[f"loaded with the code in {repo} (--trust); mish_cuda, if pickled, runs as plain Mish"],
    )
