"""The hand-off reads the revisions kept as other quote records (Dataverse: a revised quote
is a new record with the same number) once for a run of many chunks (``run_siblings``), not
once per chunk: the run hands off exactly as chunk by chunk, on SQLite and PostgreSQL, and
holds the revised deals' ids and revisions only, not a record per quote."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Connection, Engine, select

from billing_core.adapters.tables import orders, subscription_changes
from sync import handoff, handoff_reads
from sync.engine import run_cycle
from sync.handoff_reads import Sibling, _siblings, run_siblings
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
    """What the run reads once gives every quote it looks at what its chunk's own read gives
    (prior revisions' hand-off rows, revised or not), a deleted quote included."""
    crm = _crm()
    crm.put("quote", "Q1B", account_crm_id="A2", status="Accepted", revision=2, number="Q-1",
            start_date=JAN20)
    crm.put("quote", "Q3", account_crm_id="A1", status="Draft", revision=1, number="Q-1")
    crm.put("quote", "Q4", account_crm_id="A1", status="Accepted", revision=1, number="Q-4")
    crm.put("quote", "Q4B", account_crm_id="A1", status="Accepted", revision=2, number="Q-4")
    run_cycle(engine, crm)
    crm.delete("quote", "Q4")       # deleted: its live group is Q4B alone
    run_cycle(engine, crm)
    todo = ["Q1", "Q1B", "Q2", "Q3", "Q4"]
    with engine.connect() as conn:
        assert run_siblings(conn, "fake", todo[:1]) is None         # one chunk reads its own
        run = _run_siblings(conn, todo)
        assert run is not None
        for quote_id in todo:
            own = handoff_reads.Known.read(_Uow(conn), "fake", [quote_id])
            once = handoff_reads.Known.read(_Uow(conn), "fake", [quote_id], run)
            assert (once.prior, once.revised) == (own.prior, own.revised), quote_id
        own = handoff_reads.Known.read(_Uow(conn), "fake", todo)
        assert own.revised == {"Q1", "Q4"} and set(own.prior) == {"Q1B"}
        # a run's every number: more than 500 go as one bound value (text_in), not rendered
        many = _siblings(conn, "fake", ["A1", "A2"], ["Q-1", *(f"N-{i}" for i in range(600))])
        assert sorted(r.crm_id for r in many[("A2", "Q-1")]) == ["Q1", "Q1B"]
        assert sorted(r.crm_id for r in many[("A1", "Q-1")]) == ["Q3"]


def test_run_siblings_hold_revised_deals_only(engine: Engine) -> None:
    """The run's read keeps the (account, number) groups of two records or more, and a
    deleted quote's key, as (id, revision): not a record per quote looked at (it held every
    accepted quote's whole record for the whole hand-off, about 1 KB each)."""
    crm = _crm()
    crm.put("quote", "Q1B", account_crm_id="A2", status="Accepted", revision=2, number="Q-1",
            start_date=JAN20)
    crm.put("quote", "Q4", account_crm_id="A1", status="Accepted", revision=1, number="Q-4")
    crm.put("quote", "Q4B", account_crm_id="A1", status="Accepted", revision=2, number="Q-4")
    for i in range(40):
        crm.put("quote", f"S{i:02}", account_crm_id="A1", status="Accepted", revision=1,
                number=f"S-{i}")
    run_cycle(engine, crm)
    crm.delete("quote", "Q4")
    run_cycle(engine, crm)
    todo = sorted(["Q1", "Q1B", "Q2", "Q4", *(f"S{i:02}" for i in range(40))])
    with engine.connect() as conn:
        run = _run_siblings(conn, todo)
    assert run is not None
    assert sum(len(group) for group in run.values()) == 3       # of 44 quotes looked at
    assert run == {("A2", "Q-1"): [Sibling("Q1", 1), Sibling("Q1B", 2)],
                   ("A1", "Q-4"): [Sibling("Q4B", 2)]}


def _run_siblings(conn: Connection, todo: list[str]) -> handoff_reads.Siblings | None:
    """``run_siblings`` of a run of more than one chunk (chunks of one quote)."""
    original = handoff_reads.HANDOFF_CHUNK
    handoff_reads.HANDOFF_CHUNK = 1
    try:
        return run_siblings(conn, "fake", todo)
    finally:
        handoff_reads.HANDOFF_CHUNK = original


class _Uow:
    """What ``Known.read`` needs of a unit of work: its connection."""

    def __init__(self, conn: object) -> None:
        self.conn = conn
