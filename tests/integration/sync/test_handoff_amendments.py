"""Amendments, usage-only deals and refused quotes at the hand-off (issue 14, items 1, 5, 6),
on SQLite and PostgreSQL, against the in-memory CRM."""
from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, func, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    amendment_items,
    invoice_lines,
    invoices,
    orders,
    products,
    provisioning_requests,
    subscription_changes,
    subscriptions,
)
from billing_core.service.bill_run import run_bill_run
from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage
from sync.engine import run_cycle
from sync.tables import handoffs, quarantine

JAN1, JAN20, FEB1 = date(2027, 1, 1), date(2027, 1, 20), date(2027, 2, 1)


@pytest.fixture(autouse=True)
def _tax_rates(engine: Engine) -> None:
    """The fake CRM's countries (US, DE) have their rates: a country without one is not
    billed. The figures below are the lines, before tax."""
    with UnitOfWork(engine) as uow:
        set_tax_rate(uow, "US", "", "0", date(2000, 1, 1))
        set_tax_rate(uow, "DE", "", "0.19", date(2000, 1, 1))
        uow.commit()


def _crm() -> FakeCRM:
    """Globex (EUR, bill cycle day 1): 5 seats at a negotiated 12.00 and a 50.00 setup."""
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1",
            start_date=JAN1)
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(5),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote_line", "L2", quote_crm_id="Q1", product_crm_id="P2", quantity=Decimal(1),
            unit_price=Decimal("50.00"), start_date=JAN1)
    return crm


def _lines(engine: Engine, period_start: date) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(r.kind, r.amount_minor) for r in conn.execute(
            select(invoice_lines.c.kind, invoice_lines.c.amount_minor)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(invoices.c.period_start == period_start).order_by(invoice_lines.c.line_no))]


def _count(engine: Engine, table, *where) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def test_a_revision_of_the_same_quote_bills_exactly_the_difference(engine: Engine) -> None:
    """Revision 2 of Q1 (Salesforce's revision field) raises the seats 5 -> 8 from 20 January
    and orders the same setup again. Billed on 1 January: 5 x 12.00 = 60.00 and the setup
    50.00. 1 February: 3 seats x 12.00 x 12/31 days (20-31 January) = 13.935... -> 13.94,
    and February at 8 seats: 96.00. No second subscription, no second setup."""
    crm = _crm()
    run_cycle(engine, crm)
    run_bill_run(engine, JAN1)
    assert _lines(engine, JAN1) == [("recurring", 6000), ("one_time", 5000)]
    crm.put("quote", "Q1", revision=2, start_date=JAN20)
    crm.put("quote_line", "L1", quantity=Decimal(8))
    report = run_cycle(engine, crm)
    assert report.handed_off == 1
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("proration", 1394), ("recurring", 9600)]
    with engine.connect() as conn:
        first, second = conn.execute(select(orders.c.id, orders.c.amends_order_id)
                                     .order_by(orders.c.id)).all()
        assert second.amends_order_id == first.id
        assert conn.execute(select(subscriptions.c.quantity)).scalars().all() == [8]
        item = conn.execute(select(amendment_items)).mappings().one()
        assert (item["order_id"], item["action"], item["new_quantity"]) == (second.id,
                                                                           "quantity", 8)
        # the added seats are provisioned like a new order's
        assert conn.execute(select(provisioning_requests.c.quantity).order_by(
            provisioning_requests.c.id)).scalars().all() == [5, 8]
        assert conn.execute(select(handoffs.c.detail).where(handoffs.c.revision == 2)
                            ).scalar() == f"amendment of order {first.id}"


def test_a_revision_as_a_new_record_of_the_same_number_amends_the_deal(engine: Engine) -> None:
    """Dataverse: revising Q1 closes it and makes Q1B (same quotenumber, revisionnumber 2).
    The deal goes on: no reversal reported, one subscription at 8 seats, a revision that
    changes nothing after it bills nothing."""
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", status="Closed")
    crm.put("quote", "Q1B", account_crm_id="A2", status="Accepted", revision=2, number="Q-1",
            start_date=JAN20)
    crm.put("quote_line", "L1B", quote_crm_id="Q1B", product_crm_id="P1", quantity=Decimal(8),
            unit_price=Decimal("12.00"), start_date=JAN1)
    crm.put("quote_line", "L2B", quote_crm_id="Q1B", product_crm_id="P2", quantity=Decimal(1),
            unit_price=Decimal("50.00"), start_date=JAN1)
    assert run_cycle(engine, crm).handed_off == 1
    with engine.connect() as conn:
        states = dict(conn.execute(select(handoffs.c.quote_crm_id, handoffs.c.state)).all())
        assert states == {"Q1": "done", "Q1B": "done"}
        assert conn.execute(select(subscription_changes.c.new_quantity)).scalars().all() == [8]
    crm.put("quote", "Q1B", status="Closed")
    crm.put("quote", "Q1C", account_crm_id="A2", status="Accepted", revision=3, number="Q-1",
            start_date=date(2027, 1, 25))
    crm.put("quote_line", "L1C", quote_crm_id="Q1C", product_crm_id="P1", quantity=Decimal(8),
            unit_price=Decimal("12.00"))
    crm.put("quote_line", "L2C", quote_crm_id="Q1C", product_crm_id="P2", quantity=Decimal(1),
            unit_price=Decimal("50.00"))
    assert run_cycle(engine, crm).handed_off == 1
    assert _count(engine, subscription_changes) == 1 and _count(engine, subscriptions) == 1
    assert _count(engine, orders) == 3
    run_bill_run(engine, JAN1)
    # 1 January bills January as scheduled, once: 5 seats for 1-19 January, 5 x 12.00 x
    # 19/31 = 36.774... -> 36.77; 8 seats for 20-31 January, 8 x 12.00 x 12/31 = 37.161...
    # -> 37.16; the setup once, 50.00
    assert _lines(engine, JAN1) == [("proration", 3677), ("proration", 3716),
                                    ("one_time", 5000)]


def test_an_amendment_while_on_hold_is_held_like_a_new_order(engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("account", "A2", credit_hold=True)
    crm.put("quote", "Q1", revision=2, start_date=JAN20)
    crm.put("quote_line", "L1", quantity=Decimal(8))
    run_cycle(engine, crm)
    with engine.connect() as conn:
        statuses = conn.execute(select(orders.c.status).order_by(orders.c.id)).scalars().all()
        change = conn.execute(select(subscription_changes.c.status)).scalar()
        requests = conn.execute(select(provisioning_requests.c.state).order_by(
            provisioning_requests.c.id)).scalars().all()
    assert statuses == ["active", "held"]
    assert change == "pending"
    assert requests[-1] == "awaiting_hold_release"
    crm.put("account", "A2", credit_hold=False)     # released: the amendment takes effect
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.status)).scalars().all() == ["active", "active"]
        assert conn.execute(select(subscription_changes.c.status)).scalar() == "active"
        assert conn.execute(select(subscriptions.c.quantity)).scalar() == 8
        assert conn.execute(select(provisioning_requests.c.state).order_by(
            provisioning_requests.c.id)).scalars().all()[-1] == "pending"


def test_a_usage_only_quote_becomes_an_order_that_rates_usage(engine: Engine) -> None:
    """Metered API calls at 0.10 EUR each (catalog price); 250 calls in January are billed
    on 1 February: 250 x 0.10 = 25.00, and no recurring line."""
    crm = _crm()
    crm.put("product", "P3", sku="API", name="API calls", billing_type="Usage", active=True)
    crm.put("price", "P3-EUR", product_crm_id="P3", currency="EUR",
            unit_price=Decimal("0.10"), active=True)
    crm.put("quote", "Q3", account_crm_id="A2", status="Accepted", revision=1, number="Q-3",
            start_date=JAN1)
    crm.put("quote_line", "L3", quote_crm_id="Q3", product_crm_id="P3", quantity=Decimal(1))
    crm.delete("quote", "Q1")
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert conn.execute(select(handoffs.c.state).where(
            handoffs.c.quote_crm_id == "Q3")).scalar() == "done"
        product_id = conn.execute(select(subscriptions.c.product_id)).scalar_one()
        account_id = conn.execute(select(orders.c.account_id)).scalar_one()
    with UnitOfWork(engine) as uow:
        import_usage(uow, [{"event_id": "e1", "account": str(account_id),
                            "product": str(product_id), "quantity": "250",
                            "occurred_at": "2027-01-15T10:00:00Z"}])
        uow.commit()
    run_bill_run(engine, JAN1)
    assert _lines(engine, JAN1) == []
    run_bill_run(engine, FEB1)
    assert _lines(engine, FEB1) == [("usage", 2500)]


def test_a_refused_quote_is_quarantined_once_and_taken_when_fixed(engine: Engine,
                                                                  caplog) -> None:  # type: ignore[no-untyped-def]
    """Q2 orders a product without a EUR price: quarantined with the field and reason, left
    waiting; the next runs neither log it again nor count an attempt; the price arriving
    from the CRM places it and resolves the entry. A quote without lines is quarantined too."""
    crm = _crm()
    crm.put("product", "P4", sku="ADDON", name="Add-on", billing_type="Recurring",
            billing_frequency="Monthly", active=True)
    crm.put("price", "P4-USD", product_crm_id="P4", currency="USD", unit_price=Decimal(20),
            active=True)
    crm.put("quote", "Q2", account_crm_id="A2", status="Accepted", revision=1, number="Q-2")
    crm.put("quote_line", "L4", quote_crm_id="Q2", product_crm_id="P4", quantity=Decimal(1))
    crm.put("quote", "Q5", account_crm_id="A2", status="Accepted", revision=1, number="Q-5")
    run_cycle(engine, crm)
    with engine.connect() as conn:
        q = {r.crm_id: r for r in conn.execute(select(quarantine).where(
            quarantine.c.object == "quote"))}
    assert set(q) == {"Q2", "Q5"}
    assert (q["Q2"].field, q["Q2"].reason, q["Q2"].status) == ("price", "does not exist", "open")
    assert "currency=EUR" in q["Q2"].value
    assert (q["Q5"].field, q["Q5"].reason) == ("lines", "the accepted quote has no lines")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sync.handoff"):
        run_cycle(engine, crm)
        run_cycle(engine, crm)
    assert [r for r in caplog.records if "refused" in r.getMessage()] == []
    with engine.connect() as conn:
        assert conn.execute(select(quarantine.c.attempts).where(
            quarantine.c.crm_id == "Q2")).scalar() == 1
    crm.put("price", "P4-EUR", product_crm_id="P4", currency="EUR", unit_price=Decimal(18),
            active=True)
    crm.put("quote_line", "L5", quote_crm_id="Q5", product_crm_id="P1", quantity=Decimal(1))
    assert run_cycle(engine, crm).handed_off == 2
    with engine.connect() as conn:
        assert dict(conn.execute(select(quarantine.c.crm_id, quarantine.c.status).where(
            quarantine.c.object == "quote")).all()) == {"Q2": "resolved", "Q5": "resolved"}


def test_quarantine_retry_hands_a_refused_quote_off_again(engine: Engine) -> None:
    """The fix is made in billing, not the CRM (a EUR price set by hand): ``quarantine
    retry`` hands the quote off again (as its CLI does, without an account fetcher)."""
    from billing_core.service.pricing import set_price
    from sync.handoff import run_handoffs
    crm = _crm()
    crm.put("product", "P4", sku="ADDON", name="Add-on", billing_type="Recurring",
            billing_frequency="Monthly", active=True)
    crm.put("quote", "Q2", account_crm_id="A2", status="Accepted", revision=1, number="Q-2")
    crm.put("quote_line", "L4", quote_crm_id="Q2", product_crm_id="P4", quantity=Decimal(1))
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert "currency=EUR" in conn.execute(select(quarantine.c.value).where(
            quarantine.c.crm_id == "Q2")).scalar_one()
    with UnitOfWork(engine) as uow:
        addon_id = uow.conn.execute(select(products.c.id).where(products.c.sku == "ADDON")
                                    ).scalar_one()
        set_price(uow, addon_id, "EUR", date(2020, 1, 1), "18.00")
        uow.commit()
    report = run_handoffs(engine, None, "fake", {"Q2"}, frozenset({"Accepted"}))
    assert report.placed == ["Q2"]
    with engine.connect() as conn:
        assert conn.execute(select(quarantine.c.status).where(
            quarantine.c.crm_id == "Q2")).scalar() == "resolved"


def test_a_usage_line_without_a_price_in_the_account_currency_does_not_refuse_the_quote(
        engine: Engine) -> None:
    """Dataverse keeps one list price per product, in the product's currency: a usage product
    priced in USD on a EUR quote. The order is taken (its usage needs a price when billed);
    before usage lines became subscriptions they were dropped, and this quote was placed."""
    crm = _crm()
    crm.put("product", "P5", sku="GB", name="Storage GB", billing_type="Usage", active=True)
    crm.put("price", "P5-USD", product_crm_id="P5", currency="USD", unit_price=Decimal("0.02"),
            active=True)
    crm.put("quote_line", "L6", quote_crm_id="Q1", product_crm_id="P5", quantity=Decimal(1))
    assert run_cycle(engine, crm).handed_off == 1
    assert _count(engine, subscriptions) == 2
