"""Salesforce connector against a `responses` stand-in: reads, cursor rules, auth, budget, writes."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
import responses
from conn_support import ENV, NOW, SF_SECRET, SF_URL, ListSweep, sf_settings
from fake_sf import FakeSalesforce, account

from connectors.base import AuthError, BudgetExhausted, Page
from connectors.cursor import decode
from connectors.registry import build_connector
from connectors.salesforce.auth import LoginRefused


@pytest.fixture
def fake() -> Any:
    sf = FakeSalesforce()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sf.register(rsps)
        yield sf


def connector(sleeper: Any = None, **over: Any) -> Any:
    return build_connector(sf_settings(**over), sleep=sleeper or (lambda s: None),
                           clock=lambda: NOW, environ=ENV)


def read_all(conn: Any, cursor: str | None, **kw: Any) -> list[Page]:
    return list(conn.read_changes("account", cursor, **kw))


def ids(pages: list[Page]) -> list[str]:
    return [r["crm_id"] for p in pages for r in p.records]


def test_pages_records_and_types(fake: FakeSalesforce) -> None:
    base = NOW - timedelta(hours=1)
    fake.rows = [account(i, base + timedelta(seconds=i)) for i in range(7)]
    pages = read_all(connector(), None)
    assert [len(p.records) for p in pages] == [3, 3, 1]
    assert len(fake.queries) == 1  # one query, followed by nextRecordsUrl
    first = pages[0].records[0]
    assert first["credit_limit"] == Decimal("1000.5") and isinstance(first["credit_limit"],
                                                                     Decimal)
    assert first["modstamp"] == base and first["modstamp"].tzinfo is not None
    assert first["credit_hold"] is False and first["name"] == "Account 0"
    assert "ORDER BY SystemModstamp, Id" in fake.queries[0]
    assert fake.batch_headers[0] == "batchSize=200"  # page_size 3 clamped to Salesforce's range
    # every page carries the cursor valid after it: it never goes backwards
    stamps = [decode(p.cursor)["stamp"] for p in pages]
    assert stamps == sorted(stamps)


def test_incremental_reads_from_cursor_minus_overlap(fake: FakeSalesforce) -> None:
    base = NOW - timedelta(hours=1)
    fake.rows = [account(i, base + timedelta(seconds=i)) for i in range(3)]
    conn = connector()
    cursor = read_all(conn, None)[-1].cursor
    fake.rows.append(account(9, base + timedelta(seconds=30)))
    pages = read_all(conn, cursor)
    assert ids(pages) == [fake.rows[-1]["Id"]]
    assert "SystemModstamp >= 2026-11-21T22:49:02+00:00" in fake.queries[-1]  # 60 s overlap
    assert "/queryAll/" in fake.query_urls[-1]


def test_ties_at_one_timestamp_are_neither_lost_nor_repeated(fake: FakeSalesforce) -> None:
    same = NOW - timedelta(minutes=10)
    fake.rows = [account(i, same) for i in range(5)]
    conn = connector()
    pages = read_all(conn, None)
    assert len(ids(pages)) == 5
    # a crash after page 1: the next run starts from page 1's cursor and gets exactly the rest
    rest = read_all(conn, pages[0].cursor)
    assert ids(rest) == ids(pages)[3:]
    # a sixth row committed at the same stamp later is handed out, the five are not
    fake.rows.append(account(5, same))
    assert ids(read_all(conn, pages[-1].cursor)) == [fake.rows[-1]["Id"]]


def test_late_row_inside_the_overlap_is_picked_up(fake: FakeSalesforce) -> None:
    base = NOW - timedelta(minutes=10)
    fake.rows = [account(1, base), account(2, base + timedelta(seconds=40))]
    conn = connector()
    cursor = read_all(conn, None)[-1].cursor
    # a long transaction commits a row stamped before the saved cursor (inside the 60 s window)
    fake.rows.append(account(3, base + timedelta(seconds=10)))
    assert ids(read_all(conn, cursor)) == [fake.rows[-1]["Id"]]


def test_cursor_is_capped_at_the_run_start(fake: FakeSalesforce) -> None:
    fake.rows = [account(1, NOW + timedelta(minutes=5))]  # changed while the run was going
    pages = read_all(connector(), None, run_started=NOW)
    assert decode(pages[-1].cursor)["stamp"] == NOW.isoformat()
    assert ids(read_all(connector(), pages[-1].cursor, run_started=NOW)) == []


def test_deleted_rows_become_deletions(fake: FakeSalesforce) -> None:
    base = NOW - timedelta(minutes=10)
    fake.rows = [account(1, base)]
    conn = connector()
    cursor = read_all(conn, None)[-1].cursor
    fake.rows[0] = account(1, base + timedelta(seconds=5), IsDeleted=True)
    sweep = ListSweep([fake.rows[0]["Id"], "001OTHER"])
    pages = read_all(conn, cursor, sweep=sweep)
    assert ids(pages) == []
    assert sweep.begun == 0  # an incremental read reports deletions, never "missing"
    deletion = pages[-1].deletions[0]
    assert deletion.crm_id == fake.rows[0]["Id"] and deletion.reason == "deleted"
    assert deletion.deleted_at == base + timedelta(seconds=5)


def test_full_resync_reports_what_disappeared(fake: FakeSalesforce) -> None:
    fake.rows = [account(1, NOW - timedelta(minutes=1))]
    sweep = ListSweep([fake.rows[0]["Id"], "001GONE"])
    pages = read_all(connector(), None, sweep=sweep)
    assert [(d.crm_id, d.reason) for d in pages[-1].deletions] == [("001GONE", "missing")]
    assert sweep.begun == 1 and sweep.seen == [fake.rows[0]["Id"]]
    assert "/query/" in fake.query_urls[0] and "WHERE" not in fake.queries[0]


def test_unconvertible_value_passes_through_raw(fake: FakeSalesforce) -> None:
    fake.rows = [account(1, NOW - timedelta(minutes=1), Credit_Limit__c="lots")]
    assert read_all(connector(), None)[0].records[0]["credit_limit"] == "lots"


def test_expired_session_relogs_in_once(fake: FakeSalesforce) -> None:
    fake.rows = [account(i, NOW - timedelta(minutes=1)) for i in range(2)]
    conn = connector()
    fake.expire_next = 1
    pages = read_all(conn, None)
    assert len(ids(pages)) == 2 and fake.tokens == 2


def test_expired_session_twice_is_a_clear_fatal_error(fake: FakeSalesforce) -> None:
    conn = connector()
    fake.expire_next = 5
    with pytest.raises(AuthError, match="after one re-login"):
        read_all(conn, None)
    assert fake.tokens == 2


def test_a_read_that_made_progress_may_re_login_again(fake: FakeSalesforce) -> None:
    """The allowance is one re-login in a row: after a page was handed out, a later refusal
    logs in again instead of failing (the read restarts from that page's cursor)."""
    fake.rows = [account(i, NOW - timedelta(minutes=1)) for i in range(7)]
    pages, conn = [], connector()
    fake.expire_next = 1                         # the first query
    for page in conn.read_changes("account", None):
        pages.append(page)
        if len(pages) == 1:
            fake.expire_next = 1                 # the next call after the first page
    assert sorted(ids(pages)) == sorted(r["Id"] for r in fake.rows) and fake.tokens == 3


def test_a_write_re_logs_in_once_then_fails_clearly(fake: FakeSalesforce) -> None:
    conn = connector()
    fake.expire_next = 1
    assert [r.ok for r in conn.write("account", [{"crm_id": "001A", "billing_hold": True}])] \
        == [True]
    assert fake.tokens == 2
    fake.expire_next = 2
    with pytest.raises(AuthError, match="after one re-login") as info:
        conn.write("account", [{"crm_id": "001A", "billing_hold": True}])
    assert fake.tokens == 3 and [r.code for r in info.value.partial_results] == ["NOT_SENT"]


def test_a_lookup_re_logs_in_once(fake: FakeSalesforce) -> None:
    fake.rows = [account(1, NOW - timedelta(minutes=1))]
    conn = connector()
    fake.expire_next = 1
    assert conn.read_one("account", fake.rows[0]["Id"]) is not None and fake.tokens == 2
    fake.expire_next = 2
    with pytest.raises(AuthError, match="after one re-login"):
        conn.read_one("account", fake.rows[0]["Id"])


@pytest.mark.parametrize("path", ["read", "write"])
def test_a_refused_re_login_is_not_retried(path: str) -> None:
    sf = FakeSalesforce([account(1, NOW - timedelta(minutes=1))])
    token_url = f"{SF_URL}/services/oauth2/token"

    def token(request: Any) -> tuple[int, dict[str, str], str]:
        if sf.tokens:                            # the first login works, the next is refused
            return 400, {}, json.dumps({"error": "invalid_grant", "error_description": "no"})
        return sf._token(request)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sf.register(rsps)
        rsps.remove(responses.POST, token_url)
        rsps.add_callback(responses.POST, token_url, token)
        conn = connector()
        conn.lookup("account", "name", "x")      # logged in
        sf.expire_next = 1
        with pytest.raises(LoginRefused):
            if path == "read":
                read_all(conn, None)
            else:
                conn.write("account", [{"crm_id": "001A", "billing_hold": True}])
        assert sf.tokens == 1 and sf.data_calls == 2


def test_request_limit_exceeded_stops_without_retry(fake: FakeSalesforce, sleeper: Any) -> None:
    fake.limit_exceeded = True
    with pytest.raises(BudgetExhausted):
        read_all(connector(sleeper), None)
    assert fake.data_calls == 1
    assert sleeper.calls == []


def test_budget_share_stops_the_run_cleanly(fake: FakeSalesforce) -> None:
    fake.rows = [account(i, NOW - timedelta(minutes=1), Name=f"n{i}") for i in range(9)]
    fake.usage = (78, 100)
    conn = connector()
    cursors: list[str | None] = []
    with pytest.raises(BudgetExhausted) as info:
        for page in conn.read_changes("account", None):
            cursors.append(page.cursor)
    assert info.value.budget is not None and info.value.budget.limit == 100
    assert conn.api_budget().used == 80 and len(cursors) == 2  # pages before the stop are usable


def test_soql_literals_are_escaped(fake: FakeSalesforce) -> None:
    conn = connector()
    conn.lookup("account", "name", "O'Brien & Sons")
    assert "WHERE Name = 'O\\'Brien & Sons'" in fake.queries[-1]
    assert "%26" in fake.query_urls[-1] and "& Sons" not in fake.query_urls[-1]
    assert unquote(fake.query_urls[-1]).count("O\\'Brien") == 1


def test_read_one(fake: FakeSalesforce) -> None:
    fake.rows = [account(1, NOW - timedelta(minutes=1))]
    conn = connector()
    assert conn.read_one("account", fake.rows[0]["Id"])["name"] == "Account 1"
    assert conn.read_one("account", "001nothere") is None


def test_writes_in_chunks_of_200_with_per_record_results(fake: FakeSalesforce) -> None:
    updates = [{"crm_id": f"001{i:015d}", "billing_hold": True,
                "open_balance": Decimal("12.34")} for i in range(450)]
    fake.fail_ids = {updates[201]["crm_id"]: ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "no way")}
    results = connector().write("account", updates)
    assert [len(c["records"]) for c in fake.collection_calls] == [200, 200, 50]
    assert all(c["allOrNone"] is False for c in fake.collection_calls)
    first = fake.collection_calls[0]["records"][0]
    assert first == {"attributes": {"type": "Account"}, "id": updates[0]["crm_id"],
                     "Billing_Hold__c": True, "Open_Balance__c": 12.34}
    assert len(results) == 450 and sum(not r.ok for r in results) == 1
    failed = results[201]
    assert (failed.crm_id, failed.code, failed.message) == (
        updates[201]["crm_id"], "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no way")


def test_a_record_the_map_cannot_encode_fails_alone(fake: FakeSalesforce) -> None:
    results = connector().write("account", [{"crm_id": "001A", "no_such_field": 1},
                                            {"crm_id": "001B", "billing_hold": False}])
    assert [r.ok for r in results] == [False, True] and results[0].code == "INVALID_FIELD"


def test_cpq_map_reads_sbqq_objects(fake: FakeSalesforce) -> None:
    conn = connector(fieldmap="salesforce_cpq")
    conn.lookup("quote", "status", "Accepted")
    assert "FROM SBQQ__Quote__c WHERE SBQQ__Status__c = 'Accepted'" in fake.queries[-1]
    assert conn.accepted_quote_states() == frozenset({"Accepted"})


def test_no_token_or_secret_in_logs(fake: FakeSalesforce, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.rows = [account(1, NOW - timedelta(minutes=1))]
    conn = connector()
    fake.expire_next = 1
    read_all(conn, None)
    conn.write("account", [{"crm_id": "001A", "billing_hold": True}])
    assert caplog.records
    for secret in ("TOKEN1", "TOKEN2", SF_SECRET, "Bearer"):
        assert secret not in caplog.text
    assert secret not in repr(conn.settings) and SF_SECRET not in json.dumps(
        conn.settings.credentials)


def test_write_stopped_by_the_budget_keeps_per_record_results(fake: FakeSalesforce) -> None:
    fake.usage = (78, 100)
    updates = [{"crm_id": f"001{i:015d}", "billing_hold": True} for i in range(450)]
    with pytest.raises(BudgetExhausted) as info:
        connector().write("account", updates)
    partial = info.value.partial_results
    assert partial is not None and len(partial) == 450
    assert [r.ok for r in partial].count(True) == 400  # two chunks sent (79, 80 of 100 used)
    assert {r.code for r in partial if not r.ok} == {"NOT_SENT"}
