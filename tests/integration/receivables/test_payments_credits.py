"""Payments, credit pools and invoice voiding (SQLite + PostgreSQL)."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from receivables_helpers import make_account, post_invoice, snapshot
from sqlalchemy import insert, select, update

from billing_core.adapters.tables import applications, credit_draws, credit_grants
from billing_core.domain.errors import (
    CurrencyMismatch,
    Duplicate,
    InsufficientBalance,
    InvalidAmount,
    InvalidState,
    NotFound,
    UnknownCurrency,
    ValidationError,
)
from billing_core.service import credits, memos, payments
from billing_core.service.documents import find, void_invoice
from billing_core.service.receivables import open_balance_minor


def test_payment_oldest_first_leaves_the_rest_as_credit(uow, account):
    late = post_invoice(uow, account, 3000, due=date(2026, 2, 1))
    later = post_invoice(uow, account, 5000, due=date(2026, 3, 1))
    dm = memos.create_debit_memo(uow, account, "10", "fee")
    memos.activate_debit_memo(uow, dm, issue_date=date(2025, 12, 1))   # due 2025-12-31: first
    uow.touched_accounts.clear()
    pid = payments.record_payment(uow, account, "70.00", reference="WIRE-1",
                                  received_on="2026-03-10", method="wire")
    assert account in uow.touched_accounts
    assert open_balance_minor(uow.conn, account) == 9000 - 7000
    view = payments.apply_payment(uow, pid)
    assert [(a["target_type"], a["amount_minor"]) for a in view["applications"]] == [
        ("debit_memo", 1000), ("invoice", 3000), ("invoice", 3000)]
    assert find(uow.conn, "invoice", late)["status"] == "paid"
    assert find(uow.conn, "invoice", later)["status"] == "partially_paid"
    assert find(uow.conn, "debit_memo", dm)["status"] == "paid"
    assert open_balance_minor(uow.conn, account) == 2000
    # more than is owed: the remainder stays on the payment and is applied later
    second = payments.record_payment(uow, account, "30", reference="WIRE-2", auto_apply=True)
    assert payments.payment_view(uow.conn, second)["balance_minor"] == 1000
    assert open_balance_minor(uow.conn, account) == -1000
    fresh = post_invoice(uow, account, 400)
    view = payments.apply_payment(uow, "WIRE-2", [{"target": f"invoice:{fresh}",
                                                   "amount": "4"}])
    assert view["balance_minor"] == 600
    assert find(uow.conn, "invoice", fresh)["status"] == "paid"
    assert open_balance_minor(uow.conn, account) == -600
    assert [p["reference"] for p in payments.list_payments(uow.conn, account)] == [
        "WIRE-1", "WIRE-2"]
    view = payments.unapply_payment(uow, second, target=f"invoice:{fresh}")
    assert view["balance_minor"] == 1000
    assert find(uow.conn, "invoice", fresh)["status"] == "posted"


def test_bad_payments_name_the_field_and_write_nothing(uow, account):
    payments.record_payment(uow, account, "1", reference="DUP")
    inv = post_invoice(uow, account, 500)
    cases = [
        ({"amount": "-1"}, InvalidAmount, "amount"),
        ({"amount": "x"}, InvalidAmount, "amount"),
        ({"amount": "1.234"}, InvalidAmount, "amount"),
        ({"currency": "ABC"}, UnknownCurrency, "currency"),
        ({"currency": "GBP"}, CurrencyMismatch, "currency"),
        ({"reference": "DUP"}, Duplicate, "reference"),
        ({"reference": ""}, ValidationError, "reference"),
        ({"received_on": "yesterday"}, ValidationError, "received_on"),
    ]
    for override, error, field in cases:
        args = {"amount": "5", "reference": "NEW", "currency": None, "received_on": None,
                **override}
        before = snapshot(uow.conn)
        with pytest.raises(error) as info:
            payments.record_payment(uow, account, args.pop("amount"), **args)
        assert info.value.field == field, override
        assert snapshot(uow.conn) == before
    before = snapshot(uow.conn)
    with pytest.raises(InsufficientBalance):
        payments.apply_payment(uow, "DUP", [{"target": f"invoice:{inv}", "amount": "2"}])
    with pytest.raises(NotFound):
        payments.apply_payment(uow, 999)
    with pytest.raises(InvalidState):
        payments.unapply_payment(uow, "DUP")
    assert snapshot(uow.conn) == before
    # the reference is unique per account: another account may use it
    other = make_account(uow, "ACC2")
    payments.record_payment(uow, account, "1", reference="SAME")
    payments.record_payment(uow, other, "1", reference="SAME")
    with pytest.raises(ValidationError):
        payments.find_payment(uow.conn, "SAME")
    assert payments.find_payment(uow.conn, "SAME", account_id=other)["account_id"] == other


def test_void_invoice_only_while_nothing_is_applied(uow, account):
    inv = post_invoice(uow, account, 1000)
    pid = payments.record_payment(uow, account, "1", reference="P")
    payments.apply_payment(uow, pid)
    before = snapshot(uow.conn)
    with pytest.raises(InvalidState) as info:
        void_invoice(uow, inv)
    assert info.value.field == "invoice"
    assert snapshot(uow.conn) == before
    payments.unapply_payment(uow, pid)
    # the invoice drew 4.00 of prepaid credit: voiding it gives the credit back
    grant = credits.grant_credits(uow, account, "10", reason="prepaid",
                                  expires_on=date(2099, 1, 1))
    uow.conn.execute(update(credit_grants).where(credit_grants.c.id == grant)
                     .values(remaining_minor=600))
    uow.conn.execute(insert(credit_draws).values(grant_id=grant, invoice_id=inv, kind="usage",
                                                 amount_minor=400, created_at=uow.now()))
    assert void_invoice(uow, "TINV-000001")["status"] == "void"
    returned = [g for g in credits.list_grants(uow.conn, account) if g["kind"] == "void_return"]
    assert [(g["amount_minor"], g["remaining_minor"], g["expires_on"]) for g in returned] == [
        (400, 400, date(2099, 1, 1))]
    assert credits.pool_balance_minor(uow.conn, account, date(2026, 1, 1)) == 1000
    assert open_balance_minor(uow.conn, account) == -100
    with pytest.raises(InvalidState):
        void_invoice(uow, inv)


def test_credit_pool_conversions(uow, account):
    grant = credits.grant_credits(uow, account, "100", kind="granted", source="referral",
                                  reason="referred ACME", expires_on=date(2099, 1, 1))
    assert credits.pool_balance_minor(uow.conn, account, date(2026, 1, 1)) == 10000
    memo = credits.convert_grant_to_memo(uow, grant, "30")
    assert (memo["status"], memo["number"], memo["amount_minor"], memo["origin"],
            memo["origin_grant_id"]) == ("active", "CM-000001", 3000, "credit_conversion", grant)
    assert credits.get_grant(uow.conn, grant)["remaining_minor"] == 7000
    draw = uow.conn.execute(select(credit_draws)).mappings().one()
    assert (draw["kind"], draw["amount_minor"], draw["credit_memo_id"]) == (
        "conversion", 3000, memo["id"])
    assert open_balance_minor(uow.conn, account) == -3000
    # a conversion memo goes back to the pool, it is not cancelled
    with pytest.raises(InvalidState):
        memos.cancel_credit_memo(uow, memo["id"])
    inv = post_invoice(uow, account, 1000)
    memos.apply_credit_memo(uow, memo["id"], [{"target": f"invoice:{inv}", "amount": "10"}])
    back = credits.convert_memo_to_credits(uow, memo["number"], "15")
    assert (back["kind"], back["amount_minor"], back["remaining_minor"],
            back["origin_credit_memo_id"]) == ("memo_return", 1500, 1500, memo["id"])
    view = memos.credit_memo_view(uow.conn, memo["id"])
    assert (view["status"], view["applied_minor"], view["balance_minor"]) == (
        "partially_applied", 2500, 500)
    pool_app = uow.conn.execute(select(applications).where(
        applications.c.target_type == "credit_grant")).mappings().one()
    assert (pool_app["source_id"], pool_app["target_id"], pool_app["amount_minor"]) == (
        memo["id"], back["id"], 1500)
    assert open_balance_minor(uow.conn, account) == -500
    # unapply gives back the invoice application only; the pool return is final
    view = memos.unapply_credit_memo(uow, memo["id"])
    assert (view["status"], view["applied_minor"]) == ("partially_applied", 1500)
    rest = credits.convert_memo_to_credits(uow, memo["id"])
    assert rest["amount_minor"] == 1500
    assert memos.credit_memo_view(uow.conn, memo["id"])["status"] == "applied"
    kinds = [g["kind"] for g in credits.list_grants(uow.conn, account)]
    assert kinds == ["granted", "memo_return", "memo_return"]   # expiring first


def test_bad_pool_operations_write_nothing(uow, account):
    grant = credits.grant_credits(uow, account, "10", reason="r")
    memo = memos.create_credit_memo(uow, account, "5", "r")
    cases = [
        (lambda: credits.grant_credits(uow, account, "-1", reason="r"), InvalidAmount, "amount"),
        (lambda: credits.grant_credits(uow, account, "1", kind="free", reason="r"),
         ValidationError, "kind"),
        (lambda: credits.grant_credits(uow, account, "1", reason=""), ValidationError, "reason"),
        (lambda: credits.grant_credits(uow, account, "1", reason="r",
                                       expires_on=date(2000, 1, 1)),
         ValidationError, "expires_on"),
        (lambda: credits.convert_grant_to_memo(uow, grant, "10.01"),
         InsufficientBalance, "amount"),
        (lambda: credits.convert_grant_to_memo(uow, 404), NotFound, "grant"),
        (lambda: credits.convert_memo_to_credits(uow, memo), InvalidState, "credit_memo"),
    ]
    for call, error, field in cases:
        before = snapshot(uow.conn)
        with pytest.raises(error) as info:
            call()
        assert info.value.field == field
        assert snapshot(uow.conn) == before
    memos.activate_credit_memo(uow, memo)
    with pytest.raises(InsufficientBalance):
        credits.convert_memo_to_credits(uow, memo, "5.01")
    expiring = credits.grant_credits(uow, account, "3", reason="r",
                                     expires_on=uow.now().date())
    later = uow.now() + timedelta(days=1)
    uow.clock = lambda: later
    with pytest.raises(InvalidState) as info:
        credits.convert_grant_to_memo(uow, expiring)
    assert (info.value.field, "expired" in str(info.value)) == ("grant", True)
    credits.convert_grant_to_memo(uow, grant)
    with pytest.raises(InsufficientBalance):
        credits.convert_grant_to_memo(uow, grant)
