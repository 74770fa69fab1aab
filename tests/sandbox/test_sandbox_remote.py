"""The sandbox in a child process (`remote.RemoteSandbox`): start-up, admin API, counters, stop."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from connectors.sandbox.cli import sandbox_command
from connectors.sandbox.remote import RemoteSandbox, RemoteSandboxError
from connectors.sandbox.tls import CABundleSession


def test_remote_sandbox_serves_counts_and_stops() -> None:
    box = RemoteSandbox(accounts=12, quotes=3)
    with box:
        assert box.url.startswith("https://127.0.0.1:") and box.salesforce is not None
        assert box.dataverse is None
        creds = box.salesforce.credentials
        session = CABundleSession(box.ca_bundle, timeout=(5, 30))
        token = session.post(f"{box.url}/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": creds.client_id,
            "client_secret": creds.client_secret}).json()["access_token"]
        changed = box.salesforce.admin("update", {"object": "Account", "index": 2,
                                                  "fields": {"Credit_Limit__c": 1234}})
        rows = session.get(f"{box.url}/services/data/v59.0/query", params={
            "q": f"SELECT Id, Credit_Limit__c FROM Account WHERE Id = '{changed['id']}'"},
            headers={"Authorization": f"Bearer {token}"}).json()["records"]
        assert rows[0]["Credit_Limit__c"] == 1234
        quotes = session.get(f"{box.url}/services/data/v59.0/query", params={
            "q": "SELECT Id FROM Quote"}, headers={"Authorization": f"Bearer {token}"}).json()
        assert quotes["totalSize"] == 3
        assert box.counters.get("salesforce", "query") == 2
        assert box.counters.total("salesforce") == 3    # the token and the two queries
        box.counters.reset()
        assert box.counters.total() == 0
        proc = box._proc
    assert proc is not None and proc.poll() is not None        # the child is gone
    with pytest.raises(RemoteSandboxError):
        box.counters.total()


def test_a_child_that_cannot_start_is_reported() -> None:
    box = RemoteSandbox(accounts=-1)          # refused by the command's own option check
    with pytest.raises(RemoteSandboxError, match="exited while starting"):
        box.start()
    assert box._proc is None


def test_cli_takes_quotes_and_sides() -> None:
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert "--quotes" in result.output and "--side" in result.output
