"""Usage import: exactly once per event id; bad rows reported with field and value."""
from __future__ import annotations

import io
from datetime import date

import pytest

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
