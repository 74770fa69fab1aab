"""``list_stamps`` (the drift sweep) against the sandbox CRM over real HTTPS, on both sides: every
live record's id and stamp, paged as the CRM pages (Salesforce ``nextRecordsUrl`` in batches of
2,000; Dataverse ``@odata.nextLink`` at 5,000 a page), equal to what a full read returns."""
from __future__ import annotations

import math
from typing import Any

import pytest

from connectors.registry import build_connector
from connectors.settings import parse_connection

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")
ACCOUNTS = 6_000


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=ACCOUNTS, sides=("salesforce", "dataverse")) as sbx:
        yield sbx


def _sf(sandbox: Any) -> Any:
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf_sandbox", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "page_size": 2000,
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_SF_SECRET": creds.client_secret})


def _dv(sandbox: Any) -> Any:
    dv = sandbox.dataverse
    settings = parse_connection("d365_sandbox", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "page_size": 5000,
        "credentials": {"client_id": dv.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_DV_SECRET": dv.client_secret})


def test_salesforce_lists_every_account_with_its_stamp(sandbox: Any) -> None:
    sandbox.reset()
    connector = _sf(sandbox)
    full = {r["crm_id"]: r["modstamp"] for p in connector.read_changes("account", None)
            for r in p.records}
    before = sandbox.counters.get("salesforce", "query")
    stamps = list(connector.list_stamps("account"))
    assert dict(stamps) == full and len(stamps) == len(full) >= ACCOUNTS
    assert sandbox.counters.get("salesforce", "query") - before >= math.ceil(ACCOUNTS / 2000)


def test_dataverse_lists_every_account_with_its_stamp(sandbox: Any) -> None:
    if sandbox.dataverse is None:
        pytest.skip("sandbox has no Dataverse side")
    sandbox.reset()
    connector = _dv(sandbox)
    full = {r["crm_id"]: r["modstamp"] for p in connector.read_changes("account", None)
            for r in p.records}
    before = sandbox.counters.get("dataverse", "accounts", "GET")
    stamps = list(connector.list_stamps("account"))
    assert dict(stamps) == full and len(stamps) == len(full) >= ACCOUNTS
    assert sandbox.counters.get("dataverse", "accounts", "GET") - before == math.ceil(
        len(full) / 5000)
