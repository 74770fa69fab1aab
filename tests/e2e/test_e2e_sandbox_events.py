"""The sandbox CRM's change events reach ledgerbridge's receivers over real HTTP (issue 17):
`Sandbox(notify=...)` posts to the daemon's API (`jobs.api`, uvicorn on loopback), which
authenticates, stores each event once in `event_inbox` and acknowledges, so the sandbox counts
every message acked; duplicated messages (fault injection) are stored once. Both databases."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from events_config import DV_KEY, HMAC_SECRET, events_settings
from sqlalchemy import Engine, select

from connectors.sandbox.notify import NotifyConfig
from connectors.sandbox.salesforce.auth import ORG_ID
from connectors.sandbox.server import Sandbox
from connectors.sandbox.tls import CABundleSession
from jobs.api.app import build_app, serve_in_thread
from sync.tables import event_inbox

pytestmark = pytest.mark.e2e


@pytest.fixture
def api_url(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = events_settings(tmp_path, monkeypatch, organization_id=ORG_ID,
                               dataverse="d365")
    handle = serve_in_thread(build_app(engine, settings), port=0)
    port = handle.server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    handle.stop()


def _inbox(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(event_inbox).order_by(event_inbox.c.id))
                .mappings()]


def test_sandbox_events_are_stored_once_by_the_receivers(api_url: str, engine: Engine) -> None:
    config = NotifyConfig(url=api_url, salesforce_form="both", dataverse_key=DV_KEY,
                          hmac_secret=HMAC_SECRET, duplicate=1.0, timeout=10)
    with Sandbox(seed=4, accounts=20, notify=config) as sandbox:
        assert sandbox.salesforce is not None and sandbox.dataverse is not None
        assert sandbox.notifier is not None
        sf = sandbox.salesforce_client()
        account = sandbox.salesforce.account_id(3)
        sf.Account.update(account, {"Credit_Hold__c": False})          # REST API
        held = sandbox.dataverse.admin("set_creditonhold", {"index": 2})  # admin action
        assert sandbox.notifier.flush(30)
        counters = sandbox.notifier.counters()
        admin = CABundleSession(sandbox.ca_bundle, timeout=(5, 30))
        assert admin.get(f"{sandbox.url}/__admin__/notify").json()["counters"] == counters
    total = counters["total"]
    # 3 messages (webhook, outbound message, callout), each sent twice, every one acked
    assert (total["events"], total["duplicated"], total["sent"], total["acked"],
            total["failed"]) == (2, 3, 6, 6, 0)
    rows = _inbox(engine)
    assert sorted((r["connection"], r["source"], r["crm_id"]) for r in rows) == sorted([
        ("d365", "dataverse", held["accountid"]),
        ("sf", "salesforce_soap", account),
        ("sf", "salesforce_json", account)])
    assert {r["object"] for r in rows} == {"account"}
