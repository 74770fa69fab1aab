"""``list_stamps`` (the drift sweep): ids and modification stamps only, every page followed, on
both CRMs - Salesforce ``SELECT Id, SystemModstamp`` paged by ``nextRecordsUrl``, Dataverse
``$select=<key>,modifiedon`` paged by ``@odata.nextLink`` with ``Prefer: odata.maxpagesize``."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import responses
from conn_support import ENV, NOW, SF_URL, d365_settings, sf_settings
from fake_dv import AUTHORITY, FakeDataverse, guid
from fake_dv import BASE as DV_BASE
from fake_sf import BASE as SF_BASE
from fake_sf import FakeSalesforce

from connectors.registry import build_connector


def _build(settings: Any) -> Any:
    return build_connector(settings, sleep=lambda s: None, clock=lambda: NOW, environ=ENV)


def test_salesforce_lists_ids_and_stamps_following_next_records_url() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def first(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append((parse_qs(urlparse(request.url).query)["q"][0], dict(request.headers)))
        return 200, {}, json.dumps({"totalSize": 3, "done": False,
                                    "nextRecordsUrl": "/services/data/v59.0/query/01g-2000",
                                    "records": [
            {"attributes": {"type": "Account"}, "Id": "001A", "SystemModstamp":
             "2026-11-21T23:43:43.000+0000"},
            {"attributes": {"type": "Account"}, "Id": "001B", "SystemModstamp":
             "2026-11-22T00:00:01.000+0000"}]})

    def more(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append((request.url, dict(request.headers)))
        return 200, {}, json.dumps({"totalSize": 3, "done": True, "records": [
            {"attributes": {"type": "Account"}, "Id": "001C",
             "SystemModstamp": "2026-11-22T01:00:00.000+0000"}]})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(SF_BASE)}/query/\?.*"), first)
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(SF_BASE)}/query/01g-2000"),
                          more)
        rsps.add_callback(responses.POST, f"{SF_URL}/services/oauth2/token",
                          FakeSalesforce()._token)
        stamps = list(_build(sf_settings()).list_stamps("account"))
    assert seen[0][0] == "SELECT Id, SystemModstamp FROM Account"
    assert seen[0][1].get("Sforce-Query-Options") == "batchSize=2000"
    assert "01g-2000" in seen[1][0] and len(seen) == 2
    assert stamps == [("001A", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
                      ("001B", datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC)),
                      ("001C", datetime(2026, 11, 22, 1, 0, tzinfo=UTC))]


def test_dataverse_lists_keys_and_modifiedon_following_next_link() -> None:
    dv = FakeDataverse()
    seen: list[tuple[str, str | None]] = []
    link = DV_BASE + "accounts?$select=accountid,modifiedon&$skiptoken=abc"

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        url = unquote(request.url)
        seen.append((url, request.headers.get("Prefer")))
        if "$skiptoken" not in url:
            return 200, {}, json.dumps({"value": [
                {"accountid": guid(1), "modifiedon": "2026-11-21T23:40:00Z"},
                {"accountid": guid(2), "modifiedon": "2026-11-21T23:41:00Z"}],
                "@odata.nextLink": link})
        return 200, {}, json.dumps({"value": [
            {"accountid": guid(3), "modifiedon": "2026-11-21T23:42:00Z"}]})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(re.escape(DV_BASE) + r"accounts\?.*"),
                          answer)
        rsps.add_callback(responses.GET, f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
                          dv._discovery)
        rsps.add_callback(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", dv._token)
        stamps = list(_build(d365_settings()).list_stamps("account"))
    assert seen[0][0].endswith("accounts?$select=accountid,modifiedon")
    assert seen[0][1] == "odata.maxpagesize=5000"
    assert "$skiptoken=abc" in seen[1][0] and len(seen) == 2
    assert [s[0] for s in stamps] == [guid(1), guid(2), guid(3)]
    assert stamps[2][1] == datetime(2026, 11, 21, 23, 42, tzinfo=UTC)
