"""Usage import: exactly once per event id; bad rows reported with field and value."""
from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import update

from billing_core.adapters.tables import usage_events
from billing_core.domain.errors import ValidationError
from billing_core.service.usage import import_usage, read_usage_csv

CSV = """event_id,account,product,quantity,occurred_at
e1,{acc},{prod},10,2026-03-01T10:00:00Z
e2,{acc},{prod},2.5,2026-03-01T11:00:00+02:00
e1,{acc},{prod},10,2026-03-01T10:00:00Z
e3,NOPE,{prod},1,2026-03-01T10:00:00Z
e4,{acc},NOPE,1,2026-03-01T10:00:00Z
e5,{acc},{prod},-1,2026-03-01T10:00:00Z
e6,{acc},{prod},lots,2026-03-01T10:00:00Z
e7,{acc},{prod},1,2026-03-01T10:00:00
e8,{acc},{prod},1,yesterday
e9,{acc},{seat},1,2026-03-01T10:00:00Z
"""


def test_duplicates_counted_and_bad_rows_reported(ledger) -> None:
    acc = ledger.account()
    prod = ledger.product("0.01", kind="usage")
    seat = ledger.product("1.00")
    with ledger.uow() as uow:
        rows = read_usage_csv(io.StringIO(CSV.format(acc=acc, prod=prod, seat=seat)))
        result = import_usage(uow, rows)
        uow.commit()
    assert (result.imported, result.duplicates) == (2, 1)
    assert [(e["row"], e["field"], e["value"]) for e in result.errors] == [
        (5, "account", "NOPE"), (6, "product", "NOPE"), (7, "quantity", "-1"),
        (8, "quantity", "lots"), (9, "occurred_at", "2026-03-01T10:00:00"),
        (10, "occurred_at", "yesterday"), (11, "product", str(seat))]
    with ledger.uow() as uow:   # importing the same file again imports nothing new
        again = import_usage(uow, rows)
        uow.commit()
    assert (again.imported, again.duplicates) == (0, 3)
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    # 10 + 2.5 = 12.5 units x 0.01 = 0.125 -> 0.13 (half up), billed once
    assert ledger.amounts(inv) == [("usage", 13)]


def test_csv_without_the_columns_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        read_usage_csv(io.StringIO("id,qty\n1,2\n"))
    assert info.value.field == "columns"


def test_a_row_the_import_cannot_take_is_refused_and_the_good_rows_land(ledger) -> None:
    """An account past 64 bits or a digit ``int`` cannot read (``²``), a timestamp out of
    range once in UTC, a quantity billing cannot take (the metered value rule: below 10^12, at
    most 6 decimals): each row refused naming field and value, never the whole file lost."""
    acc = ledger.account()
    prod = ledger.product("0.01", kind="usage")
    rows = [("ok", acc, "1", "2026-03-01T10:00:00Z"),
            ("a1", "99999999999999999999", "1", "2026-03-01T10:00:00Z"),
            ("a2", "\u00b2", "1", "2026-03-01T10:00:00Z"),
            ("t1", acc, "1", "0001-01-01T00:00:00+01:00"),
            ("t2", acc, "1", "9999-12-31T23:59:59-01:00"),
            ("q1", acc, "1e400", "2026-03-01T10:00:00Z"),
            ("q2", acc, "1" + "0" * 30, "2026-03-01T10:00:00Z"),
            ("q3", acc, "0.0000001", "2026-03-01T10:00:00Z")]
    text = "event_id,account,product,quantity,occurred_at\n" + "".join(
        f"{e},{a},{prod},{q},{t}\n" for e, a, q, t in rows)
    with ledger.uow() as uow:
        result = import_usage(uow, read_usage_csv(io.StringIO(text)))
        uow.commit()
    assert result.imported == 1
    assert [(e["row"], e["field"], e["value"]) for e in result.errors] == [
        (3, "account", "99999999999999999999"), (4, "account", "\u00b2"),
        (5, "occurred_at", "0001-01-01T00:00:00+01:00"),
        (6, "occurred_at", "9999-12-31T23:59:59-01:00"),
        (7, "quantity", "1e400"), (8, "quantity", "1" + "0" * 30), (9, "quantity", "0.0000001")]


def test_one_accounts_usage_out_of_decimal_range_is_its_error_not_the_runs(
        sqlite_ledger) -> None:
    """A quantity the intake refuses now may sit in a SQLite ledger from before (text there;
    PostgreSQL's NUMERIC(28, 10) never held one, so SQLite only): its account is not billed,
    named in the errors, and the other accounts are."""
    ledger = sqlite_ledger
    bad, good = ledger.account(), ledger.account()
    prod = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": "g", "account": str(good), "product": str(prod),
                            "quantity": "1", "occurred_at": "2026-03-01T10:00:00Z"},
                           {"event_id": "b", "account": str(bad), "product": str(prod),
                            "quantity": "1", "occurred_at": "2026-03-01T10:00:00Z"}])
        uow.conn.execute(update(usage_events).where(usage_events.c.event_id == "b")
                         .values(quantity=Decimal("1e400")))
        uow.commit()
    result = ledger.run(date(2026, 4, 1))
    assert [(e["account_id"], e["field"]) for e in result.errors] == [(bad, "account")]
    assert "InvalidOperation" in result.errors[0]["message"]
    assert ledger.invoices(bad) == []
    [inv] = ledger.invoices(good)
    assert ledger.amounts(inv) == [("usage", 10)]
