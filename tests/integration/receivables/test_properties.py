"""Property-based: random sequences of receivables operations keep the ledger's invariants.

After every step: no balance below zero, applied never above the amount, every stored
``applied_minor`` equals its live applications, statuses follow the amounts, pools are never
negative and equal amount − draws, and the account's open balance equals the sum of its documents
recomputed from scratch. A step that fails changed nothing (a snapshot of every table).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from receivables_helpers import make_account, post_invoice, snapshot
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    invoices,
)
from billing_core.domain.errors import LedgerError
from billing_core.service import credits, memos
from billing_core.service import payments as pay
from billing_core.service.documents import balance, find, settled_status, void_invoice
from billing_core.service.receivables import open_balance_minor

GOOD = st.integers(1, 30000).map(lambda m: f"{m // 100}.{m % 100:02d}")
AMOUNT = st.one_of(GOOD, GOOD, GOOD, st.sampled_from(["-1", "0", "abc", "1.001", "1e20"]))
MOSTLY = st.integers(0, 3).map(lambda n: n > 0)   # True three times in four
PICK = st.integers(0, 50)
# An application amount: a share (percent) of what source and target can take, or any amount.
SHARE = st.one_of(st.integers(1, 100).map(lambda p: ("share", p)), AMOUNT)


def _pick(ids: list[int], i: int) -> int:
    return ids[i % len(ids)] if ids else 10**6   # an unknown id when there is none yet


def rows(conn, source: str):
    """Rows as mappings through plain driver SQL (checked at every step: kept cheap)."""
    return conn.exec_driver_sql(f"SELECT * FROM {source}").mappings()


def make_machine(engine):
    class Receivables(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.unit = UnitOfWork(engine)
            self.uow = self.unit.__enter__()
            self.account = make_account(self.uow, "PROP")
            self.other = make_account(self.uow, "OTHER")
            self.ids: dict[str, list[int]] = defaultdict(list)
            self.refs = 0

        def teardown(self) -> None:
            self.unit.__exit__(None, None, None)   # rolls back: the next example starts empty

        def attempt(self, fn):
            before = snapshot(self.uow.conn)
            try:
                return fn()
            except LedgerError:
                assert snapshot(self.uow.conn) == before, "a failed operation wrote something"
                return None

        def target(self, i: int) -> str:
            refs = [f"invoice:{n}" for n in self.ids["invoice"]] + [
                f"debit_memo:{n}" for n in self.ids["debit_memo"]]
            return refs[i % len(refs)] if refs else "invoice:999999"

        def amount(self, spec, source_type: str, source_id: int, target: str) -> str:
            if not isinstance(spec, tuple):
                return spec
            kind, _, ident = target.partition(":")
            try:
                room = min(balance(find(self.uow.conn, source_type, source_id), source_type),
                           balance(find(self.uow.conn, kind, ident), kind))
            except LedgerError:
                room = 100
            minor = max(1, room * spec[1] // 100)
            return f"{minor // 100}.{minor % 100:02d}"

        @initialize(totals=st.lists(st.integers(1, 40000), min_size=1, max_size=3),
                    memo=GOOD, debit=GOOD, paid=GOOD, granted=GOOD)
        def baseline(self, totals, memo, debit, paid, granted):
            """Something of every kind, so the random steps have documents to work on."""
            for total in totals:
                self.ids["invoice"].append(post_invoice(self.uow, self.account, total))
            self.ids["invoice"].append(post_invoice(self.uow, self.other, 1000))
            self.ids["credit_memo"].append(memos.create_credit_memo(
                self.uow, self.account, memo, "r", activate=True))
            dm = memos.create_debit_memo(self.uow, self.account, debit, "r")
            memos.activate_debit_memo(self.uow, dm, issue_date=date(2026, 1, 1))
            self.ids["debit_memo"].append(dm)
            self.ids["payment"].append(pay.record_payment(self.uow, self.account, paid,
                                                          reference="BASE"))
            self.ids["grant"].append(credits.grant_credits(self.uow, self.account, granted,
                                                           reason="r"))

        @rule(total=st.integers(0, 40000), other=st.booleans())
        def post(self, total, other):
            account = self.other if other and total % 5 == 0 else self.account
            self.ids["invoice"].append(post_invoice(self.uow, account, total))

        @rule(amount=GOOD, activate=MOSTLY, bad=st.integers(0, 9),
              then=st.one_of(st.none(), st.tuples(PICK, SHARE)))
        def credit_memo(self, amount, activate, bad, then):
            amount = amount if bad else "-0.5"
            memo = self.attempt(lambda: memos.create_credit_memo(
                self.uow, self.account, amount, "r", activate=activate))
            if memo:
                self.ids["credit_memo"].append(memo)
                if then is not None:   # and apply it at once, as finance usually does
                    target = self.target(then[0])
                    self.attempt(lambda: memos.apply_credit_memo(self.uow, memo, [{
                        "target": target,
                        "amount": self.amount(then[1], "credit_memo", memo, target)}]))

        @rule(amount=GOOD, activate=MOSTLY, bad=st.integers(0, 9))
        def debit_memo(self, amount, activate, bad):
            amount = amount if bad else "1.234"
            memo = self.attempt(lambda: memos.create_debit_memo(self.uow, self.account, amount, "r"))
            if memo:
                self.ids["debit_memo"].append(memo)
                if activate:
                    memos.activate_debit_memo(self.uow, memo, issue_date=date(2026, 1, 1))

        @precondition(lambda self: self.ids["credit_memo"])
        @rule(i=PICK)
        def activate_memo(self, i):
            self.attempt(lambda: memos.activate_credit_memo(self.uow,
                                                            _pick(self.ids["credit_memo"], i)))

        @precondition(lambda self: self.ids["credit_memo"])
        @rule(i=PICK, t=PICK, amount=SHARE, t2=PICK, amount2=SHARE, two=st.booleans())
        def apply_memo(self, i, t, amount, t2, amount2, two):
            memo = _pick(self.ids["credit_memo"], i)
            targets = [{"target": self.target(t),
                        "amount": self.amount(amount, "credit_memo", memo, self.target(t))}]
            if two:
                targets.append({"target": self.target(t2), "amount": self.amount(
                    amount2, "credit_memo", memo, self.target(t2))})
            self.attempt(lambda: memos.apply_credit_memo(self.uow, memo, targets))

        @precondition(lambda self: self.ids["credit_memo"])
        @rule(i=PICK)
        def unapply_memo(self, i):
            self.attempt(lambda: memos.unapply_credit_memo(self.uow,
                                                           _pick(self.ids["credit_memo"], i)))

        @rule(i=PICK, debit=st.booleans())
        def cancel(self, i, debit):
            kind = "debit_memo" if debit else "credit_memo"
            fn = memos.cancel_debit_memo if debit else memos.cancel_credit_memo
            self.attempt(lambda: fn(self.uow, _pick(self.ids[kind], i)))

        @rule(amount=AMOUNT, dup=st.integers(0, 5).map(lambda n: n == 0), auto=st.booleans())
        def record_payment(self, amount, dup, auto):
            if not dup:
                self.refs += 1
            pid = self.attempt(lambda: pay.record_payment(
                self.uow, self.account, amount, reference=f"R{self.refs}", auto_apply=auto))
            if pid:
                self.ids["payment"].append(pid)

        @precondition(lambda self: self.ids["payment"])
        @rule(i=PICK, t=PICK, amount=SHARE, named=st.booleans())
        def apply_payment(self, i, t, amount, named):
            pid = _pick(self.ids["payment"], i)
            targets = [{"target": self.target(t), "amount": self.amount(
                amount, "payment", pid, self.target(t))}] if named else None
            self.attempt(lambda: pay.apply_payment(self.uow, pid, targets))

        @precondition(lambda self: self.ids["payment"])
        @rule(i=PICK)
        def unapply_payment(self, i):
            self.attempt(lambda: pay.unapply_payment(self.uow, _pick(self.ids["payment"], i)))

        @rule(amount=AMOUNT)
        def grant(self, amount):
            gid = self.attempt(lambda: credits.grant_credits(self.uow, self.account, amount,
                                                             kind="granted", reason="r"))
            if gid:
                self.ids["grant"].append(gid)

        @precondition(lambda self: self.ids["grant"])
        @rule(i=PICK, amount=st.one_of(st.none(), AMOUNT))
        def grant_to_memo(self, i, amount):
            view = self.attempt(lambda: credits.convert_grant_to_memo(
                self.uow, _pick(self.ids["grant"], i), amount))
            if view:
                self.ids["credit_memo"].append(view["id"])

        @precondition(lambda self: self.ids["credit_memo"])
        @rule(i=PICK, amount=st.one_of(st.none(), AMOUNT))
        def memo_to_credits(self, i, amount):
            grant = self.attempt(lambda: credits.convert_memo_to_credits(
                self.uow, _pick(self.ids["credit_memo"], i), amount))
            if grant:
                self.ids["grant"].append(grant["id"])

        @precondition(lambda self: self.ids["invoice"])
        @rule(i=PICK)
        def void(self, i):
            self.attempt(lambda: void_invoice(self.uow, _pick(self.ids["invoice"], i)))

        @invariant()
        def ledger_is_consistent(self):
            conn = self.uow.conn
            live = defaultdict(int)
            for a in rows(conn, "applications WHERE reversed_at IS NULL"):
                live[(a["source_type"], a["source_id"])] += a["amount_minor"]
                live[(a["target_type"], a["target_id"])] += a["amount_minor"]
            expected = {self.account: 0, self.other: 0}
            for doc_type, table, sign, counted in (
                    ("invoice", "invoices", 1, ("posted", "partially_paid", "paid")),
                    ("debit_memo", "debit_memos", 1, ("active", "partially_paid", "paid")),
                    ("credit_memo", "credit_memos", -1, ("active", "partially_applied", "applied")),
                    ("payment", "payments", -1, None)):
                for d in rows(conn, table):
                    amount = d["total_minor"] if doc_type == "invoice" else d["amount_minor"]
                    applied = live[(doc_type, d["id"])]
                    assert 0 <= d["applied_minor"] <= amount
                    assert d["applied_minor"] == applied, (doc_type, d["id"])
                    status = d.get("status")
                    if status in ("draft", "void", "cancelled"):
                        assert applied == 0
                    elif status is not None:
                        assert status == settled_status(doc_type, applied, amount)
                    if counted is None or status in counted:
                        expected[d["account_id"]] += sign * (amount - applied)
            draws = defaultdict(int)
            for d in rows(conn, "credit_draws"):
                draws[d["grant_id"]] += d["amount_minor"]
            for g in rows(conn, "credit_grants"):
                assert 0 <= g["remaining_minor"] == g["amount_minor"] - draws[g["id"]]
            for account, value in expected.items():
                assert open_balance_minor(conn, account) == value

    return Receivables


def test_random_operations_keep_the_invariants(engine):
    examples = 30 if engine.dialect.name == "sqlite" else 6
    run_state_machine_as_test(make_machine(engine), settings=settings(
        max_examples=examples, stateful_step_count=12, deadline=None,
        suppress_health_check=list(HealthCheck)))


@pytest.mark.parametrize("dummy", [None])
def test_machine_rolls_back_between_examples(engine, dummy):
    machine = make_machine(engine)()
    machine.post(total=100, other=False)
    machine.teardown()
    with UnitOfWork(engine) as uow:
        assert uow.conn.execute(select(invoices)).first() is None
