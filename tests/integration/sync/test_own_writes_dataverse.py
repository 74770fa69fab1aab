"""Our own writes on Dataverse tables read by ``modifiedon`` are not read again and again
(issue 15, item 9), against the sandbox CRM's Dataverse side, change tracking off.

After a sync that pushed to every account, the next syncs with nothing changed read nothing
(one page per object) and write one run row: the run that pushed read its writes back once and
its cursor says which rows the next reads may leave out (those last modified by our
application user, ``WhoAmI``, inside the range it read back). A person's change made during the
push, just after it, or stamped inside that range is still read: it names the person as
``_modifiedby_value``."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
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

ACCOUNTS = 600
TABLES = ("accounts", "products", "quotes", "quotedetails")
NO_CHANGE_TRACKING = """\
[objects.account]
change_tracking = false
[objects.quote]
change_tracking = false
[objects.quote_line]
change_tracking = false
"""


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=ACCOUNTS, quotes=40, sides=("dataverse",)) as sbx:
        yield sbx


@pytest.fixture
def make_connector(sandbox: Any, tmp_path: Path) -> Callable[[], Any]:
    """A new connector each call, as a new process would build it (nothing kept in memory)."""
    sandbox.reset()
    sandbox.dataverse.ctx.clock.reset()
    overrides = tmp_path / "fields.toml"
    overrides.write_text(NO_CHANGE_TRACKING, encoding="utf-8")
    dv = sandbox.dataverse
    settings = parse_connection("d365", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "fieldmap_overrides": str(overrides),
        "credentials": {"client_id": dv.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    return lambda: build_connector(settings, sleep=lambda s: None,
                                   environ={"SBX_DV_SECRET": dv.client_secret})


def _reads(sandbox: Any) -> int:
    return sum(sandbox.counters.get("dataverse", t, "GET") for t in TABLES)


def _cursors(engine: Engine) -> dict[str, Any]:
    """The CRM objects' cursors (the outbox's watermark moves once after a run that changed
    billing's figures)."""
    with engine.connect() as conn:
        return {r.object: (r.cursor, r.updated_at) for r in conn.execute(select(sync_cursors))
                if not r.object.startswith("_")}


def _run_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                   for t in (sync_runs, sync_run_objects))


def _limit(engine: Engine, crm_id: str) -> Decimal:
    from billing_core.domain.money import exponent

    with engine.connect() as conn:
        minor, currency = conn.execute(select(accounts.c.credit_limit_minor, accounts.c.currency)
                                       .where(accounts.c.ext_id == crm_id)).one()
    return Decimal(minor).scaleb(-exponent(currency))


def test_a_sync_with_nothing_changed_after_a_push_reads_nothing(
        engine: Engine, sandbox: Any, make_connector: Callable[[], Any]) -> None:
    first = run_cycle(engine, make_connector(), SyncOptions(full=True))
    assert first.outcome == "ok", first.error
    assert first.objects["account"].pushed == ACCOUNTS
    cursors, rows = _cursors(engine), _run_rows(engine)
    own = json.loads(cursors["account"][0])["own"]
    from connectors.sandbox.dataverse.ids import user_id

    dv = sandbox.dataverse
    assert own["user"] == user_id(dv.seed, dv.client_id)     # WhoAmI: our application user
    # the read-back claimed our writes' last second too: none of ours stays in the cursor
    assert json.loads(cursors["account"][0])["seen"] == {}
    assert len(cursors["account"][0]) < 1_000
    for fresh in (make_connector(), make_connector()):      # two more runs, new processes
        sandbox.counters.reset()
        again = run_cycle(engine, fresh, SyncOptions())
        assert again.outcome == "ok", again.error
        # the code before read every pushed account and quote again, run after run
        assert again.total("read") == 0
        assert _reads(sandbox) == len(again.objects) == 5    # one page per object
        assert _cursors(engine) == cursors                   # no cursor written again
        assert _run_rows(engine) == rows + 1                 # the run's own row alone
        rows = _run_rows(engine)


def test_a_persons_changes_around_the_push_are_read(
        engine: Engine, sandbox: Any, make_connector: Callable[[], Any]) -> None:
    dv = sandbox.dataverse
    connector = make_connector()
    write = connector.write
    changed: list[str] = []

    def write_after_a_person(obj: str, updates: Any, **kw: Any) -> Any:
        if obj == "account" and not changed:      # between our pull and our first write
            changed.append(dv.admin("set_creditlimit", {"index": 5, "value": 4242})[
                "accountid"])
        return write(obj, updates, **kw)

    connector.write = write_after_a_person
    first = run_cycle(engine, connector, SyncOptions(full=True))
    assert first.outcome == "ok" and first.objects["account"].pushed == ACCOUNTS
    # the run read its writes back: the person's change, then written over by ours as last
    # modifier, is in the ledger already
    during = changed[0]
    assert _limit(engine, during) == 4242
    own = json.loads(_cursors(engine)["account"][0])["own"]
    start, end = parse_datetime(own["from"]), parse_datetime(own["to"])
    assert start < end
    # right after the run: a person's change (stamped now, at or after the range's end), and
    # one stamped inside the range of our own writes (a late commit: the overlap window's case)
    after = dv.admin("set_creditlimit", {"index": 7, "value": 5151})["accountid"]
    dv.ctx.clock.set(end - timedelta(seconds=1))
    late = dv.admin("set_creditlimit", {"index": 9, "value": 6161})
    dv.ctx.clock.reset()
    assert start <= parse_datetime(late["modifiedon"]) < end
    again = run_cycle(engine, make_connector(), SyncOptions())
    assert again.outcome == "ok" and again.objects["account"].upserted == 2
    assert _limit(engine, during) == 4242
    assert _limit(engine, after) == 5151
    assert _limit(engine, late["accountid"]) == 6161
