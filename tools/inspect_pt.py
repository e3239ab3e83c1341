"""Describe a YOLO `.pt` checkpoint: family, classes, layers, params, train args, date.

Nothing from the file runs unless you pass --trust: the family and referenced classes come from
the pickle's opcodes, and YOLOv5 / Ultralytics checkpoints are rebuilt by torch's weights_only
unpickler. Without --trust, other checkpoints are described from their archive only.

    python tools/inspect_pt.py ../shared/models/yolov9t-ball.pt [--json] [--trust] [--repo PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphopt.core.errors import GraphoptError  # noqa: E402


def _archive_summary(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        tensors = [i for i in zf.infolist() if "/data/" in i.filename and not i.filename.endswith("/")]
        return {"tensor_storages": len(tensors), "tensor_bytes": sum(i.file_size for i in tensors)}


def _plain(value: Any) -> Any:
    """JSON-friendly view of checkpoint values (train args may hold paths, tensors, namespaces)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dict__") and not callable(value):
        return _plain(vars(value))
    return str(value)


def _model_summary(ckpt: dict[str, Any]) -> dict[str, Any]:
    import torch

    from frontends.families.common import names_dict, strides_list

    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, torch.nn.Module):
        return {}
    layers = list(getattr(model, "model", []))
    head = layers[-1] if layers else None
    names = names_dict(getattr(model, "names", None), getattr(head, "nc", None))
    params = [p for p in model.parameters()]
    return {
        "classes": len(names),
        "names": names,
        "stride": strides_list(getattr(model, "stride", None)),
        "layers": len(layers),
        "layer_types": dict(Counter(type(m).__name__ for m in layers).most_common()),
        "head": type(head).__name__ if head is not None else None,
        "params": int(sum(p.numel() for p in params)),
        "dtype": str(params[0].dtype).replace("torch.", "") if params else None,
    }


def inspect_checkpoint(path: Path, trust: bool = False, repo: Path | None = None) -> dict[str, Any]:
    from frontends.checkpoint import pickle_globals, sha256, unsafe_globals
    from frontends.families import detect_family, read_checkpoint

    info: dict[str, Any] = {"file": str(path), "size_bytes": path.stat().st_size if path.exists() else None}
    globals_ = pickle_globals(path)
    info["sha256"] = sha256(path)
    try:
        info["family"] = detect_family(path, globals_, unsafe_globals(path))
    except GraphoptError as exc:
        info["family"] = "unknown"
        info["family_error"] = str(exc)
    info["classes_referenced"] = [
        g for g in globals_ if not g.startswith(("torch.", "collections.", "__builtin__."))
    ]
    info.update(_archive_summary(path))
    try:
        ckpt = read_checkpoint(path, repo=repo, trust=trust)
    except GraphoptError as exc:
        info["loaded"] = False
        info["not_loaded_because"] = str(exc)
        return info
    info["loaded"] = True
    data = ckpt.data
    info.update(_model_summary(data))
    for key in ("date", "version", "epoch", "best_fitness", "updates"):
        if key in data:
            info[key] = _plain(data[key])
    for key in ("train_args", "opt", "hyp"):
        if data.get(key):
            info["train_args"] = _plain(data[key])
            break
    return info


def _print(info: dict[str, Any]) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "names" and isinstance(value, dict) and len(value) > 12:
            value = {k: value[k] for k in list(value)[:12]} | {"…": f"{len(value) - 12} more"}
        if key == "train_args" and isinstance(value, dict):
            print(f"{key:<{width}}  " + ", ".join(f"{k}={v}" for k, v in value.items()))
            continue
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument(
        "--trust", action="store_true", help="allow full unpickling (runs code from the file)"
    )
    parser.add_argument("--repo", type=Path, help="training repo checkout the checkpoint needs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        info = inspect_checkpoint(args.checkpoint, trust=args.trust, repo=args.repo)
    except GraphoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
