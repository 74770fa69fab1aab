"""Salesforce's 403 REQUEST_LIMIT_EXCEEDED has two meanings, told apart by the message: the
daily allowance (stop the run, never retry) and the concurrency limit (transient: retried with
the transport's bounded backoff)."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from connectors.base import BudgetExhausted, RetriableError
from connectors.salesforce.connector import classify
from connectors.transport import Transport

URL = "https://sf.example.com/services/data/v59.0/query"
TOTAL = "TotalRequests Limit exceeded."
CONCURRENT = "ConcurrentRequests (Concurrent API Requests) Limit exceeded."
LONG_TXN = "ConcurrentPerOrgLongTxn Limit exceeded."


def transport(sleeper: Any, attempts: int = 4) -> Transport:
    return Transport(name="sf", sleep=sleeper, max_attempts=attempts, classify=classify)


def limit(message: str) -> dict[str, Any]:
    return {"status": 403, "json": [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                     "message": message}]}


@pytest.mark.parametrize("message", [CONCURRENT, LONG_TXN])
@responses.activate
def test_the_concurrency_limit_is_retried_with_backoff(sleeper: Any, message: str) -> None:
    responses.get(URL, **limit(message))
    responses.get(URL, json={"done": True, "records": []})
    assert transport(sleeper).get(URL).json()["done"] is True
    assert len(responses.calls) == 2 and len(sleeper.calls) == 1 and sleeper.calls[0] > 0


@responses.activate
def test_a_concurrency_limit_that_persists_gives_up_within_the_bound(sleeper: Any) -> None:
    responses.get(URL, **limit(CONCURRENT))
    with pytest.raises(RetriableError) as info:
        transport(sleeper, attempts=3).get(URL)
    assert len(responses.calls) == 3 and len(sleeper.calls) == 2
    assert info.value.code == "REQUEST_LIMIT_EXCEEDED" and info.value.status == 403


@pytest.mark.parametrize("message", [TOTAL, "", "Some limit we have never seen."])
@responses.activate
def test_the_daily_allowance_or_an_unknown_limit_stops_at_once(sleeper: Any,
                                                               message: str) -> None:
    responses.get(URL, **limit(message))
    with pytest.raises(BudgetExhausted) as info:
        transport(sleeper).get(URL)
    assert len(responses.calls) == 1 and sleeper.calls == []
    assert info.value.code == "REQUEST_LIMIT_EXCEEDED"
