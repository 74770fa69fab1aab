"""The hand-off reads the revisions kept as other quote records (Dataverse: a revised quote
is a new record with the same number) once for a run of many chunks (``run_siblings``), not
once per chunk: the run hands off exactly as chunk by chunk, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, select

from billing_core.adapters.tables import orders, subscription_changes
from sync import handoff, handoff_reads
from sync.engine import run_cycle
from sync.handoff_reads import _siblings, run_siblings
from sync.tables import handoffs

JAN1, JAN20 = date(2027, 1, 1), date(2027, 1, 20)


def _crm() -> FakeCRM:
    """Globex's Q-1 first as Q1, then revised as a new record Q1B (same number), and an
    unrelated accepted quote Q2 of the same account, so a run holds several chunks."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1",
            start_date=JAN1)
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(5),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote", "Q2", account_crm_id="A2", status="Accepted", revision=1, number="Q-2",
            start_date=JAN1)
    crm.put("quote_line", "L2", quote_crm_id="Q2", product_crm_id="P1", quantity=Decimal(1),
            unit_price=Decimal("12.00"), start_date=JAN1)
    return crm


def _state(engine: Engine) -> tuple[dict[str, str], list[int], int]:
    with engine.connect() as conn:
        return (dict(conn.execute(select(handoffs.c.quote_crm_id, handoffs.c.state)).all()),
                list(conn.execute(select(subscription_changes.c.new_quantity)).scalars()),
                len(conn.execute(select(orders.c.id)).all()))


@pytest.mark.parametrize("chunk", [1, 500])
def test_revisions_as_records_hand_off_alike_in_one_chunk_or_many(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(handoff, "CHUNK", chunk)
    monkeypatch.setattr(handoff_reads, "HANDOFF_CHUNK", chunk)
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", status="Closed")
    crm.put("quote", "Q1B", account_crm_id="A2", status="Accepted", revision=2, number="Q-1",
            start_date=JAN20)
    crm.put("quote_line", "L1B", quote_crm_id="Q1B", product_crm_id="P1", quantity=Decimal(8),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote", "Q2", number="Q-2", status="Accepted", revision=1, name="touched")
    assert run_cycle(engine, crm).handed_off == 1
    assert _state(engine) == ({"Q1": "done", "Q1B": "done", "Q2": "done"}, [8], 3)


def test_run_siblings_are_each_chunks_own(engine: Engine) -> None:
    """What the run reads once is, for every quote it looks at, what its chunk would read."""
    crm = _crm()
    crm.put("quote", "Q1B", account_crm_id="A2", status="Accepted", revision=2, number="Q-1",
            start_date=JAN20)
    crm.put("quote", "Q3", account_crm_id="A1", status="Draft", revision=1, number="Q-1")
    run_cycle(engine, crm)
    todo = ["Q1", "Q1B", "Q2", "Q3"]
    with engine.connect() as conn:
        assert run_siblings(conn, "fake", todo[:1]) is None         # one chunk reads its own
        original = handoff_reads.HANDOFF_CHUNK
        handoff_reads.HANDOFF_CHUNK = 1
        try:
            run = run_siblings(conn, "fake", todo)
        finally:
            handoff_reads.HANDOFF_CHUNK = original
        assert run is not None
        for quote_id in todo:
            known = handoff_reads.Known.read(_Uow(conn), "fake", [quote_id])
            rec, _ = known.quotes[quote_id]
            own = _siblings(conn, "fake", [rec.account_crm_id], [str(rec.number)])
            key = (rec.account_crm_id, str(rec.number))
            assert sorted(r.crm_id for r in run.get(key, [])) == \
                sorted(r.crm_id for r in own.get(key, []))
        assert sorted(r.crm_id for r in run[("A2", "Q-1")]) == ["Q1", "Q1B"]
        # a run's every number: more than 500 go as one bound value (text_in), not rendered
        many = _siblings(conn, "fake", ["A1", "A2"], ["Q-1", *(f"N-{i}" for i in range(600))])
        assert sorted(r.crm_id for r in many[("A2", "Q-1")]) == ["Q1", "Q1B"]
        assert sorted(r.crm_id for r in many[("A1", "Q-1")]) == ["Q3"]


class _Uow:
    """What ``Known.read`` needs of a unit of work: its connection."""

    def __init__(self, conn: object) -> None:
        self.conn = conn
