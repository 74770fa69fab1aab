"""Fixtures for the Salesforce-side sandbox tests (names start with `sf`; nothing autouse).

One Salesforce-only `Sandbox` per session (10,000 accounts, seed 7) over real TLS with a
throw-away CA; `sfbox` resets it (rows, tokens, counters, faults, clock, API usage) before each
test; `sf` is a simple-salesforce client with a fresh token and a CA-pinned session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from test_dataverse_harness import ACCOUNTS, SMALL, Dataverse, harness_for

from connectors.sandbox.server import Sandbox
from connectors.sandbox.tls import CABundleSession

SF_ACCOUNTS = 10_000
SF_FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def sf_sandbox() -> Iterator[Sandbox]:
    with Sandbox(accounts=SF_ACCOUNTS, seed=7, sides=("salesforce",)) as sandbox:
        yield sandbox


@pytest.fixture
def sfbox(sf_sandbox: Sandbox) -> Sandbox:
    sf_sandbox.reset()
    return sf_sandbox


@pytest.fixture
def sf(sfbox: Sandbox) -> Any:
    return sfbox.salesforce_client()


@pytest.fixture
def sf_http(sfbox: Sandbox) -> SfHttp:
    return SfHttp(sfbox)


class SfHttp:
    """Plain requests against the sandbox's Salesforce API, for status codes and error shapes."""

    def __init__(self, sandbox: Sandbox) -> None:
        assert sandbox.salesforce is not None
        self.sandbox = sandbox
        self.session = CABundleSession(sandbox.ca_bundle, timeout=(5, 30))
        self.token = sandbox.salesforce.issue_token()
        self.base = f"{sandbox.url}/services/data/v59.0"

    def call(self, method: str, path: str, token: str | None = "", **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("https://") else self.base + path
        return self.session.request(method, url, headers=headers, **kwargs)

    def query(self, soql: str, resource: str = "query", **kwargs: Any) -> Any:
        return self.call("GET", f"/{resource}", params={"q": soql}, **kwargs)


def sf_json(response: Any) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def sf_fixture(name: str) -> Any:
    return json.loads((SF_FIXTURES / name).read_text(encoding="utf-8"), parse_float=Decimal)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    return type(value).__name__


def assert_same_shape(expected: Any, actual: Any, path: str = "$") -> None:
    """Same keys and value kinds, recursively (lists: every item against the first expected)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            assert_same_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        if expected:
            for i, item in enumerate(actual):
                assert_same_shape(expected[0], item, f"{path}[{i}]")
    elif expected is not None and actual is not None:
        assert _kind(actual) == _kind(expected), f"{path}: {actual!r} is not like {expected!r}"


# --- Dataverse side: one small and one 10,000-account org per session -----------------------

@pytest.fixture(scope="session")
def dataverse_server() -> Iterator[Sandbox]:
    """Most tests: a small org, cheap to scan."""
    with Sandbox(seed=7, accounts=SMALL, sides=("dataverse",)) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def dataverse_big() -> Iterator[Sandbox]:
    """Paging tests: 10,000 accounts, two full pages."""
    with Sandbox(seed=7, accounts=ACCOUNTS, sides=("dataverse",)) as sandbox:
        yield sandbox


@pytest.fixture
def dv(dataverse_server: Sandbox) -> Dataverse:
    return harness_for(dataverse_server)


@pytest.fixture
def dv_big(dataverse_big: Sandbox) -> Dataverse:
    return harness_for(dataverse_big)


@pytest.fixture
def dv_http(dv: Dataverse) -> Iterator[requests.Session]:
    session = dv.session()
    yield session
    session.close()
