"""File I/O for the compiler through the one guard in `runtime.files` (errors become GraphoptError)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.core.errors import GraphoptError
from runtime import files
from runtime.logs import library_output


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], what: str = "output") -> Path:
    """Call `write(tmp_path)`, then rename onto `path`: never onto an input, nothing left on failure."""
    try:
        return files.atomic_write(path, write, what=what)
    except files.FileProblem as exc:
        raise GraphoptError(str(exc)) from None


def write_json(path: str | os.PathLike[str], obj: Any, what: str = "JSON output") -> Path:
    def dump(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    return atomic_write(path, dump, what)


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A small UTF-8 input file (regular, size-capped), noted as being read."""
    try:
        return files.read_text(path, what)
    except files.FileProblem as exc:
        raise GraphoptError(str(exc)) from None


def read_bytes(path: str | os.PathLike[str], what: str, max_bytes: int = files.MAX_MODEL_BYTES) -> bytes:
    """A binary input whole (regular file, size-capped before it is read), noted as being read."""
    try:
        return files.read_bytes(path, what, max_bytes)
    except files.FileProblem as exc:
        raise GraphoptError(str(exc)) from None


@dataclass
class CapturedLog:
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedLog]:
    """Capture what native code writes to file descriptor 2 (Python's sys.stderr included), through the
    runtime's one router (runtime.logs), so that it nests with the image decoders' capture."""
    log = CapturedLog()
    with library_output(force=True) as lines:
        yield log
    log.lines = lines
