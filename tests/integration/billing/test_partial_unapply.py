"""A credit memo partly taken back, and a dated debit memo (issue 14, item 7), on SQLite and
PostgreSQL, through the service functions the CLI and the API call.

Figures: 5 seats at 20.00 USD, no tax: the March invoice is 100.00. A 60.00 credit memo is
applied in two steps, 40.00 then 20.00. Taking 30.00 back takes the newer 20.00 whole and
10.00 of the 40.00, which is reversed and re-applied as 30.00: the memo keeps 30.00 applied,
the invoice 70.00 open.
"""
from __future__ import annotations

from datetime import date

import pytest

from billing_core.domain.errors import InsufficientBalance, InvalidAmount, ValidationError
from billing_core.service import memos
from billing_core.service.applications import live_applications
from billing_core.service.invoices import invoice_view

MAR1 = date(2027, 3, 1)


def _invoice(ledger) -> tuple[int, int]:
    acc = ledger.account()
    ledger.subscribe(acc, ledger.product("20.00"), 5, MAR1)
    ledger.run(MAR1)
    [inv] = ledger.invoices(acc)
    assert inv["total_minor"] == 10000
    return acc, int(inv["id"])


def test_part_of_a_credit_memo_comes_back_from_the_newest_applications(ledger) -> None:
    acc, inv = _invoice(ledger)
    with ledger.uow() as uow:
        memo = memos.create_credit_memo(uow, acc, "60.00", "goodwill", activate=True)
        memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "40.00"}])
        memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "20.00"}])
        uow.commit()
    with ledger.uow() as uow:
        for amount, error in (("60.01", InsufficientBalance), ("0", InvalidAmount),
                              ("1.001", InvalidAmount)):
            with pytest.raises(error) as info:
                memos.unapply_credit_memo(uow, memo, amount=amount)
            assert (info.value.field, info.value.value) == ("amount", amount)
        view = memos.unapply_credit_memo(uow, memo, target=f"invoice:{inv}", amount="30.00")
        uow.commit()
    assert (view["applied_minor"], view["status"]) == (3000, "partially_applied")
    assert [a["amount_minor"] for a in view["applications"]] == [3000]
    with ledger.uow() as uow:
        shown = invoice_view(uow.conn, inv)
        assert (shown["applied_minor"], shown["status"], str(shown["balance"])) == \
            (3000, "partially_paid", "70.00")
        assert len(live_applications(uow.conn, target_type="invoice", target_id=inv)) == 1
    with ledger.uow() as uow:       # the rest back: the memo is whole again, the invoice open
        view = memos.unapply_credit_memo(uow, memo, amount="30.00")
        uow.commit()
    assert (view["applied_minor"], view["status"], view["applications"]) == (0, "active", [])


def test_a_debit_memo_is_issued_on_its_date(ledger) -> None:
    """Dated 15 November 2026 at creation, activated later: issued then, due 30 days on."""
    acc = ledger.account()
    with ledger.uow() as uow:
        memo = memos.create_debit_memo(uow, acc, "12.00", "late fee",
                                       issue_date=date(2026, 11, 15))
        shown = memos.activate_debit_memo(uow, memo)
        with pytest.raises(ValidationError) as info:
            memos.create_debit_memo(uow, acc, "1.00", "r", issue_date=date(2999, 1, 1))
        assert (info.value.field, info.value.value) == ("issue_date", "2999-01-01")
        uow.commit()
    assert (shown["issue_date"], shown["due_date"]) == (date(2026, 11, 15), date(2026, 12, 15))
