"""Change tracking: delta links on tracked tables, $deletedEntity, token expiry."""

from __future__ import annotations

import requests
from test_dataverse_harness import Dataverse, assert_shape, fixture, load_json

TRACK = "odata.track-changes,odata.maxpagesize=5000"


def _read_all(dv: Dataverse, dv_http: requests.Session, url: str,
              prefer: str = TRACK) -> tuple[list[dict], str | None, int]:
    rows: list[dict] = []
    pages = 0
    delta = None
    next_url: str | None = url
    while next_url:
        resp = dv_http.get(next_url, headers=dv.headers(Prefer=prefer))
        assert resp.status_code == 200, resp.text
        body = load_json(resp.text)
        pages += 1
        rows += body["value"]
        next_url = body.get("@odata.nextLink")
        if next_url:
            assert "@odata.deltaLink" not in body  # only the last page carries it
        else:
            delta = body.get("@odata.deltaLink")
    return rows, delta, pages


def test_tracked_read_ends_with_a_delta_link(dv_big: Dataverse) -> None:
    dv, dv_http = dv_big, dv_big.session()
    resp = dv.get(dv_http, "accounts?$select=name", Prefer=TRACK)
    assert "odata.track-changes" in resp.headers["Preference-Applied"]
    rows, delta, pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name,creditonhold")
    assert len(rows) == 10_000 and pages == 2
    assert delta is not None and delta.startswith(f"{dv.api}/accounts?")
    assert "$deltatoken=" in delta and "$select=name,creditonhold" in delta
    empty = load_json(dv_http.get(delta, headers=dv.headers()).text)
    assert empty["value"] == []
    assert empty["@odata.context"] == f"{dv.api}/$metadata#accounts(name,creditonhold)/$delta"


def test_delta_returns_changes_and_deletions(dv: Dataverse, dv_http: requests.Session) -> None:
    _rows, delta, _pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name,creditonhold")
    held = dv.side.admin("set_creditonhold", {"index": 3, "value": True})
    dv.side.admin("set_creditlimit", {"index": 4, "value": "12345.67"})
    gone = dv.side.admin("delete_account", {"index": 5})["deleted"]
    created = dv.side.admin("create", {"table": "accounts", "row": {"name": "New Co"}})
    body = load_json(dv_http.get(delta, headers=dv.headers()).text)
    values = body["value"]
    assert [v.get("accountid") or v.get("id") for v in values] == [
        held["accountid"], dv.side.admin("guid", {"index": 4})["id"], gone,
        created["accountid"]]
    assert values[0]["creditonhold"] is True
    assert set(values[0]) == {"@odata.etag", "name", "creditonhold", "accountid"}
    assert_shape(values[2], fixture("dataverse_answers.json")["deleted_entity"])
    assert values[2]["@odata.context"] == f"{dv.api}/$metadata#accounts/$deletedEntity"
    assert values[2]["reason"] == "deleted"
    # The new delta link starts after these changes.
    again = load_json(dv_http.get(body["@odata.deltaLink"], headers=dv.headers()).text)
    assert again["value"] == []


def test_a_change_during_a_tracked_read_is_delivered_again(dv: Dataverse,
                                                           dv_http: requests.Session) -> None:
    small = "odata.track-changes,odata.maxpagesize=100"
    first = load_json(dv.get(dv_http, "accounts?$select=name", Prefer=small).text)
    row = dv.side.admin("update", {"table": "accounts", "index": 1,
                                   "values": {"name": "Renamed mid-read"}})
    _rest, delta, _pages = _read_all(dv, dv_http, first["@odata.nextLink"], prefer=small)
    assert delta is not None
    changed = load_json(dv_http.get(delta, headers=dv.headers()).text)["value"]
    assert [(v["accountid"], v["name"]) for v in changed] == [(row["accountid"],
                                                                "Renamed mid-read")]


def test_quotes_and_lines_are_tracked_products_are_not(dv: Dataverse,
                                                       dv_http: requests.Session) -> None:
    _rows, quote_delta, _p = _read_all(dv, dv_http, f"{dv.api}/quotes?$select=statecode")
    won = dv.side.admin("win_quote", {"index": 0})
    changes = load_json(dv_http.get(quote_delta, headers=dv.headers()).text)["value"]
    assert [(c["quoteid"], c["statecode"]) for c in changes] == [(won["quoteid"], 2)]
    _rows, line_delta, _p = _read_all(dv, dv_http, f"{dv.api}/quotedetails?$select=quantity")
    assert line_delta is not None
    resp = dv.get(dv_http, "products", Prefer=TRACK)
    assert "odata.track-changes" not in resp.headers.get("Preference-Applied", "")
    assert "@odata.deltaLink" not in resp.json()


def test_expired_delta_token_answers_the_error(dv: Dataverse, dv_http: requests.Session) -> None:
    _rows, delta, _pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name")
    dv.side.admin("expire_delta_tokens", {"table": "accounts"})
    resp = dv_http.get(delta, headers=dv.headers())
    assert resp.status_code == 400
    body = load_json(resp.text)
    assert_shape(body, fixture("dataverse_answers.json")["error"])
    assert body["error"]["code"] == "0x80044352"
    # A full resync gets a fresh, working token.
    _rows, fresh, _pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name")
    assert dv_http.get(fresh, headers=dv.headers()).status_code == 200


def test_delta_pages_when_many_rows_changed(dv: Dataverse, dv_http: requests.Session) -> None:
    _rows, delta, _pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name")
    for index in range(25):
        dv.side.admin("set_creditonhold", {"index": index, "value": True})
    rows, _next_delta, pages = _read_all(dv, dv_http, delta, prefer="odata.maxpagesize=10")
    assert len(rows) == 25 and pages == 3


def test_tracking_refuses_filter(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv.get(dv_http, "accounts?$filter=creditonhold eq true", Prefer=TRACK)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "0x80060888"


def test_delta_tokens_from_before_a_reset_are_expired(dv: Dataverse,
                                                      dv_http: requests.Session) -> None:
    _rows, delta, _pages = _read_all(dv, dv_http, f"{dv.api}/accounts?$select=name")
    dv.side.reset()
    dv.token = dv.msal_app().acquire_token_for_client(scopes=[dv.info["scope"]])["access_token"]
    resp = dv_http.get(delta, headers=dv.headers())
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "0x80044352"


def test_next_pages_of_a_tracked_read_stay_tracked(dv: Dataverse,
                                                   dv_http: requests.Session) -> None:
    first = dv.get(dv_http, "accounts?$select=name",
                   Prefer="odata.track-changes,odata.maxpagesize=400").json()
    rest = dv_http.get(first["@odata.nextLink"], headers=dv.headers()).json()
    assert "@odata.deltaLink" in rest
    bad = first["@odata.nextLink"].replace("resume%253D%2522", "resume%253D%2522x")
    assert bad != first["@odata.nextLink"]
    assert dv_http.get(bad, headers=dv.headers()).status_code == 400
