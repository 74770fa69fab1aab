"""``ledgerbridge billing-demo``: a small ledger, one bill run, the invoices in plain words.

Seeds a throw-away SQLite database in a temporary directory (or the ``--database-url`` given to
``ledgerbridge``) with accounts in USD, EUR and JPY, a catalog (monthly seats, an annual
platform, a one-time setup fee, tiered API usage), orders, usage, a price change, a prepaid
credit and tax rates; runs the bill run for today and prints every invoice. Nothing keeps
running afterwards. (``ledgerbridge demo`` is the CRM demo, ``jobs.cli.demo_crm``; it also
shows a deal amended in the CRM and the next invoice billing exactly the difference, through
the real sync cycle rather than a billing call standing in for it.)
"""
from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.domain.money import from_minor
from billing_core.domain.periods import add_months, bill_period
from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.bill_run import run_bill_run
from billing_core.service.credits import grant_credits
from billing_core.service.invoices import invoice_view, list_invoices
from billing_core.service.orders import (
    OneTimeItem,
    OrderIn,
    SubscriptionItem,
    activate_order,
    change_quantity,
    place_order,
)
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.reports import subscription_ids
from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage
from jobs.cli.common import AppContext, pass_app
from jobs.migrate import upgrade


def seed_demo_ledger(uow: UnitOfWork, today: date) -> dict[str, int]:
    """Seed the demo ledger around ``today`` (orders last period, a price change this one).

    Returns the account ids by name. Everything is placed, activated and billable; the caller
    commits.
    """
    this = bill_period(today, 1)[0]
    last = add_months(this, -1, 1)
    since = add_months(this, -12, 1)
    for country, region, rate, name in (("US", "", "0", "US (no sales tax)"),
                                        ("US", "CA", "0.0725", "California sales tax"),
                                        ("DE", "", "0.19", "Umsatzsteuer"),
                                        ("JP", "", "0.10", "Consumption tax")):
        set_tax_rate(uow, country, region, rate, since, name)
    seat = add_product(uow, ProductIn(sku="SEAT", name="Seat licence"))
    platform = add_product(uow, ProductIn(sku="PLATFORM", name="Platform (annual)",
                                          billing_period="year"))
    setup = add_product(uow, ProductIn(sku="SETUP", name="Onboarding", kind="one_time"))
    calls = add_product(uow, ProductIn(sku="API", name="API calls", kind="usage",
                                       pricing_model="graduated"))
    for cur, seat_p, plat_p, setup_p, tiers in (
            ("USD", "25.00", "1200.00", "500.00", [("10000", "0.002"), (None, "0.001")]),
            ("EUR", "23.00", "1100.00", "450.00", [("10000", "0.0018"), (None, "0.0009")]),
            ("JPY", "3000", "150000", "60000", [("10000", "0.3"), (None, "0.15")])):
        set_price(uow, seat, cur, since, seat_p)
        set_price(uow, platform, cur, since, plat_p)
        set_price(uow, setup, cur, since, setup_p)
        set_price(uow, calls, cur, since, None, tiers=tiers)
    # a price change in the middle of this period: the seat line splits by day
    set_price(uow, seat, "USD", this + timedelta(days=14), "27.50")

    ids: dict[str, int] = {}
    for name, cur, country, state in (("Acme Corp", "USD", "US", "CA"),
                                      ("Globex GmbH", "EUR", "DE", None),
                                      ("Initech KK", "JPY", "JP", None)):
        ids[name] = create_account(uow, AccountIn(name=name, currency=cur, ext_id=f"DEMO-{cur}",
                                                  country=country, region=state))

    def order(name: str, ref: str, subs: list[SubscriptionItem],
              charges: list[OneTimeItem] | None = None) -> int:
        oid = place_order(uow, OrderIn(ids[name], ref, last, subscriptions=subs,
                                       one_time_charges=charges or []))
        activate_order(uow, oid)
        return oid

    order("Acme Corp", "demo:acme", [SubscriptionItem(seat, 10, last + timedelta(days=9)),
                                     SubscriptionItem(platform, 1, this, "annual")],
          [OneTimeItem(setup, 1, last + timedelta(days=9))])
    order("Globex GmbH", "demo:globex", [SubscriptionItem(seat, 5, last)])
    order("Initech KK", "demo:initech", [SubscriptionItem(seat, 3, last + timedelta(days=20))])
    globex_sub = subscription_ids(uow.conn, ids["Globex GmbH"])[0]
    change_quantity(uow, globex_sub, 8, last + timedelta(days=14))

    events: list[dict[str, Any]] = []
    for name, per_day in (("Acme Corp", 700), ("Globex GmbH", 150), ("Initech KK", 400)):
        for day in range(0, 28, 3):
            when = datetime.combine(last + timedelta(days=day), datetime.min.time(),
                                    tzinfo=UTC) + timedelta(hours=9)
            events.append({"event_id": f"demo-{ids[name]}-{day}", "account": str(ids[name]),
                           "product": "API", "quantity": str(per_day * 3),
                           "occurred_at": when.isoformat()})
    import_usage(uow, events)
    grant_credits(uow, ids["Globex GmbH"], "2.00", kind="granted", source="demo",
                  reason="Referral reward", expires_on=None)
    return ids


def describe_invoice(inv: dict[str, Any]) -> list[str]:
    cur = inv["currency"]

    def money(minor: int) -> str:
        return f"{from_minor(minor, cur)} {cur}"

    head = (f"{inv['number']} to {inv['account_name']} for the period {inv['period_start']} to "
            f"{inv['period_end'] - timedelta(days=1)}, issued {inv['issue_date']}, due "
            f"{inv['due_date']}:")
    out = [head]
    for ln in inv["lines"]:
        tax = f" + tax {money(ln['tax_minor'])}" if ln["tax_minor"] else ""
        out.append(f"  - {ln['description']}: {money(ln['amount_minor'])}{tax}")
    out.append(f"  Subtotal {money(inv['subtotal_minor'])}, tax {money(inv['tax_minor'])}, "
               f"total {money(inv['total_minor'])}.")
    return out


@click.command("billing-demo", short_help="The billing-only demo (SQLite, seconds).")
@click.option("--date", "on", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Pretend today is this day (default: today, UTC).")
@pass_app
def billing_demo(app: AppContext, on: datetime | None) -> None:
    """Seed a small ledger, run the bill run and print the invoices in plain words."""
    today = on.date() if on else datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-demo-") as tmp:
        url = app.database_url or f"sqlite:///{tmp}/demo.db"
        engine = make_engine(url)
        try:
            upgrade(engine)
            with ledger_uow(engine) as uow:
                ids = seed_demo_ledger(uow, today)
                uow.commit()
            click.echo(f"Seeded {len(ids)} accounts ({', '.join(ids)}), a catalog of 4 products "
                       f"in USD/EUR/JPY, orders, usage and tax rates.")
            result = run_bill_run(engine, today, uow_factory=lambda: ledger_uow(engine))
            click.echo(f"Bill run for {today}: {result.invoices_created} invoices.\n")
            with UnitOfWork(engine, read_only=True) as uow:
                for row in list_invoices(uow.conn, account_id=None):
                    if row["account_id"] in ids.values():
                        click.echo("\n".join(describe_invoice(invoice_view(uow.conn,
                                                                           row["id"]))))
                        click.echo("")
            again = run_bill_run(engine, today, uow_factory=lambda: ledger_uow(engine))
            click.echo(f"Running the bill run again bills nothing: {again.invoices_created} new "
                       f"invoices, {again.already_billed} accounts already billed.")
            click.echo("A deal amended in the CRM, and its next invoice billing exactly the "
                       "difference: `ledgerbridge demo`.")
        finally:
            engine.dispose()


COMMANDS = [billing_demo]
