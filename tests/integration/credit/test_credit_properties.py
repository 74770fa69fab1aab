"""Property: for random sequences of orders, invoices, payments, memo operations, CRM flag
changes, limit changes, manual holds, days passing and dispatch runs, the hold reasons always
equal what the definitions give from a plain-Python model of the ledger, no request is ever
dispatched while its account is on hold, and none is dispatched twice.

The model is independent of credit control's code: exposure = orders + extra invoice charges
- payments - active credit memos (applications move money between documents, never change
it); an invoice is overdue while it has a balance and its due date + grace is before today, with
payments applied oldest-first as ``record_payment(auto_apply=True)`` does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from credit_helpers import (
    Clock,
    Ledger,
    RecordingProvisioner,
    licence_order,
    make_account,
    make_products,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select, update

from billing_core.adapters.tables import (
    hold_reasons,
    invoices,
    metadata,
    orders,
    provisioning_requests,
    subscriptions,
)
from billing_core.domain.credit import CreditPolicy
from billing_core.domain.money import from_minor
from billing_core.service.accounts import set_credit_limit, set_crm_hold
from billing_core.service.credit_control import run_reevaluation
from billing_core.service.gate import accept_order
from billing_core.service.holds import place_manual_hold, release_manual_hold
from billing_core.service.memos import apply_credit_memo, cancel_credit_memo, create_credit_memo
from billing_core.service.payments import record_payment
from billing_core.service.provisioning import dispatch_pending

GRACE = 2
ACCOUNTS = 2
acct = st.integers(0, ACCOUNTS - 1)
INVOICE = st.tuples(st.just("invoice"), acct, st.integers(0, 300), st.integers(0, 20))
DAYS = st.tuples(st.just("days"), st.integers(1, 25))
OPS = st.one_of(    # invoices and days passing twice as likely: overdue needs both
    INVOICE, DAYS, INVOICE, DAYS,
    st.tuples(st.just("order"), acct, st.integers(1, 15)),
    st.tuples(st.just("pay"), acct, st.integers(1, 1500)),
    st.tuples(st.just("memo"), acct, st.integers(1, 400)),
    st.tuples(st.just("apply_memo"), acct),
    st.tuples(st.just("cancel_memo"), acct),
    st.tuples(st.just("flag"), acct, st.booleans()),
    st.tuples(st.just("limit"), acct, st.one_of(st.none(), st.integers(0, 2500))),
    st.tuples(st.just("manual"), acct),
    st.tuples(st.just("dispatch"),),
)


@dataclass
class Invoice:
    id: int
    total: int
    due: object
    paid: int = 0


@dataclass
class Model:
    limit: int | None = None
    flag: bool = False
    manual: bool = False
    ordered: int = 0
    extra: int = 0
    paid_in: int = 0
    memos: list[list[int]] = field(default_factory=list)   # [id, amount, applied, active]
    invoices: list[Invoice] = field(default_factory=list)

    def exposure(self) -> int:
        active = sum(m[1] for m in self.memos if m[3])
        return self.ordered + self.extra - self.paid_in - active

    def reasons(self, today: object) -> set[str]:
        out = {"crm"} if self.flag else set()
        if self.limit is not None and self.exposure() > self.limit:
            out.add("credit_limit")
        if any(i.total > i.paid and i.due + timedelta(GRACE) < today for i in self.invoices):
            out.add("overdue")
        return out | ({"manual"} if self.manual else set())


def _reset(engine) -> None:
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "audit_log":    # append-only (a trigger refuses DELETE); unread here
                conn.execute(delete(table))


def _invoice(uow, acc: int, extra_minor: int, due) -> tuple[int, int]:
    """Bill the account's active, unbilled subscriptions plus ``extra`` (as the bill run would)."""
    conn = uow.conn
    subs = conn.execute(select(subscriptions.c.id, subscriptions.c.quantity).join(
        orders, orders.c.id == subscriptions.c.order_id).where(
        subscriptions.c.account_id == acc, subscriptions.c.status == "active",
        subscriptions.c.billed_through.is_(None))).all()
    total = sum(int(q) * 10000 for _, q in subs) + extra_minor
    if total == 0:
        return 0, 0
    seq = conn.execute(select(func.count()).select_from(invoices)).scalar_one() + 1
    inv = conn.execute(insert(invoices).values(
        account_id=acc, currency="USD", series="INV", number=f"TINV-{seq:06d}", status="posted",
        period_start=uow.now().date() + timedelta(seq * 40), period_end=uow.now().date(),
        issue_date=uow.now().date(), due_date=due, subtotal_minor=total, tax_minor=0,
        total_minor=total, applied_minor=0, created_at=uow.now(),
        posted_at=uow.now())).inserted_primary_key[0]
    if subs:
        conn.execute(update(subscriptions).where(subscriptions.c.id.in_([s for s, _ in subs]))
                     .values(billed_through=due))
    uow.touch(acc)
    return int(inv), total


def _check(ledger: Ledger, ids: list[int], models: list[Model]) -> None:
    with ledger.engine.connect() as conn:
        for acc, model in zip(ids, models, strict=True):
            got = {r[0] for r in conn.execute(select(hold_reasons.c.reason).where(
                hold_reasons.c.account_id == acc))}
            assert got == model.reasons(ledger.clock.today), (acc, model)
            if got:
                assert "pending" not in {r[0] for r in conn.execute(
                    select(provisioning_requests.c.state).where(
                        provisioning_requests.c.account_id == acc))}


def _step(uow, n: int, kind: str, acc: int, m: Model, args: tuple, products) -> None:
    """One operation on one account, applied to the ledger and to the model."""
    today = uow.now().date()
    if kind == "order":
        accept_order(uow, licence_order(acc, f"o{n}", args[0], products, today))
        m.ordered += args[0] * 10000
    elif kind == "invoice":
        due = today + timedelta(args[1])
        inv, total = _invoice(uow, acc, args[0] * 100, due)
        if total:
            m.extra += args[0] * 100
            m.invoices.append(Invoice(inv, total, due))
    elif kind == "pay":
        record_payment(uow, acc, str(args[0]), reference=f"p{n}", auto_apply=True)
        m.paid_in += args[0] * 100
        left = args[0] * 100
        for inv in sorted(m.invoices, key=lambda i: (i.due, i.id)):
            take = min(left, inv.total - inv.paid)
            inv.paid += take
            left -= take
    elif kind == "memo":
        memo_id = create_credit_memo(uow, acc, str(args[0]), "goodwill", activate=True)
        m.memos.append([memo_id, args[0] * 100, 0, True])
    elif kind == "apply_memo":
        memo = next((x for x in m.memos if x[3] and x[2] < x[1]), None)
        target = next((i for i in sorted(m.invoices, key=lambda i: (i.due, i.id))
                       if i.paid < i.total), None)
        if memo and target:
            amount = min(memo[1] - memo[2], target.total - target.paid)
            apply_credit_memo(uow, memo[0], [{"target": f"invoice:{target.id}",
                                              "amount": str(from_minor(amount, "USD"))}])
            memo[2] += amount
            target.paid += amount
    elif kind == "cancel_memo":
        memo = next((x for x in m.memos if x[3] and x[2] == 0), None)
        if memo:
            cancel_credit_memo(uow, memo[0])
            memo[3] = False
    elif kind == "flag":
        set_crm_hold(uow, acc, args[0])
        m.flag = args[0]
    elif kind == "limit":
        set_credit_limit(uow, acc, None if args[0] is None else str(args[0]))
        m.limit = None if args[0] is None else args[0] * 100
    elif kind == "manual":
        if m.manual:
            release_manual_hold(uow, acc, admin="t")
        else:
            place_manual_hold(uow, acc, "check", admin="t")
        m.manual = not m.manual


def _run_ops(engine, ops) -> None:
    _reset(engine)
    ledger = Ledger(engine, Clock(), CreditPolicy(overdue_grace_days=GRACE))
    ids = ledger.run(lambda u: [make_account(u, f"P{i}") for i in range(ACCOUNTS)])
    products = ledger.run(make_products)
    models = [Model() for _ in ids]
    sent: list[str] = []

    def on_send(task) -> None:
        with engine.connect() as conn:
            assert conn.execute(select(hold_reasons.c.id).where(
                hold_reasons.c.account_id == task.account_id)).first() is None
        assert task.idempotency_key not in sent
        sent.append(task.idempotency_key)

    provisioner = RecordingProvisioner(check=on_send)
    for n, op in enumerate(ops):
        if op[0] == "days":
            ledger.clock.advance(op[1])
            run_reevaluation(engine, ledger.clock.today, ledger.policy, chunk_size=1,
                             uow_factory=ledger.uow)
        elif op[0] == "dispatch":
            dispatch_pending(engine, provisioner, clock=ledger.clock)
        else:
            with ledger.tx() as uow:
                _step(uow, n, op[0], ids[op[1]], models[op[1]], op[2:], products)
        _check(ledger, ids, models)

    # Lift everything: what waited goes out, each request exactly once.
    for acc, m in zip(ids, models, strict=True):
        with ledger.tx() as uow:
            set_crm_hold(uow, acc, False)
            set_credit_limit(uow, acc, None)
            record_payment(uow, acc, "100000", reference="final", auto_apply=True)
            if m.manual:
                release_manual_hold(uow, acc, admin="t")
    while dispatch_pending(engine, provisioner, clock=ledger.clock).claimed:
        pass
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(hold_reasons)).scalar() == 0
        total = conn.execute(select(func.count()).select_from(provisioning_requests)).scalar()
    assert len(sent) == total == len(set(sent))


_SETTINGS = {"deadline": None,
             "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
_STEPS = st.lists(OPS, min_size=3, max_size=14)


@settings(max_examples=int(os.environ.get("LB_CREDIT_EXAMPLES", "10")), **_SETTINGS)
@given(ops=_STEPS)
def test_hold_reasons_match_the_definitions_sqlite(sqlite_engine, ops):
    _run_ops(sqlite_engine, ops)


@pytest.mark.postgres
@settings(max_examples=int(os.environ.get("LB_CREDIT_EXAMPLES", "4")), **_SETTINGS)
@given(ops=_STEPS)
def test_hold_reasons_match_the_definitions_postgres(pg_engine, ops):
    _run_ops(pg_engine, ops)
