"""``tests/unit`` does no I/O: no database, no socket, no subprocess, no temporary files.

Each unit test runs with those doors shut, so a test that needs one fails here with a message
saying so (it belongs in ``tests/integration``) instead of quietly becoming slow or flaky.
Reading the package's own files (field maps, templates) is allowed: that is loading code.
"""
from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


class UnitIOError(AssertionError):
    """A unit test tried to do I/O."""


def _refuse(what: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise UnitIOError(f"tests/unit does no I/O ({what}): move this test to tests/integration")
    return refuse


@pytest.fixture(autouse=True)
def _no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _refuse("socket connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("socket connect"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("socket bind"))
    monkeypatch.setattr(sqlite3, "connect", _refuse("sqlite database"))
    monkeypatch.setattr(sqlite3.dbapi2, "connect", _refuse("sqlite database"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("subprocess"))
    yield


@pytest.fixture
def tmp_path() -> NoReturn:
    raise UnitIOError("tests/unit does no I/O (temporary files): move this test to "
                      "tests/integration")
