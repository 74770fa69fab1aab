"""Credit and debit memo lifecycles, their batch forms and their refusals (SQLite + PostgreSQL)."""
from __future__ import annotations

from datetime import date

import pytest
from receivables_helpers import make_account, post_invoice, snapshot

from billing_core.domain.errors import (
    CurrencyMismatch,
    InsufficientBalance,
    InvalidAmount,
    InvalidState,
    NotFound,
    RuleViolation,
    UnknownCurrency,
    ValidationError,
)
from billing_core.service import memos
from billing_core.service.documents import find, void_invoice
from billing_core.service.receivables import open_balance_minor


def test_credit_memo_lifecycle(uow, account):
    inv = post_invoice(uow, account, 10000)
    memo = memos.create_credit_memo(uow, account, "60.00", "goodwill")
    assert find(uow.conn, "credit_memo", memo)["status"] == "draft"
    assert open_balance_minor(uow.conn, account) == 10000      # a draft counts for nothing
    uow.touched_accounts.clear()
    view = memos.activate_credit_memo(uow, memo)
    assert (view["status"], view["number"]) == ("active", "CM-000001")
    assert account in uow.touched_accounts
    assert open_balance_minor(uow.conn, account) == 4000
    view = memos.apply_credit_memo(uow, "CM-000001", [{"target": f"invoice:{inv}",
                                                      "amount": "25.00"}])
    assert (view["status"], view["applied_minor"], view["balance_minor"]) == (
        "partially_applied", 2500, 3500)
    assert find(uow.conn, "invoice", inv)["status"] == "partially_paid"
    view = memos.apply_credit_memo(uow, memo, [{"target": "TINV-000001", "amount": "35"}])
    assert view["status"] == "applied"
    assert find(uow.conn, "invoice", inv)["applied_minor"] == 6000
    assert open_balance_minor(uow.conn, account) == 4000      # applying moves nothing net
    view = memos.unapply_credit_memo(uow, memo)
    assert (view["status"], view["applied_minor"], view["applications"]) == ("active", 0, [])
    invoice = find(uow.conn, "invoice", inv)
    assert (invoice["status"], invoice["applied_minor"]) == ("posted", 0)
    assert memos.cancel_credit_memo(uow, memo)["status"] == "cancelled"
    assert open_balance_minor(uow.conn, account) == 10000


def test_memo_pays_an_invoice_in_full_and_unapply_by_target(uow, account):
    inv1 = post_invoice(uow, account, 1000)
    inv2 = post_invoice(uow, account, 2000)
    memo = memos.create_credit_memo(uow, account, "30", "refund", activate=True)
    # applied in (type, id) order, but an error still names the item as the caller gave it
    with pytest.raises(InsufficientBalance) as info:
        memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv2}", "amount": "20"},
                                            {"target": f"invoice:{inv1}", "amount": "10.01"}])
    assert info.value.field == "applications[1].amount"
    memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv1}", "amount": "10"},
                                        {"target": f"invoice:{inv2}", "amount": "20"}])
    assert find(uow.conn, "invoice", inv1)["status"] == "paid"
    view = memos.unapply_credit_memo(uow, memo, target=f"invoice:{inv2}")
    assert (view["status"], view["applied_minor"]) == ("partially_applied", 1000)
    assert find(uow.conn, "invoice", inv2)["status"] == "posted"
    assert find(uow.conn, "invoice", inv1)["status"] == "paid"


def test_credit_memo_applies_to_a_debit_memo(uow, account):
    dm = memos.create_debit_memo(uow, account, "15.00", "late fee")
    memos.activate_debit_memo(uow, dm, issue_date=date(2026, 3, 1))
    memo = memos.create_credit_memo(uow, account, "15.00", "waive fee", activate=True)
    memos.apply_credit_memo(uow, memo, [{"target": "DM-000001", "amount": "15.00"}])
    assert find(uow.conn, "debit_memo", dm)["status"] == "paid"
    with pytest.raises(InvalidState) as info:
        memos.cancel_debit_memo(uow, dm)
    assert info.value.field == "debit_memo"


def test_debit_memo_lifecycle(uow):
    account = make_account(uow, terms=14)
    dm = memos.create_debit_memo(uow, account, "99.99", "shipping")
    assert open_balance_minor(uow.conn, account) == 0
    view = memos.activate_debit_memo(uow, dm, issue_date=date(2026, 3, 1))
    assert (view["number"], view["status"], view["issue_date"], view["due_date"]) == (
        "DM-000001", "active", date(2026, 3, 1), date(2026, 3, 15))
    assert open_balance_minor(uow.conn, account) == 9999
    with pytest.raises(InvalidState):
        memos.activate_debit_memo(uow, dm)
    assert memos.cancel_debit_memo(uow, dm)["status"] == "cancelled"
    assert open_balance_minor(uow.conn, account) == 0
    with pytest.raises(InvalidState):
        memos.cancel_debit_memo(uow, dm)


def test_issue_credit_memo_for_the_bill_run_and_numbering_at_activation(uow, account):
    a = memos.create_credit_memo(uow, account, "1", "a")
    b = memos.create_credit_memo(uow, account, "1", "b")
    assert memos.activate_credit_memo(uow, b)["number"] == "CM-000001"
    assert memos.activate_credit_memo(uow, a)["number"] == "CM-000002"
    inv = post_invoice(uow, account, 0)
    memo = memos.issue_credit_memo(uow, account, 1234, "negative remainder",
                                   origin="invoice_overflow", origin_invoice_id=inv,
                                   activate=True)
    row = find(uow.conn, "credit_memo", memo)
    assert (row["status"], row["amount_minor"], row["origin"], row["origin_invoice_id"],
            row["currency"], row["number"]) == ("active", 1234, "invoice_overflow", inv, "USD",
                                                "CM-000003")
    with pytest.raises(ValidationError) as info:
        memos.issue_credit_memo(uow, account, 0, "zero")
    assert info.value.field == "amount_minor"


BAD_CREATE = [
    ({"amount": "-1"}, InvalidAmount, "amount"),
    ({"amount": "0"}, InvalidAmount, "amount"),
    ({"amount": "abc"}, InvalidAmount, "amount"),
    ({"amount": "1.001"}, InvalidAmount, "amount"),
    ({"amount": 1.5}, InvalidAmount, "amount"),
    ({"amount": "1e20"}, InvalidAmount, "amount"),     # more than a 64-bit column holds
    ({"amount": "1e30"}, InvalidAmount, "amount"),     # beyond Decimal's precision
    ({"currency": "XXX"}, UnknownCurrency, "currency"),
    ({"currency": "EUR"}, CurrencyMismatch, "currency"),
    ({"reason": " "}, ValidationError, "reason"),
]


def test_bad_memo_input_names_the_field_and_writes_nothing(uow, account):
    for kind in ("credit", "debit"):
        create = memos.create_credit_memo if kind == "credit" else memos.create_debit_memo
        for override, error, field in BAD_CREATE:
            args = {"amount": "10.00", "reason": "r", "currency": None, **override}
            before = snapshot(uow.conn)
            with pytest.raises(error) as info:
                create(uow, account, args["amount"], args["reason"], currency=args["currency"])
            assert info.value.field == field, (kind, override)
            assert snapshot(uow.conn) == before


def test_unknown_ids_are_not_found(uow, account):
    for call in (lambda: memos.activate_credit_memo(uow, 999),
                 lambda: memos.cancel_credit_memo(uow, "CM-999999"),
                 lambda: memos.activate_debit_memo(uow, 42),
                 lambda: memos.create_credit_memo(uow, 999, "1", "r"),
                 lambda: void_invoice(uow, "INV-404")):
        with pytest.raises(NotFound):
            call()


def _setup(uow, account):
    inv = post_invoice(uow, account, 5000)
    memo = memos.create_credit_memo(uow, account, "80", "r", activate=True)
    return account, inv, memo


BAD_APPLICATIONS = ["over_memo", "over_invoice", "void", "draft_target", "other_account",
                    "other_currency", "bad_amount", "draft_memo", "unknown_target",
                    "half_bad_list"]


def test_bad_applications_write_nothing(uow):
    for n, case in enumerate(BAD_APPLICATIONS):
        account, inv, memo = _setup(uow, make_account(uow, f"A{n}"))
        targets = [{"target": f"invoice:{inv}", "amount": "10"}]
        expected: tuple[type[Exception], str] = (InsufficientBalance, "applications[0].amount")
        if case == "over_memo":
            big = post_invoice(uow, account, 100000)
            targets = [{"target": f"invoice:{big}", "amount": "80.01"}]
        elif case == "over_invoice":
            targets = [{"target": f"invoice:{inv}", "amount": "50.01"}]
        elif case == "void":
            void_invoice(uow, inv)
            expected = (InvalidState, "target")
        elif case == "draft_target":
            draft = post_invoice(uow, account, 100, status="draft")
            targets = [{"target": f"invoice:{draft}", "amount": "1"}]
            expected = (InvalidState, "target")
        elif case == "other_account":
            other = make_account(uow, f"OTHER{n}")
            targets = [{"target": f"invoice:{post_invoice(uow, other, 5000)}", "amount": "1"}]
            expected = (RuleViolation, "target")
        elif case == "other_currency":
            targets = [{"target": f"invoice:{post_invoice(uow, account, 5000, currency='EUR')}",
                        "amount": "1"}]
            expected = (CurrencyMismatch, "target")
        elif case == "bad_amount":
            targets = [{"target": f"invoice:{inv}", "amount": "-3"}]
            expected = (InvalidAmount, "applications[0].amount")
        elif case == "draft_memo":
            memo = memos.create_credit_memo(uow, account, "5", "r")
            expected = (InvalidState, "credit_memo")
        elif case == "unknown_target":
            targets = [{"target": "invoice:9999", "amount": "1"}]
            expected = (NotFound, "applications[0].target")
        elif case == "half_bad_list":
            targets = [{"target": f"invoice:{inv}", "amount": "10"},
                       {"target": f"invoice:{inv}", "amount": "45"}]
            expected = (InsufficientBalance, "applications[1].amount")
        before = snapshot(uow.conn)
        with pytest.raises(expected[0]) as info:
            memos.apply_credit_memo(uow, memo, targets)
        assert info.value.field == expected[1], case
        assert snapshot(uow.conn) == before, case


def test_cancel_refuses_an_applied_memo(uow, account):
    account, inv, memo = _setup(uow, account)
    memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "1"}])
    before = snapshot(uow.conn)
    with pytest.raises(InvalidState) as info:
        memos.cancel_credit_memo(uow, memo)
    assert info.value.field == "credit_memo"
    assert snapshot(uow.conn) == before
    with pytest.raises(InvalidState):
        memos.unapply_credit_memo(uow, memo, target=f"invoice:{post_invoice(uow, account, 5)}")


def test_batch_forms_answer_per_item_and_never_half_apply(uow, account):
    account, inv, memo = _setup(uow, account)
    other = memos.create_credit_memo(uow, account, "10", "r", activate=True)
    results = memos.apply_credit_memos(uow, [
        {"credit_memo": memo, "applications": [{"target": f"invoice:{inv}", "amount": "20"}]},
        # the second application of this item overdraws: the whole item must not apply
        {"credit_memo": other, "applications": [{"target": f"invoice:{inv}", "amount": "5"},
                                                {"target": f"invoice:{inv}", "amount": "6"}]},
        {"credit_memo": "CM-000404", "applications": [{"target": f"invoice:{inv}",
                                                       "amount": "1"}]},
        {"applications": []},
    ])
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert results[1]["error"]["code"] == "insufficient_balance"
    assert results[2]["error"] == {"code": "not_found", "field": "credit_memo",
                                   "value": "CM-000404",
                                   "message": "credit_memo='CM-000404': does not exist"}
    assert results[3]["error"]["field"] == "credit_memo"
    assert find(uow.conn, "credit_memo", other)["applied_minor"] == 0
    assert find(uow.conn, "invoice", inv)["applied_minor"] == 2000

    assert [r["ok"] for r in memos.unapply_credit_memos(uow, [memo, other])] == [True, False]
    drafts = [memos.create_credit_memo(uow, account, "1", "r") for _ in range(2)]
    results = memos.activate_credit_memos(uow, [drafts[0], memo, drafts[1]])
    assert [r["ok"] for r in results] == [True, False, True]
    assert [r["result"]["number"] for r in results if r["ok"]] == ["CM-000003", "CM-000004"]
    assert [r["ok"] for r in memos.cancel_credit_memos(uow, [{"credit_memo": drafts[0]}, 999])
            ] == [True, False]
    dms = [memos.create_debit_memo(uow, account, "2", "fee") for _ in range(2)]
    assert [r["ok"] for r in memos.activate_debit_memos(uow, [dms[0], 555])] == [True, False]
    assert [r["ok"] for r in memos.cancel_debit_memos(uow, dms)] == [True, True]


def test_cancel_refusals_name_the_memo_and_what_holds_it(uow, account):
    """Each memo kind refuses a cancel while something is applied to it (naming the amount),
    once it is cancelled, and a credit memo that came from the credit pool; nothing changes."""
    from billing_core.service import credits

    account, inv, memo = _setup(uow, account)
    memos.apply_credit_memo(uow, memo, [{"target": f"invoice:{inv}", "amount": "12.34"}])
    grant = credits.grant_credits(uow, account, "40", kind="granted", source="referral",
                                  reason="r", expires_on=date(2099, 1, 1))
    pooled = credits.convert_grant_to_memo(uow, grant, "15")["id"]
    dm = memos.create_debit_memo(uow, account, "20", "shipping")
    memos.activate_debit_memo(uow, dm)
    memos.apply_credit_memo(uow, memos.create_credit_memo(uow, account, "5", "r", activate=True),
                            [{"target": f"debit_memo:{dm}", "amount": "5"}])
    gone = memos.create_debit_memo(uow, account, "3", "r")
    memos.cancel_debit_memo(uow, gone)
    cases = [
        (lambda: memos.cancel_credit_memo(uow, memo), "credit_memo",
         "is partially_applied with 12.34 USD applied: only an unapplied memo is cancelled"),
        (lambda: memos.cancel_credit_memo(uow, pooled), "credit_memo",
         "came from the credit pool: convert it back to credits instead of cancelling it"),
        (lambda: memos.cancel_debit_memo(uow, dm), "debit_memo",
         "is partially_paid with 5.00 USD paid: only an unpaid memo is cancelled"),
        (lambda: memos.cancel_debit_memo(uow, gone), "debit_memo",
         "is cancelled with 0.00 USD paid: only an unpaid memo is cancelled"),
    ]
    for call, field, message in cases:
        before = snapshot(uow.conn)
        with pytest.raises(InvalidState) as info:
            call()
        assert info.value.field == field and message in str(info.value), str(info.value)
        assert snapshot(uow.conn) == before, message
