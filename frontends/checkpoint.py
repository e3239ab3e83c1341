"""Open `.pt` checkpoints without running code from them.

Threat model: a checkpoint is a zip archive holding a pickle, and unpickling can call any
importable function with arguments from the file — a `.pt` from the internet is a program. Without
`--trust`, no code chosen by the file may run:

1. The pickle is first read as *opcodes* only (`pickletools`), to learn which classes it names;
   that picks the family. The archive must look like one torch wrote: one `data.pkl`, no entry
   name that is absolute or climbs out with `..` (we never extract, but such an archive is not a
   checkpoint), and a pickle of bounded size.
2. Loading uses torch's `weights_only` unpickler, which builds only tensors, plain containers and
   the classes we allow-list. torch's unpickler *calls* an allow-listed class when the pickle says
   REDUCE, with arguments from the file — so an allow-listed class whose constructor opens a file
   (e.g. Ultralytics' `AutoBackend(weights=…)`, which fully unpickles it) would be a gadget. Every
   class we allow is therefore wrapped (`restore_only`): the wrapper cannot be called (REDUCE
   fails), its `__new__` takes no arguments (NEWOBJ with arguments fails), and its `__setstate__`
   accepts only plain module state — a dict of tensors, numbers, strings, containers and other
   restored modules; no classes or functions as values (a `forward` or hook that is a class would
   be called later), no hooks. Only then does the class's own
   `__setstate__` (library code) run. After loading, objects get their real class back.
3. The allow-list is narrow: torch's own `torch.nn.modules.*` classes, Ultralytics' model classes
   (`ultralytics.nn.modules.*`, `ultralytics.nn.tasks.*`), and our zoo classes standing in for
   yolov5's pickled names. Anything else — `os.system` via `__reduce__`, a repo's own classes —
   needs full unpickling, which only `--trust` allows.
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

from frontends.inert import INERT_INSTANCES
from graphopt.core.errors import GraphoptError
from runtime.files import FileProblem, input_file

# Module classes of installed libraries that may be allow-listed by name: importing them runs
# only that library's code, and the weights_only unpickler rebuilds instances from plain state.
ALLOWED_LIBRARY_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks.")
MAX_PICKLE_BYTES = 256 << 20  # data.pkl holds structure only (tensors are separate entries)
MAX_CHECKPOINT_BYTES = 8 << 30

TRUST_HINT = "pass --trust if you trust where this file comes from"


def _pickle_bytes(path: Path) -> bytes:
    try:
        input_file(path, "PyTorch checkpoint (.pt)", MAX_CHECKPOINT_BYTES)
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            odd = [i.filename for i in infos if _unsafe_entry(i.filename)]
            if odd:
                raise GraphoptError(
                    f"{path}: not a PyTorch checkpoint (archive entry '{odd[0][:80]}' is an absolute path or "
                    "climbs out with '..')"
                )
            pickles = [i for i in infos if i.filename.endswith("data.pkl")]
            if not pickles:
                raise GraphoptError(f"{path}: not a PyTorch checkpoint (no data.pkl in the archive)")
            if len(pickles) > 1:
                raise GraphoptError(
                    f"{path}: not a PyTorch checkpoint as torch writes one: it holds {len(pickles)} pickles "
                    f"({', '.join(i.filename for i in pickles[:3])}), which one loads would be ambiguous"
                )
            if pickles[0].file_size > MAX_PICKLE_BYTES:
                raise GraphoptError(f"{path}: its pickle is {pickles[0].file_size:,} bytes; refusing to read it")
            return zf.read(pickles[0])
    except zipfile.BadZipFile as exc:
        raise GraphoptError(
            f"{path}: corrupt or not a PyTorch checkpoint (not a zip archive: {exc})"
        ) from exc
    except (OSError, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise GraphoptError(f"{path}: cannot read checkpoint ({exc})") from exc


def _unsafe_entry(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


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


def safe_load(path: Path, allow: list[tuple[type, str]]) -> dict[str, Any]:
    """torch.load(weights_only=True) accepting the module classes in `allow` ((class, pickled name)
    pairs), each only as plain module state (see `restore_only`), and the inert data types of
    `frontends.inert`; objects get their real classes back afterwards."""
    import torch

    from frontends.inert import allowed

    guards = [(restore_only(cls), name) for cls, name in allow] + allowed()
    try:
        with torch.serialization.safe_globals(guards):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise GraphoptError(f"{path}: {_first_line(exc)}") from exc
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise GraphoptError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from exc
    except RecursionError:
        raise GraphoptError(f"{path}: corrupt checkpoint (its pickle is nested too deeply)") from None
    _unguard(ckpt)
    return _as_dict(path, ckpt)


# --- restore-only stand-ins for allow-listed classes ----------------------------------------------

_GUARDS: dict[type, type] = {}
_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray)
_CONTAINERS = (dict, list, tuple, set, frozenset)
MAX_STATE_DEPTH = 64


def restore_only(cls: type) -> type:
    """A subclass of `cls` that torch's weights_only unpickler can only *restore*, never construct."""
    if cls in _GUARDS:
        return _GUARDS[cls]
    meta = type(cls)

    def refuse_call(klass: type, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(
            f"the checkpoint calls the constructor of {cls.__module__}.{cls.__qualname__}; only plain module "
            f"state is restored without --trust ({TRUST_HINT})"
        )

    def new(klass: type, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            refuse_call(klass)
        return object.__new__(klass)

    def setstate(self: Any, state: Any) -> None:
        check_module_state(cls, state)
        restore = getattr(cls, "__setstate__", None)
        if restore is not None:
            restore(self, state)
        else:
            self.__dict__.update(state)

    guard_meta = type(f"RestoreOnly{meta.__name__}", (meta,), {"__call__": refuse_call})
    guard = guard_meta(
        cls.__name__,
        (cls,),
        {"__new__": new, "__setstate__": setstate, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )
    _GUARDS[cls] = guard
    return guard


def _guarded(obj: Any) -> bool:
    return type(obj) in _GUARDS.values()


def check_module_state(cls: type, state: Any) -> None:
    """Plain module state only: str keys, no dunders, no hooks, and values built of tensors, numbers,
    strings, containers and restored modules. (A key may shadow a method — yolov5 stores `type` —
    since no value can be a class or function, such a "method" can only be data or a module.)"""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"{where}: state is a {type(state).__name__}, not plain attributes")
    for key, value in state.items():
        if not isinstance(key, str) or key.startswith("__"):
            raise pickle.UnpicklingError(f"{where}: attribute name {key!r} is not plain module state")
        if "hook" in key and value:
            raise pickle.UnpicklingError(f"{where}: the checkpoint installs hooks ('{key}')")
        _check_value(value, f"{where}.{key}", 0)


def _check_value(value: Any, where: str, depth: int) -> None:
    import torch

    if depth > MAX_STATE_DEPTH:
        raise pickle.UnpicklingError(f"{where}: nested too deeply")
    if isinstance(value, _PLAIN) and not isinstance(value, type):
        return
    if isinstance(value, (torch.Tensor, torch.dtype, torch.device, torch.Size)) or _guarded(value):
        return
    if isinstance(value, INERT_INSTANCES):
        if getattr(value, "dtype", None) is not None and value.dtype.hasobject:
            raise pickle.UnpicklingError(f"{where}: a numpy value of Python objects is not plain module state")
        if hasattr(value, "__dict__") and not isinstance(value, PurePath):
            _check_value(vars(value), where, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_value(k, where, depth + 1)
            _check_value(v, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(value, _CONTAINERS):
        for v in value:
            _check_value(v, where, depth + 1)
        return
    raise pickle.UnpicklingError(
        f"{where}: a {type(value).__name__} is not plain module state (a class or function would be called later)"
    )


def _unguard(root: Any) -> None:
    """Give every restored object its real class back (the guards only matter while unpickling)."""
    real = {guard: cls for cls, guard in _GUARDS.items()}
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if type(obj) in real:
            obj.__class__ = real[type(obj)]
            stack.extend(vars(obj).values())
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)


def full_load(path: Path, repo: Path | None = None, standins: dict[str, type] | None = None) -> dict[str, Any]:
    """Full unpickling (runs code from the file): only ever called when the user passed --trust.

    `standins` maps pickled class names (yolov5's `models.common.C3`, …) to our classes, so a
    trusted yolov5 checkpoint loads without its training repo."""
    import torch

    try:
        with _on_sys_path(repo):
            ckpt = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_mapped_pickle(standins or {})
            )
    except ModuleNotFoundError as exc:
        raise GraphoptError(_missing_module(path, exc.name or "?", repo)) from exc
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise GraphoptError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from exc
    return _as_dict(path, ckpt)


def _missing_module(path: Path, name: str, repo: Path | None) -> str:
    top = name.split(".")[0]
    if repo is not None and not ((repo / top).is_dir() or (repo / f"{top}.py").is_file()):
        # the repo's code imports a package that is not installed (yolov9 imports pandas)
        return (
            f"{path}: the code in {repo} imports '{name}', which is not installed here; install the repo's "
            f"requirements (pip install -r {repo / 'requirements.txt'}, leaving out torch/torchvision)"
        )
    where = "the --repo checkout" if repo else "this environment (give its training repo with --repo PATH)"
    return f"{path}: needs module '{name}', not found in {where}"


def _mapped_pickle(standins: dict[str, type]) -> types.ModuleType:
    """A `pickle` module for torch.load whose Unpickler resolves `standins` names to our classes."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return standins.get(f"{module}.{name}") or super().find_class(module, name)

    mapped = types.ModuleType("graphopt_mapped_pickle")
    mapped.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    mapped.Unpickler = Unpickler  # type: ignore[attr-defined]
    return mapped


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
        # Forget the repo's modules (objects keep their classes), so another repo can load later —
        # while the repo is still on sys.path: a namespace package recomputes its __path__ when
        # sys.path changes, and would then point elsewhere (onnxruntime puts its transformers/ folder,
        # which has a `models` namespace, on sys.path).
        roots = (str(repo.resolve()), str(repo))
        for name, module in list(sys.modules.items()):
            if any(p.startswith(roots) for p in _module_places(module)):
                del sys.modules[name]
        sys.path.remove(str(repo))


def _module_places(module: Any) -> list[str]:
    """Where a module lives: its file, and for a package its search path. A package without
    __init__.py (PyTorch_YOLOv4's `models/`) is a namespace package — no __file__, only a __path__
    into the repo — and left behind it would shadow the next repo's `models`."""
    places = [str(getattr(module, "__file__", None) or "")]
    try:
        path = getattr(module, "__path__", None)
        if isinstance(path, (list, tuple)) or type(path).__name__ == "_NamespacePath":
            places += [str(p) for p in path]
    except Exception:  # noqa: BLE001 - odd modules (torch's _ClassNamespace) answer attributes oddly
        pass
    return places


def _as_dict(path: Path, ckpt: Any) -> dict[str, Any]:
    if isinstance(ckpt, dict):
        return ckpt
    return {"model": ckpt}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # torch's weights_only error puts the useful line ("Unsupported global: …", or our guard's reason)
    # after a preamble and a "WeightsUnpickler error:" line
    for i, ln in enumerate(lines):
        if "Unsupported global" in ln:
            return ln[:300]
        if ln.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return lines[i + 1][:300]
        if "WeightsUnpickler error:" in ln:
            return ln.split("WeightsUnpickler error:", 1)[1].strip()[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def refuse_untrusted(path: Path, classes: list[str]) -> GraphoptError:
    shown = ", ".join(classes[:4]) + (f" and {len(classes) - 4} more" if len(classes) > 4 else "")
    return GraphoptError(
        f"{path}: refusing to unpickle: it stores Python objects ({shown}) that only full unpickling can "
        f"rebuild, and unpickling can run arbitrary code; {TRUST_HINT}"
    )
