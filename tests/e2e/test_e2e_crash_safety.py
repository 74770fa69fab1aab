"""A sync stopped between pulling quotes and handing them off loses nothing (issue 13, item 5):
SIGKILL, or a shutdown (SIGTERM) after the quote-line page, then one more run with nothing
changed in the CRM: every accepted quote revision has exactly one order. A killed run is shown
abandoned and closed by the next run. (A budget stop mid quote lines is driven with the
in-memory CRM in tests/integration/sync/test_handoff_owed.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from billing_core.adapters.tables import orders
from sync.status import overview
from sync.tables import sync_records, sync_runs

pytestmark = pytest.mark.e2e


def _owed_refs(world: Any, name: str) -> set[str]:
    """The source reference of every accepted, live quote revision the ledger has pulled."""
    accepted = world.worker.connector(name).accepted_quote_states()
    with world.engine.connect() as conn:
        rows = conn.execute(select(sync_records.c.data).where(
            sync_records.c.connection == name, sync_records.c.object == "quote",
            sync_records.c.deleted_at.is_(None))).scalars().all()
    quotes = [json.loads(data) for data in rows if data]
    return {f"{name}:{q['crm_id']}:rev{q['revision']}" for q in quotes
            if q["status"] in accepted}


def _orders(world: Any) -> dict[str, int]:
    with world.engine.connect() as conn:
        return {ref: int(n) for ref, n in conn.execute(
            select(orders.c.source_ref, func.count()).group_by(orders.c.source_ref))}


def _every_accepted_revision_ordered_once(world: Any, name: str) -> None:
    owed = _owed_refs(world, name)
    assert owed, "the sandbox has accepted quotes"
    placed = {ref: n for ref, n in _orders(world).items() if ref.startswith(f"{name}:")}
    assert placed == dict.fromkeys(owed, 1)


@pytest.mark.parametrize("name", ["sf", "d365"])
def test_a_shutdown_after_the_quote_lines_then_a_quiet_run_orders_every_quote(
        world: Any, name: str) -> None:
    def progress(obj: str, _n: int) -> None:
        if obj == "quote_line":
            world.worker.stop.set()          # what SIGTERM does in the daemon and the CLI

    first = world.worker.sync_connection(name, world.worker.options("test"), wait=True,
                                         progress=progress)
    assert first.outcome == "stopped: shutdown" and first.handed_off == 0
    assert _orders(world) == {}
    world.worker.stop.clear()
    assert world.cycle(name)[0].outcome == "ok"
    _every_accepted_revision_ordered_once(world, name)


def test_a_sync_killed_before_its_hand_off_loses_nothing_and_its_run_is_closed(
        world: Any) -> None:
    script = world.tmp / "kill.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
import sync.engine
def die(*a, **k):
    os._exit(9)
sync.engine.handoff.run_handoffs = die
from jobs.cli import main
main(["--config", {str(world.config)!r}, "sync", "--connection", "sf"])
""", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert _orders(world) == {}
    status = overview(world.engine, interval_minutes=15)
    assert status["abandoned_runs"] == 1
    assert world.cycle("sf")[0].outcome == "ok"            # nothing changed in the CRM
    _every_accepted_revision_ordered_once(world, "sf")
    with world.engine.connect() as conn:
        outcomes = conn.execute(select(sync_runs.c.outcome).order_by(sync_runs.c.id)).all()
    assert [o for (o,) in outcomes] == ["abandoned", "ok"]
