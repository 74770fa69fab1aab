"""The database itself keeps each charge on one live invoice (issue 13), on SQLite and PostgreSQL.

- A second live line claiming a subscription's period or a one-time charge is refused by a
  unique index, whatever code writes it; voiding the invoice frees the claim.
- A catch-up proration (a quantity change in a period billed before) claims nothing.
- The marks change only what is still as it was read, and say how many rows they changed: a
  chunk read before another run billed it is refused as a whole, and leaves nothing behind.
- Migration 0003 keeps the claims of invoices billed before it, on a filled database.
"""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.bulk import BulkUpdate
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    credit_grants,
    invoice_lines,
    invoices,
    one_time_charges,
    subscriptions,
    usage_events,
)
from billing_core.service.billing_io import LostRace, load_catalog, load_chunk, write_chunk
from billing_core.service.credits import grant_credits
from billing_core.service.documents import void_invoice
from billing_core.service.orders import change_quantity
from billing_core.service.usage import import_usage
from jobs.migrate import upgrade

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _second_invoice(uow: UnitOfWork, account: int, start: date) -> int:
    """A draft invoice of its own (another, earlier period) to hang a copied line on."""
    key = uow.conn.execute(insert(invoices).values(
        account_id=account, currency="USD", status="draft", period_start=start,
        period_end=start, issue_date=start, due_date=start, subtotal_minor=0, tax_minor=0,
        total_minor=0, created_at=NOW)).inserted_primary_key
    assert key is not None
    return int(key[0])


def _copy(uow: UnitOfWork, line: dict[str, Any], invoice_id: int, **changes: Any) -> None:
    row = {k: v for k, v in line.items() if k != "id"} | {"invoice_id": invoice_id} | changes
    with uow.savepoint():
        uow.conn.execute(insert(invoice_lines).values(row))


def test_the_database_refuses_a_second_live_line_for_a_charge(ledger) -> None:
    acc = ledger.account()
    seat = ledger.product("30.00")
    setup = ledger.product("100.00", kind="one_time")
    ledger.subscribe(acc, seat, 1, date(2026, 4, 1))
    ledger.charge(acc, setup, 1, date(2026, 4, 3))
    ledger.run(date(2026, 4, 1))
    [april] = ledger.invoices(acc)
    recurring, one_time = april["lines"]
    assert (recurring["kind"], recurring["claims_charge"]) == ("recurring", True)
    assert (one_time["kind"], one_time["claims_charge"]) == ("one_time", True)
    with ledger.uow() as uow:
        charge = uow.conn.execute(select(one_time_charges.c.id)).scalar_one()
    assert one_time["one_time_charge_id"] == charge

    with ledger.uow() as uow:
        other = _second_invoice(uow, acc, date(2026, 2, 1))
        for line in (recurring, one_time):
            with pytest.raises(IntegrityError):
                _copy(uow, line, other, line_no=9)
            _copy(uow, line, other, line_no=line["line_no"] + 10, claims_charge=False)
        uow.commit()

    with ledger.uow() as uow:
        void_invoice(uow, april["number"])        # gives its claims up
        uow.commit()
    [voided] = [inv for inv in ledger.invoices(acc) if inv["id"] == april["id"]]
    assert voided["status"] == "void"
    assert {ln["claims_charge"] for ln in voided["lines"]} == {False}
    with ledger.uow() as uow:
        for no, line in enumerate((recurring, one_time), 20):
            _copy(uow, line, other, line_no=no)
        uow.commit()


def test_voided_charges_are_billed_again_and_claimed_again(ledger) -> None:
    acc = ledger.account()
    seat = ledger.product("30.00")
    setup = ledger.product("100.00", kind="one_time")
    ledger.subscribe(acc, seat, 1, date(2026, 4, 1))
    ledger.charge(acc, setup, 1, date(2026, 4, 3))
    ledger.run(date(2026, 4, 1))
    [april] = ledger.invoices(acc)
    with ledger.uow() as uow:
        void_invoice(uow, april["number"])
        uow.commit()
    assert ledger.run(date(2026, 4, 1)).invoices_created == 1
    void, again = ledger.invoices(acc)
    assert void["status"] == "void"
    assert [(ln["kind"], ln["claims_charge"]) for ln in again["lines"]] == [
        ("recurring", True), ("one_time", True)]


def test_a_catch_up_proration_claims_nothing(ledger) -> None:
    acc = ledger.account()
    seat = ledger.product("31.00")
    sub = ledger.subscribe(acc, seat, 1, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 3, date(2026, 3, 1))    # from the start of the billed March
        uow.commit()
    assert ledger.run(date(2026, 4, 1)).invoices_created == 1
    march, april = ledger.invoices(acc)
    # the catch-up starts on 1 March like March's recurring line: only the latter claims it
    assert [(ln["kind"], ln["period_start"], ln["claims_charge"]) for ln in april["lines"]] == [
        ("proration", date(2026, 3, 1), False), ("recurring", date(2026, 4, 1), True)]
    assert [ln["claims_charge"] for ln in march["lines"]] == [True]


def _book(ledger: Any, *, usage_only: bool = False) -> int:
    acc = ledger.account(bcd=6)
    calls = ledger.product("0.02", kind="usage")
    if not usage_only:
        seat = ledger.product("12.50")
        setup = ledger.product("99.00", kind="one_time")
        sub = ledger.subscribe(acc, seat, 1, date(2026, 11, 1))
        ledger.charge(acc, setup, 1, date(2026, 11, 3))
    with ledger.uow() as uow:
        if not usage_only:
            change_quantity(uow, sub, 4, date(2026, 11, 10))
        grant_credits(uow, acc, "50.00", reason="prepaid")
        import_usage(uow, [{"event_id": f"u{acc}-{k}", "account": str(acc),
                            "product": str(calls), "quantity": "500",
                            "occurred_at": datetime(2026, 11, 2 + k, tzinfo=UTC)}
                           for k in range(2)])
        uow.commit()
    return acc


def _state(ledger: Any) -> tuple[Any, ...]:
    with ledger.uow() as uow:
        c = uow.conn
        return (c.execute(select(func.count()).select_from(invoices)).scalar(),
                c.execute(select(func.count()).select_from(invoice_lines)).scalar(),
                tuple(c.execute(select(subscriptions.c.billed_through)).scalars()),
                tuple(c.execute(select(one_time_charges.c.invoice_id)).scalars()),
                tuple(c.execute(select(usage_events.c.invoice_id)).scalars()),
                tuple(c.execute(select(credit_grants.c.remaining_minor)).scalars()))


@pytest.mark.parametrize("usage_only", [False, True], ids=["everything", "usage only"])
def test_a_chunk_read_before_another_run_billed_it_is_refused(ledger, usage_only) -> None:
    _book(ledger, usage_only=usage_only)
    with ledger.uow() as uow:                      # read, as a run for 6 December would
        catalog = load_catalog(uow.conn)
        stale = load_chunk(uow.conn, catalog, date(2026, 12, 6), 0, 10)
    assert len(stale.drafts) == 1
    ledger.run(date(2027, 1, 6))                   # the next period's run bills it all first
    before = _state(ledger)
    with ledger.uow() as uow:
        # a usage-only chunk claims no line: the guarded usage mark counts and refuses it
        with pytest.raises(LostRace if usage_only else IntegrityError):
            write_chunk(uow, stale, run_id=None, post=True, series="INV",
                        issue_date=date(2026, 12, 6))
    assert _state(ledger) == before


def test_guarded_marks_change_only_what_is_still_as_read(ledger) -> None:
    acc = _book(ledger, usage_only=True)
    with ledger.uow() as uow:
        grant = uow.conn.execute(select(credit_grants.c.id)).scalar_one()
        first, second = uow.conn.execute(select(usage_events.c.id)
                                         .order_by(usage_events.c.id)).scalars()
        invoice = _second_invoice(uow, acc, date(2026, 12, 6))
        once = BulkUpdate(usage_events, "invoice_id", guard="unset")
        assert once.run(uow.conn, [(first, invoice)]) == 1
        assert once.run(uow.conn, [(first, invoice), (second, invoice)]) == 1
        draw = BulkUpdate(credit_grants, "remaining_minor", subtract=True, guard="covers")
        assert draw.run(uow.conn, [(grant, 4000)]) == 1
        assert draw.run(uow.conn, [(grant, 1001)]) == 0       # 10.00 left: 10.01 refused
        assert draw.run(uow.conn, [(grant, 1000)]) == 1
        assert uow.conn.execute(select(credit_grants.c.remaining_minor)).scalar() == 0


# --- migration 0003 on a database billed before it ---------------------------------------

def test_migration_0003_claims_what_live_invoices_billed(blank_engine: Engine) -> None:
    old = blank_engine
    upgrade(old, "0002")
    with old.begin() as c:
        c.execute(text(
            "INSERT INTO accounts (id, ext_source, ext_object, ext_id, name, currency, "
            "created_at, updated_at) VALUES (1, 'local', 'account', 'A', 'A', 'USD', "
            ":now, :now)"), {"now": NOW})
        c.execute(text("INSERT INTO products (id, sku, name, kind, created_at) "
                       "VALUES (1, 'S', 'Seat', 'recurring', :now)"), {"now": NOW})
        c.execute(text(
            "INSERT INTO subscriptions (id, account_id, product_id, quantity, frequency, "
            "start_date, status, created_at) VALUES (1, 1, 1, 1, 'monthly', :d, 'active', "
            ":now)"), {"d": date(2026, 3, 1), "now": NOW})
        for inv, status, start in ((1, "posted", date(2026, 3, 1)),
                                   (2, "void", date(2026, 4, 1)),
                                   (3, "posted", date(2026, 4, 1)),
                                   (4, "posted", date(2026, 5, 1))):
            c.execute(text(
                "INSERT INTO invoices (id, account_id, currency, status, period_start, "
                "period_end, issue_date, due_date, subtotal_minor, tax_minor, total_minor, "
                "created_at) VALUES (:i, 1, 'USD', :s, :p, :p, :p, :p, 0, 0, 0, :now)"),
                {"i": inv, "s": status, "p": start, "now": NOW})
        # March on 1; April on the void 2 and again on 3; on 4 a catch-up of March (the
        # same start as 1's line) and May; a duplicate of May the old race left on 4
        for line, inv, kind, start in ((1, 1, "recurring", date(2026, 3, 1)),
                                       (2, 2, "recurring", date(2026, 4, 1)),
                                       (3, 3, "recurring", date(2026, 4, 1)),
                                       (4, 4, "proration", date(2026, 3, 1)),
                                       (5, 4, "recurring", date(2026, 5, 1)),
                                       (6, 4, "recurring", date(2026, 5, 1)),
                                       (7, 4, "one_time", date(2026, 5, 2))):
            c.execute(text(
                "INSERT INTO invoice_lines (id, invoice_id, line_no, kind, description, "
                "subscription_id, period_start, amount_minor) VALUES (:l, :i, :l, :k, 'x', "
                ":s, :p, 0)"),
                {"l": line, "i": inv, "k": kind, "p": start,
                 "s": None if kind == "one_time" else 1})
    upgrade(old)
    with old.connect() as c:
        claims = dict(c.execute(select(invoice_lines.c.id, invoice_lines.c.claims_charge)
                                .order_by(invoice_lines.c.id)).all())
    assert claims == {1: True, 2: False, 3: True, 4: False, 5: True, 6: False, 7: False}
    upgrade(old, "0002")                    # and back
    upgrade(old)

