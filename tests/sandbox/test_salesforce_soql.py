"""The SOQL subset parser: what it accepts, and that it refuses the rest with MALFORMED_QUERY."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from simple_salesforce.format import format_soql

from connectors.sandbox.salesforce.soql import (
    BoolOp,
    Compare,
    In,
    Like,
    Not,
    SoqlError,
    parse,
    parse_datetime,
)

UTC = dt.UTC


def test_full_grammar() -> None:
    q = parse("select Id, Name from Account where (Name like 'A%' or not Credit_Hold__c = true) "
              "and Id not in ('001', '002') order by SystemModstamp desc nulls last, Id limit 5")
    assert q.fields == ("Id", "Name") and q.sobject == "Account" and q.limit == 5
    assert isinstance(q.where, BoolOp) and q.where.op == "and"
    inner, not_in = q.where.items
    assert isinstance(inner, BoolOp) and inner.op == "or"
    assert isinstance(inner.items[0], Like) and isinstance(inner.items[1], Not)
    assert isinstance(not_in, In) and not_in.negate
    assert [(o.field, o.desc, o.nulls_first) for o in q.order] == [
        ("SystemModstamp", True, False), ("Id", False, True)]


@pytest.mark.parametrize("literal", ["2026-11-21T23:43:43Z", "2026-11-21T23:43:43+00:00",
                                     "2026-11-21T23:43:43.000+0000", "2026-11-22T00:43:43+01:00"])
def test_datetime_literals(literal: str) -> None:
    q = parse(f"SELECT Id FROM Account WHERE SystemModstamp >= {literal}")
    assert isinstance(q.where, Compare)
    assert q.where.value.value == dt.datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)


def test_format_soql_values_round_trip() -> None:
    name = "O'Brien \\ \"quoted\"\nnew line"
    text = format_soql("SELECT Id FROM Account WHERE Name = {} AND Credit_Limit__c > {} AND "
                       "SystemModstamp < {} AND Last_Invoice_Date__c = {}", name,
                       1000.5, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                       dt.date(2026, 1, 2))
    where = parse(text).where
    assert isinstance(where, BoolOp)
    values = [c.value.value for c in where.items]  # type: ignore[union-attr]
    assert values == [name, Decimal("1000.5"), dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                      dt.date(2026, 1, 2)]


def test_like_escapes_stay_literal() -> None:
    text = format_soql("SELECT Id FROM Account WHERE Name LIKE '{:like}%'", "50%_off")
    where = parse(text).where
    assert isinstance(where, Like) and "%" not in where.pattern[:-1]


def test_count() -> None:
    assert parse("SELECT COUNT() FROM Quote").is_count


@pytest.mark.parametrize("soql", [
    "SELECT Id FROM Account WHERE A = 1 AND B = 2 OR C = 3",
    "SELECT Id FROM Account WHERE CreatedDate = TODAY",
    "SELECT Id FROM Account WHERE CreatedDate = LAST_N_DAYS:3",
    "SELECT Id FROM Account OFFSET 10",
    "SELECT Id FROM Account GROUP BY Name",
    "SELECT Id FROM Account WHERE Name = :name",
    "SELECT Id FROM Account WHERE Name = 'bad \\q escape'",
    "SELECT Id FROM Account WHERE Name = 'unterminated",
    "SELECT Id FROM",
    "SELECT FROM Account",
    "SELECT Id FROM Account LIMIT 1.5",
    "SELECT Id FROM Account trailing",
])
def test_unsupported_or_malformed(soql: str) -> None:
    with pytest.raises(SoqlError) as err:
        parse(soql)
    assert err.value.code == "MALFORMED_QUERY"


def test_parse_datetime_fractions() -> None:
    assert parse_datetime("2026-11-21T23:43:43.5+0000").microsecond == 500000
    assert parse_datetime("2026-11-21T23:43:43.123456789Z").microsecond == 123456
