"""benchmarks/RESULTS.md is written by several scripts, each owning one section between markers, so
regenerating one keeps the others."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` between `<!-- section NAME -->` markers in `path` (appended when absent)."""
    begin, end = f"<!-- section {name} -->", f"<!-- /section {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else old.rstrip() + "\n\n" + block
    path.write_text(new.lstrip(), encoding="utf-8")
