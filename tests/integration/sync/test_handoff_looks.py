"""What the hand-off must look at again is durable, and read a page at a time (``handoff_looks``,
migration 0027). A handed-off quote that changes owes no new revision: before, the run that
pulled the change held it in memory until its hand-off, so a run stopped after its pull lost
it (the next run did not read the unchanged record again): a cancellation date never ended
the deal, a quote that left the accepted state was never reported. Both databases."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import orders, subscriptions
from connectors.base import BudgetExhausted
from sync import handoff
from sync.engine import Cycle, SyncOptions, run_cycle
from sync.handoff_reads import owed
from sync.status import overview
from sync.tables import handoff_looks, handoffs

JAN1, JAN20 = date(2027, 1, 1), date(2027, 1, 20)
QUOTES = [f"Q{i}" for i in range(1, 8)]


def _crm() -> FakeCRM:
    """Seven accepted quotes of one seat line each, all handed off by the first cycle."""
    crm = FakeCRM()
    crm.seed_basic()
    for n, quote in enumerate(QUOTES):
        crm.put("quote", quote, account_crm_id="A1" if n % 2 else "A2", status="Accepted",
                revision=1, number=f"Q-{quote}", start_date=JAN1)
        crm.put("quote_line", f"{quote}-L1", quote_crm_id=quote, product_crm_id="P1",
                quantity=Decimal(1), start_date=JAN1)
    return crm


def _stopped_after_quotes(engine: Engine, crm: FakeCRM) -> None:
    """A cycle stopped (shutdown) right after its quote pull: before any hand-off."""
    stop = {"now": False}

    def progress(obj: str, _n: int) -> None:
        stop["now"] = stop["now"] or obj == "quote"

    report = run_cycle(engine, crm, should_stop=lambda: stop["now"], progress=progress)
    assert report.outcome == "stopped: shutdown" and report.handed_off == 0


def _looks(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(handoff_looks.c.quote_crm_id)).scalars())


def _states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(handoffs.c.quote_crm_id, handoffs.c.state)).all())


def test_a_cancellation_date_pulled_by_a_stopped_run_still_ends_the_deal(engine: Engine) -> None:
    crm = _crm()
    assert run_cycle(engine, crm).handed_off == len(QUOTES)
    crm.put("quote", "Q3", end_date=JAN20)
    _stopped_after_quotes(engine, crm)
    assert _looks(engine) == ["Q3"]             # noted with the page that brought it
    assert overview(engine, interval_minutes=5)["handoffs_to_look_at"] == 1
    run_cycle(engine, crm)                      # nothing changed in the CRM since
    assert overview(engine, interval_minutes=5)["handoffs_to_look_at"] == 0
    with engine.connect() as conn:
        ends = conn.execute(select(subscriptions.c.end_date).order_by(
            subscriptions.c.id)).scalars().all()
    assert ends.count(JAN20) == 1 and ends.count(None) == len(QUOTES) - 1
    assert _looks(engine) == []
    assert _states(engine)["Q3"] == "done"


def test_a_quote_that_left_the_accepted_state_in_a_stopped_run_is_still_reported(
        engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q2", status="Draft")
    crm.put("quote", "Q5", status="Accepted", number="Q-Q5b")   # changed, still accepted
    crm.put("quote", "Q9", account_crm_id="A1", status="Draft", revision=1)   # never accepted
    crm.delete("quote", "Q6")
    _stopped_after_quotes(engine, crm)
    assert _looks(engine) == ["Q2", "Q5", "Q6"]
    run_cycle(engine, crm)
    states = _states(engine)
    assert states["Q2"] == states["Q6"] == "reversed_in_crm"
    assert {q: s for q, s in states.items() if q not in ("Q2", "Q6")} == {
        q: "done" for q in QUOTES if q not in ("Q2", "Q6")}
    assert _looks(engine) == []
    assert run_cycle(engine, crm).handed_off == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == len(QUOTES)


def test_the_hand_off_reads_its_backlog_a_page_at_a_time(engine: Engine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 quotes, chunks of 2: every owed quote is handed off once, in key order, and
    nothing is left owed or noted."""
    monkeypatch.setattr(handoff, "HANDOFF_PAGE", 3)
    monkeypatch.setattr(handoff, "CHUNK", 2)
    seen: list[list[str]] = []
    real = handoff.due

    def spy(*args: Any) -> Any:
        for page in real(*args):
            seen.append(list(page))
            yield page

    monkeypatch.setattr(handoff, "due", spy)
    crm = _crm()
    assert run_cycle(engine, crm).handed_off == len(QUOTES)
    assert seen == [QUOTES[0:3], QUOTES[3:6], QUOTES[6:]]
    with engine.connect() as conn:
        refs = conn.execute(select(orders.c.source_ref).order_by(orders.c.id)).scalars().all()
        assert conn.execute(owed("fake")).all() == []
    assert refs == [f"fake:{q}:rev1" for q in QUOTES]
    assert _looks(engine) == []


def test_a_budget_stop_in_the_hand_off_keeps_the_looks_it_did_not_reach(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """All seven quotes leave the accepted state; the hand-off (chunks of 2) runs out of API
    budget at Q4: Q1-Q3 are reported, Q4-Q7 stay noted, and the next run reports them."""
    crm = _crm()
    run_cycle(engine, crm)
    monkeypatch.setattr(handoff, "CHUNK", 2)
    real = handoff._one

    def one(uow: Any, fetch: Any, connection: str, quote_id: str, *rest: Any) -> Any:
        if quote_id == "Q4":
            raise BudgetExhausted("budget spent in the hand-off")
        return real(uow, fetch, connection, quote_id, *rest)

    monkeypatch.setattr(handoff, "_one", one)
    for quote in QUOTES:
        crm.put("quote", quote, status="Denied")
    first = Cycle(engine, crm, SyncOptions()).run()
    assert first.outcome == "stopped: API budget"
    states = _states(engine)
    assert [q for q in QUOTES if states[q] == "reversed_in_crm"] == ["Q1", "Q2", "Q3"]
    assert _looks(engine) == ["Q4", "Q5", "Q6", "Q7"]
    monkeypatch.setattr(handoff, "_one", real)
    run_cycle(engine, crm)
    assert set(_states(engine).values()) == {"reversed_in_crm"}
    assert _looks(engine) == []


def test_a_one_account_resync_settles_its_quotes_and_clears_their_looks(engine: Engine) -> None:
    """One account's resync looks at every quote of the account it read, changed or not: the
    quote an earlier stopped run noted (left the accepted state) is reported, the one it left
    owed (newly accepted) becomes an order, and their looks are deleted; another account's
    look waits for the next cycle."""
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", status="Denied")     # account A2
    crm.put("quote", "Q2", status="Denied")     # account A1
    crm.put("quote", "Q8", account_crm_id="A1", status="Accepted", revision=1, number="Q-Q8",
            start_date=JAN1)
    crm.put("quote_line", "Q8-L1", quote_crm_id="Q8", product_crm_id="P1",
            quantity=Decimal(1), start_date=JAN1)
    _stopped_after_quotes(engine, crm)
    assert _looks(engine) == ["Q1", "Q2"]
    assert _states(engine)["Q8"] == "waiting"
    report = run_cycle(engine, crm, options=SyncOptions(account="A1"))   # the CRM as it was
    assert report.handed_off == 1
    states = _states(engine)
    assert (states["Q2"], states["Q8"], states["Q1"]) == ("reversed_in_crm", "done", "done")
    assert _looks(engine) == ["Q1"]
    run_cycle(engine, crm)
    assert _states(engine)["Q1"] == "reversed_in_crm" and _looks(engine) == []


def test_due_pages_give_every_quote_once_whatever_the_collation(engine: Engine) -> None:
    """The backlog's pages follow the database's own order (PostgreSQL's collation may put
    ``B`` before ``a`` or not): ids of mixed case and punctuation, owed, noted or both, in
    pages of 2 and 3, come out each exactly once."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from sync.handoff_reads import due
    now = datetime(2027, 1, 1, tzinfo=UTC)
    waiting = ["a", "B", "_x", "Z9", "0Q", "a-1", "A1"]
    noted = ["B", "b", "z", "0Q", "Ä", "~t"]
    with engine.begin() as conn:
        conn.execute(insert(handoffs), [
            {"connection": "fake", "quote_crm_id": q, "revision": r, "source_ref": f"{q}:{r}",
             "state": "waiting", "detail": "", "created_at": now, "updated_at": now}
            for q in waiting for r in (1, 2)])
        conn.execute(insert(handoff_looks), [
            {"connection": "fake", "quote_crm_id": q, "noted_at": now} for q in noted])
        conn.execute(insert(handoff_looks), [
            {"connection": "other", "quote_crm_id": "elsewhere", "noted_at": now}])
    for size in (2, 3):
        pages = list(due(engine, "fake", size))
        got = [q for page in pages for q in page]
        assert sorted(got) == sorted({*waiting, *noted}) and all(len(p) <= size for p in pages)
