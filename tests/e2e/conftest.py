"""e2e: the conformance counts, printed at the end (tests/e2e/test_conformance.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def conformance_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one line for the terminal summary."""
    return request.config.stash.setdefault(_LINES, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section('upstream conformance suites')
        for line in lines:
            terminalreporter.write_line(line)
