"""Pure rules of the receivables modules (no database)."""
from __future__ import annotations

import pytest

from billing_core.domain.errors import InvalidAmount, ValidationError
from billing_core.domain.money import MAX_MINOR, from_minor
from billing_core.service.documents import parse_money, settled_status
from billing_core.service.receivables import _bucket
from jobs.cli.receivables import _money, _pairs


@pytest.mark.parametrize("doc_type,applied,amount,status", [
    ("invoice", 0, 100, "posted"), ("invoice", 1, 100, "partially_paid"),
    ("invoice", 100, 100, "paid"), ("debit_memo", 0, 5, "active"),
    ("debit_memo", 4, 5, "partially_paid"), ("debit_memo", 5, 5, "paid"),
    ("credit_memo", 0, 5, "active"), ("credit_memo", 2, 5, "partially_applied"),
    ("credit_memo", 5, 5, "applied"),
])
def test_status_follows_the_applied_amount(doc_type, applied, amount, status):
    assert settled_status(doc_type, applied, amount) == status


@pytest.mark.parametrize("days,bucket", [
    (-5, "current"), (0, "current"), (1, "d1_30"), (30, "d1_30"), (31, "d31_60"),
    (60, "d31_60"), (61, "d61_90"), (90, "d61_90"), (91, "over_90"), (4000, "over_90"),
])
def test_aging_bucket_edges(days, bucket):
    assert _bucket(days) == bucket


def test_parse_money_refuses_what_cannot_be_stored():
    assert parse_money("12.34", "USD") == 1234
    assert parse_money("7", "JPY") == 7
    assert parse_money("1.234", "BHD") == 1234
    for value in ("1e30", str(from_minor(MAX_MINOR + 1, "USD"))):
        with pytest.raises(InvalidAmount) as info:
            parse_money(value, "USD", "applications[0].amount")
        assert info.value.field == "applications[0].amount"


def test_cli_pairs_and_money_display():
    assert _pairs(["INV-000001=10.00", "debit_memo:7=5"], "--to") == [
        {"target": "INV-000001", "amount": "10.00"}, {"target": "debit_memo:7", "amount": "5"}]
    with pytest.raises(ValidationError) as info:
        _pairs(["INV-000001"], "--to")
    assert (info.value.field, info.value.value) == ("--to", "INV-000001")
    shown = _money({"currency": "JPY", "total_minor": 500, "credit_limit_minor": None,
                    "applications": []})
    assert (str(shown["total"]), str(shown["amount"]), shown["credit_limit"]) == (
        "500", "500", None)
    assert "applications" not in shown
