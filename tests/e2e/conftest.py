"""End-to-end fixtures: the real worker against the sandbox CRM over real HTTPS.

One sandbox per module (reset before each test: seeded rows, counters, faults, clock); one
fresh database per test. Connectors get a no-op ``sleep`` so Retry-After is honoured in
logic without real waiting.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_world import World

import connectors.sandbox.server as sandbox_server  # noqa: E402 - a failed import must fail, not skip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with sandbox_server.Sandbox(accounts=30, quotes=12, seed=7) as sbx:
        yield sbx


@pytest.fixture
def world(sandbox: Any, sqlite_engine: Any, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = World(sandbox, sqlite_engine, tmp_path)
    yield w
    w.worker.close()
