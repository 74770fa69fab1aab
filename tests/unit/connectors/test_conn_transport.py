"""Transport: retries, Retry-After, bounds, status classes, CA bundle vs environment, call log."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
import responses
from requests.adapters import HTTPAdapter

from connectors.base import (
    AuthError,
    BudgetExhausted,
    ConflictError,
    FatalError,
    RetriableError,
)
from connectors.budget import BudgetMeter
from connectors.transport import Transport

URL = "https://crm.example.com/api/thing"


def make(sleeper: Any, **kw: Any) -> Transport:
    return Transport(name="t", sleep=sleeper, max_attempts=kw.pop("max_attempts", 4), **kw)


@responses.activate
def test_429_honours_retry_after_exactly(sleeper: Any) -> None:
    responses.get(URL, status=429, headers={"Retry-After": "7"}, json={"error": {"code": "x"}})
    responses.get(URL, json={"ok": True})
    assert make(sleeper).get(URL).json() == {"ok": True}
    assert sleeper.calls == [7.0]


@responses.activate
def test_503_retries_are_bounded_by_attempts(sleeper: Any) -> None:
    responses.get(URL, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}])
    transport = make(sleeper, max_attempts=3)
    with pytest.raises(RetriableError) as info:
        transport.get(URL)
    assert len(responses.calls) == 3 and transport.calls == 3
    assert len(sleeper.calls) == 2 and all(s > 0 for s in sleeper.calls)
    assert info.value.code == "SERVER_UNAVAILABLE" and info.value.status == 503


@responses.activate
def test_retry_after_beyond_the_time_bound_gives_up_at_once(sleeper: Any) -> None:
    responses.get(URL, status=429, headers={"Retry-After": "600"})
    with pytest.raises(RetriableError):
        make(sleeper, max_retry_seconds=120).get(URL)
    assert len(responses.calls) == 1 and sleeper.calls == []


@responses.activate
def test_connection_errors_and_timeouts_are_retried(sleeper: Any) -> None:
    responses.get(URL, body=requests.ConnectionError("reset"))
    responses.get(URL, body=requests.ReadTimeout("slow"))
    responses.get(URL, json={"ok": 1})
    assert make(sleeper).get(URL).json() == {"ok": 1}
    assert len(sleeper.calls) == 2


@pytest.mark.parametrize(("status", "body", "error", "code"), [
    (400, [{"errorCode": "MALFORMED_QUERY", "message": "bad soql"}], FatalError, "MALFORMED_QUERY"),
    (404, {"error": {"code": "0x80060888", "message": "nope"}}, FatalError, "0x80060888"),
    (401, [{"errorCode": "INVALID_SESSION_ID", "message": "expired"}], AuthError,
     "INVALID_SESSION_ID"),
    (412, {"error": {"code": "0x80060882", "message": "changed"}}, ConflictError, "0x80060882"),
])
@responses.activate
def test_other_4xx_are_fatal_with_the_crms_own_message(
        sleeper: Any, status: int, body: Any, error: type, code: str) -> None:
    responses.get(URL, status=status, json=body)
    with pytest.raises(error) as info:
        make(sleeper).get(URL)
    assert info.value.code == code and len(responses.calls) == 1 and sleeper.calls == []
    assert isinstance(info.value, FatalError)


class RecordingAdapter(HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def send(self, request: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        self.seen.append(kw)
        resp = requests.Response()
        resp.status_code, resp._content, resp.url = 200, b"{}", request.url
        return resp


@pytest.mark.parametrize("var", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_configured_ca_bundle_wins_over_the_environment(
        monkeypatch: pytest.MonkeyPatch, sleeper: Any, var: str) -> None:
    monkeypatch.setenv(var, "/etc/ssl/elsewhere.pem")
    transport = make(sleeper, ca_bundle="/sandbox/ca.pem", timeout=(3.0, 9.0))
    adapter = RecordingAdapter()
    transport.mount("https://", adapter)
    transport.get(URL)
    transport.post(URL, data="x")
    assert [kw["verify"] for kw in adapter.seen] == ["/sandbox/ca.pem"] * 2
    assert [kw["timeout"] for kw in adapter.seen] == [(3.0, 9.0)] * 2


def test_plain_session_shows_the_trap_this_guards_against(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/elsewhere.pem")
    session = requests.Session()
    session.verify = "/sandbox/ca.pem"
    adapter = RecordingAdapter()
    session.mount("https://", adapter)
    session.get(URL)
    assert adapter.seen[0]["verify"] == "/etc/ssl/elsewhere.pem"


@responses.activate
def test_one_debug_line_per_call_without_query_or_headers(
        sleeper: Any, caplog: pytest.LogCaptureFixture) -> None:
    responses.get(URL, json={})
    caplog.set_level(logging.DEBUG, logger="connectors")
    make(sleeper).get(URL + "?access_token=SECRET123&q=x",
                      headers={"Authorization": "Bearer TOKEN123"})
    lines = [r.getMessage() for r in caplog.records if r.name == "connectors.transport"]
    assert len(lines) == 1
    assert "GET /api/thing 200" in lines[0]
    assert "SECRET123" not in caplog.text and "TOKEN123" not in caplog.text


@responses.activate
def test_budget_guard_stops_before_the_call(sleeper: Any) -> None:
    responses.get(URL, json={}, headers={"Sforce-Limit-Info": "api-usage=79/100"})
    responses.get(URL, json={}, headers={"Sforce-Limit-Info": "api-usage=80/100"})
    budget = BudgetMeter(share=0.8)
    transport = make(sleeper, budget=budget)
    transport.get(URL)
    transport.get(URL)  # takes usage to exactly 80%: allowed
    with pytest.raises(BudgetExhausted) as info:
        transport.get(URL)  # would exceed 80%: refused before it is sent
    assert len(responses.calls) == 2
    assert info.value.budget is not None and info.value.budget.used == 80
