"""Log output of every command and the daemon: one line per event, text or JSON, no secrets.

Rules kept here:
- ``configure(fmt, verbosity)`` is called once per command line (``AppContext``; ``run``
  again with its level): one handler on the root logger writing to the current ``sys.stderr``,
  text (``time level logger message``) or JSON, one object per line. Calling it again replaces
  the format and the level, never adds a second handler.
- JSON keys are stable: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then
  where known ``run_id``, ``connection``, ``object``, ``record_id``, then ``suppressed`` and
  ``exc``. The ids come from the record's ``extra``, else the sync's ``current_run`` context
  variable (the run id), else the message's own ``run=``, ``connection=``, ``object=``,
  ``crm_id=`` / ``quote=`` / ``record=`` pairs (how the sync writes its lines).
- Library noise (``NOISY``: alembic, urllib3, apscheduler, uvicorn's access log, msal) is held
  at WARNING unless ``-vv``.
- The same warning (logger, level, message template, and connection and object where known) is
  written at most once per ``RateLimit.window`` seconds (records and runs do not count: a
  refusal repeated for a thousand quotes is one line a minute, a failure of each object is its
  own line); the next one written says how many were suppressed
  (`` (suppressed K similar in the last N s)``, JSON ``suppressed``). INFO and below pass.
- Text lines are one line each: control characters in a message (newlines, terminal escapes
  from CRM data) are written as ``\\xNN`` escapes (JSON escapes them by itself); only a
  traceback adds lines.
- Secrets never reach the output: ``redact`` masks bearer tokens, access tokens, client
  secrets, passwords, authorization headers and session ids in the whole formatted line,
  traceback included (the rules of the daemon's former filter, kept as they were).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from sync.runs import current_run

NOISY = ("alembic", "urllib3", "apscheduler", "uvicorn.access", "msal")
FORMATS = ("text", "json")

_SECRET = re.compile(
    r"(?i)(bearer\s+|access_token[\"'=:\s]+|client_secret[\"'=:\s]+|password[\"'=:\s]+|"
    r"authorization[\"'=:\s]+(?:bearer\s+)?|session_id[\"'=:\s]+)([^\s\"',&]+)")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_PAIR = re.compile(r"\b(run|connection|object|crm_id|quote|record)=([^\s,;]+)")
_FROM_MESSAGE = {"run": "run_id", "connection": "connection", "object": "object",
                 "crm_id": "record_id", "quote": "record_id", "record": "record_id"}
CONTEXT_KEYS = ("run_id", "connection", "object", "record_id")


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


class RedactSecrets(logging.Filter):
    """Masks secrets in the message itself (for handlers ledgerbridge does not format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The ids a line is about (see the module's rules for where each comes from)."""
    found: dict[str, Any] = {}
    for key, value in _PAIR.findall(record.getMessage()):
        if value not in ("None", ""):
            found.setdefault(_FROM_MESSAGE[key], value)
    if "run_id" not in found:
        run = current_run.get()
        if run is not None:
            found["run_id"] = run
    for key in CONTEXT_KEYS:
        value = getattr(record, key, None)
        if value is not None:
            found[key] = value
    if "run_id" in found and str(found["run_id"]).isdigit():
        found["run_id"] = int(found["run_id"])
    return {k: found[k] for k in CONTEXT_KEYS if k in found}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        data.update(context(record))
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            data["suppressed"] = suppressed
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str))


class TextFormatter(logging.Formatter):
    """``time level logger message`` on one line: control characters in the message (a CRM's
    text with newlines or terminal escapes) are written as escapes; a traceback follows."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}",
                                      record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            line += (f" (suppressed {suppressed} similar in the last "
                     f"{getattr(record, 'suppressed_window', 0):g} s)")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact(line)


class RateLimit(logging.Filter):
    """At most one WARNING-or-worse line per (logger, level, template, connection, object)
    per ``window`` seconds."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window, self.clock = window, clock
        self._lock = threading.Lock()
        self._last: dict[tuple[Any, ...], float] = {}
        self._count: dict[tuple[Any, ...], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        about = context(record)
        key = (record.name, record.levelno, str(record.msg), about.get("connection"),
               about.get("object"))
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window:
                self._count[key] = self._count.get(key, 0) + 1
                return False
            self._last[key] = now
            record.suppressed = self._count.pop(key, 0)
            record.suppressed_window = self.window
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def level_for(verbosity: int) -> int:
    return [logging.WARNING, logging.INFO, logging.DEBUG][min(max(verbosity, 0), 2)]


def configure(fmt: str = "text", verbosity: int = 0, *, level: int | None = None,
              window: float = 60.0) -> logging.Handler:
    """Set up the root logger (see the module's rules); returns ledgerbridge's handler."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    for old in [f for f in handler.filters if isinstance(f, RateLimit)]:
        handler.removeFilter(old)            # a new command line starts with a clean slate
    handler.addFilter(RateLimit(window))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.setLevel(level if level is not None else level_for(verbosity))
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity >= 2 else logging.WARNING)
    return handler
