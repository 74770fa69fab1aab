"""A rate table imported from CSV (``tax-rates import``), on SQLite and PostgreSQL: every good
row is set as ``tax-rates set`` would (a later row for the same country, region and day
replaces the earlier), every bad row is reported with its line, field and value and writes
nothing, and the others land."""
from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest

from billing_core.domain.errors import ValidationError
from billing_core.service.tax import import_tax_rates, list_tax_rates, read_rates_csv

TABLE = """country,region,rate,from,name
de,,0.19,2020-01-01,
DE,,0.07,2020-01-01,Reduced by mistake
US,CA,0.0725,2021-01-01,California
US,,0,2021-01-01,
FRA,,0.2,2020-01-01,
FR,,abc,2020-01-01,
FR,,1.5,2020-01-01,
FR,,0.2,2026-02-30,
GB,,0.2,2020-01-01,Standard
"""


def test_good_rows_land_and_bad_rows_are_named(ledger) -> None:
    with ledger.uow() as uow:
        result = import_tax_rates(uow, read_rates_csv(io.StringIO(TABLE)))
        uow.commit()
    assert result.imported == 5
    assert [(e["row"], e["field"], e["value"]) for e in result.errors] == [
        (6, "country", "FRA"), (7, "rate", "abc"), (8, "rate", "1.5"),
        (9, "from", "2026-02-30")]
    with ledger.engine.connect() as conn:
        rows = [(r["country"], r["region"], r["rate"], r["effective_from"], r["name"])
                for r in list_tax_rates(conn)]
    assert rows == [
        ("DE", "", Decimal("0.07"), date(2020, 1, 1), "Reduced by mistake"),
        ("GB", "", Decimal("0.2"), date(2020, 1, 1), "Standard"),
        ("US", "", Decimal("0"), date(2021, 1, 1), "Tax US"),
        ("US", "CA", Decimal("0.0725"), date(2021, 1, 1), "California")]


def test_a_table_without_its_columns_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        read_rates_csv(io.StringIO("country,percent\nDE,19\n"))
    assert (info.value.field, info.value.value) == ("columns", "country,percent")
