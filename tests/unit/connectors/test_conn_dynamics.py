"""Dataverse connector against a `responses` stand-in: msal, paging, change tracking, fallback,
throttling, `$batch` writes with etags, escaping, secrets out of logs."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
import responses
from conn_support import D365_SECRET, ENV, NOW, ListSweep, d365_settings
from fake_dv import FakeDataverse, guid

from connectors.base import AuthError, Page
from connectors.cursor import decode
from connectors.registry import build_connector


@pytest.fixture
def fake() -> Any:
    dv = FakeDataverse()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        dv.register(rsps)
        yield dv


def connector(sleeper: Any = None, **over: Any) -> Any:
    return build_connector(d365_settings(**over), sleep=sleeper or (lambda s: None),
                           clock=lambda: NOW, environ=ENV)


def read(conn: Any, obj: str, cursor: str | None, **kw: Any) -> list[Page]:
    return list(conn.read_changes(obj, cursor, **kw))


def ids(pages: list[Page]) -> list[str]:
    return [r["crm_id"] for p in pages for r in p.records]


def ts(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pages_follow_next_link_with_maxpagesize(fake: FakeDataverse) -> None:
    for n in range(5):
        fake.put("accounts", n, ts(10), creditlimit=2500.75, creditonhold=True)
    pages = read(connector(), "account", None)
    assert [len(p.records) for p in pages] == [2, 2, 1]
    first_url, headers = fake.gets[0]
    assert "odata.maxpagesize=2" in headers["Prefer"] and "odata.track-changes" in headers["Prefer"]
    assert "$select=accountid,name" in unquote(first_url)
    record = pages[0].records[0]
    assert record["credit_limit"] == Decimal("2500.75") and record["credit_hold"] is True
    assert record["modstamp"] == NOW - timedelta(minutes=10)
    assert record["_etag"] == 'W/"1"'
    # only the last page carries the new deltaLink; earlier pages keep the old cursor (None)
    assert [p.cursor is None for p in pages] == [True, True, False]
    assert decode(pages[-1].cursor)["mode"] == "delta"


def test_msal_token_is_cached_across_calls(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(1))
    conn = connector()
    read(conn, "account", None)
    read(conn, "account", None)
    assert fake.token_posts == 1


def test_delta_link_gives_changes_and_deletions(fake: FakeDataverse) -> None:
    for n in range(3):
        fake.put("accounts", n, ts(10))
    conn = connector()
    cursor = read(conn, "account", None)[-1].cursor
    fake.put("accounts", 1, ts(1), name="Renamed")
    fake.delete("accounts", 2)
    sweep = ListSweep([guid(0), guid(1), guid(2), guid(7)])
    pages = read(conn, "account", cursor, sweep=sweep)
    assert sweep.begun == 0  # a delta read reports deletions, never "missing"
    assert ids(pages) == [guid(1)] and pages[-1].records[0]["name"] == "Renamed"
    assert [(d.crm_id, d.reason) for d in pages[-1].deletions] == [(guid(2), "deleted")]
    assert "$deltatoken=" in fake.gets[-1][0]
    assert decode(pages[-1].cursor)["link"] != decode(cursor)["link"]


def test_expired_delta_link_falls_back_to_a_full_resync(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(10))
    conn = connector()
    cursor = read(conn, "account", None)[-1].cursor
    fake.expired_links = True
    pages = read(conn, "account", cursor)
    assert ids(pages) == [guid(1)]
    assert decode(pages[-1].cursor)["mode"] == "delta"


def test_table_without_change_tracking_uses_modifiedon_with_overlap(fake: FakeDataverse) -> None:
    for n in range(3):
        fake.put("products", n, ts(10 - n))
    conn = connector()
    pages = read(conn, "product", None)
    cursor = pages[-1].cursor
    assert decode(cursor)["mode"] == "stamp" and len(ids(pages)) == 3
    # a late row stamped inside the overlap window, and a new one: both, and nothing repeated
    fake.put("products", 7, ts(8.5))
    fake.put("products", 8, ts(1))
    again = read(conn, "product", cursor)
    assert ids(again) == [guid(7), guid(8)]
    flt = unquote(fake.gets[-1][0])
    assert "modifiedon ge 2026-11-21T23:41:00Z" in flt and "$orderby=modifiedon asc" in flt


def test_full_resync_reports_missing_rows(fake: FakeDataverse) -> None:
    fake.put("products", 1, ts(5))
    pages = read(connector(), "product", None, sweep=ListSweep([guid(1), guid(9)]))
    assert [(d.crm_id, d.reason) for d in pages[-1].deletions] == [(guid(9), "missing")]


def test_401_refreshes_the_token_once(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(1))
    conn = connector()
    read(conn, "account", None)
    fake.expire_next = 1
    assert conn.read_one("account", guid(1))["crm_id"] == guid(1)
    assert fake.token_posts == 2


def test_401_twice_is_fatal(fake: FakeDataverse) -> None:
    fake.expire_next = 2
    with pytest.raises(AuthError, match="after one refresh"):
        connector().read_one("account", guid(1))


def test_429_retry_after_is_honoured_exactly(fake: FakeDataverse, sleeper: Any) -> None:
    fake.put("accounts", 1, ts(1))
    fake.throttle_next = 2
    assert connector(sleeper).read_one("account", guid(1)) is not None
    assert sleeper.calls == [3.0, 3.0]


def test_odata_literals_are_escaped(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(1), name="O'Brien & Sons")
    found = connector().lookup("account", "name", "O'Brien & Sons")
    assert [r["crm_id"] for r in found] == [guid(1)]
    raw = fake.gets[-1][0]
    assert "%26" in raw and "& Sons" not in raw
    assert "name eq 'O''Brien & Sons'" in unquote(raw)


def test_batch_write_maps_results_back_in_one_call(fake: FakeDataverse) -> None:
    for n in range(3):
        fake.put("accounts", n, ts(5))
    fake.fail_ids = {guid(1): (400, "0x80040203", "Invalid value for new_openbalance")}
    updates = [{"crm_id": guid(n), "billing_hold": True, "open_balance": Decimal("10.5")}
               for n in range(3)] + [{"crm_id": guid(99), "billing_hold": True}]
    results = connector().write("account", updates)
    assert len(fake.batches) == 1 and len(fake.batches[0]) == 4
    assert [r.ok for r in results] == [True, False, True, False]
    assert (results[1].code, results[1].message) == ("0x80040203",
                                                     "Invalid value for new_openbalance")
    sub = fake.batches[0][0]
    assert sub["method"] == "PATCH" and sub["headers"]["If-Match"] == "*"  # billing owns these
    assert sub["body"] == {"new_billinghold": True, "new_openbalance": 10.5}


def test_guarded_field_needs_the_etag_and_412_re_reads_and_re_decides(
        fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(5), creditonhold=False)
    conn = connector()
    seen = conn.read_one("account", guid(1))
    no_etag = conn.write("account", [{"crm_id": guid(1), "credit_hold": True}])
    assert no_etag[0].code == "ETAG_REQUIRED" and not fake.batches
    fake.put("accounts", 1, ts(1), creditonhold=False, name="changed meanwhile")
    calls: list[tuple[Any, Any]] = []

    def redecide(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        calls.append((current["name"], update["_etag"]))
        return {"credit_hold": True}

    update = {"crm_id": guid(1), "credit_hold": True, "_etag": seen["_etag"]}
    results = conn.write("account", [update], redecide=redecide)
    assert calls == [("changed meanwhile", seen["_etag"])]
    assert results[0].ok and len(fake.batches) == 2
    assert fake.batches[0][0]["headers"]["If-Match"] == seen["_etag"]
    assert fake.batches[1][0]["headers"]["If-Match"] == 'W/"2"'
    assert fake.tables["accounts"][0]["creditonhold"] is True
    # without a redecide callback the conflict is reported, not retried
    stale = {"crm_id": guid(1), "credit_hold": False, "_etag": seen["_etag"]}
    assert conn.write("account", [stale])[0].code == "CONFLICT"


def test_choices_and_accepted_states(fake: FakeDataverse) -> None:
    fake.put("products", 1, ts(1), statecode=0, new_billingtype=100000002)
    record = read(connector(), "product", None)[0].records[0]
    assert record["active"] is True and record["billing_type"] == "Usage"
    assert connector().accepted_quote_states() == frozenset({"Won"})


def test_no_token_or_secret_in_logs(fake: FakeDataverse, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.put("accounts", 1, ts(1))
    conn = connector()
    read(conn, "account", None)
    fake.expire_next = 1
    conn.write("account", [{"crm_id": guid(1), "billing_hold": True}])
    assert caplog.records
    for secret in ("DTOKEN1", "DTOKEN2", D365_SECRET):
        assert secret not in caplog.text


def test_expired_delta_link_resync_reports_missing_rows(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(10))
    conn = connector()
    cursor = read(conn, "account", None)[-1].cursor
    fake.expired_links = True
    sweep = ListSweep([guid(1), guid(5)])
    pages = read(conn, "account", cursor, sweep=sweep)
    assert [(d.crm_id, d.reason) for d in pages[-1].deletions] == [(guid(5), "missing")]
    assert sweep.begun == 1


def test_rate_limit_headers_are_tracked(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(1))
    conn = connector()
    conn.transport.budget.observe({"x-ms-ratelimit-burst-remaining-xrm-requests": "5999"})
    budget = conn.api_budget()
    assert budget.details["x-ms-ratelimit-burst-remaining-xrm-requests"] == "5999"
    read(conn, "account", None)
    assert conn.api_budget().calls == 3  # discovery + token + one page, all counted


def test_stamp_reads_are_ordered_even_when_full(fake: FakeDataverse) -> None:
    fake.put("products", 1, ts(1))
    read(connector(), "product", None)
    url = unquote(fake.gets[-1][0])
    assert "$orderby=modifiedon asc,productid asc" in url and "$filter" not in url
    read(connector(), "account", None)
    assert "$orderby" not in unquote(fake.gets[-1][0])  # change tracking takes no $orderby


def test_user_local_dates_are_read_in_the_connection_time_zone(fake: FakeDataverse) -> None:
    """effectivefrom comes as the UTC instant of the local midnight it was entered at."""
    fake.tables["quotes"] = []
    fake.put("quotes", 1, ts(10), effectivefrom="2025-12-31T23:00:00Z")
    fake.put("quotes", 2, ts(9), effectivefrom="2026-12-01garbage")
    fake.put("quotes", 3, ts(8), effectivefrom="2026-06-30T22:00:00Z")
    berlin = {r["crm_id"]: r["start_date"]
              for p in read(connector(time_zone="Europe/Berlin"), "quote", None)
              for r in p.records}
    assert berlin == {guid(1): date(2026, 1, 1), guid(2): "2026-12-01garbage",
                      guid(3): date(2026, 7, 1)}
    utc = [r["start_date"] for p in read(connector(), "quote", None) for r in p.records]
    assert utc[0] == date(2025, 12, 31)  # the zone configured decides; never the first 10 chars


def test_a_currency_lookup_that_is_not_text_passes_raw(fake: FakeDataverse) -> None:
    fake.put("accounts", 1, ts(10), _transactioncurrencyid_value={"id": "x"})
    fake.put("accounts", 2, ts(9), _transactioncurrencyid_value=7)
    records = [r for p in read(connector(), "account", None) for r in p.records]
    assert [r["currency"] for r in records] == [{"id": "x"}, 7]
    assert not any("transactioncurrencies" in url for url, _ in fake.gets)


def test_a_delta_read_that_finds_nothing_keeps_its_link_for_an_hour(fake: FakeDataverse) -> None:
    """Both links hand out the same changes from then on: keeping the one followed saves a
    cursor write per table and run; a link received an hour ago or more is replaced, and a
    change is read through a kept link as through a new one."""
    fake.put("accounts", 1, ts(10))
    cursor = read(connector(), "account", None)[-1].cursor
    assert decode(cursor)["at"] == NOW.isoformat()
    fake.version += 5                                 # others' tables move the version on
    assert read(connector(), "account", cursor)[-1].cursor == cursor
    later = build_connector(d365_settings(), sleep=lambda s: None, environ=ENV,
                            clock=lambda: NOW + timedelta(hours=1))
    renewed = read(later, "account", cursor)[-1].cursor
    assert renewed != cursor and decode(renewed)["at"] == (NOW + timedelta(hours=1)).isoformat()
    fake.put("accounts", 1, ts(1), name="Renamed")
    pages = read(connector(), "account", cursor)
    assert ids(pages) == [guid(1)] and pages[-1].cursor != cursor
