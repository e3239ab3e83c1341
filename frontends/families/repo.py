"""Checkpoints that need their training repo's code (WongKinYiu yolov7/yolov9, or yolov5 with --repo).

Their classes live in the repo's `models/` package, so they can only be rebuilt by full
unpickling with the checkout on sys.path: that runs code from the file, hence --trust.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from frontends.checkpoint import full_load, refuse_untrusted
from frontends.families import LoadedModel
from frontends.families.common import (
    InferenceOutputs,
    head_layer,
    model_from_checkpoint,
    names_dict,
    set_export_mode,
    strides_list,
)
from graphopt.core.errors import GraphoptError

_ANCHOR_HEADS = {"Detect", "IDetect", "IAuxDetect", "IBin"}
_MULTI_OUTPUT = {"DualDDetect": 2, "DualDetect": 2, "TripleDDetect": 3, "TripleDetect": 3}


def read(
    path: Path,
    family: str,
    unsafe: list[str],
    repo: Path | None,
    trust: bool,
    standins: dict[str, type] | None = None,
) -> dict[str, Any]:
    if repo is None:
        raise GraphoptError(
            f"{path}: a {family} checkpoint needs its training code: pass --repo PATH_TO_CHECKOUT (and --trust)"
        )
    if not trust:
        raise refuse_untrusted(path, unsafe)
    with contextlib.redirect_stdout(sys.stderr):  # repo code prints; stdout may carry --json
        return full_load(path, repo, standins)


def describe(path: Path, family: str, ckpt: dict[str, Any], repo: Path) -> LoadedModel:
    model = model_from_checkpoint(path, ckpt)
    head = head_layer(path, model)
    kind = type(head).__name__
    if kind in _ANCHOR_HEADS:
        # yolov7's IDetect treats `export` as "return the raw training maps" (its export.py sets it
        # unless --grid): keep it off so the eval-mode forward returns the decoded [1, N, 5+nc].
        for flag in ("export", "end2end", "include_nms", "concat"):
            if hasattr(head, flag):
                setattr(head, flag, False)
    else:
        set_export_mode(head)
    outputs = _MULTI_OUTPUT.get(kind, 1)
    output_names = [f"output{i}" for i in range(outputs)]
    return LoadedModel(
        module=InferenceOutputs(model).eval(),
        family=family,
        names=names_dict(getattr(model, "names", None), getattr(head, "nc", None)),
        strides=strides_list(getattr(model, "stride", None)),
        head="yolov5" if kind in _ANCHOR_HEADS else "anchor-free",
        output_names=output_names,
        # PGI heads list the auxiliary branch first; the last output is the main branch.
        main_output=output_names[-1] if outputs > 1 else None,
        source={"date": str(ckpt.get("date") or ""), "repo": str(repo)},
        notes=[f"loaded with the code in {repo} (--trust)"],
    )
