"""The one guard for files: what graphopt reads, and every file it writes.

Reading: `input_file()` accepts only regular files under a size cap (a FIFO would block forever,
`/dev/zero` would fill the memory) and notes each one as *being read* for this process.
Writing: `atomic_write()` refuses any path that names a file being read (through symlinks and
hard links too: same device and inode) or a folder, writes to a hidden temp file in the target
folder and renames it into place; on any failure — an exception, or SIGTERM turned into one by the
CLI — the temp file is removed, so nothing half-written or stray is left behind.

Lives in the runtime (stdlib only) because the runtime writes files too (annotated images, video)
and must not import the compiler; the compiler uses the same guard.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Caps for inputs that are read whole into memory (a larger file is not what the user meant).
MAX_TEXT_BYTES = 64 << 20  # data.yaml, label files, recipes, golden files, sidecars
MAX_MODEL_BYTES = 2 << 30  # one protobuf cannot exceed 2 GiB (bigger models keep tensors outside)
# Images are capped by what they decode to, read from their header (runtime.sources.load_image):
# BGR is 3 bytes a pixel and the letterbox copies it, so 100 MP is 300 MB per frame in flight — above
# any camera's photo (a 200 MP phone sensor saves 12-50 MP binned) and within a Pi 5's memory.
DEFAULT_MAX_IMAGE_MEGAPIXELS = 100
MAX_IMAGE_ENV = "GRAPHOPT_MAX_IMAGE_MP"  # raises (or lowers) the limit, in megapixels


def max_image_pixels() -> int:
    """The image-size limit in pixels: GRAPHOPT_MAX_IMAGE_MP megapixels when set, else 100 MP."""
    raw = os.environ.get(MAX_IMAGE_ENV, "").strip()
    try:
        mp = float(raw) if raw else DEFAULT_MAX_IMAGE_MEGAPIXELS
    except ValueError:
        mp = DEFAULT_MAX_IMAGE_MEGAPIXELS
    if not 0 < mp < 1e6:  # NaN, negative, absurd: the default
        mp = DEFAULT_MAX_IMAGE_MEGAPIXELS
    return int(mp * 1e6)


class FileProblem(Exception):
    """A path that cannot be read or written as asked (a one-line, user-facing message)."""


_lock = threading.Lock()
_reading: dict[tuple[int, int], Path] = {}  # (st_dev, st_ino) -> path, of every file noted as input
_reading_paths: set[Path] = set()  # resolved paths (also of inputs that are folders)


def note_input(path: str | os.PathLike[str]) -> None:
    """Remember `path` as being read by this process: no output may land on it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return
    with _lock:
        _reading_paths.add(p.resolve())
        if stat.S_ISREG(st.st_mode):
            _reading[(st.st_dev, st.st_ino)] = p


def forget_inputs() -> None:
    """Forget every noted input (tests; a long-running process starting a new job)."""
    with _lock:
        _reading.clear()
        _reading_paths.clear()


def is_input(path: str | os.PathLike[str]) -> bool:
    """True when `path` names a file noted as being read (also through a symlink or a hard link)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        st = None
    with _lock:
        if st is not None and (key := (st.st_dev, st.st_ino)) in _reading:
            if _still_same(_reading[key], key):
                return True
            del _reading[key]  # the input is gone and its inode was reused by another file
        return p.resolve() in _reading_paths and (st is None or not stat.S_ISDIR(st.st_mode))


def _still_same(path: Path, key: tuple[int, int]) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == key


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def input_file(
    path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = MAX_TEXT_BYTES
) -> Path:
    """`path` as a readable regular file (noted as an input), else FileProblem with the reason."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileProblem(f"{p}: no such file") from None
    except OSError as exc:
        raise FileProblem(f"{p}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{p}: is a directory, expected {_a(what)}")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(f"{p}: not a regular file (a device, pipe or socket), expected {_a(what)}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise FileProblem(f"{p}: {st.st_size:,} bytes is too large for {_a(what)} (limit {max_bytes:,})")
    if not os.access(p, os.R_OK):
        raise FileProblem(f"{p}: permission denied")
    note_input(p)
    return p


def read_bytes(path: str | os.PathLike[str], what: str = "file", max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    """An input, whole (regular file, size-capped before it is read), else FileProblem."""
    p = input_file(path, what, max_bytes)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise FileProblem(f"{p}: cannot read ({exc.strerror or exc})") from None


def read_text(path: str | os.PathLike[str], what: str = "text file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text input, whole (regular file, size-capped), else FileProblem."""
    p = Path(path)
    data = read_bytes(p, what, max_bytes)
    if b"\x00" in data:
        raise FileProblem(f"{p}: binary content, expected {_a(what)}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{p}: not UTF-8 text (byte {exc.start}), expected {_a(what)}") from None


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """`path` is fine to write: not a file being read, not a folder, its folder creatable."""
    out = Path(path)
    if is_input(out):
        raise FileProblem(f"{out}: the {what} would overwrite an input of this command; choose another path")
    if out.is_dir():
        raise FileProblem(f"{out}: is a directory, expected a file path for the {what}")
    if out.exists() and not out.is_file():
        raise FileProblem(f"{out}: not a regular file; refusing to write the {what} there")
    return out


def output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """A folder to write into (created when missing); refuses an existing file or an input."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileProblem(f"{out}: exists and is not a folder; the {what} must be a folder")
    if is_input(out):
        raise FileProblem(f"{out}: is an input of this command; choose another {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileProblem(f"{out}: cannot create the {what} ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FileProblem(f"{out}: the {what} is not writable")
    return out


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class _Commit:
    """Outputs of one command that are renamed into place together (see `commit_together`)."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path, str]] = []  # (temp file, final path, what)
        self.made_dirs: list[Path] = []


_commit = threading.local()


def _missing_parents(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first (mkdir will create them)."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_dirs(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; only what this command created, and only when empty
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def commit_together() -> Iterator[None]:
    """Every atomic write inside the block is staged, and renamed into place only when the block ends
    normally — all of them, in order; when it raises (an error, a failed later write, SIGTERM), every
    staged temp file and every folder the writes created are removed: a command with several outputs
    (a model and its report) leaves none of them behind when it fails."""
    outer = getattr(_commit, "group", None)
    if outer is not None:  # nested: the outermost block commits
        yield
        return
    group = _commit.group = _Commit()
    try:
        yield
        for tmp, out, what in group.staged:
            check_output(out, what)  # an input may have been noted meanwhile
            try:
                os.replace(tmp, out)
            except OSError as exc:
                raise FileProblem(f"{out}: cannot write the {what} ({exc.strerror or exc})") from None
    except BaseException:
        for tmp, _, _ in group.staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _remove_dirs(group.made_dirs)
        raise
    finally:
        _commit.group = None


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], what: str = "output", *, keep_suffix: bool = False
) -> Iterator[Path]:
    """A temp file beside `path` to write (all at once, or frame by frame); renamed onto `path` when the
    block ends normally, removed when it raises — an exception, or SIGTERM turned into one by the CLI —
    with the folders it created for it. Inside `commit_together()` the rename waits for that block.

    `keep_suffix`: the temp name ends with `path`'s suffix (writers such as OpenCV pick the format
    from it).
    """
    out = check_output(path, what)
    group: _Commit | None = getattr(_commit, "group", None)
    made = _missing_parents(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=(".tmp" + out.suffix) if keep_suffix else ".tmp", dir=out.parent
        )
    except OSError as exc:
        _remove_dirs(made)
        raise FileProblem(f"{out}: cannot write the {what} there ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    if group is not None:
        group.made_dirs[:0] = made  # deeper folders of later writes come first
    done = False
    try:
        yield tmp_path
        os.chmod(tmp_path, _umask_mode())  # mkstemp creates 0600; outputs are ordinary files
        check_output(out, what)  # an input may have been noted meanwhile
        if group is not None:
            group.staged.append((tmp_path, out, what))
        else:
            os.replace(tmp_path, out)
        done = True
    except OSError as exc:
        raise FileProblem(f"{out}: cannot write the {what} ({exc.strerror or exc})") from None
    finally:
        if not (done and group is not None):
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        if not done and group is None:
            _remove_dirs(made)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    what: str = "output",
    keep_suffix: bool = False,
) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then rename it onto `path` (see atomic_output)."""
    with atomic_output(path, what, keep_suffix=keep_suffix) as tmp:
        write(tmp)
    return Path(path)


def distinct_outputs(paths: Iterable[tuple[str, str | os.PathLike[str] | None]]) -> None:
    """Two outputs of one command must not be one file (e.g. `--report X -o X`)."""
    seen: dict[Path, str] = {}
    for what, p in paths:
        if p is None:
            continue
        key = Path(p).resolve()
        if key in seen:
            raise FileProblem(f"{p}: given as both the {seen[key]} and the {what}; choose two paths")
        seen[key] = what
