"""A pytest plugin: CI runs the suite in two environments (torch-free, then everything), and each test
runs once, in the first environment where it passes (.ci/run). The union is the whole suite; a test
skipped or failed in the first runs again in the second."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("graphopt")
    group.addoption("--record-passed", metavar="FILE", help="write the node ID of every passed test to FILE")
    group.addoption(
        "--skip-passed", metavar="FILE", help="deselect the tests whose node IDs FILE lists (--record-passed)"
    )


def pytest_configure(config: pytest.Config) -> None:
    record = config.getoption("--record-passed")
    # under xdist the controller sees every worker's reports: it alone writes the file (a worker's config
    # has workerinput; an environment variable would be inherited by a pytest this suite starts itself)
    if record and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_PassedRecorder(Path(record)), "graphopt-record-passed")


class _PassedRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.passed: set[str] = set()
        self.failed: set[str] = set()  # in any phase: a test whose teardown failed did not pass

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        elif report.when == "call" and report.passed:
            self.passed.add(report.nodeid)

    def pytest_sessionfinish(self) -> None:
        self.path.write_text("".join(f"{nodeid}\n" for nodeid in sorted(self.passed - self.failed)))


@pytest.hookimpl(tryfirst=True)  # before conftest orders the modules
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    listed = config.getoption("--skip-passed")
    if not listed:
        return
    try:
        passed = set(Path(listed).read_text().splitlines())
    except OSError as exc:  # a missing list must not quietly run (or skip) everything
        raise pytest.UsageError(f"--skip-passed: cannot read {listed}: {exc.strerror}") from exc
    deselected = [item for item in items if item.nodeid in passed]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.nodeid not in passed]
