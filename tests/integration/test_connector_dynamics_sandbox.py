"""The Dataverse connector against the sandbox CRM over real HTTPS (msal with the sandbox
authority, our transport, the sandbox's CA bundle with CURL_CA_BUNDLE pointing elsewhere)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from connectors.registry import build_connector
from connectors.settings import parse_connection

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")

ACCOUNTS = 10_000


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=ACCOUNTS, sides=("dataverse",)) as sbx:
        if sbx.dataverse is None:
            pytest.skip("sandbox has no Dataverse side yet")
        yield sbx


@pytest.fixture
def connector(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    dv = sandbox.dataverse
    settings = parse_connection("d365_sandbox", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "page_size": 5000,
        "credentials": {"client_id": dv.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    sandbox.reset()
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_DV_SECRET": dv.client_secret})


def test_reads_10000_accounts_in_2_pages_then_changes_only(sandbox: Any,
                                                           connector: Any) -> None:
    pages = list(connector.read_changes("account", None))
    records = [r for p in pages for r in p.records]
    assert len(records) == ACCOUNTS and len({r["crm_id"] for r in records}) == ACCOUNTS
    assert sandbox.counters.get("dataverse", "accounts", "GET") == math.ceil(ACCOUNTS / 5000)
    assert all(isinstance(r["credit_limit"], Decimal | type(None)) for r in records)
    assert records[0]["_etag"].startswith('W/"')
    again = list(connector.read_changes("account", pages[-1].cursor))
    assert [r for p in again for r in p.records] == []


def test_writes_1000_updates_in_one_batch(sandbox: Any, connector: Any) -> None:
    first = next(iter(connector.read_changes("account", None)))
    ids = [r["crm_id"] for r in first.records[:1000]]
    before = sandbox.counters.get("dataverse", "$batch")
    results = connector.write("account", [
        {"crm_id": i, "billing_hold": True, "open_balance": Decimal("99.5")} for i in ids])
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert sandbox.counters.get("dataverse", "$batch") - before == 1
    changed = connector.read_one("account", ids[0])
    assert changed is not None and changed["_etag"] != first.records[0]["_etag"]


def test_guarded_write_with_stale_etag_is_re_decided(sandbox: Any, connector: Any) -> None:
    first = next(iter(connector.read_changes("account", None))).records[0]
    connector.write("account", [{"crm_id": first["crm_id"], "billing_hold": True}])
    results = connector.write(
        "account", [{"crm_id": first["crm_id"], "credit_hold": True, "_etag": first["_etag"]}],
        redecide=lambda current, update: {"credit_hold": True})
    assert results[0].ok
    assert connector.read_one("account", first["crm_id"])["credit_hold"] is True


def test_doctor(connector: Any) -> None:
    results = connector.check()
    assert results[0].status == "ok"
    assert all(r.status in ("ok", "cannot verify") for r in results), results


def test_doctor_accepts_the_deal_overrides(sandbox: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The dynamics_deals overrides (new_quotetype, the new_renewsquote lookup, new_canceldate)
    are columns the sandbox serves, as an org that created them does."""
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    dv = sandbox.dataverse
    settings = parse_connection("d365_deals", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "fieldmap_overrides": "dynamics_deals",
        "credentials": {"client_id": dv.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    connector = build_connector(settings, sleep=lambda s: None,
                                environ={"SBX_DV_SECRET": dv.client_secret})
    results = connector.check()
    assert all(r.status in ("ok", "cannot verify") for r in results), results
