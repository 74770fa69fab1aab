"""The server: admin API, TLS trust (the CA-bundle trap), determinism, scale, standalone use."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import certifi
import pytest
import requests
from click.testing import CliRunner
from conftest import SF_ACCOUNTS, sf_json

from connectors.sandbox.cli import sandbox_command
from connectors.sandbox.server import Sandbox, serve_forever
from connectors.sandbox.tls import CABundleSession


def test_admin_api(sf_http: Any, sfbox: Sandbox) -> None:
    admin = CABundleSession(sfbox.ca_bundle)
    url = f"{sfbox.url}/__admin__"
    assert admin.get(url).json()["sides"][0] == "salesforce"
    info = admin.get(f"{url}/salesforce").json()
    assert info["instance_url"] == sfbox.url and info["rows"]["Account"] == SF_ACCOUNTS
    sf_http.query("SELECT Id FROM Account LIMIT 1")
    calls = admin.get(f"{url}/counters").json()
    assert calls["calls"] == [{"crm": "salesforce", "endpoint": "query", "method": "GET",
                               "count": 1}]
    added = admin.post(f"{url}/faults", json={"crm": "salesforce", "endpoint": "query",
                                              "kind": "503", "count": 1}).json()
    assert added["faults"][0]["remaining"] == 1
    assert sf_http.query("SELECT Id FROM Account LIMIT 1").status_code == 503
    assert admin.delete(f"{url}/faults").json() == {"faults": []}
    held = admin.post(f"{url}/salesforce/set_hold", json={"index": 1, "hold": True}).json()
    row = sf_json(sf_http.call("GET", f"/sobjects/Account/{held['id']}"))
    assert row["Credit_Hold__c"] is True
    now = admin.post(f"{url}/clock", json={"set": "2026-11-21T23:43:43Z"}).json()["now"]
    assert now.startswith("2026-11-21T23:43:43")
    won = admin.post(f"{url}/salesforce/set_quote_status", json={"index": 0,
                                                                 "status": "Accepted"}).json()
    assert sf_json(sf_http.call("GET", f"/sobjects/Quote/{won['id']}"))["Status"] == "Accepted"
    bad = admin.post(f"{url}/salesforce/set_hold", json={"index": 10 ** 9})
    assert bad.status_code == 400 and "error" in bad.json()
    assert admin.post(f"{url}/faults", json={"kind": "boom"}).status_code == 400
    assert admin.get(f"{url}/nothing").status_code == 404
    assert admin.post(f"{url}/reset").json() == {"reset": True}
    assert admin.get(f"{url}/counters").json()["total"] == 0
    row = sf_json(sf_http.call("GET", f"/sobjects/Account/{held['id']}"))
    assert row["Credit_Hold__c"] is False
    assert admin.post(f"{url}/counters/reset").json()["total"] == 0


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_bundle_wins_over_the_environment(sfbox: Sandbox, variable: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, certifi.where())
    plain = requests.Session()
    plain.verify = sfbox.ca_bundle
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(f"{sfbox.url}/__admin__", timeout=5)
    assert CABundleSession(sfbox.ca_bundle).get(f"{sfbox.url}/__admin__").status_code == 200
    sf = sfbox.salesforce_client()
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == SF_ACCOUNTS


def test_seeded_data_is_deterministic() -> None:
    def first_rows(seed: int) -> list[dict]:
        with Sandbox(seed=seed, accounts=50, sides=("salesforce",)) as sandbox:
            sf = sandbox.salesforce_client()
            soql = ("SELECT Id, Name, CurrencyIsoCode, BillingCountryCode, Credit_Limit__c, "
                    "Credit_Hold__c, SystemModstamp FROM Account ORDER BY Id")
            return sf.query_all(soql)["records"]

    assert first_rows(3) == first_rows(3)
    assert first_rows(3) != first_rows(4)


def test_a_million_accounts_start_instantly_and_stream() -> None:
    with Sandbox(accounts=1_000_000, sides=("salesforce",)) as sandbox:
        sf = sandbox.salesforce_client()
        assert sandbox.salesforce is not None
        assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1_000_000
        tail = sf.query("SELECT Id FROM Account WHERE SystemModstamp >= 2025-06-04T20:35:31Z "
                        "ORDER BY SystemModstamp, Id")
        assert tail["totalSize"] == 7 and tail["done"] is True
        assert tail["records"][-1]["Id"] == sandbox.salesforce.account_id(999_999)
        page = sf.query("SELECT Id FROM Account ORDER BY SystemModstamp DESC, Id DESC LIMIT 2")
        assert [r["Id"] for r in page["records"]] == [sandbox.salesforce.account_id(i)
                                                      for i in (999_999, 999_998)]
        first = sf.query("SELECT Id, Name FROM Account ORDER BY SystemModstamp, Id")
        assert first["totalSize"] == 1_000_000 and len(first["records"]) == 2000
        assert sf.Account.get(sandbox.salesforce.account_id(999_999))["AccountNumber"] == (
            "AC-1000000")


def test_sandbox_routes_and_default_sides() -> None:
    with Sandbox(accounts=10) as sandbox:
        assert sandbox.salesforce is not None and sandbox.sides[0] is sandbox.salesforce
        session = sandbox.session()
        assert session.get(f"{sandbox.url}/nowhere").status_code == 404
        versions = session.get(f"{sandbox.url}/services/data/").json()
        assert versions[0]["version"] == "59.0"


def test_serve_forever_prints_how_to_connect(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    stop.set()
    serve_forever(port=0, seed=1, accounts=10, stop=stop)
    out = capsys.readouterr().out
    assert "CA bundle" in out and "client_id=" in out and "username=" in out


def test_cli_command_options() -> None:
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--seed" in result.output
    assert "--accounts" in result.output


def test_a_silent_client_does_not_stall_the_server(sfbox: Sandbox) -> None:
    with socket.create_connection(("127.0.0.1", sfbox.port), timeout=5):
        session = CABundleSession(sfbox.ca_bundle, timeout=(5, 10))
        assert session.get(f"{sfbox.url}/__admin__").status_code == 200


def test_admin_refuses_changes_to_deleted_rows(sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    side.admin("delete_account", {"index": 4})
    with pytest.raises(ValueError, match="deleted"):
        side.admin("set_hold", {"index": 4})
    with pytest.raises(ValueError, match="deleted"):
        side.admin("delete_account", {"index": 4})


def test_a_failed_start_leaves_nothing_behind(sfbox: Sandbox) -> None:
    clash = Sandbox(port=sfbox.port, accounts=1, sides=("salesforce",))
    with pytest.raises(OSError):
        clash.start()
    assert clash.ca_bundle and not os.path.exists(clash.ca_bundle)
