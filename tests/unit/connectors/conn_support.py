"""Shared helpers for connector unit tests: settings, a recording sleeper, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.settings import ConnectionSettings, parse_connection

NOW = datetime(2026, 11, 21, 23, 50, tzinfo=UTC)
SF_URL = "https://sf.example.com"
D365_URL = "https://org.crm.dynamics.com"
SF_SECRET = "sf-client-secret-value"
D365_SECRET = "d365-client-secret-value"


class ListSweep:
    """A ``Sweep`` over a list of ids billing knows (the engine's is a temporary table)."""

    def __init__(self, known: list[str]) -> None:
        self.known = known
        self.seen: list[str] = []
        self.begun = 0

    def begin(self) -> None:
        self.begun += 1
        self.seen = []

    def saw(self, crm_ids: list[str]) -> None:
        self.seen += crm_ids

    def missing(self) -> list[str]:
        return [i for i in self.known if i not in self.seen]


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


def sf_settings(**over: object) -> ConnectionSettings:
    raw = {"crm": "salesforce", "url": SF_URL, "auth": "client_credentials",
           "page_size": 3, "overlap_seconds": 60, "max_attempts": 3,
           "credentials": {"client_id": "cid", "client_secret": "env:SF_SECRET"}}
    raw.update(over)
    return parse_connection("sf_test", raw)


def d365_settings(**over: object) -> ConnectionSettings:
    raw = {"crm": "dynamics", "url": D365_URL, "auth": "client_secret", "tenant_id": "tenant1",
           "authority_host": "https://login.example.com", "validate_authority": False,
           "page_size": 2, "overlap_seconds": 60, "max_attempts": 3,
           "credentials": {"client_id": "cid", "client_secret": "env:D365_SECRET"}}
    raw.update(over)
    return parse_connection("d365_test", raw)


ENV = {"SF_SECRET": SF_SECRET, "D365_SECRET": D365_SECRET}
