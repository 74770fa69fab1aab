"""Property (SQLite and PostgreSQL): whatever quantity changes (past or future dated, recorded
in any order), ends, hold places and lifts and dispatches happen to a provisioned
subscription, a receiver that applies each request it is sent as "the quantity from now"
(``provision`` / ``increase`` / ``decrease``: its quantity; ``deprovision``: 0) ends, once the
hold is lifted and every date has passed, on what billing holds: 0 after the end, else the
quantity at the end of the history. And no request is sent before its date."""
from __future__ import annotations

from datetime import date, timedelta
from itertools import count

from credit_helpers import RecordingProvisioner, make_account, make_products
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing_core.adapters.tables import products, subscriptions
from billing_core.domain.errors import LedgerError
from billing_core.service import gate
from billing_core.service.holds import is_on_hold, place_manual_hold, release_manual_hold
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.provisioning import dispatch_pending

MAR1 = date(2026, 3, 1)
FAR = date(2027, 1, 1)
_seq = count(1)

OPS = st.lists(st.one_of(
    st.tuples(st.just("change"), st.integers(1, 12), st.integers(0, 60)),
    st.tuples(st.just("end"), st.integers(0, 60), st.just(0)),
    st.tuples(st.just("hold"), st.just(0), st.just(0)),
    st.tuples(st.just("release"), st.just(0), st.just(0)),
    st.tuples(st.just("advance"), st.integers(1, 20), st.just(0)),
), min_size=1, max_size=12)


def _lic(ledger) -> int:
    with ledger.tx() as uow:
        found = uow.conn.execute(select(products.c.id).where(products.c.sku == "LIC")).scalar()
        return int(found) if found is not None else make_products(uow)["LIC"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_the_receiver_ends_on_what_billing_holds(ledger, clock, ops) -> None:
    lic = _lic(ledger)
    clock.now = clock.now.replace(year=2026, month=3, day=2)
    n = next(_seq)
    with ledger.tx() as uow:
        acc = make_account(uow, f"P{n}")
        order = gate.accept_order(uow, OrderIn(acc, f"prop:{n}", MAR1, subscriptions=[
            SubscriptionItem(lic, 5, MAR1)]))
        sub = int(uow.conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.order_id == order)).scalar_one())
    receiver = RecordingProvisioner()

    def dispatch() -> None:
        before = len(receiver.sent)
        dispatch_pending(ledger.engine, receiver, clock=clock)
        for task in receiver.sent[before:]:
            assert task.effective_date is None or task.effective_date <= clock.today, task

    for op, a, b in ops:
        try:
            with ledger.tx() as uow:
                if op == "change":
                    gate.change_quantity(uow, sub, a, MAR1 + timedelta(days=b))
                elif op == "end":
                    gate.end_subscription(uow, sub, MAR1 + timedelta(days=a))
                elif op == "hold" and not is_on_hold(uow.conn, acc):
                    place_manual_hold(uow, acc, "property", admin="p")
                elif op == "release" and is_on_hold(uow.conn, acc):
                    release_manual_hold(uow, acc, admin="p")
        except LedgerError:
            pass                                        # refused: nothing written
        if op == "advance":
            clock.advance(a)
        dispatch()
    with ledger.tx() as uow:
        if is_on_hold(uow.conn, acc):
            release_manual_hold(uow, acc, admin="p")
    clock.now = clock.now.replace(year=FAR.year, month=FAR.month, day=FAR.day)
    dispatch()
    quantity = None
    for task in receiver.sent:
        if task.subscription_id == sub:
            quantity = 0 if task.change_kind == "deprovision" else int(task.quantity)
    with ledger.engine.connect() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub)).mappings().one()
    expected = 0 if row["end_date"] is not None and row["end_date"] <= FAR \
        else int(row["quantity"])
    assert quantity == expected, (ops, [(t.change_kind, t.quantity, t.effective_date)
                                        for t in receiver.sent])
