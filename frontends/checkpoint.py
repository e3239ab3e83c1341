"""Open `.pt` checkpoints without running code from them.

Every checkpoint is first read as pickle *opcodes* (no code runs) to learn which Python classes
it references; that names its family. Loading then goes through torch's `weights_only`
unpickler with an allow-list of module classes from installed libraries (or our own zoo classes
standing in for a training repo's), which rebuilds objects without calling arbitrary code.
Anything else needs full unpickling, which can run arbitrary code: refused without `trust`.
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graphopt.errors import GraphoptError

# Module classes of installed libraries that may be allow-listed by name: importing them runs
# only that library's code, and the weights_only unpickler rebuilds instances from plain state.
ALLOWED_LIBRARY_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.")

TRUST_HINT = "pass --trust if you trust where this file comes from"


def _pickle_bytes(path: Path) -> bytes:
    if not path.exists():
        raise GraphoptError(f"{path}: no such file")
    if path.is_dir():
        raise GraphoptError(f"{path}: is a directory, expected a .pt checkpoint")
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not names:
                raise GraphoptError(f"{path}: not a PyTorch checkpoint (no data.pkl in the archive)")
            return zf.read(names[0])
    except zipfile.BadZipFile as exc:
        raise GraphoptError(
            f"{path}: corrupt or not a PyTorch checkpoint (not a zip archive: {exc})"
        ) from exc
    except (OSError, zipfile.LargeZipFile, EOFError) as exc:
        raise GraphoptError(f"{path}: cannot read checkpoint ({exc})") from exc


def pickle_globals(path: Path) -> list[str]:
    """Dotted names of every class/function the checkpoint's pickle references (no code runs)."""
    data = _pickle_bytes(path)
    found: set[str] = set()
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.add(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others on damage
        raise GraphoptError(f"{path}: corrupt checkpoint (its pickle cannot be read: {exc})") from exc
    return sorted(found)


def unsafe_globals(path: Path) -> list[str]:
    """The referenced names torch's weights_only unpickler would not accept by itself."""
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:  # noqa: BLE001 - damaged archives raise several types
        raise GraphoptError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from exc


def library_module_class(name: str) -> type | None:
    """The nn.Module subclass `name` from an allowed installed library, else None (nothing imported)."""
    if not name.startswith(ALLOWED_LIBRARY_PREFIXES):
        return None
    import importlib

    from torch import nn

    module_name, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_load(path: Path, allow: list[Any]) -> dict[str, Any]:
    """torch.load(weights_only=True) with `allow` (classes, or (class, pickled name) pairs) accepted."""
    import torch

    try:
        with torch.serialization.safe_globals(allow):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise GraphoptError(f"{path}: {_first_line(exc)}") from exc
    except (RuntimeError, EOFError) as exc:
        raise GraphoptError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from exc
    return _as_dict(path, ckpt)


def full_load(path: Path, repo: Path | None = None) -> dict[str, Any]:
    """Full unpickling (runs code from the file): only ever called when the user passed --trust."""
    import torch

    try:
        with _on_sys_path(repo):
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        where = (
            "the --repo checkout" if repo else "this environment (give its training repo with --repo PATH)"
        )
        raise GraphoptError(f"{path}: needs module '{exc.name}', not found in {where}") from exc
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise GraphoptError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from exc
    return _as_dict(path, ckpt)


@contextmanager
def _on_sys_path(repo: Path | None):  # noqa: ANN202
    if repo is None:
        yield
        return
    if not (repo / "models").is_dir():
        raise GraphoptError(f"{repo}: not a YOLO training repo checkout (no models/ folder)")
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        # Forget the repo's modules (objects keep their classes), so another repo can load later.
        root = str(repo.resolve())
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(root):
                del sys.modules[name]


def _as_dict(path: Path, ckpt: Any) -> dict[str, Any]:
    if isinstance(ckpt, dict):
        return ckpt
    return {"model": ckpt}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # torch's weights_only error puts the useful line ("Unsupported global: …") after a preamble
    key = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler" in ln), None)
    return (key or (lines[0] if lines else type(exc).__name__))[:300]


def refuse_untrusted(path: Path, classes: list[str]) -> GraphoptError:
    shown = ", ".join(classes[:4]) + (f" and {len(classes) - 4} more" if len(classes) > 4 else "")
    return GraphoptError(
        f"{path}: refusing to unpickle: it stores Python objects ({shown}) that only full unpickling can "
        f"rebuild, and unpickling can run arbitrary code; {TRUST_HINT}"
    )
