"""CRM change events end to end (issue 17): the sandbox CRM sends its real event shapes
(Dataverse webhook ``RemoteExecutionContext``, Salesforce outbound message SOAP) to the
daemon's HTTP API; finance clears a credit hold in the CRM, and the events job (no poll) reads
the account back over HTTPS, lifts the hold and dispatches the waiting provisioning request."""
from __future__ import annotations

import time
from collections.abc import Iterator
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
    free_port,
)
from sqlalchemy import func, select
from test_e2e_hold_interleaving import USERS

import connectors.sandbox.server as sandbox_server
from billing_core.adapters.tables import accounts, orders, provisioning_requests
from connectors.sandbox.notify import NotifyConfig
from jobs.api.app import build_app, serve_in_thread
from sync.tables import event_inbox

pytestmark = pytest.mark.e2e
KEY, HMAC_SECRET = EVENTS_KEY, EVENTS_HMAC
EVENTS = events_config()


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sandbox(api_port: int) -> Iterator[Any]:
    notify = NotifyConfig(url=f"http://127.0.0.1:{api_port}", dataverse_key=KEY,
                          hmac_secret=HMAC_SECRET, salesforce_form="soap")
    with sandbox_server.Sandbox(accounts=30, quotes=4, seed=7, notify=notify) as sbx:
        yield sbx


@pytest.fixture
def world(sandbox: Any, sqlite_engine: Any, tmp_path: Path, api_port: int,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(EVENTS_KEY_ENV, KEY)
    monkeypatch.setenv(EVENTS_HMAC_ENV, HMAC_SECRET)
    sandbox.reset()
    from jobs.cli.demo_crm import sandbox_config

    # The sandbox's own config names the events it sends (``jobs.cli.configs``) when it knows
    # them; otherwise this test adds them.
    written, _ = sandbox_config(sandbox, str(sqlite_engine.url))
    w = World(sandbox, sqlite_engine, tmp_path,
              extra="" if "[connections.sf.events]" in written else EVENTS)
    # the worker is the API's sync runner, as in the daemon: the receivers learn from it which
    # CRM user the sync acts as, and store the echo of its own writes as skipped
    server = serve_in_thread(build_app(sqlite_engine, w.settings, sync_runner=w.worker),
                             "127.0.0.1", api_port)
    yield w
    server.stop()
    w.worker.close()


def _states(engine: Any, ref: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(provisioning_requests.c.state).join(
            orders, orders.c.id == provisioning_requests.c.order_id).where(
            orders.c.source_ref == ref)).scalars())


def _wait_for_event(engine: Any, connection: str, crm_id: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    wanted = crm_id.lower() if connection == "d365" else crm_id     # GUIDs kept lower case
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(select(event_inbox.c.id).where(
                    event_inbox.c.connection == connection,
                    event_inbox.c.crm_id == wanted,
                    event_inbox.c.state == "new")).first():
                return
        time.sleep(0.05)
    raise AssertionError(f"no event of {crm_id} reached the inbox in {timeout} s")


@pytest.mark.parametrize("crm", ["salesforce", "dataverse"])
def test_clearing_a_hold_in_the_crm_dispatches_the_held_request_through_events(
        world: World, crm: str) -> None:
    user = USERS[crm](world.sbx)
    account = user.accounts()[0]
    user.hold(account, True)
    quote, ref = user.new_quote(account)
    user.accept(quote)
    world.cycle(user.connection)
    world.worker.dispatch()
    assert _states(world.engine, ref) == ["awaiting_hold_release"]
    world.worker.process_events(wait=True)      # what the cycle's own writes sent meanwhile

    cleared = time.monotonic()
    user.hold(account, False)                   # finance, in the CRM: no poll from here on
    _wait_for_event(world.engine, user.connection, account)
    [report] = [r for r in world.worker.process_events(wait=True)
                if r.connection == user.connection]
    elapsed = time.monotonic() - cleared
    assert report.outcome == "ok" and report.records >= 1
    assert _states(world.engine, ref) == ["dispatched"], elapsed


def _by_state(engine: Any, connection: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(state): int(n) for state, n in conn.execute(
            select(event_inbox.c.state, func.count()).where(
                event_inbox.c.connection == connection).group_by(event_inbox.c.state))}


@pytest.mark.parametrize("crm", ["salesforce", "dataverse"])
def test_the_syncs_own_pushes_cost_no_read_a_persons_change_right_after_does(
        world: World, crm: str) -> None:
    """Every write of the sync (the cycle's push, the CRM provisioner's quote status) comes
    back as an event naming the sync's own user: stored ``skipped``, never read back. A
    person's change of the same account right after is read and applied."""
    user = USERS[crm](world.sbx)
    account = user.accounts()[0]
    quote, ref = user.new_quote(account)
    user.accept(quote)
    assert world.sbx.notifier.flush(30)
    world.worker.process_events(wait=True)      # the person's changes so far: read
    assert not _by_state(world.engine, user.connection).get("new")
    world.cycle(user.connection)
    world.worker.dispatch()
    assert world.sbx.notifier.flush(30)
    states = _by_state(world.engine, user.connection)
    assert states.get("skipped", 0) >= 1, states          # the sync did push, and it came back
    assert not states.get("new"), states                   # ... and nothing of it is to read
    reports = [r for r in world.worker.process_events(wait=True)
               if r.connection == user.connection]
    assert sum(r.records for r in reports) == 0

    user.hold(account, True)                               # a person, in the CRM
    assert world.sbx.notifier.flush(30)
    _wait_for_event(world.engine, user.connection, account)
    [report] = [r for r in world.worker.process_events(wait=True)
                if r.connection == user.connection]
    assert report.outcome == "ok" and report.records == 1
    with world.engine.connect() as conn:
        held = conn.execute(select(accounts.c.crm_hold).where(
            accounts.c.ext_source == user.connection,
            func.lower(accounts.c.ext_id) == account.lower())).scalar_one()
    assert held is True


@pytest.mark.parametrize("crm", ["salesforce", "dataverse"])
def test_the_lines_of_quotes_accepted_together_are_read_in_one_query(
        world: World, crm: str) -> None:
    """A targeted resync reads the lines of the accepted quotes it read with them: one query
    for the lines of up to 200 quotes (SOQL ``QuoteId IN (...)``, a Dataverse ``$filter`` of
    ``or``), not one per quote; every quote is handed off with its line."""
    user = USERS[crm](world.sbx)
    accounts_ = user.accounts()[:3]
    world.cycle(user.connection)                    # the catalog and the accounts
    made = [user.new_quote(a) for a in accounts_]
    assert world.sbx.notifier.flush(30)
    world.worker.process_events(wait=True)          # the drafts and their lines: read
    for quote, _ in made:
        user.accept(quote)                          # only the quotes change
    assert world.sbx.notifier.flush(30)
    [report] = [r for r in world.worker.process_events(wait=True)
                if r.connection == user.connection]
    assert report.outcome == "ok"
    run = world.worker.get(report.run_id)
    assert run is not None
    calls = {o["object"]: o["api_calls"] for o in run["objects"]}
    assert calls["quote_line"] == 1, calls          # was one per accepted quote: 3
    world.worker.dispatch()
    for _, ref in made:
        assert _states(world.engine, ref) == ["dispatched"]
