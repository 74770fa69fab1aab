"""The pull reads pages ahead (connectors.prefetch) without changing what a run commits."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from fake_crm import FakeCRM
from sqlalchemy import func, select

from billing_core.adapters.tables import accounts
from connectors.base import Page
from sync.engine import READ_AHEAD, Cycle, SyncOptions, run_cycle
from sync.tables import sync_cursors


class WatchedCRM(FakeCRM):
    """Records which thread read each page and whether the reader was closed."""

    def __init__(self) -> None:
        super().__init__(page_size=1)
        self.readers: set[str] = set()
        self.closed: list[str] = []

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Page]:
        pages = super().read_changes(obj, cursor, **kw)
        try:
            for page in pages:
                self.readers.add(threading.current_thread().name)
                yield page
        finally:
            self.closed.append(obj)


def _crm() -> WatchedCRM:
    crm = WatchedCRM()
    for i in range(4):
        crm.put("account", f"A{i}", name=f"Account {i}", currency="USD",
                credit_limit=Decimal(100), credit_hold=False)
    return crm


def _count(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(accounts)).scalar() or 0)


def _cursor(engine: Any) -> int:
    with engine.connect() as conn:
        text = conn.execute(select(sync_cursors.c.cursor).where(
            sync_cursors.c.object == "account")).scalar()
    return int(json.loads(text)["seq"])


def test_pages_are_read_in_a_background_thread_that_a_shutdown_stops(engine: Any) -> None:
    crm = _crm()
    applied: list[str] = []
    report = Cycle(engine, crm, SyncOptions(objects=("account",), push=False),
                   should_stop=lambda: len(applied) >= 1,
                   progress=lambda obj, n: applied.append(obj)).run()
    assert report.outcome == "stopped: shutdown"
    assert crm.readers == {"prefetch-fake-account"}
    assert crm.closed == ["account"]                        # the reader was closed
    assert not any(t.name.startswith("prefetch-") for t in threading.enumerate())
    assert _count(engine) == 1 and _cursor(engine) == 1     # the cursor of the applied page
    assert crm.calls <= 1 + READ_AHEAD                      # at most READ_AHEAD pages ahead
    report = run_cycle(engine, crm, SyncOptions(objects=("account",), push=False))
    assert report.outcome == "ok" and report.objects["account"].read == 3
    assert _count(engine) == 4


def test_a_budget_stop_found_while_reading_ahead_keeps_the_pages_before_it(engine: Any) -> None:
    crm = _crm()
    crm.budget_after = 2              # the third page's read fails while the second is applied
    report = run_cycle(engine, crm, SyncOptions(objects=("account",), push=False))
    assert report.outcome == "stopped: API budget"
    assert _count(engine) == 2 and _cursor(engine) == 2
    assert not any(t.name.startswith("prefetch-") for t in threading.enumerate())
    crm.budget_after = None
    report = run_cycle(engine, crm, SyncOptions(objects=("account",), push=False))
    assert report.outcome == "ok" and report.objects["account"].read == 2
    assert _count(engine) == 4
