"""Memo and payment lists page in SQL (keyset: ``after_id``, ``limit``) instead of loading
every matching row and slicing in memory; the API's cursors walk them through."""
from __future__ import annotations

from billing_core.service import memos, payments


def test_payments_and_memos_are_read_one_keyset_page_at_a_time(uow, account):
    paid = [payments.record_payment(uow, account, f"{i}.00", reference=f"P{i}")
            for i in range(1, 6)]
    credit = [memos.create_credit_memo(uow, account, f"{i}.00", "goodwill") for i in range(1, 6)]
    debit = [memos.create_debit_memo(uow, account, f"{i}.00", "fee") for i in range(1, 6)]
    conn = uow.conn
    for listing, ids in ((payments.list_payments, paid), (memos.list_credit_memos, credit),
                         (memos.list_debit_memos, debit)):
        first = listing(conn, account, limit=2)
        assert [d["id"] for d in first] == ids[:2]
        rest = listing(conn, account, after_id=first[-1]["id"], limit=10)
        assert [d["id"] for d in rest] == ids[2:]
        assert listing(conn, account, after_id=ids[-1]) == []
        assert [d["id"] for d in listing(conn, account)] == ids      # no limit: all of them
