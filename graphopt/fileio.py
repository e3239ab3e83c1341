"""Atomic file writes: a temp file in the target folder, then a rename (never a half-written file)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename onto `path` with ordinary file permissions."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, _umask_mode())  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp_path, out)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return out


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    def dump(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    return atomic_write(path, dump)


@dataclass
class CapturedLog:
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedLog]:
    """Capture what native code writes to file descriptor 2 (Python's sys.stderr included)."""
    log = CapturedLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.lines = sink.read().decode(errors="replace").splitlines()
