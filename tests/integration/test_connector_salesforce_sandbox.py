"""The Salesforce connector against the sandbox CRM over real HTTPS (simple-salesforce, our
transport, the sandbox's CA bundle with REQUESTS_CA_BUNDLE pointing elsewhere)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import Deletion
from connectors.registry import build_connector
from connectors.settings import parse_connection

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")

ACCOUNTS = 10_000


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=ACCOUNTS, sides=("salesforce",)) as sbx:
        yield sbx


@pytest.fixture
def connector(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf_sandbox", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "page_size": 2000, "connect_timeout": 5.0,
        "read_timeout": 30.0,
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    sandbox.reset()
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_SF_SECRET": creds.client_secret})


def test_reads_10000_accounts_in_5_query_pages(sandbox: Any, connector: Any) -> None:
    pages = list(connector.read_changes("account", None))
    records = [r for p in pages for r in p.records]
    assert len(records) >= ACCOUNTS
    assert len({r["crm_id"] for r in records}) == len(records)
    assert all(isinstance(r["credit_limit"], Decimal | type(None)) for r in records)
    assert all(r["modstamp"].tzinfo is not None for r in records)
    query_calls = (sandbox.counters.get("salesforce", "query")
                   + sandbox.counters.get("salesforce", "queryAll"))
    assert query_calls == math.ceil(len(records) / 2000)
    # nothing changed: the incremental read hands out nothing again
    again = list(connector.read_changes("account", pages[-1].cursor))
    assert [r for p in again for r in p.records] == []
    assert all(isinstance(d, Deletion) for p in again for d in p.deletions)


def test_writes_1000_updates_in_5_collection_calls(sandbox: Any, connector: Any) -> None:
    first = next(iter(connector.read_changes("account", None)))
    ids = [r["crm_id"] for r in first.records[:1000]]
    before = sandbox.counters.get("salesforce", "composite/sobjects")
    results = connector.write("account", [
        {"crm_id": i, "billing_hold": True, "open_balance": Decimal("123.45")} for i in ids])
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert sandbox.counters.get("salesforce", "composite/sobjects") - before == math.ceil(
        1000 / 200)
    assert connector.api_budget().used is not None


def test_doctor_checks_the_default_map(connector: Any) -> None:
    results = connector.check()
    assert results[0].status == "ok"
    assert all(r.status in ("ok", "cannot verify") for r in results), results


def _cpq(sandbox: Any) -> Any:
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf_cpq", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "fieldmap": "salesforce_cpq",
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_SF_SECRET": creds.client_secret})


def test_cpq_amendment_and_renewal_quotes_name_their_origin(
        sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPQ map's relationship paths, read over the wire: an amendment quote names the
    quote its master contract was made from, a renewal the quote of the contract its
    opportunity renews; a new quote's paths are null. doctor accepts the paths."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    admin = sandbox.salesforce.admin
    account = admin("create", {"object": "Account", "fields": {
        "Name": "CPQ Co", "CurrencyIsoCode": "USD"}})["id"]
    first = admin("create_quote", {"cpq": True, "contract": True, "account_id": account,
                                   "status": "Accepted", "start_date": "2027-01-01",
                                   "lines": [{"product_index": 0, "quantity": 5,
                                              "unit_price": 12}]})
    amendment = admin("amend_contract", {"contract_id": first["contract_id"],
                                         "start_date": "2027-01-20", "quantities": {"0": 8}})
    renewal = admin("renew_contract", {"contract_id": first["contract_id"],
                                       "start_date": "2028-01-01"})
    connector = _cpq(sandbox)
    quotes = {r["crm_id"]: r for p in connector.read_changes("quote", None) for r in p.records}
    assert (quotes[first["id"]]["type"], quotes[first["id"]]["origin_quote"]) == ("Quote", None)
    amended = quotes[amendment["id"]]
    assert (amended["type"], amended["origin_quote"], amended["origin_contract"]) == (
        "Amendment", first["id"], first["contract_id"])
    renewed = quotes[renewal["id"]]
    assert (renewed["type"], renewed["renewed_quote"], renewed["renewed_contract"]) == (
        "Renewal", first["id"], first["contract_id"])
    lines = [r for p in connector.read_changes("quote_line", None) for r in p.records
             if r["quote_crm_id"] == amendment["id"]]
    assert [r["quantity"] for r in lines] == [Decimal(8)]
    results = connector.check()
    assert all(r.status in ("ok", "cannot verify") for r in results), results
