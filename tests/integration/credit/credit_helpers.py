"""Helpers for the credit-control tests: a movable clock, units of work with the credit hooks,
accounts, provisioned products and invoices made straight in the schema (so these tests do not
depend on the bill run), and a provisioner that records what it was sent."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.provisioners.base import ProvisioningTask
from billing_core.adapters.tables import (
    hold_reasons,
    invoices,
    one_time_charges,
    provisioning_requests,
    subscriptions,
)
from billing_core.domain.credit import CreditPolicy
from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.orders import OneTimeItem, OrderIn, SubscriptionItem
from billing_core.service.pricing import ProductIn, add_product, set_price

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: int) -> None:
        self.now += timedelta(days=days)

    @property
    def today(self) -> date:
        return self.now.date()


@dataclass
class Ledger:
    """Opens units of work the way every entry point does (``ledger_uow``: credit hooks on)."""
    engine: Engine
    clock: Clock
    policy: CreditPolicy = field(default_factory=CreditPolicy)

    def uow(self) -> UnitOfWork:
        return ledger_uow(self.engine, policy=self.policy, clock=self.clock)

    def run(self, fn: Callable[[UnitOfWork], object]) -> object:
        with self.uow() as uow:
            result = fn(uow)
            uow.commit()
            return result

    @contextmanager
    def tx(self) -> Iterator[UnitOfWork]:
        """A unit of work that commits when the block ends without an error."""
        with self.uow() as uow:
            yield uow
            uow.commit()

    def reasons(self, account_id: int) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(hold_reasons.c.reason).where(
                hold_reasons.c.account_id == account_id))}

    def request_states(self, account_id: int | None = None) -> list[str]:
        stmt = select(provisioning_requests.c.state).order_by(provisioning_requests.c.id)
        if account_id is not None:
            stmt = stmt.where(provisioning_requests.c.account_id == account_id)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]


@dataclass
class RecordingProvisioner:
    """Records every task it is handed; can be told to fail."""
    name: str = "recording"
    sent: list[ProvisioningTask] = field(default_factory=list)
    check: Callable[[ProvisioningTask], None] | None = None

    def provision(self, task: ProvisioningTask) -> str:
        if self.check is not None:
            self.check(task)
        self.sent.append(task)
        return "dispatched"


def make_account(uow: UnitOfWork, ext_id: str = "ACC1", *, limit: str | None = None,
                 terms: int = 30, crm_hold: bool = False) -> int:
    return create_account(uow, AccountIn(name=f"Account {ext_id}", currency="USD", ext_id=ext_id,
                                         credit_limit=limit, payment_terms_days=terms,
                                         crm_hold=crm_hold, tax_exempt=True))


def make_products(uow: UnitOfWork) -> dict[str, int]:
    """``LIC``: a licence at 100.00 a month that needs provisioning; ``SETUP``: a one-time fee
    of 50.00 that needs provisioning; ``SUPPORT``: 10.00 a month, nothing to provision."""
    ids = {
        "LIC": add_product(uow, ProductIn(sku="LIC", name="Licence", needs_provisioning=True)),
        "SETUP": add_product(uow, ProductIn(sku="SETUP", name="Setup", kind="one_time",
                                            needs_provisioning=True)),
        "SUPPORT": add_product(uow, ProductIn(sku="SUPPORT", name="Support")),
    }
    for sku, price in (("LIC", "100"), ("SETUP", "50"), ("SUPPORT", "10")):
        set_price(uow, ids[sku], "USD", date(2020, 1, 1), price)
    return ids


def licence_order(account_id: int, ref: str, quantity: int, products: dict[str, int],
                  on: date, *, setup: bool = False, support: bool = False) -> OrderIn:
    subs = [SubscriptionItem(products["LIC"], quantity, on)]
    if support:
        subs.append(SubscriptionItem(products["SUPPORT"], 1, on))
    otc = [OneTimeItem(products["SETUP"], 1, on)] if setup else []
    return OrderIn(account_id=account_id, source_ref=ref, order_date=on, subscriptions=subs,
                   one_time_charges=otc)


def post_invoice(uow: UnitOfWork, account_id: int, total_minor: int, *, issue: date,
                 due: date, bill_order_id: int | None = None) -> int:
    """A posted invoice as the bill run would leave it; with ``bill_order_id`` that order's
    subscriptions and one-time charges count as billed (they leave unbilled exposure)."""
    conn = uow.conn
    seq = conn.execute(select(func.count()).select_from(invoices)).scalar_one() + 1
    invoice_id = conn.execute(insert(invoices).values(
        account_id=account_id, currency="USD", series="INV", number=f"TINV-{seq:06d}",
        status="posted", period_start=date(2000 + seq, 1, 1), period_end=date(2000 + seq, 2, 1),
        issue_date=issue, due_date=due, subtotal_minor=total_minor, tax_minor=0,
        total_minor=total_minor, applied_minor=0, created_at=uow.now(),
        posted_at=uow.now())).inserted_primary_key[0]
    if bill_order_id is not None:
        conn.execute(update(subscriptions).where(subscriptions.c.order_id == bill_order_id)
                     .values(billed_through=due))
        conn.execute(update(one_time_charges).where(one_time_charges.c.order_id == bill_order_id)
                     .values(invoice_id=invoice_id))
    uow.touch(account_id)
    return int(invoice_id)
