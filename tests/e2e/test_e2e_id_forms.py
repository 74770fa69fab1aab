"""A record named by another form of its CRM id is the same record, end to end: a Flow
callout naming an accepted quote by its 15-character Salesforce id (``$Record.Id`` in a
formula, a hand-made callout) is read back through the sandbox's REST API like one naming it
by its 18-character id, its account's hold is read after it, and a hold finance set in the
CRM before the quote was accepted holds its provisioning."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_world import (
    EVENTS_HMAC,
    EVENTS_HMAC_ENV,
    EVENTS_KEY,
    EVENTS_KEY_ENV,
    World,
    events_config,
)
from sqlalchemy import func, select
from test_e2e_hold_interleaving import SalesforceUser

from billing_core.adapters.tables import accounts, orders, provisioning_requests
from sync.inbox import InboxEvent, store
from sync.tables import event_inbox

pytestmark = pytest.mark.e2e


@pytest.fixture
def events_world(sandbox: Any, sqlite_engine: Any, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The module's sandbox (it sends no events of its own: only the callout below is one),
    with the connections' event receivers configured."""
    monkeypatch.setenv(EVENTS_KEY_ENV, EVENTS_KEY)
    monkeypatch.setenv(EVENTS_HMAC_ENV, EVENTS_HMAC)
    sandbox.reset()
    from jobs.cli.demo_crm import sandbox_config

    written, _ = sandbox_config(sandbox, str(sqlite_engine.url))
    w = World(sandbox, sqlite_engine, tmp_path,
              extra="" if "[connections.sf.events]" in written else events_config())
    yield w
    w.worker.close()


def _states(engine: Any, ref: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(provisioning_requests.c.state).join(
            orders, orders.c.id == provisioning_requests.c.order_id).where(
            orders.c.source_ref == ref)).scalars())


def test_an_event_naming_an_accepted_quote_by_its_15_character_id_reads_its_hold_first(
        events_world: World) -> None:
    world, user = events_world, SalesforceUser(events_world.sbx)
    account = user.accounts()[0]
    quote, ref = user.new_quote(account)
    world.cycle(user.connection)                # billing knows the account and the draft quote
    user.hold(account, True)                    # finance, in the CRM
    user.accept(quote)                          # then the customer accepts
    assert len(quote) == 18
    store(world.engine, user.connection, "salesforce_json",
          [InboxEvent("flow-1", "quote", quote[:15])], datetime.now(UTC))
    [report] = [r for r in world.worker.process_events(wait=True)
                if r.connection == user.connection]
    assert report.outcome == "ok"
    world.worker.dispatch()
    with world.engine.connect() as conn:
        held = conn.execute(select(accounts.c.crm_hold).where(
            accounts.c.ext_source == user.connection,
            func.lower(accounts.c.ext_id) == account.lower())).scalar_one()
        assert conn.execute(select(event_inbox.c.state)).scalar_one() == "done"
    assert held is True
    assert _states(world.engine, ref) == ["awaiting_hold_release"]
