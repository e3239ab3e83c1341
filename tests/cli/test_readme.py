"""The README's newcomer command works verbatim: compile the bundled model, detect on the bundled image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_newcomer_compile_command(readme_compile: tuple[Path, dict]) -> None:
    folder, result = readme_compile  # run once per test run (tests/conftest.py), verbatim from README.md
    assert "graphopt compile" in result["command"] and "graphopt detect" in result["command"]
    assert result["returncode"] == 0, result["stderr"]
    report = json.loads((folder / "compiled" / "report.json").read_text())
    names = [d.split()[0] for d in report["sample_detections"]]
    assert "bus" in names and names.count("person") >= 3  # bus.jpg: a bus and four people
    assert (folder / "out" / "bus.jpg").is_file() and "bus" in result["stdout"]
