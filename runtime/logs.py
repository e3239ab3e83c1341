"""What native libraries print is routed away from the user's terminal.

libjpeg ("Premature end of JPEG file"), libpng, FFmpeg ("moov atom not found") and OpenCV write
straight to file descriptor 2, beside graphopt's own one-line `error:`. Inside `library_output()`
fd 2 points at a temp file; the lines written there are handed to the caller, which turns them into
a reason ("unreadable image (Premature end of JPEG file)") or drops them. Blocks may nest and run in
several threads at once (detect decodes in its capture thread): fd 2 is redirected while any block
is open, and each block gets the lines written while it was open. `--debug` lets them through.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

MAX_CAPTURED_BYTES = 4 << 20  # kept from one block (onnxsim logs a line per node it cannot fold)

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_sink: IO[bytes] | None = None
_routing = True


def route_library_output(enabled: bool) -> None:
    """`False` (the CLI's --debug): native libraries print to the terminal as they normally do."""
    global _routing
    _routing = enabled


def _flush() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


@contextlib.contextmanager
def library_output(force: bool = False) -> Iterator[list[str]]:
    """Capture fd 2 inside the block; the yielded list holds the captured lines once the block ends.

    `force`: capture even under --debug (the caller shows or parses the lines itself).
    """
    global _depth, _saved_fd, _sink
    lines: list[str] = []
    if not (_routing or force):
        yield lines
        return
    with _lock:
        if _depth == 0:
            _flush()
            _sink = tempfile.TemporaryFile()  # noqa: SIM115 - shared by nested blocks, closed by the last
            _saved_fd = os.dup(2)
            os.dup2(_sink.fileno(), 2)
        _depth += 1
        sink = _sink
        assert sink is not None
        start = os.lseek(sink.fileno(), 0, os.SEEK_CUR)  # fd 2 shares this file offset while redirected
    try:
        yield lines
    finally:
        with _lock:
            _flush()
            end = os.lseek(sink.fileno(), 0, os.SEEK_CUR)
            size = min(end - start, MAX_CAPTURED_BYTES)
            data = os.pread(sink.fileno(), size, start) if size > 0 else b""
            _depth -= 1
            if _depth == 0:
                if _saved_fd is not None:  # not given back early by release_terminal()
                    os.dup2(_saved_fd, 2)
                    os.close(_saved_fd)
                    _saved_fd = None
                sink.close()
                _sink = None
        lines.extend(line.strip() for line in data.decode(errors="replace").splitlines() if line.strip())


def release_terminal() -> None:
    """Give fd 2 back to the terminal now, for the command's last words: a thread still inside a block
    (a capture thread that did not stop in time) must not swallow the one `error:` line. Its block then
    captures nothing more, and no new block redirects."""
    global _saved_fd, _sink, _routing
    with _lock:
        _routing = False
        if _saved_fd is not None:
            _flush()
            os.dup2(_saved_fd, 2)
            os.close(_saved_fd)
            _saved_fd = None
            # the sink stays open for the blocks still running (they read what they captured)


def onnxruntime_log_severity() -> int:
    """onnxruntime's log level for every session: 4 (fatal only) while routing — a failure comes back
    as the exception the caller turns into its one line, and the coloured log line would stand beside
    it; 2 (warnings) under --debug."""
    return 4 if _routing else 2


def quiet_onnxruntime(ort: object) -> int:
    """Set onnxruntime's default logger (sessions that set no level of their own, such as the
    quantizer's calibration sessions) to `onnxruntime_log_severity()`, and return that level."""
    severity = onnxruntime_log_severity()
    with contextlib.suppress(Exception):
        ort.set_default_logger_severity(severity)  # type: ignore[attr-defined]
    return severity
