"""CI's two environments run each test once: the first run records what passed, the second deselects it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
CASES = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("not here")

def test_fails():
    assert False

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")

def test_passes_but_its_teardown_fails(broken_teardown):
    pass
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on `folder`'s own tests, with the plugin (and none of this suite's conftest)."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.run_once"]
    return subprocess.run(
        [*command, "--rootdir", str(folder), *args], cwd=folder, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_second_run_deselects_exactly_what_the_first_passed(tmp_path: Path) -> None:
    (tmp_path / "test_cases.py").write_text(CASES)
    passed = tmp_path / "passed.txt"
    first = _pytest(tmp_path, "--record-passed", str(passed), "test_cases.py")
    assert "1 failed, 2 passed, 1 skipped, 1 error" in first.stdout, first.stdout + first.stderr
    assert passed.read_text() == "test_cases.py::test_passes\n"
    second = _pytest(tmp_path, "--skip-passed", str(passed), "test_cases.py")
    assert "1 failed, 1 passed, 1 skipped, 1 deselected, 1 error" in second.stdout, second.stdout + second.stderr


def test_a_missing_list_is_a_usage_error_not_a_full_run(tmp_path: Path) -> None:
    (tmp_path / "test_cases.py").write_text(CASES)
    result = _pytest(tmp_path, "--skip-passed", str(tmp_path / "absent.txt"))
    assert result.returncode == 4 and "cannot read" in result.stderr, result.stdout + result.stderr


def test_a_list_outside_the_repo_keeps_the_repo_as_rootdir(tmp_path: Path) -> None:
    """CI's own form (.ci/run): from the repo root, no test paths, the list in a temporary folder."""
    listed = tmp_path / "passed.txt"
    listed.write_text("")
    for option in ("--record-passed", "--skip-passed"):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", f"{option}={listed}",
             "-k", "no_test_has_this_name"],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        # 5: collected the suite, every test deselected by -k (a wrong rootdir is a usage error, 4)
        assert result.returncode == 5, result.stdout + result.stderr
