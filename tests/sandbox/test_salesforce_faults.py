"""Injected faults, each rendered the way Salesforce (or the network) would."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from conftest import sf_json

from connectors.sandbox.server import Sandbox

SOQL = "SELECT Id FROM Account LIMIT 1"


def test_429_with_retry_after(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "query", "429", count=1, retry_after=7)
    limited = sf_http.query(SOQL)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert sf_json(limited)[0]["errorCode"] == "TOO_MANY_REQUESTS"
    assert sf_http.query(SOQL).status_code == 200


def test_503_server_unavailable(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "composite/*", "503", count=1)
    down = sf_http.call("PATCH", "/composite/sobjects", json={"allOrNone": False, "records": []})
    assert down.status_code == 503
    assert sf_json(down) == [{"message": "Server temporarily unavailable",
                              "errorCode": "SERVER_UNAVAILABLE"}]
    assert sf_http.query(SOQL).status_code == 200


def test_slow_answers_still_answer(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "query", "slow", count=1, delay=0.05)
    assert sf_http.query(SOQL).status_code == 200
    assert sfbox.counters.get("salesforce", "query") == 1


def test_drop_closes_the_connection_without_an_answer(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "query", "drop", count=1)
    with pytest.raises(requests.ConnectionError):
        sf_http.query(SOQL)
    assert sf_http.query(SOQL).status_code == 200
    assert sfbox.counters.get("salesforce", "query") == 2


def test_expire_session_revokes_the_callers_token(sf: Any, sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "*", "expire_session", count=1)
    first = sf_http.query(SOQL)
    assert first.status_code == 401 and sf_json(first)[0]["errorCode"] == "INVALID_SESSION_ID"
    assert sf_http.query(SOQL).status_code == 401
    assert sf.query(SOQL)["totalSize"] == 1


def test_token_endpoint_faults(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.faults.add("salesforce", "token", "503", count=1)
    answer = sf_http.session.post(f"{sfbox.url}/services/oauth2/token",
                                  data={"grant_type": "client_credentials"})
    assert answer.status_code == 503


def test_fault_rate_is_reproducible(sf_http: Any, sfbox: Sandbox) -> None:
    def statuses() -> list[int]:
        sfbox.faults.clear()
        sfbox.faults.add("salesforce", "query", "503", rate=0.5)
        return [sf_http.query(SOQL).status_code for _ in range(16)]

    first = statuses()
    assert first == statuses()
    assert {200, 503} == set(first)


def test_a_sandbox_bug_answers_500_in_salesforce_shape(sf_http: Any, sfbox: Sandbox,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert sfbox.salesforce is not None

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(sfbox.salesforce, "_route", broken)
    response = sf_http.query(SOQL)
    assert response.status_code == 500
    assert sf_json(response)[0]["errorCode"] == "UNKNOWN_EXCEPTION"


def test_concurrent_limit_is_a_403_told_apart_by_its_message(sf_http: Any,
                                                             sfbox: Sandbox) -> None:
    """Both of Salesforce's request limits answer 403 REQUEST_LIMIT_EXCEEDED; only the message
    says whether the daily allowance is spent or too many long calls run at once."""
    sfbox.faults.add("salesforce", "query", "concurrent_limit", count=1)
    before = sfbox.salesforce.usage.used
    busy = sf_http.query(SOQL)
    assert busy.status_code == 403 and "Retry-After" not in busy.headers
    assert sf_json(busy) == [{"message": "ConcurrentRequests (Concurrent API Requests) Limit "
                                         "exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert sfbox.salesforce.usage.used == before  # a refused call spends nothing
    assert sf_http.query(SOQL).status_code == 200
    sfbox.salesforce.admin("set_api_usage", {"used": 100, "limit": 100})
    spent = sf_http.query(SOQL)
    assert spent.status_code == 403
    assert sf_json(spent)[0]["message"] == "TotalRequests Limit exceeded."
