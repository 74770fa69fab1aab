"""One bad quote never blocks a hand-off chunk (issue 13, item 2): a chunk that raises is handed
off again quote by quote in savepoints, so only the bad quote is refused (left waiting with
the reason, or quarantined) and the others of its chunk become orders. Both databases."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fake_crm import OBJECTS, FakeCRM
from sqlalchemy import Engine, insert, select, update

from billing_core.adapters.tables import orders
from connectors.base import ConnectorError
from sync import handoff
from sync.engine import run_cycle
from sync.tables import handoffs, quarantine, sync_cursors, sync_records

QUOTES = ("Q1", "Q2", "Q3")


def _crm() -> FakeCRM:
    crm = FakeCRM()
    crm.seed_basic()
    for quote in QUOTES:
        crm.put("quote", quote, account_crm_id="A2", status="Accepted", revision=1)
        crm.put("quote_line", f"{quote}-L", quote_crm_id=quote, product_crm_id="P1",
                quantity=Decimal(2))
    return crm


def _refs(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(orders.c.source_ref)).scalars())


def _pull_only(engine: Engine, crm: FakeCRM) -> None:
    """A run stopped after its pull (every object read, whatever the order): every quote is
    owed, none handed off."""
    seen: set[str] = set()

    def progress(obj: str, _n: int) -> None:
        seen.add(obj)

    assert run_cycle(engine, crm, should_stop=lambda: seen >= set(OBJECTS),
                     progress=progress).handed_off == 0


def test_a_revision_beyond_the_column_is_quarantined_and_the_chunk_goes_on(
        engine: Engine) -> None:
    """A revision of 1e12 overflowed ``handoffs.revision`` and rolled the chunk back."""
    crm = _crm()
    _pull_only(engine, crm)
    with engine.begin() as conn:          # Q2 as stored had it passed the pull
        data = json.loads(conn.execute(select(sync_records.c.data).where(
            sync_records.c.crm_id == "Q2")).scalar_one())
        conn.execute(update(sync_records).where(sync_records.c.crm_id == "Q2").values(
            data=json.dumps({**data, "revision": 10**12})))
    report = handoff.run_handoffs(engine, None, "fake", QUOTES, frozenset({"Accepted"}))
    assert (sorted(report.placed), report.failed) == (["Q1", "Q3"], ["Q2"])
    assert _refs(engine) == ["fake:Q1:rev1", "fake:Q3:rev1"]
    with engine.connect() as conn:
        q = conn.execute(select(quarantine)).mappings().one()
    assert (q["crm_id"], q["field"], q["value"]) == ("Q2", "revision", str(10**12))


class _NoGuidCRM(FakeCRM):
    """Dataverse answers 400 to an account id that is not a GUID."""

    def read_one(self, obj: str, crm_id: str) -> dict[str, Any] | None:
        if crm_id == "not-a-guid":
            self._call()
            raise ConnectorError("400 Bad Request: invalid GUID 'not-a-guid'")
        return super().read_one(obj, crm_id)


def test_a_quote_whose_account_cannot_be_read_waits_alone(engine: Engine) -> None:
    crm = _NoGuidCRM()
    crm.seed_basic()
    for quote in QUOTES:
        crm.put("quote", quote, account_crm_id="not-a-guid" if quote == "Q2" else "A2",
                status="Accepted", revision=1)
        crm.put("quote_line", f"{quote}-L", quote_crm_id=quote, product_crm_id="P1",
                quantity=Decimal(2))
    report = run_cycle(engine, crm)
    assert report.outcome != "failed" and report.handed_off == 2
    assert _refs(engine) == ["fake:Q1:rev1", "fake:Q3:rev1"]
    with engine.connect() as conn:
        state, detail = conn.execute(select(handoffs.c.state, handoffs.c.detail).where(
            handoffs.c.quote_crm_id == "Q2")).one()
    assert state == "waiting" and "invalid GUID" in detail


def test_a_database_error_in_a_chunk_refuses_only_its_quote(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any database error below the boundary (here a unique key broken while Q2's order is
    placed) is that quote's alone."""
    crm = _crm()
    _pull_only(engine, crm)
    accept = handoff.gate.accept_orders

    def failing_for_q2(uow: Any, batch: list[Any]) -> Any:
        if any(order.source_ref == "fake:Q2:rev1" for order in batch):
            uow.conn.execute(insert(sync_cursors).values(     # a key that exists: refused
                connection="fake", object="account", cursor="x", updated_at=uow.now()))
        return accept(uow, batch)

    monkeypatch.setattr(handoff.gate, "accept_orders", failing_for_q2)
    report = run_cycle(engine, crm)
    assert report.handed_off == 2
    assert _refs(engine) == ["fake:Q1:rev1", "fake:Q3:rev1"]
    with engine.connect() as conn:
        state, detail = conn.execute(select(handoffs.c.state, handoffs.c.detail).where(
            handoffs.c.quote_crm_id == "Q2")).one()
    assert state == "waiting" and detail.startswith("hand-off failed: IntegrityError")
    monkeypatch.setattr(handoff.gate, "accept_orders", accept)
    run_cycle(engine, crm)                # fixed: the next cycle takes it, nothing changed
    assert _refs(engine) == ["fake:Q1:rev1", "fake:Q2:rev1", "fake:Q3:rev1"]
