"""Run the ``corl`` entry point in-process (fast) and check the one-line-error contract."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        return self.err.strip()


def corl(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    """``corl ARGS`` through :func:`corl.cli.main` (what the console script runs)."""
    from corl.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["corl", *args])
    monkeypatch.setenv("COLUMNS", "250")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_line(result: CliResult, *needles: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr that contains every needle."""
    assert result.code == 2, (result.code, result.out[-2000:], result.err[-2000:])
    assert "Traceback" not in result.err + result.out, result.err
    line = result.error_line
    assert line.count("\n") == 0, line
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line
