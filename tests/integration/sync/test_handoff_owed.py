"""What the hand-off owes is durable (issue 13, item 5): a run stopped by a shutdown, by the API
budget or by an interrupt after pulling accepted quotes leaves them owed, and the next run
hands them off even when nothing changed in the CRM; every accepted quote revision ends with
exactly one order. Both databases."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import orders
from connectors.base import BudgetExhausted, Page
from sync.engine import Cycle, SyncOptions, run_cycle
from sync.handoff_reads import owed
from sync.tables import handoffs, metadata, sync_run_objects, sync_runs

QUOTES = [f"Q{i}" for i in range(1, 7)]


def _crm() -> FakeCRM:
    """Six accepted quotes of two lines each, read three records a page (lines: four pages)."""
    crm = FakeCRM(page_size=3)
    crm.seed_basic()
    for n, quote in enumerate(QUOTES):
        crm.put("quote", quote, account_crm_id="A1" if n % 2 else "A2", status="Accepted",
                revision=1, number=f"Q-{n}")
        crm.put("quote_line", f"{quote}-L1", quote_crm_id=quote, product_crm_id="P1",
                quantity=Decimal(1))
        crm.put("quote_line", f"{quote}-L2", quote_crm_id=quote, product_crm_id="P2",
                quantity=Decimal(1))
    return crm


def _orders_per_quote(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {ref: int(n) for ref, n in conn.execute(
            select(orders.c.source_ref, func.count()).group_by(orders.c.source_ref))}


def _every_quote_ordered_once(engine: Engine) -> None:
    assert _orders_per_quote(engine) == {f"fake:{q}:rev1": 1 for q in QUOTES}
    with engine.connect() as conn:
        assert conn.execute(owed("fake")).all() == []


def test_a_run_stopped_after_the_first_page_of_quote_lines_loses_nothing(engine: Engine) -> None:
    crm = _crm()
    stop = {"now": False}

    def progress(obj: str, _n: int) -> None:
        stop["now"] = stop["now"] or obj == "quote_line"

    first = run_cycle(engine, crm, should_stop=lambda: stop["now"], progress=progress)
    assert first.outcome == "stopped: shutdown" and first.handed_off == 0
    assert _orders_per_quote(engine) == {}
    with engine.connect() as conn:        # the pulled accepted quotes are owed, durably
        assert sorted(r[0] for r in conn.execute(owed("fake"))) == QUOTES
    second = run_cycle(engine, crm)       # nothing changed in the CRM since
    assert second.outcome == "ok"
    _every_quote_ordered_once(engine)
    assert run_cycle(engine, crm).handed_off == 0


class _BudgetMidLines(FakeCRM):
    """The API budget runs out after the first page of quote lines (until ``spent`` clears)."""

    spent = True

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Page]:
        for n, page in enumerate(super().read_changes(obj, cursor, **kw)):
            if self.spent and obj == "quote_line" and n == 1:
                raise BudgetExhausted("budget spent mid quote lines")
            yield page


def test_a_run_stopped_by_the_budget_mid_quote_lines_loses_nothing(engine: Engine) -> None:
    crm = _BudgetMidLines(page_size=3)
    for obj, rows in _crm().rows.items():
        crm.rows[obj] = dict(rows)
    first = run_cycle(engine, crm)
    assert first.outcome == "stopped: API budget"
    assert first.objects["quote_line"].read == 3
    crm.spent = False
    run_cycle(engine, crm)
    _every_quote_ordered_once(engine)


def test_an_interrupted_run_is_recorded_with_its_counts_and_loses_nothing(
        engine: Engine) -> None:
    """Ctrl-C inside a run (KeyboardInterrupt between pages): the run is recorded
    ``interrupted`` with what it did, not left ``running``; the next run hands everything off."""
    crm = _crm()

    def progress(obj: str, _n: int) -> None:
        if obj == "quote_line":
            raise KeyboardInterrupt

    cycle = Cycle(engine, crm, SyncOptions(), progress=progress)
    with pytest.raises(KeyboardInterrupt):
        cycle.run()
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).mappings().one()
        assert run["outcome"] == "interrupted" and run["finished_at"] is not None
        counts = dict(conn.execute(select(sync_run_objects.c.object, sync_run_objects.c.read)
                                   .where(sync_run_objects.c.run_id == run["id"])).all())
    assert counts["quote"] == 6 and counts["quote_line"] == 3
    run_cycle(engine, crm)
    _every_quote_ordered_once(engine)


def test_an_owed_revision_replaced_before_its_hand_off_is_withdrawn(engine: Engine) -> None:
    """Only the current revision becomes an order; the older owed one stops being looked at."""
    crm = _crm()
    stop = {"now": False}

    def progress(obj: str, _n: int) -> None:
        stop["now"] = stop["now"] or obj == "quote_line"

    run_cycle(engine, crm, should_stop=lambda: stop["now"], progress=progress)
    crm.put("quote", "Q1", revision=2)
    run_cycle(engine, crm)
    assert _orders_per_quote(engine) == {
        **{f"fake:{q}:rev1": 1 for q in QUOTES[1:]}, "fake:Q1:rev2": 1}
    with engine.connect() as conn:
        assert conn.execute(owed("fake")).all() == []
        assert conn.execute(select(handoffs.c.state).where(
            handoffs.c.quote_crm_id == "Q1", handoffs.c.revision == 1)).scalar() == "withdrawn"


def test_a_full_sync_hands_off_quotes_lost_before_the_owed_rows_existed(engine: Engine) -> None:
    """Quotes pulled by a run before this fix, which stopped before its hand-off, have no row:
    ``sync --full`` finds every accepted quote without its hand-off and hands it off."""
    crm = _crm()
    crm.page_size = 100                   # every line in one page: the cursors reach the end
    stop = {"now": False}

    def progress(obj: str, _n: int) -> None:
        stop["now"] = stop["now"] or obj == "quote_line"

    run_cycle(engine, crm, should_stop=lambda: stop["now"], progress=progress)
    with engine.begin() as conn:          # as a database from before the fix would be
        conn.execute(handoffs.delete())
    run_cycle(engine, crm)                # nothing changed: an incremental run sees nothing
    assert _orders_per_quote(engine) == {}
    run_cycle(engine, crm, SyncOptions(full=True))
    _every_quote_ordered_once(engine)


def test_what_is_owed_is_read_through_its_partial_index() -> None:
    from sqlalchemy import create_engine
    eng = create_engine("sqlite://")
    metadata.create_all(eng)
    compiled = owed("sf").compile(eng, compile_kwargs={"render_postcompile": True})
    with eng.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params[k]
                                                     for k in compiled.positiontup)))
    assert "ix_handoffs_waiting" in plan, plan
