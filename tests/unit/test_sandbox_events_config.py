"""``sandbox_events`` of a sandbox without an in-process notify configuration (regression:
bench/sync.py's RemoteSandbox, whose ``notify`` is its command-line options, a tuple, crashed
``sandbox_config`` with AttributeError: 'tuple' object has no attribute 'target')."""
from __future__ import annotations

from types import SimpleNamespace

from jobs.cli.configs import sandbox_events


def test_no_notify_or_command_line_options_give_no_events_config() -> None:
    assert sandbox_events(SimpleNamespace(notify=None)) == {}
    assert sandbox_events(SimpleNamespace(notify=())) == {}
    assert sandbox_events(SimpleNamespace(notify=("--notify", "http://127.0.0.1:8080"))) == {}
    assert sandbox_events(SimpleNamespace()) == {}
