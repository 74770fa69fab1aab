"""Issue 14, through the bill run on SQLite and PostgreSQL: tiers across price rows, tax once per
rate on the base after credits (kept on the invoice), a grant expiring inside the usage period.
Arithmetic in the docstrings."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

from alembic import command
from sqlalchemy import delete, select

from billing_core.adapters.tables import credit_draws, credit_grants, invoice_taxes
from billing_core.service.invoices import invoice_view
from billing_core.service.pricing import set_price
from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage
from jobs.migrate import alembic_config, current, head, upgrade

LADDER = [("1000", "0.10"), ("5000", "0.08"), (None, "0.05")]


def _tiered_usage(ledger, model: str, country: str | None = None) -> tuple[int, int]:
    """An account and a tiered usage product whose price row is re-entered (same tiers) on
    16 March; 3,000 units on 5 March and 4,500 on 20 March."""
    acc = ledger.account(country=country, region="TX" if country else None)
    pid = ledger.product(None, kind="usage", model=model, tiers=LADDER)
    with ledger.uow() as uow:
        set_price(uow, pid, "USD", date(2026, 3, 16), None, tiers=LADDER)
        import_usage(uow, [
            {"event_id": f"{model}-a", "account": str(acc), "product": str(pid),
             "quantity": "3000", "occurred_at": "2026-03-05T10:00:00Z"},
            {"event_id": f"{model}-b", "account": str(acc), "product": str(pid),
             "quantity": "4500", "occurred_at": "2026-03-20T10:00:00Z"}])
        uow.commit()
    return acc, pid


def _grant(ledger, acc: int, amount: int, expires: date | None, name: str) -> int:
    with ledger.uow() as uow:
        gid = uow.conn.execute(credit_grants.insert().values(
            account_id=acc, currency="USD", kind="purchased", amount_minor=amount,
            remaining_minor=amount, expires_on=expires, source="test", reason=name,
            created_at=datetime(2026, 1, 1, tzinfo=UTC))).inserted_primary_key[0]
        uow.commit()
    return int(gid)


def test_graduated_tiers_span_the_price_rows_of_the_period(ledger) -> None:
    """7,500 units in March under two rows with the same tiers: 1,000 x 0.10 + 4,000 x 0.08 +
    2,500 x 0.05 = 545.00 (not 260.00 + 380.00), split by units: 545 x 3,000 / 7,500 = 218.00
    and 545 x 4,500 / 7,500 = 327.00."""
    acc, _ = _tiered_usage(ledger, "graduated")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 21800), ("usage", 32700)]
    assert inv["total_minor"] == 54500


def test_volume_tiers_take_the_tier_of_the_period_total(ledger) -> None:
    """Volume: the 7,500 units of March all at the open tier's 0.05 = 375.00: 150.00 for the
    3,000 before the new row, 225.00 for the 4,500 after."""
    acc, _ = _tiered_usage(ledger, "volume")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 15000), ("usage", 22500)]


def test_tax_once_on_what_remains_after_the_credit_and_its_base_on_the_invoice(ledger) -> None:
    """Usage 545.00 - prepaid credit 155.00 = 390.00 taxable at 8.25 % (US-TX):
    390.00 x 0.0825 = 32.175 -> 32.18 (per line: 44.96 - 12.79 = 32.17). Total 422.18.
    The invoice view shows the rate with its base: 8.25 % of 390.00 = 32.18."""
    with ledger.uow() as uow:
        set_tax_rate(uow, "US", "TX", "0.0825", date(2020, 1, 1))
        uow.commit()
    acc, _ = _tiered_usage(ledger, "graduated", country="US")
    _grant(ledger, acc, 15500, None, "prepaid")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 21800), ("usage", 32700), ("credit_draw", -15500)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (39000, 3218, 42218)
    assert sum(ln["tax_minor"] for ln in inv["lines"]) == 3218
    with ledger.uow() as uow:
        view = invoice_view(uow.conn, inv["id"])
    assert view["taxes"] == [{"rate": D("0.0825"), "base_minor": 39000, "tax_minor": 3218,
                              "base": D("390.00"), "tax": D("32.18")}]


def test_tax_inclusive_base_is_what_remains_net_of_its_tax(ledger) -> None:
    """Prices include 8.25 %: gross 545.00 - 155.00 = 390.00 holds 390.00 x 0.0825 / 1.0825 =
    29.7229 -> 29.72; base 360.28; the total stays 390.00."""
    with ledger.uow() as uow:
        set_tax_rate(uow, "US", "TX", "0.0825", date(2020, 1, 1))
        uow.commit()
    acc, _ = _tiered_usage(ledger, "graduated", country="US")
    _grant(ledger, acc, 15500, None, "prepaid")
    ledger.run(date(2026, 4, 1), tax_inclusive=True)
    [inv] = ledger.invoices(acc)
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (36028, 2972, 39000)
    with ledger.uow() as uow:
        view = invoice_view(uow.conn, inv["id"])
    assert [(t["base_minor"], t["tax_minor"]) for t in view["taxes"]] == [(36028, 2972)]


def test_a_grant_expiring_in_the_usage_period_pays_for_the_usage_before_it(ledger) -> None:
    """March usage at 0.50: 100 units on 10 March, 100 on 25 March = 100.00. Grant A (80.00)
    expires 15 March: it may pay for the 10 March half, 50.00, and draws 50.00 (before: it
    drew nothing). Grant B (20.00, no expiry) draws 20.00 of the 25 March half. Invoice
    100.00 - 70.00 = 30.00; A keeps 30.00 (expired), B nothing."""
    acc = ledger.account()
    pid = ledger.product("0.50", kind="usage")
    a = _grant(ledger, acc, 8000, date(2026, 3, 15), "A")
    b = _grant(ledger, acc, 2000, None, "B")
    with ledger.uow() as uow:
        import_usage(uow, [
            {"event_id": "x1", "account": str(acc), "product": str(pid), "quantity": "100",
             "occurred_at": "2026-03-10T08:00:00Z"},
            {"event_id": "x2", "account": str(acc), "product": str(pid), "quantity": "100",
             "occurred_at": "2026-03-25T08:00:00Z"}])
        uow.commit()
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 10000), ("credit_draw", -7000)]
    assert inv["total_minor"] == 3000
    with ledger.uow() as uow:
        draws = uow.conn.execute(select(credit_draws.c.grant_id, credit_draws.c.amount_minor)
                                 .order_by(credit_draws.c.id)).all()
        left = dict(uow.conn.execute(select(credit_grants.c.id,
                                            credit_grants.c.remaining_minor)).all())
    assert [tuple(d) for d in draws] == [(a, 5000), (b, 2000)]
    assert left == {a: 3000, b: 0}


def test_migration_0008_gives_earlier_invoices_their_tax_per_rate(ledger) -> None:
    """An invoice written before 0008 (its invoice_taxes rows removed, then the table dropped
    by the downgrade) gets one row per non-zero rate from its lines when 0008 runs again:
    base 390.00 = 218.00 + 327.00 - 155.00, tax 32.18 = the lines' 17.99 + 26.97 - 12.78."""
    test_tax_once_on_what_remains_after_the_credit_and_its_base_on_the_invoice(ledger)
    engine = ledger.engine
    try:
        with engine.begin() as conn:
            conn.execute(delete(invoice_taxes))
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
    finally:
        upgrade(engine)     # the PostgreSQL schema is shared by the next tests
    assert current(engine) == head()
    with engine.connect() as conn:
        rows = conn.execute(select(invoice_taxes.c.tax_rate, invoice_taxes.c.base_minor,
                                   invoice_taxes.c.tax_minor)).all()
    assert [tuple(r) for r in rows] == [(D("0.0825"), 39000, 3218)]
