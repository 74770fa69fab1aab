"""The replication resources: sobjects/X/deleted/ and sobjects/X/updated/."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conftest import sf_json

from connectors.sandbox.server import Sandbox

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_deleted_and_updated_windows(sf: Any, sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    sfbox.clock.set(NOW)
    gone = side.admin("delete_account", {"index": 5})["id"]
    sfbox.clock.advance(60)
    changed = side.admin("set_hold", {"index": 6, "hold": True})["id"]
    sfbox.clock.advance(3600)
    start, end = NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)
    deleted = sf.Account.deleted(start, end)
    assert deleted["deletedRecords"] == [{"id": gone, "deletedDate": "2026-11-21T12:00:00.000+0000"}]
    assert deleted["latestDateCovered"] == "2026-11-21T13:01:00.000+0000"
    assert deleted["earliestDateAvailable"].endswith(".000+0000")
    updated = sf.Account.updated(start, end)
    assert updated["ids"] == [changed]
    assert updated["latestDateCovered"] == "2026-11-21T13:01:00.000+0000"
    before = sf.Account.deleted(NOW - dt.timedelta(hours=2), NOW - dt.timedelta(hours=1))
    assert before["deletedRecords"] == []


def test_replication_window_errors(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.clock.set(NOW)
    backwards = sf_http.call("GET", "/sobjects/Account/deleted/", params={
        "start": "2026-11-21T10:00:00+00:00", "end": "2026-11-21T09:00:00+00:00"})
    assert backwards.status_code == 400
    assert sf_json(backwards)[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    too_old = sf_http.call("GET", "/sobjects/Account/updated/", params={
        "start": "2026-09-01T00:00:00+00:00", "end": "2026-11-21T09:00:00+00:00"})
    assert sf_json(too_old)[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    missing = sf_http.call("GET", "/sobjects/Account/deleted/", params={"start": "x"})
    assert sf_json(missing)[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_updated_covers_seeded_rows_by_stamp(sf_http: Any, sfbox: Sandbox) -> None:
    sfbox.clock.set(dt.datetime(2025, 6, 2, tzinfo=UTC))
    body = sf_json(sf_http.call("GET", "/sobjects/Account/updated/", params={
        "start": "2025-06-01T00:00:00+00:00", "end": "2025-06-01T00:00:01+00:00"}))
    assert body["ids"] == [sfbox.salesforce.account_id(i) for i in range(6)]  # type: ignore[union-attr]
