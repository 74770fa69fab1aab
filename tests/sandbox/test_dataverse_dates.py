"""Date columns as Dataverse serves them: "User Local" date-only columns (quote.effectivefrom,
quotedetail.requestdeliveryby) are UTC instants of the local midnight in the zone the org's
users entered them in; "Date Only" columns are bare dates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import requests
from test_dataverse_harness import Dataverse, load_json

BERLIN = ZoneInfo("Europe/Berlin")
USER_LOCAL = {"quotes": "effectivefrom", "quotedetails": "requestdeliveryby"}


@pytest.fixture
def berlin(dv: Dataverse) -> Iterator[Dataverse]:
    """The org's users in Europe/Berlin; the session's sandbox is given back in UTC."""
    assert dv.side.admin("set_time_zone", {"time_zone": "Europe/Berlin"}) == {
        "time_zone": "Europe/Berlin"}
    try:
        yield dv
    finally:
        dv.side.admin("set_time_zone", {"time_zone": "UTC"})


def _served(dv: Dataverse, http: requests.Session, table: str) -> list[str]:
    column = USER_LOCAL[table]
    body = load_json(dv.get(http, f"{table}?$select={column}&$top=200").text)
    return [row[column] for row in body["value"]]


@pytest.mark.parametrize("table", sorted(USER_LOCAL))
def test_user_local_dates_are_utc_instants_of_local_midnight(
        berlin: Dataverse, dv_http: requests.Session, table: str) -> None:
    served = _served(berlin, dv_http, table)
    assert served and all(text.endswith(("T23:00:00Z", "T22:00:00Z")) for text in served)
    for text in served:
        local = dt.datetime.fromisoformat(text).astimezone(BERLIN)
        assert local.time() == dt.time(0, 0)  # midnight where it was entered


@pytest.mark.parametrize("table", sorted(USER_LOCAL))
def test_the_zone_changes_the_instant_not_the_date(dv: Dataverse, dv_http: requests.Session,
                                                   table: str) -> None:
    in_utc = _served(dv, dv_http, table)
    assert all(text.endswith("T00:00:00Z") for text in in_utc)
    dv.side.admin("set_time_zone", {"time_zone": "Europe/Berlin"})
    try:
        in_berlin = _served(dv, dv_http, table)
    finally:
        dv.side.admin("set_time_zone", {"time_zone": "UTC"})
    assert [dt.datetime.fromisoformat(t).astimezone(BERLIN).date() for t in in_berlin] == [
        dt.date.fromisoformat(t[:10]) for t in in_utc]


def test_a_user_enters_a_date_in_the_org_zone(berlin: Dataverse,
                                              dv_http: requests.Session) -> None:
    quote = berlin.side.admin("guid", {"table": "quotes", "index": 3})["id"]
    berlin.side.admin("set_local_date", {"table": "quotes", "id": quote,
                                         "column": "effectivefrom", "date": "2026-01-01"})
    row = load_json(berlin.get(dv_http, f"quotes({quote})?$select=effectivefrom").text)
    assert row["effectivefrom"] == "2025-12-31T23:00:00Z"
    with pytest.raises(ValueError, match="not a user-local date column"):
        berlin.side.admin("set_local_date", {"table": "accounts", "index": 0,
                                             "column": "new_lastinvoicedate",
                                             "date": "2026-01-01"})


def test_user_local_columns_take_instants_not_bare_dates(dv: Dataverse,
                                                         dv_http: requests.Session) -> None:
    quote = dv.side.admin("guid", {"table": "quotes", "index": 4})["id"]
    url = f"{dv.api}/quotes({quote})"
    bare = dv_http.patch(url, json={"effectivefrom": "2026-01-01"},
                         headers=dv.headers(**{"If-Match": "*"}))
    assert bare.status_code == 400 and "Edm.DateTimeOffset" in bare.text
    instant = dv_http.patch(url, json={"effectivefrom": "2025-12-31T23:00:00Z"},
                            headers=dv.headers(**{"If-Match": "*"}))
    assert instant.status_code == 204, instant.text
    row = load_json(dv.get(dv_http, f"quotes({quote})?$select=effectivefrom").text)
    assert row["effectivefrom"] == "2025-12-31T23:00:00Z"
    # a "Date Only" column stays a bare date
    account = dv.side.admin("guid", {"index": 0})["id"]
    assert dv_http.patch(f"{dv.api}/accounts({account})",
                         json={"new_lastinvoicedate": "2026-01-01"},
                         headers=dv.headers(**{"If-Match": "*"})).status_code == 204


def test_metadata_says_each_date_column_behaviour(dv: Dataverse,
                                                  dv_http: requests.Session) -> None:
    def attributes(entity: str) -> dict[str, dict]:
        body = dv.get(dv_http, f"EntityDefinitions(LogicalName='{entity}')/Attributes").json()
        return {a["LogicalName"]: a for a in body["value"]}

    quote, account = attributes("quote"), attributes("account")
    assert (quote["effectivefrom"]["Format"], quote["effectivefrom"]["DateTimeBehavior"]) == (
        "DateOnly", {"Value": "UserLocal"})
    assert attributes("quotedetail")["requestdeliveryby"]["DateTimeBehavior"] == {
        "Value": "UserLocal"}
    assert (account["new_lastinvoicedate"]["Format"],
            account["new_lastinvoicedate"]["DateTimeBehavior"]) == (
        "DateOnly", {"Value": "DateOnly"})
    assert account["modifiedon"]["Format"] == "DateAndTime"
    assert "DateTimeBehavior" not in account["name"]


def test_the_concurrency_limit_is_a_429_with_retry_after(dv: Dataverse,
                                                          dv_http: requests.Session) -> None:
    dv.ctx.faults.add("dataverse", "accounts", "concurrent_limit", count=1, retry_after=2)
    busy = dv.get(dv_http, "accounts?$top=1")
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "2"
    assert load_json(busy.text)["error"]["message"] == (
        "Number of concurrent requests exceeded the limit of 52.")
    assert dv.get(dv_http, "accounts?$top=1").status_code == 200
