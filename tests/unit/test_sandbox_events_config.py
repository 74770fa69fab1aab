"""``sandbox_events`` of a sandbox without an in-process notify configuration (regression:
bench/sync.py's RemoteSandbox, whose ``notify`` was its command-line options, a tuple, crashed
``sandbox_config`` with AttributeError: 'tuple' object has no attribute 'target'; it keeps them
as ``notify_args`` now, and has no ``notify``)."""
from __future__ import annotations

from types import SimpleNamespace

from connectors.sandbox.remote import RemoteSandbox
from jobs.cli.configs import sandbox_events


def test_no_notify_gives_no_events_config() -> None:
    assert sandbox_events(SimpleNamespace(notify=None)) == {}
    assert sandbox_events(SimpleNamespace()) == {}


def test_a_remote_sandbox_keeps_its_options_apart_from_a_notify_config() -> None:
    remote = RemoteSandbox(notify=("--notify", "http://127.0.0.1:8080"))   # not started
    assert remote.notify_args == ("--notify", "http://127.0.0.1:8080")
    assert sandbox_events(remote) == {}
