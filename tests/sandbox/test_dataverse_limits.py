"""Service protection (429 + Retry-After on the sandbox clock) and injected faults."""

from __future__ import annotations

import msal
import pytest
import requests
from test_dataverse_harness import Dataverse, assert_shape, fixture, load_json


def test_budget_exceeded_answers_429_with_retry_after(dv: Dataverse,
                                                      dv_http: requests.Session) -> None:
    dv.side.admin("set_rate_limit", {"limit": 5, "window": 60})
    remaining = []
    for _n in range(5):
        resp = dv.get(dv_http, "WhoAmI")
        assert resp.status_code == 200
        remaining.append(int(resp.headers["x-ms-ratelimit-burst-remaining-xrm-requests"]))
        assert resp.headers["x-ms-ratelimit-time-remaining-xrm-requests"]
    assert remaining == [4, 3, 2, 1, 0]
    refused = dv.get(dv_http, "WhoAmI")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = load_json(refused.text)
    assert_shape(body, fixture("dataverse_answers.json")["error"])
    assert body["error"]["code"] == "0x80072322"
    assert "limit of 5 over time window of 60 seconds" in body["error"]["message"]
    dv.ctx.clock.advance(int(refused.headers["Retry-After"]))
    assert dv.get(dv_http, "WhoAmI").status_code == 200
    assert dv.ctx.counters.get("dataverse", "WhoAmI", "GET") == 7  # refused calls count too


def test_default_budget_is_6000_per_300_seconds(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv.get(dv_http, "WhoAmI")
    assert resp.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "5999"
    assert (dv.side.throttle.limit, dv.side.throttle.window) == (6000, 300.0)


@pytest.mark.parametrize(("kind", "status"), [("429", 429), ("503", 503)])
def test_injected_faults_answer_in_dataverse_shape(dv: Dataverse, dv_http: requests.Session,
                                                   kind: str, status: int) -> None:
    dv.ctx.faults.add("dataverse", "accounts", kind, count=1, retry_after=7)
    resp = dv.get(dv_http, "accounts?$top=1")
    assert resp.status_code == status
    assert_shape(load_json(resp.text), fixture("dataverse_answers.json")["error"])
    if kind == "429":
        assert resp.headers["Retry-After"] == "7"
    assert dv.get(dv_http, "accounts?$top=1").status_code == 200  # the fault fired once


def test_faults_on_the_token_endpoint_answer_in_aad_shape(dv: Dataverse) -> None:
    dv.ctx.faults.add("dataverse", "token", "503", count=1)
    app = dv.msal_app()
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):  # msal raises on 5xx
        app.acquire_token_for_client(scopes=[dv.info["scope"]])
    resp = dv.session().post(f"{dv.info['authority']}/oauth2/v2.0/token", data={})
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"
    dv.ctx.faults.add("dataverse", "token", "429", count=1, retry_after=3)
    throttled = dv.session().post(f"{dv.info['authority']}/oauth2/v2.0/token", data={})
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert_shape(throttled.json(), fixture("dataverse_answers.json")["aad_error"])
    assert "access_token" in dv.msal_app().acquire_token_for_client(scopes=[dv.info["scope"]])


def test_dropped_connection_fault(dv: Dataverse, dv_http: requests.Session) -> None:
    dv.ctx.faults.add("dataverse", "accounts", "drop", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        dv.get(dv_http, "accounts?$top=1")
    assert dv.get(dv_http, "accounts?$top=1").status_code == 200


def test_every_call_is_counted_by_endpoint_and_method(dv: Dataverse,
                                                      dv_http: requests.Session) -> None:
    guid = dv.side.admin("guid", {"index": 1})["id"]
    dv.get(dv_http, "accounts?$top=1")
    dv.get(dv_http, "quotes?$top=1")
    dv_http.patch(f"{dv.api}/accounts({guid})", json={"new_billinghold": True},
                  headers=dv.headers())
    dv.get(dv_http, "nothing-here")
    snap = dv.ctx.counters.snapshot()
    assert snap == {("dataverse", "accounts", "GET"): 1, ("dataverse", "quotes", "GET"): 1,
                    ("dataverse", "accounts", "PATCH"): 1, ("dataverse", "unknown", "GET"): 1}
    assert dv.ctx.counters.total("dataverse") == 4


def test_slow_fault_still_answers(dv: Dataverse, dv_http: requests.Session) -> None:
    dv.ctx.faults.add("dataverse", "WhoAmI", "slow", count=1, delay=0.05)
    assert dv.get(dv_http, "WhoAmI").status_code == 200


def test_concurrent_readers_each_see_every_row_once(dv: Dataverse) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def read_all(_n: int) -> list[str]:
        session = dv.session()
        url: str | None = f"{dv.api}/accounts?$select=accountnumber"
        out: list[str] = []
        while url:
            body = session.get(url, headers=dv.headers(Prefer="odata.maxpagesize=50")).json()
            out += [r["accountnumber"] for r in body["value"]]
            url = body.get("@odata.nextLink")
        session.close()
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(read_all, range(4)))
    assert all(r == results[0] for r in results)
    assert len(results[0]) == len(set(results[0])) == dv.side.store.count("accounts")
