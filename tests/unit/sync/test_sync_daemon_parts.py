"""The daemon's pieces that need no I/O: log redaction and JSON lines, the schedule."""
import json
import logging

from jobs.daemon import JsonFormatter, RedactSecrets


def _record(msg, *args):
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)


def test_secrets_never_reach_a_log_line():
    rec = _record("login ok access_token=%s header Authorization: Bearer %s",
                  "00Dabc!secret", "eyJhbGciOi.secret")
    RedactSecrets().filter(rec)
    line = rec.getMessage()
    assert "secret" not in line and "***" in line


def test_json_lines_carry_level_logger_and_message():
    data = json.loads(JsonFormatter().format(_record("sync run=%s outcome=%s", 7, "ok")))
    assert data["message"] == "sync run=7 outcome=ok" and data["level"] == "INFO"
