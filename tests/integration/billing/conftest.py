"""Small builders for billing tests: an account, a priced product, an active subscription."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from itertools import count

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    invoice_lines,
    invoices,
    subscription_changes,
    subscriptions,
)
from billing_core.domain.periods import period_of
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.bill_run import BillRunResult, run_bill_run
from billing_core.service.orders import (
    OneTimeItem,
    OrderIn,
    SubscriptionItem,
    activate_order,
    place_order,
)
from billing_core.service.pricing import ProductIn, add_product, set_price

_seq = count(1)


class Ledger:
    """Builders bound to one engine; each call commits its own unit of work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    def account(self, currency: str = "USD", bcd: int = 1, country: str | None = None,
                region: str | None = None, terms: int = 30) -> int:
        with self.uow() as uow:
            acc = create_account(uow, AccountIn(
                name=f"Account {next(_seq)}", currency=currency, ext_id=f"EXT{next(_seq)}",
                bill_cycle_day=bcd, country=country, region=region, payment_terms_days=terms,
                tax_exempt=country is None))   # no tax location: zero-rated explicitly
            uow.commit()
        return acc

    def product(self, price: str | None, currency: str = "USD", kind: str = "recurring",
                period: str | None = None, model: str = "per_unit", tiers=None,
                since: date = date(2020, 1, 1)) -> int:
        with self.uow() as uow:
            pid = add_product(uow, ProductIn(sku=f"SKU{next(_seq)}", name=f"P{next(_seq)}",
                                             kind=kind, billing_period=period,
                                             pricing_model=model))
            set_price(uow, pid, currency, since, price, tiers=tiers)
            uow.commit()
        return pid

    def price(self, pid: int, price: str, since: date, currency: str = "USD") -> None:
        with self.uow() as uow:
            set_price(uow, pid, currency, since, price)
            uow.commit()

    def subscribe(self, account: int, product: int, quantity: str | int, start: date,
                  frequency: str = "monthly", unit_price: str | None = None,
                  end: date | None = None) -> int:
        with self.uow() as uow:
            order = place_order(uow, OrderIn(account, f"ref{next(_seq)}", start, subscriptions=[
                SubscriptionItem(product, quantity, start, frequency, unit_price, end)]))
            activate_order(uow, order)
            from billing_core.adapters.tables import subscriptions
            sid = uow.conn.execute(select(subscriptions.c.id).where(
                subscriptions.c.order_id == order)).scalar()
            uow.commit()
        return int(sid)

    def charge(self, account: int, product: int, quantity: str | int, on: date) -> None:
        with self.uow() as uow:
            order = place_order(uow, OrderIn(account, f"ref{next(_seq)}", on, one_time_charges=[
                OneTimeItem(product, quantity, on)]))
            activate_order(uow, order)
            uow.commit()

    def run(self, on: date, **kw) -> BillRunResult:
        return run_bill_run(self.engine, on, uow_factory=self.uow, **kw)

    @staticmethod
    def amounts(invoice: dict) -> list[tuple[str, int]]:
        return [(ln["kind"], ln["amount_minor"]) for ln in invoice["lines"]]

    def recurring_integral(self, sub: int, bcd: int, price: Decimal
                           ) -> tuple[Decimal, date, date | None, list]:
        """What the subscription's recurring lines should add up to, from the history the
        database holds: ``quantity on the day x price (x 12 annual) / days of its period``
        over ``[start, billed_through)``, 0 from its end date. Returns (total, billed
        through, end date, the active changes)."""
        with self.uow() as uow:
            row = uow.conn.execute(select(subscriptions).where(
                subscriptions.c.id == sub)).mappings().one()
            history = uow.conn.execute(select(
                subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
                subscription_changes.c.new_quantity)
                .where(subscription_changes.c.subscription_id == sub,
                       subscription_changes.c.status == "active")
                .order_by(subscription_changes.c.effective_date, subscription_changes.c.id)
            ).all()
        start, end, freq = row["start_date"], row["end_date"], row["frequency"]
        billed = row["billed_through"] or start
        factor = 12 if freq == "annual" else 1
        total, day = Decimal(0), start
        while day < billed:
            q = history[0].old_quantity if history else row["quantity"]
            for when, _, new in history:
                if when <= day:
                    q = new
            if end is not None and day >= end:
                q = Decimal(0)
            p_start, p_end = period_of(day, freq, bcd, start)
            total += q * price * factor / (p_end - p_start).days
            day += timedelta(days=1)
        return total, billed, end, history

    def invoices(self, account: int) -> list[dict]:
        with self.uow() as uow:
            out = []
            for inv in uow.conn.execute(select(invoices).where(invoices.c.account_id == account)
                                        .order_by(invoices.c.period_start)).mappings():
                lines = uow.conn.execute(select(invoice_lines).where(
                    invoice_lines.c.invoice_id == inv["id"]).order_by(invoice_lines.c.line_no)
                ).mappings().all()
                out.append({**inv, "lines": [dict(x) for x in lines]})
            return out


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return Ledger(engine)


@pytest.fixture
def sqlite_ledger(sqlite_engine: Engine) -> Ledger:
    """A ledger on SQLite only, for what only SQLite can hold."""
    return Ledger(sqlite_engine)



@pytest.fixture
def pg_ledger(pg_engine: Engine) -> Ledger:
    return Ledger(pg_engine)
