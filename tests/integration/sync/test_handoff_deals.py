"""Amendment and renewal quotes of their own (Salesforce CPQ, a Dataverse renewal) at the
hand-off (issue 14, items 1-3), on SQLite and PostgreSQL, against the in-memory CRM.

A quote names its deal through the mapped ``type`` (new, amendment, renewal) and the quote
whose deal it continues (``origin_quote``: in CPQ the quote the amended or renewed contract
was made from). An amendment amends the deal's newest order, a renewal renews it
(``renews_order_id``); a quote whose origin is owed waits, one whose origin cannot be found
is quarantined naming ``origin_quote`` and the reason."""
from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    credit_memos,
    invoice_lines,
    invoices,
    orders,
    products,
    subscriptions,
)
from billing_core.service.bill_run import run_bill_run
from billing_core.service.pricing import set_product_terms
from billing_core.service.tax import set_tax_rate
from sync.engine import run_cycle
from sync.handoff import run_handoffs
from sync.mapping import revive
from sync.reconcile import apply_page
from sync.tables import handoffs, quarantine

JAN1, JAN20, FEB1, FEB15, MAR1 = (date(2027, 1, 1), date(2027, 1, 20), date(2027, 2, 1),
                                  date(2027, 2, 15), date(2027, 3, 1))


@pytest.fixture(autouse=True)
def _tax_rates(engine: Engine) -> None:
    """The figures below are the lines, before tax (DE at 0 % here)."""
    with UnitOfWork(engine) as uow:
        set_tax_rate(uow, "US", "", "0", date(2000, 1, 1))
        set_tax_rate(uow, "DE", "", "0", date(2000, 1, 1))
        uow.commit()


def _crm() -> FakeCRM:
    """Globex (EUR, bill cycle day 1): Q1, 5 seats at a negotiated 12.00 from 1 January and
    a 50.00 setup, accepted (CPQ: the quote the contract was made from)."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", number="Q-1", type="Quote",
            start_date=JAN1)
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(5),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote_line", "L2", quote_crm_id="Q1", product_crm_id="P2", quantity=Decimal(1),
            unit_price=Decimal("50.00"), start_date=JAN1)
    return crm


def _quote(crm: FakeCRM, crm_id: str, kind: str, start: date, seats: int, price: str = "12.00",
           origin: str | None = "Q1", contract: str | None = "800C1", setup: int = 1) -> None:
    """An amendment or renewal quote of its own, naming its origin as CPQ does (the master
    contract's quote) with its lines: the whole content of the deal from ``start``."""
    crm.put("quote", crm_id, account_crm_id="A2", status="Accepted", number=f"Q-{crm_id}",
            type=kind, origin_quote=origin, origin_contract=contract, start_date=start)
    crm.put("quote_line", f"{crm_id}-L1", quote_crm_id=crm_id, product_crm_id="P1",
            quantity=Decimal(seats), unit_price=Decimal(price), start_date=start)
    crm.put("quote_line", f"{crm_id}-L2", quote_crm_id=crm_id, product_crm_id="P2",
            quantity=Decimal(setup), unit_price=Decimal("50.00"), start_date=start)


def _lines(engine: Engine, period_start: date) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(r.kind, r.amount_minor) for r in conn.execute(
            select(invoice_lines.c.kind, invoice_lines.c.amount_minor)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(invoices.c.period_start == period_start).order_by(invoice_lines.c.line_no))]


def _orders(engine: Engine) -> list[tuple[int, int | None, int | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(  # type: ignore[misc]
            orders.c.id, orders.c.amends_order_id, orders.c.renews_order_id)
            .order_by(orders.c.id))]


def _handoff(engine: Engine, quote: str) -> tuple[str, str]:
    with engine.connect() as conn:
        row = conn.execute(select(handoffs.c.state, handoffs.c.detail).where(
            handoffs.c.quote_crm_id == quote)).one()
    return row.state, row.detail


def _quarantined(engine: Engine, quote: str) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(  # type: ignore[misc]
            quarantine.c.field, quarantine.c.reason, quarantine.c.status).where(
            quarantine.c.object == "quote", quarantine.c.crm_id == quote))]


def test_cpq_amendments_bill_the_difference_and_a_zeroed_line_cancels(engine: Engine) -> None:
    """Q1 is billed on 1 January: 5 x 12.00 = 60.00 and the setup 50.00.
    Amendment A1 (a new quote on Q1's contract) has 8 seats from 20 January: 1 February bills
    3 x 12.00 x 12/31 (20-31 January) = 13.935... -> 13.94 and February at 8 seats, 96.00; the
    setup is not charged again. Amendment A2 on the same contract zeroes the seats from
    15 February (a cancellation): it amends A1's order (the deal's newest), the subscription
    ends on 15 February and 1 March credits the 14 of February's 28 days billed in advance at
    8 seats, -8 x 12.00 x 14/28 = -48.00; with nothing else to bill the invoice is 0 and the
    48.00 becomes a credit memo (the invoice's ``credit_memo`` line)."""
    crm = _crm()
    run_cycle(engine, crm)
    run_bill_run(engine, JAN1)
    assert _lines(engine, JAN1) == [("recurring", 6000), ("one_time", 5000)]
    _quote(crm, "A1", "Amendment", JAN20, 8)
    assert run_cycle(engine, crm).handed_off == 1
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("proration", 1394), ("recurring", 9600)]
    _quote(crm, "A2", "Amendment", FEB15, 0)
    assert run_cycle(engine, crm).handed_off == 1
    first, second, third = _orders(engine)
    assert second == (second[0], first[0], None)
    assert third == (third[0], second[0], None)          # the deal's newest, not Q1's order
    assert _handoff(engine, "A2") == ("done", f"amendment of order {second[0]}")
    with engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.end_date)).scalars().all() == [FEB15]
    run_bill_run(engine, MAR1)
    assert _lines(engine, MAR1) == [("proration", -4800), ("credit_memo", 4800)]
    with engine.connect() as conn:
        assert conn.execute(select(credit_memos.c.amount_minor)).scalars().all() == [4800]


def test_a_renewal_quote_starts_the_next_term_with_its_own_price(engine: Engine) -> None:
    """Q1 (5 seats at 12.00, no committed term) is amended to 8 seats from 20 January (A1),
    then renewed from 1 February at 6 seats for 15.00 (R1, naming Q1 as CPQ's renewed
    contract does). The renewal renews the deal's newest order (A1's): the seats end on
    1 February and R1's start there. 1 February bills A1's 3 seats for 20-31 January,
    3 x 12.00 x 12/31 = 13.94, and the renewal's February, 6 x 15.00 = 90.00; nothing of the
    old seats after January."""
    crm = _crm()
    run_cycle(engine, crm)
    run_bill_run(engine, JAN1)
    _quote(crm, "A1", "Amendment", JAN20, 8)
    run_cycle(engine, crm)
    _quote(crm, "R1", "Renewal", FEB1, 6, price="15.00", setup=0)
    assert run_cycle(engine, crm).handed_off == 1
    first, amendment, renewal = _orders(engine)
    assert renewal == (renewal[0], None, amendment[0])
    assert _handoff(engine, "R1") == ("done", f"renewal of order {amendment[0]}")
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("proration", 1394), ("recurring", 9000)]


def test_a_quote_continuing_a_deal_waits_for_its_origin_and_for_earlier_ones(
        engine: Engine) -> None:
    """Q1 and two amendments arrive together. Q1 is handed off first; A1 waits for it (its
    origin is owed), A2 (later start) for A1; each next cycle takes the next one, and every
    amendment names the order before it."""
    crm = _crm()
    _quote(crm, "A1", "Amendment", JAN20, 8)
    _quote(crm, "A2", "Amendment", FEB15, 10)
    run_cycle(engine, crm)
    assert _handoff(engine, "A1") == (
        "waiting", "waits for quote Q1, whose deal it continues, to be handed off first")
    run_cycle(engine, crm)
    assert _handoff(engine, "A2") == (
        "waiting", "waits for the earlier amendment quote A1 of the same deal to be handed "
                   "off first")
    run_cycle(engine, crm)
    first, second, third = _orders(engine)
    assert (second[1], third[1]) == (first[0], second[0])
    with engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.quantity)).scalars().all() == [10]


def test_an_origin_that_cannot_be_found_is_quarantined_with_the_reason(engine: Engine) -> None:
    """Nothing stuck in silence: an amendment whose contract has no quote, one naming a quote
    never accepted, one naming a quote never read are each left waiting and quarantined with
    ``origin_quote`` and why; accepting the draft origin later takes its amendment."""
    crm = _crm()
    crm.put("quote", "D1", account_crm_id="A2", status="Draft", number="Q-D1")
    _quote(crm, "X1", "Amendment", JAN20, 8, origin=None, contract="800NOQUOTE")
    _quote(crm, "X2", "Amendment", JAN20, 8, origin="D1")
    _quote(crm, "X3", "Renewal", FEB1, 8, origin="Q404")
    run_cycle(engine, crm)
    assert _quarantined(engine, "X1") == [(
        "origin_quote", "the amendment quote names no earlier quote (contract 800NOQUOTE has "
        "no quote): its deal is unknown", "open")]
    assert _quarantined(engine, "X2") == [(
        "origin_quote", "was never handed off (status 'Draft'): only the deal of an accepted "
        "quote can be amended or renewed", "open")]
    assert _quarantined(engine, "X3") == [(
        "origin_quote", "was not read from the CRM (not pulled yet, or not visible to us)",
        "open")]
    assert {_handoff(engine, q)[0] for q in ("X1", "X2", "X3")} == {"waiting"}
    crm.put("quote_line", "D1-L1", quote_crm_id="D1", product_crm_id="P1", quantity=Decimal(5),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote", "D1", status="Accepted", start_date=JAN1)
    run_cycle(engine, crm)          # D1 becomes an order; X2 waited for it
    run_cycle(engine, crm)
    assert _handoff(engine, "X2")[0] == "done"
    assert _quarantined(engine, "X2")[0][2] == "resolved"


def test_a_plain_quote_keeps_working_without_a_type(engine: Engine) -> None:
    """An org without the type field: quotes are new deals (or revisions) as before."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q9", account_crm_id="A2", status="Accepted", revision=1, number="Q-9",
            start_date=JAN1)
    crm.put("quote_line", "L9", quote_crm_id="Q9", product_crm_id="P1", quantity=Decimal(2),
            unit_price=Decimal("12.00"))
    assert run_cycle(engine, crm).handed_off == 1
    assert _handoff(engine, "Q9") == ("done", "order placed")


def test_a_cancellation_date_set_on_a_handed_off_quote_ends_the_deal(engine: Engine) -> None:
    """Finance's CRM user sets the quote's mapped cancellation date (``end_date``, e.g.
    Cancel_Date__c) to 20 January on Q1, already handed off and billed for January: no new
    revision, the deal's seats end on 20 January. 1 February credits January's 12 unused days,
    -5 x 12.00 x 12/31 = -23.225... -> -23.23; nothing else is billed (the setup was charged
    once), so the invoice's credit_memo line turns the 23.23 into a credit memo. Reading the
    quote again changes nothing."""
    crm = _crm()
    run_cycle(engine, crm)
    run_bill_run(engine, JAN1)
    crm.put("quote", "Q1", end_date=JAN20)
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.end_date)).scalars().all() == [JAN20]
    crm.put("quote", "Q1", name="touched")
    run_cycle(engine, crm)
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("proration", -2323), ("credit_memo", 2323)]
    assert _handoff(engine, "Q1") == ("done", "order placed")


def test_a_line_cancellation_date_ends_that_item_only(engine: Engine) -> None:
    """A new quote whose seat line carries a cancellation date of 1 March (and a second
    product without one): the seats end on 1 March, the other subscription runs on. Billed:
    1 January and 1 February 5 x 12.00 = 60.00 and 2 x 30.00 = 60.00; 1 March: the add-on
    only, 60.00."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("product", "P5", sku="ADDON", name="Add-on", billing_type="Recurring",
            billing_frequency="Monthly", active=True)
    crm.put("price", "P5-EUR", product_crm_id="P5", currency="EUR", unit_price=Decimal(30),
            active=True)
    crm.put("quote", "Q7", account_crm_id="A2", status="Accepted", number="Q-7",
            start_date=JAN1)
    crm.put("quote_line", "L7", quote_crm_id="Q7", product_crm_id="P1", quantity=Decimal(5),
            unit_price=Decimal("12.00"), start_date=JAN1, end_date=MAR1)
    crm.put("quote_line", "L8", quote_crm_id="Q7", product_crm_id="P5", quantity=Decimal(2),
            unit_price=Decimal("30.00"), start_date=JAN1)
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert sorted(conn.execute(select(subscriptions.c.end_date)).scalars().all(),
                      key=str) == [MAR1, None]
    run_bill_run(engine, JAN1)
    assert _lines(engine, JAN1) == [("recurring", 6000), ("recurring", 6000)]
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("recurring", 6000), ("recurring", 6000)]
    run_bill_run(engine, MAR1)
    assert _lines(engine, MAR1) == [("recurring", 6000)]


def test_an_early_termination_the_product_refuses_is_quarantined(engine: Engine) -> None:
    """Seats committed for 12 months with early termination refused: a cancellation date of
    20 January inside the term ends nothing and is quarantined naming ``end_date``; the
    order stays placed."""
    crm = _crm()
    run_cycle(engine, crm)          # the catalog first: the term applies to orders after it
    with engine.connect() as conn:
        seat = conn.execute(select(subscriptions.c.product_id)).scalar_one()
    with UnitOfWork(engine) as uow:
        set_product_terms(uow, int(seat), term_months=12, early_termination="refuse")
        uow.commit()
    crm.put("quote", "Q8", account_crm_id="A2", status="Accepted", number="Q-8",
            start_date=JAN1, end_date=JAN20)
    crm.put("quote_line", "L9", quote_crm_id="Q8", product_crm_id="P1", quantity=Decimal(2),
            unit_price=Decimal("12.00"), start_date=JAN1)
    run_cycle(engine, crm)
    assert _handoff(engine, "Q8")[0] == "done"
    [(field, reason, status)] = _quarantined(engine, "Q8")
    assert (field, status) == ("end_date", "open")
    assert "cannot end then" in reason
    with engine.connect() as conn:
        assert None in conn.execute(select(subscriptions.c.end_date)).scalars().all()


def test_a_revision_that_removes_every_line_ends_the_deal(engine: Engine) -> None:
    """Revision 2 of Q1 from 20 January with both lines deleted (the sync saw them go): every
    item of the deal is removed there. January was billed at 5 seats: 1 February credits
    -5 x 12.00 x 12/31 = -23.23 (the setup stays charged), as a credit memo. A revision record
    whose lines were never read (a Dataverse revision read before its lines) is refused
    instead: a quote read without its lines must not cancel a deal."""
    crm = _crm()
    run_cycle(engine, crm)
    run_bill_run(engine, JAN1)
    crm.delete("quote_line", "L1")
    crm.delete("quote_line", "L2")
    crm.put("quote", "Q1", revision=2, start_date=JAN20)
    assert run_cycle(engine, crm).handed_off == 1
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("proration", -2323), ("credit_memo", 2323)]
    crm.put("quote", "Q9", account_crm_id="A2", status="Accepted", revision=3, number="Q-1",
            start_date=FEB15)
    run_cycle(engine, crm)
    assert _quarantined(engine, "Q9") == [("lines", "the accepted quote has no lines", "open")]


def test_a_renewal_of_a_committed_term_starts_at_the_term_end(engine: Engine) -> None:
    """Seats with a 12-month term (no auto-renew) from 1 January 2027: the term ends on
    1 January 2028. A renewal quote dated 1 December 2027 is refused by billing (a renewal
    starts at the term end) and quarantined naming renews_order_id, waiting; corrected to
    1 January 2028 in the CRM it is taken: the old seats end on 1 January 2028 and the
    renewal's 6 seats at 15.00 start there, for a term of their own (the product's 12 months
    without auto-renew: to 1 January 2029)."""
    crm = _crm()
    crm.put("quote", "Q1", status="Draft")      # the catalog first, then the committed deal
    run_cycle(engine, crm)
    with engine.connect() as conn:
        seat = conn.execute(select(products.c.id).where(products.c.sku == "SEAT")).scalar_one()
    with UnitOfWork(engine) as uow:
        set_product_terms(uow, int(seat), term_months=12, auto_renew=False)
        uow.commit()
    crm.put("quote", "Q1", status="Accepted")
    run_cycle(engine, crm)
    _quote(crm, "R1", "Renewal", date(2027, 12, 1), 6, price="15.00", setup=0)
    run_cycle(engine, crm)
    [(field, reason, _)] = _quarantined(engine, "R1")
    assert field == "renews_order_id" and "term end 2028-01-01" in reason
    assert _handoff(engine, "R1")[0] == "waiting"
    crm.put("quote", "R1", start_date=date(2028, 1, 1))
    crm.put("quote_line", "R1-L1", start_date=date(2028, 1, 1))
    crm.put("quote_line", "R1-L2", start_date=date(2028, 1, 1))
    run_cycle(engine, crm)
    assert _handoff(engine, "R1")[0] == "done"
    with engine.connect() as conn:
        rows = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price,
                                   subscriptions.c.start_date, subscriptions.c.end_date)
                            .order_by(subscriptions.c.id)).all()
    assert [tuple(r) for r in rows] == [
        (5, Decimal("12.00"), JAN1, date(2028, 1, 1)),
        (6, Decimal("15.00"), date(2028, 1, 1), date(2029, 1, 1))]


def test_quarantine_retry_keeps_an_amendment_an_amendment(engine: Engine) -> None:
    """``quarantine retry`` applies the stored record again, then hands the quote off: an
    amendment refused for its origin stays refused for it (no order placed as a new deal),
    and is taken once its origin is there."""
    crm = _crm()
    _quote(crm, "X3", "Amendment", JAN20, 8, origin="Q7")
    run_cycle(engine, crm)
    with engine.connect() as conn:
        row = conn.execute(select(quarantine).where(quarantine.c.crm_id == "X3")).mappings().one()
    with UnitOfWork(engine) as uow:           # what jobs/cli/sync.py quarantine_retry does
        apply_page(uow, "fake", "quote", [revive(json.loads(row["record"]))])
        uow.commit()
    run_handoffs(engine, None, "fake", {"X3"}, frozenset({"Accepted"}))
    assert len(_orders(engine)) == 1                # Q1's only
    assert _quarantined(engine, "X3")[0][:2] == (
        "origin_quote", "was not read from the CRM (not pulled yet, or not visible to us)")
    crm.put("quote", "Q7", account_crm_id="A2", status="Accepted", number="Q-7",
            start_date=JAN1)
    crm.put("quote_line", "Q7-L1", quote_crm_id="Q7", product_crm_id="P1",
            quantity=Decimal(5), unit_price=Decimal("12.00"), start_date=JAN1)
    run_cycle(engine, crm)
    run_cycle(engine, crm)
    assert _handoff(engine, "X3")[0] == "done"
    assert _orders(engine)[-1][1] == _orders(engine)[1][0]     # amends Q7's order
