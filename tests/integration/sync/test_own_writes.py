"""Our own writes are not read again and again (issue 15, item 9), against the sandbox CRM.

After a sync that pushed to every account, the next sync with nothing changed reads at most one
page per object and rewrites no cursor: the run that pushed read its writes back once and its
cursor says which rows the next reads may leave out (``connectors.cursor``). What the overlap
window guarantees still holds: a person's change made during the push, just after it, or
committed late with a stamp inside the range of our writes is read."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import accounts
from connectors.registry import build_connector
from connectors.settings import parse_connection
from connectors.values import parse_datetime
from sync.engine import SyncOptions, run_cycle
from sync.tables import sync_cursors, sync_run_objects, sync_runs

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")

ACCOUNTS = 2500          # three pages of 1,000
PAGE = 1000


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=ACCOUNTS, quotes=0, sides=("salesforce",)) as sbx:
        yield sbx


@pytest.fixture
def make_connector(sandbox: Any) -> Callable[[], Any]:
    """A new connector each call, as a new process would build it (nothing kept in memory)."""
    sandbox.reset()
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "page_size": PAGE, "connect_timeout": 5.0,
        "read_timeout": 30.0,
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    return lambda: build_connector(settings, sleep=lambda s: None,
                                   environ={"SBX_SF_SECRET": creds.client_secret})


def _query_pages(sandbox: Any) -> int:
    return (sandbox.counters.get("salesforce", "query")
            + sandbox.counters.get("salesforce", "queryAll"))


def _cursors(engine: Engine) -> dict[str, Any]:
    """The CRM objects' cursors (the outbox's watermark moves while billing's figures of the
    last seconds are looked at again: runs here follow each other within its 5 s margin)."""
    with engine.connect() as conn:
        return {r.object: (r.cursor, r.updated_at) for r in conn.execute(select(sync_cursors))
                if not r.object.startswith("_")}


def _run_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                   for t in (sync_runs, sync_run_objects))


def _limit(engine: Engine, crm_id: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(accounts.c.credit_limit_minor).where(
            accounts.c.ext_id == crm_id)).scalar_one()


def test_a_sync_with_nothing_changed_after_a_push_reads_one_page_per_object(
        engine: Engine, sandbox: Any, make_connector: Callable[[], Any]) -> None:
    first = run_cycle(engine, make_connector(), SyncOptions(full=True))
    assert first.outcome == "ok", first.error
    assert first.objects["account"].pushed == ACCOUNTS
    cursors, rows = _cursors(engine), _run_rows(engine)
    for fresh in (make_connector(), make_connector()):      # two more runs, new processes
        sandbox.counters.reset()
        again = run_cycle(engine, fresh, SyncOptions())
        assert again.outcome == "ok", again.error
        assert again.total("read") == 0
        # one query page per object pulled (the code before read every pushed account again:
        # three pages of accounts, run after run)
        assert _query_pages(sandbox) == len(again.objects) == 5
        assert _cursors(engine) == cursors                   # no cursor written again
        assert _run_rows(engine) == rows + 1      # the run's own row: nothing happened
        rows = _run_rows(engine)
    account = json.loads(cursors["account"][0])
    assert len(cursors["account"][0]) < 16_000          # the code before: about 116 KB
    assert account["own"]["user"] and len(account["seen"]) <= 200


def test_a_persons_changes_around_the_push_are_read(
        engine: Engine, sandbox: Any, make_connector: Callable[[], Any]) -> None:
    crm = sandbox.salesforce
    connector = make_connector()
    write = connector.write
    changed: list[str] = []

    def write_after_a_person(obj: str, updates: Any, **kw: Any) -> Any:
        if obj == "account" and not changed:      # between our pull and our first write
            changed.append(crm.admin("update", {"object": "Account", "index": 5, "fields": {
                "Credit_Limit__c": 4242}})["id"])
        return write(obj, updates, **kw)

    connector.write = write_after_a_person
    first = run_cycle(engine, connector, SyncOptions(full=True))
    assert first.outcome == "ok" and first.objects["account"].pushed == ACCOUNTS
    # the run read its writes back: the person's change, then overwritten by ours as last
    # modifier, is in the ledger already
    during = changed[0]
    assert _limit(engine, during) == 4242 * _scale(engine, during)
    own = json.loads(_cursors(engine)["account"][0])["own"]
    assert parse_datetime(own["from"]) < parse_datetime(own["to"])
    # just after the run: a person's change, and one committed late, stamped inside the range
    # of our own writes (the overlap window's case)
    after = crm.admin("update", {"object": "Account", "index": 7, "fields": {
        "Credit_Limit__c": 5151}})["id"]
    late_at = parse_datetime(own["to"]) - timedelta(milliseconds=1)
    late = crm.admin("commit_late", {"object": "Account", "index": 9, "at": late_at.isoformat(),
                                     "fields": {"Credit_Limit__c": 6161}})
    assert parse_datetime(late["SystemModstamp"]) == late_at
    again = run_cycle(engine, make_connector(), SyncOptions())
    assert again.outcome == "ok" and again.objects["account"].upserted == 2
    scale = {crm_id: _scale(engine, crm_id) for crm_id in (during, after, late["id"])}
    assert _limit(engine, during) == 4242 * scale[during]
    assert _limit(engine, after) == 5151 * scale[after]
    assert _limit(engine, late["id"]) == 6161 * scale[late["id"]]


def _scale(engine: Engine, crm_id: str) -> int:
    from billing_core.domain.money import exponent

    with engine.connect() as conn:
        currency = conn.execute(select(accounts.c.currency).where(
            accounts.c.ext_id == crm_id)).scalar_one()
    return int(Decimal(10) ** exponent(currency))
