"""Log lines: one line per event, whatever the input, in both formats."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from libs.observability.logging import get_logger, setup_logging

FORGED = 'mallory\n{"event": "forged", "level": "error"}\r\nmore'


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """setup_logging binds to the sys.stderr of the moment, which capsys replaces and closes:
    afterwards, bind it again to the real one, so later tests do not log into a closed file."""
    yield
    setup_logging(service="tests", fmt="json", level="INFO")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_input_with_newlines_cannot_forge_a_log_line(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(service="test_svc", fmt=fmt, level="INFO")
    get_logger("t").warning("consumer.poison", customer_id=FORGED)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "forged" in lines[0]
    if fmt == "json":
        record = json.loads(lines[0])
        assert record["event"] == "consumer.poison"
        assert record["service"] == "test_svc"
        assert "\\n" in record["customer_id"]


def test_an_exception_that_cannot_be_formatted_still_logs_with_its_frames(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    def broken(*_: object) -> None:
        raise SystemError("AST constructor recursion depth mismatch")

    monkeypatch.setattr(structlog.processors, "format_exc_info", broken)
    setup_logging(service="test_svc", fmt="json", level="INFO")
    try:
        raise ValueError("the handler failed")
    except ValueError as exc:
        get_logger("t").error("consumer.handler_failed", exc_info=exc)
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["event"] == "consumer.handler_failed"
    assert "ValueError: the handler failed" in record["exception"]
    assert "test_logging.py" in record["exception"]
