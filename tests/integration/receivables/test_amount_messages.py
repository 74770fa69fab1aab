"""Refusals that name an amount say it in major units with the currency (issue 15, item 8).

Regression: ``credit-memos cancel`` said "is partially_applied with 3000 applied" for 30.00 USD,
``debit-memos cancel`` "with 2500 paid", and converting too much of a memo back to credits
"exceeds the memo's unapplied 5900" (minor units, no currency)."""
from __future__ import annotations

import pytest
from receivables_helpers import post_invoice

from billing_core.domain.errors import InsufficientBalance, InvalidState
from billing_core.service import credits, memos


def test_cancelling_an_applied_credit_memo_names_the_amount_in_usd(uow, account):
    inv = post_invoice(uow, account, 10000)
    memo = memos.create_credit_memo(uow, account, "60.00", "r", activate=True)
    memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "30.00"}])
    with pytest.raises(InvalidState) as info:
        memos.cancel_credit_memo(uow, memo)
    assert "with 30.00 USD applied" in str(info.value)


def test_cancelling_a_paid_debit_memo_names_the_amount_in_usd(uow, account):
    debit = memos.create_debit_memo(uow, account, "40.00", "late fee")
    memos.activate_debit_memo(uow, debit)
    memo = memos.create_credit_memo(uow, account, "25.00", "r", activate=True)
    memos.apply_credit_memo(uow, memo, [{"target": f"debit_memo:{debit}", "amount": "25.00"}])
    with pytest.raises(InvalidState) as info:
        memos.cancel_debit_memo(uow, debit)
    assert "with 25.00 USD paid" in str(info.value)


def test_converting_more_than_a_memo_holds_names_its_balance_in_usd(uow, account):
    inv = post_invoice(uow, account, 10000)
    memo = memos.create_credit_memo(uow, account, "60.00", "r", activate=True)
    memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "1.00"}])
    with pytest.raises(InsufficientBalance) as info:
        credits.convert_memo_to_credits(uow, memo, "59.01")
    assert "exceeds the memo's unapplied 59.00 USD" in str(info.value)
