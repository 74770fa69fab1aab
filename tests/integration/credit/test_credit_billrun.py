"""With the real bill run: an order taken in good standing that puts the account over its limit
is invoiced while its provisioning waits; a held order is not invoiced until released."""
from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from credit_helpers import licence_order, make_account, make_products
from sqlalchemy import select

from billing_core.adapters.tables import invoices
from billing_core.service.accounts import set_crm_hold
from billing_core.service.bill_run import run_bill_run
from billing_core.service.gate import accept_order
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.receivables import exposure_minor


def test_bill_run_invoices_what_is_active_and_not_what_is_held(ledger, clock):
    today = clock.today
    start = today.replace(day=1)
    over, held, products = ledger.run(lambda u: (
        make_account(u, "OVER", limit="1000.00"), make_account(u, "HELD", crm_hold=True),
        make_products(u)))
    ledger.run(lambda u: accept_order(u, licence_order(over, "q-over", 12, products, start,
                                                       setup=True)))
    ledger.run(lambda u: accept_order(u, licence_order(held, "q-held", 1, products, start)))
    assert ledger.reasons(over) == {"credit_limit"} and ledger.reasons(held) == {"crm"}

    run = run_bill_run(ledger.engine, today, uow_factory=ledger.uow)
    assert [(i.account_id, i.total_minor) for i in run.invoices] == [(over, 125000)]
    assert ledger.reasons(over) == {"credit_limit"}
    assert ledger.request_states(over) == ["awaiting_hold_release"] * 2

    ledger.run(lambda u: set_crm_hold(u, held, False))
    run_bill_run(ledger.engine, today, uow_factory=ledger.uow)
    with ledger.engine.connect() as conn:
        assert conn.execute(select(invoices.c.total_minor).where(
            invoices.c.account_id == held)).scalar() == 10000


@pytest.mark.parametrize(("period", "frequency", "price", "negotiated"), [
    ("month", "monthly", "100.00", None),
    ("month", "annual", "100.00", None),       # 12 x 100.00 a term
    ("year", "monthly", "100.01", None),       # 100.01 / 12 = 8.334... -> 8.33 a month
    ("year", "annual", "1200.00", None),
    ("month", "annual", "100.00", "85.005"),   # a negotiated price is per period too
    ("year", "monthly", "1200.00", "999.99"),
], ids=["month-monthly", "month-annual", "year-monthly", "year-annual",
        "month-annual-negotiated", "year-monthly-negotiated"])
def test_a_subscription_never_billed_counts_the_charge_its_first_period_is_billed(
        ledger, clock, period, frequency, price, negotiated):
    """Exposure counts a subscription never billed at one period's charge: the amount the
    bill run then invoices for that period, whatever the product's billing period and the
    subscription's frequency (an annual subscription of a monthly price counted one month of
    it let an order 12 times the limit through the gate unheld)."""
    start = clock.today.replace(day=1)

    def setup(uow):
        account = make_account(uow, "ACC", limit="1000000")
        product = add_product(uow, ProductIn(sku="P", name="P", billing_period=period))
        set_price(uow, product, "USD", date(2020, 1, 1), price)
        accept_order(uow, OrderIn(account, "q-1", start, subscriptions=[SubscriptionItem(
            product, 2, start, frequency=frequency, unit_price=negotiated)]))
        return account

    account = ledger.run(setup)
    with ledger.engine.connect() as conn:
        counted = exposure_minor(conn, account, clock.today)
    run = run_bill_run(ledger.engine, clock.today, uow_factory=ledger.uow)
    [(billed_account, billed)] = [(i.account_id, i.total_minor) for i in run.invoices]
    assert (billed_account, counted) == (account, billed)
    unit = Decimal(negotiated or price) * 2
    num, den = {("month", "annual"): (12, 1), ("year", "monthly"): (1, 12)}.get(
        (period, frequency), (1, 1))
    assert billed == int((unit * 100 * num / den).quantize(Decimal(1), ROUND_HALF_UP))


def test_an_annual_order_over_the_limit_waits_for_its_provisioning(ledger, clock):
    """10 seats at 10.00 a month, billed annually: 1,200.00 a term over a 1,000.00 limit.
    Held at acceptance, so the seats are not provisioned before anyone is paid."""
    start = clock.today.replace(day=1)

    def setup(uow):
        account = make_account(uow, "ANNUAL", limit="1000.00")
        product = add_product(uow, ProductIn(sku="SEAT", name="Seat", billing_period="month",
                                             needs_provisioning=True))
        set_price(uow, product, "USD", date(2020, 1, 1), "10.00")
        accept_order(uow, OrderIn(account, "q-annual", start, subscriptions=[
            SubscriptionItem(product, 10, start, frequency="annual")]))
        return account

    account = ledger.run(setup)
    assert ledger.reasons(account) == {"credit_limit"}
    assert ledger.request_states(account) == ["awaiting_hold_release"]
