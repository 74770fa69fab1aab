"""Log lines (issue 15, item 7): stable JSON keys with the ids a line is about, secrets masked
in the whole line, the same warning at most once per window with a count of those held back,
and library noise at WARNING unless -vv."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from jobs.logs import NOISY, JsonFormatter, RateLimit, TextFormatter, configure
from sync.runs import current_run


def _record(msg: str, *args: object, level: int = logging.WARNING, name: str = "sync.engine",
            **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_have_stable_keys_and_the_ids_from_the_message() -> None:
    line = JsonFormatter().format(_record(
        "quarantined run=%s connection=%s object=%s crm_id=%s field=%s", 42, "sf", "account",
        "001ABC", "Credit_Limit__c"))
    data = json.loads(line)
    assert list(data) == ["time", "level", "logger", "message", "run_id", "connection",
                          "object", "record_id"]
    assert (data["run_id"], data["connection"], data["object"], data["record_id"]) == (
        42, "sf", "account", "001ABC")
    assert data["time"].endswith("+00:00") and data["level"] == "WARNING"


def test_the_run_id_comes_from_the_sync_context_and_extra_wins() -> None:
    token = current_run.set(7)
    try:
        plain = json.loads(JsonFormatter().format(_record("page committed")))
        extra = json.loads(JsonFormatter().format(_record("x", connection="d365")))
    finally:
        current_run.reset(token)
    assert plain["run_id"] == 7 and "connection" not in plain
    assert extra["connection"] == "d365" and extra["run_id"] == 7
    outside = json.loads(JsonFormatter().format(_record("no run here")))
    assert "run_id" not in outside


def test_secrets_are_masked_in_the_message_and_the_traceback() -> None:
    try:
        raise RuntimeError("login failed: client_secret=hunter2 Authorization: Bearer abc.def")
    except RuntimeError:
        rec = logging.LogRecord("connectors", logging.ERROR, __file__, 1,
                                "token access_token=%s", ("00D!sekrit",), sys.exc_info())
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(rec)
        assert "hunter2" not in line and "abc.def" not in line and "sekrit" not in line
        assert "***" in line


def test_a_repeated_warning_is_written_once_a_window_with_the_count_held_back() -> None:
    now = [0.0]
    limit = RateLimit(window=60, clock=lambda: now[0])
    template = "hand-off refused run=%s connection=%s quote=%s error=%s"
    passed = []
    for i in range(5):
        rec = _record(template, 1, "sf", f"0Q0{i}", "no price")
        if limit.filter(rec):
            passed.append(rec)
    assert limit.filter(_record("push failed connection=%s", "sf"))   # another template
    assert limit.filter(_record(template, 1, "d365", "x", "y"))        # another connection
    assert limit.filter(_record(template, 1, "sf", "0Q0", "x", level=logging.INFO))
    assert len(passed) == 1 and passed[0].__dict__["suppressed"] == 0
    now[0] = 61.0
    later = _record(template, 2, "sf", "0Q09", "no price")
    assert limit.filter(later) and later.__dict__["suppressed"] == 4
    assert TextFormatter().format(later).endswith("(suppressed 4 similar in the last 60 s)")
    assert json.loads(JsonFormatter().format(later))["suppressed"] == 4


@pytest.fixture
def clean_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {n: logging.getLogger(n).level for n in NOISY}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.mark.usefixtures("clean_root")
def test_library_noise_is_held_at_warning_unless_vv_and_one_handler_only() -> None:
    configure("json", 1)
    first = len(logging.getLogger().handlers)
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in NOISY)
    assert logging.getLogger().level == logging.INFO
    configure("text", 2)
    assert len(logging.getLogger().handlers) == first
    assert logging.getLogger("alembic.runtime.migration").getEffectiveLevel() == logging.DEBUG
    with pytest.raises(ValueError, match="yaml"):
        configure("yaml", 0)


def test_a_text_line_stays_one_line_whatever_the_crm_sent() -> None:
    line = TextFormatter().format(_record("refused crm_id=%s reason=%s", "001",
                                          "bad\nvalue \x1b[31mred\x00"))
    assert "\n" not in line and "\x1b" not in line and "\x00" not in line
    assert line.endswith("reason=bad\\x0avalue \\x1b[31mred\\x00")
