"""The read side: open balance, unbilled orders, exposure, overdue, aging, account summary."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from receivables_helpers import make_account, post_invoice
from sqlalchemy import insert

from billing_core.adapters.tables import one_time_charges, orders, subscriptions
from billing_core.service import memos, payments
from billing_core.service.accounts import set_credit_limit
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.receivables import (
    account_summary,
    aging,
    exposure_minor,
    open_balance_minor,
    overdue_documents,
    unbilled_orders_minor,
)

ON = date(2026, 6, 1)


def _order(uow, account_id: int, status: str, ref: str) -> int:
    return int(uow.conn.execute(insert(orders).values(
        account_id=account_id, source_ref=ref, status=status, order_date=date(2026, 5, 1),
        created_at=uow.now())).inserted_primary_key[0])


def test_unbilled_orders_and_exposure(uow, account):
    seat = add_product(uow, ProductIn(sku="SEAT", name="Seat", kind="recurring",
                                      billing_period="month"))
    setup = add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time"))
    set_price(uow, seat, "USD", date(2026, 1, 1), "10.005")
    set_price(uow, setup, "USD", date(2026, 1, 1), "99")
    live = _order(uow, account, "accepted", "q1")
    held = _order(uow, account, "held", "q2")
    gone = _order(uow, account, "cancelled", "q3")

    def sub(order_id, qty, price=None, status="pending", billed=None):
        uow.conn.execute(insert(subscriptions).values(
            account_id=account, order_id=order_id, product_id=seat, quantity=Decimal(qty),
            unit_price=price, frequency="monthly", start_date=date(2026, 5, 1), status=status,
            billed_through=billed, created_at=uow.now()))

    def charge(order_id, qty, price=None, status="active", invoice_id=None):
        uow.conn.execute(insert(one_time_charges).values(
            account_id=account, order_id=order_id, product_id=setup, quantity=Decimal(qty),
            unit_price=price, charge_date=date(2026, 5, 1), status=status,
            invoice_id=invoice_id, created_at=uow.now()))

    sub(live, "3")                            # catalog: 3 x 10.005 = 30.015 -> 30.02
    sub(held, "2", Decimal("7.50"))           # negotiated: 15.00
    sub(live, "1", status="cancelled")
    sub(live, "1", billed=date(2026, 6, 1))   # already billed
    sub(gone, "5")                            # cancelled order
    charge(live, "1")                         # 99.00
    charge(held, "2", Decimal("0.25"))        # 0.50
    charge(live, "1", status="cancelled")
    charge(live, "1", invoice_id=post_invoice(uow, account, 100))   # invoiced: in the balance
    assert unbilled_orders_minor(uow.conn, account, ON) == 3002 + 1500 + 9900 + 50
    assert open_balance_minor(uow.conn, account) == 100
    assert exposure_minor(uow.conn, account, ON) == 100 + 14452
    assert exposure_minor(uow.conn, account, ON, include_unbilled=False) == 100
    # a product without a price that day counts 0 instead of blocking the account's commits
    assert unbilled_orders_minor(uow.conn, account, date(2025, 12, 31)) == 1500 + 50


def test_overdue_aging_and_summary(uow):
    usd = make_account(uow, "U", terms=30, limit="500.00")
    eur = make_account(uow, "E", currency="EUR")
    post_invoice(uow, usd, 10000, due=date(2026, 6, 1))                 # current
    post_invoice(uow, usd, 2000, due=date(2026, 5, 20), issue=date(2026, 4, 20))   # 12 days
    old = post_invoice(uow, usd, 3000, due=date(2026, 2, 1), issue=date(2026, 1, 2))
    post_invoice(uow, usd, 999, due=date(2025, 1, 1), status="void")
    dm = memos.create_debit_memo(uow, usd, "7", "fee")
    memos.activate_debit_memo(uow, dm, issue_date=date(2026, 2, 15))     # due 03-17: 76 days
    pid = payments.record_payment(uow, usd, "10", reference="P1")
    payments.apply_payment(uow, pid, [{"target": f"invoice:{old}", "amount": "10"}])
    post_invoice(uow, eur, 4000, due=date(2026, 4, 1))                  # 61 days
    unapplied = memos.create_credit_memo(uow, usd, "1", "r", activate=True)

    late = overdue_documents(uow.conn, usd, ON, grace_days=0)
    assert [(d["type"], d["days_overdue"], d["balance_minor"]) for d in late] == [
        ("invoice", 120, 2000), ("debit_memo", 76, 700), ("invoice", 12, 2000)]
    assert [d["days_overdue"] for d in overdue_documents(uow.conn, usd, ON, 12)] == [120, 76]
    assert overdue_documents(uow.conn, usd, date(2026, 1, 1), 0) == []

    rows = aging(uow.conn, ON)
    by = {(r["account_id"], r["currency"]): r for r in rows}
    assert {k: v for k, v in by[(usd, "USD")].items() if k.endswith("_minor")} == {
        "current_minor": 10000, "d1_30_minor": 2000, "d31_60_minor": 0, "d61_90_minor": 700,
        "over_90_minor": 2000, "total_minor": 14700}
    assert by[(eur, "EUR")]["d61_90_minor"] == 4000
    assert by[(None, "USD")]["total_minor"] == 14700     # never summed with EUR
    assert by[(None, "EUR")]["total_minor"] == 4000
    assert [r["account_id"] for r in aging(uow.conn, ON, usd)] == [usd, None]

    summary = account_summary(uow.conn, usd, ON)
    assert summary["open_balance_minor"] == 14700 - 100 == open_balance_minor(uow.conn, usd)
    assert (summary["exposure_minor"], summary["credit_limit_minor"],
            summary["available_credit_minor"]) == (14600, 50000, 50000 - 14600)
    assert summary["oldest_overdue_days"] == 120
    assert summary["last_invoice_number"] == "TINV-000002"   # latest issue date
    assert summary["last_invoice_date"] == date(2026, 4, 20)
    memos.cancel_credit_memo(uow, unapplied)
    set_credit_limit(uow, usd, None)
    assert account_summary(uow.conn, usd, ON)["available_credit_minor"] is None
