"""The protocol checker's report: per scenario, what was explored (printed after the run)."""

from __future__ import annotations

from typing import Any

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("protocol checker: schedules explored per scenario")
        for line in REPORT:
            terminalreporter.write_line(line)
