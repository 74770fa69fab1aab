"""Billing's read views (what the sync shows on CRM records), on a real ledger."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from billing_core.adapters.tables import one_time_charges, subscriptions
from billing_core.domain.errors import NotFound
from billing_core.service.documents import void_invoice
from billing_core.service.holds import place_reason
from billing_core.service.views import account_views, order_views, orders_of_accounts


def _order_of(ledger, table, item_id: int | None = None, account: int | None = None) -> int:
    with ledger.uow() as uow:
        stmt = select(table.c.order_id)
        stmt = stmt.where(table.c.id == item_id) if item_id else stmt.where(
            table.c.account_id == account)
        return int(uow.conn.execute(stmt).scalar_one())


def test_an_orders_first_invoice_is_its_earliest_live_one(ledger) -> None:
    acc, other = ledger.account(), ledger.account()
    seat = ledger.product("30.00")
    setup = ledger.product("100.00", kind="one_time")
    subscribed = _order_of(ledger, subscriptions,
                           ledger.subscribe(acc, seat, 2, date(2026, 4, 1)))
    ledger.charge(other, setup, 1, date(2026, 5, 10))
    charged = _order_of(ledger, one_time_charges, account=other)
    unbilled = _order_of(ledger, subscriptions, ledger.subscribe(acc, seat, 1, date(2027, 1, 1)))
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 6, 1))
    april, later = ledger.invoices(acc)

    with ledger.engine.connect() as conn:
        views = order_views(conn, [charged, subscribed, unbilled, subscribed])
    assert list(views) == sorted({charged, subscribed, unbilled})
    assert views[subscribed].first_invoice_number == april["number"]
    assert views[subscribed].order_number == f"ORD-{subscribed}"
    assert views[subscribed].provisioning_status == "not required"
    assert views[charged].first_invoice_number == ledger.invoices(other)[0]["number"]
    assert views[unbilled].first_invoice_number is None

    with ledger.uow() as uow:
        for invoice in (later, april):                 # latest first: the only order allowed
            void_invoice(uow, invoice["number"])
        uow.commit()
    with ledger.engine.connect() as conn:
        assert order_views(conn, [subscribed])[subscribed].first_invoice_number is None
        assert orders_of_accounts(conn, [acc]) == sorted([subscribed, unbilled])
        assert orders_of_accounts(conn, []) == []


def test_an_accounts_view_has_its_figures_in_its_currency_and_its_reasons_sorted(ledger) -> None:
    acc = ledger.account(currency="JPY")
    with ledger.uow() as uow:
        for reason in ("manual", "crm"):
            place_reason(uow, acc, reason, source="test", actor="test", details={})
        uow.commit()
    with ledger.engine.connect() as conn:
        view = account_views(conn, [acc], date(2026, 4, 1))[acc]
        assert (view.currency, view.open_balance, view.exposure, view.available_credit) == (
            "JPY", Decimal(0), Decimal(0), None)
        assert view.hold_reasons == ("crm", "manual") and not view.held_by_billing
        assert (view.oldest_overdue_days, view.last_invoice_number) == (0, None)
        with pytest.raises(NotFound):
            account_views(conn, [acc, acc + 1000], date(2026, 4, 1))
    with ledger.uow() as uow:
        place_reason(uow, acc, "overdue", source="billing", actor="billing", details={})
        uow.commit()
    with ledger.engine.connect() as conn:
        view = account_views(conn, [acc], date(2026, 4, 1))[acc]
        assert view.hold_reasons == ("crm", "manual", "overdue") and view.held_by_billing
