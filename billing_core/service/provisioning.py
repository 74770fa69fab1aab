"""Provisioning requests and the dispatch loop.

Rules kept here
- A request is created per change of what a product that ``needs_provisioning`` gives the
  customer (:mod:`billing_core.service.gate` creates them): ``provision`` with its order (one
  per subscription line or one-time item), ``increase`` / ``decrease`` per quantity change of
  such a subscription (the new quantity, from the change's effective date: the term end for
  a decrease a committed term defers), ``deprovision`` at the subscription's end (quantity 0,
  from the end date). ``effective_date`` NULL means at once (an order's items). Its
  ``idempotency_key`` is fixed at creation (derived from the order's source reference and the
  item or change) and never changes.
- Holds: ``provision`` and ``increase`` add exposure and wait while the account is on hold
  exactly like a new order (``awaiting_hold_release``); ``decrease`` and ``deprovision`` reduce
  service and are never held (created ``pending``, claimed whatever the account's holds).
- States: ``pending`` → ``dispatching`` → ``dispatched`` → ``provisioned``, or ``failed``;
  ``awaiting_hold_release`` while the account is on hold; ``cancelled`` with the order (its
  unsent provisions and increases; what reduces still goes), or, for requests dated on or
  after a subscription's end, by that end; ``superseded`` (below).
- Not before its date: a request whose ``effective_date`` is after the claim's day (UTC) stays
  ``pending`` and is not claimed until that day.
- Order per subscription: a subscription's requests are sent in (effective date, NULL first;
  id) order. A request is not claimed while an earlier one of its subscription is unsent
  (``pending``, ``awaiting_hold_release``), in flight (``dispatching``) or ``failed`` (it
  waits for the retry), with one exception so that a hold never delays reducing service: a
  due ``decrease`` / ``deprovision`` *supersedes* the earlier unsent ``increase`` /
  ``decrease`` requests of its subscription (state ``superseded``, ``last_error`` naming it):
  it sets the quantity from its date on, so they would only be overtaken. A ``provision`` is
  never superseded (what it creates must exist first). A change dated before one of its
  subscription already sent (recorded later, back-dated) is superseded instead of sent: the
  quantity it set is over (billing still credits or charges its days). A ``deprovision`` is
  never superseded that way: nothing of the subscription holds after its end.
- Dispatch (:func:`dispatch_pending`) takes three steps, a batch of at most ``batch`` requests
  at a time (a large ``limit`` is worked through in small claims, so a crash strands one batch
  at most): claim (one short transaction: rows are locked with ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, so several workers never take the same row; SQLite's write lock serialises the
  single dispatcher), marked ``dispatching`` with the attempt counted, the dispatcher as
  ``claimed_by`` (``billing_core.adapters.owner``) and a lease in ``next_attempt_at``; send,
  outside any transaction, with the stored key; record the outcome in a second transaction.
- A crash between send and record leaves the row ``dispatching``. Each claim first takes back
  the stale ones: those whose dispatcher is known to be gone (on this host: at once) or whose
  lease ran out (wherever it ran). A stale request goes back to ``pending``, or to
  ``awaiting_hold_release`` when its account is on hold now, with the cause in ``last_error``;
  it is re-sent with the SAME key (the receiver deduplicates). Never a new key. The outcome of
  a claim taken back that way is not recorded when it finally comes (the row is recorded only
  while it is ``dispatching`` with that claim's attempt): the newer claim owns the row.
- Several dispatchers (threads, ``ledgerbridge run`` processes, machines) share one queue with
  no other lock: each claim takes rows no other claim holds (``SKIP LOCKED`` on PostgreSQL,
  ``BEGIN IMMEDIATE`` on SQLite), and a claimed row is ``dispatching``, which holds back the
  later requests of its subscription from every other claim.
- The claim re-checks the hold: a ``provision`` / ``increase`` request whose account has any
  hold reason at claim time is not claimed, whatever its state says.
- Requests are claimed in creation order (``id``), so what waited is released in order, and
  at most one per subscription per claim (the next goes once it is recorded).
- A provisioner that raises anything else than ``ProvisionError`` (a bug) fails that request
  with the exception's type and message; the rest of the batch goes on.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, exists, func, insert, or_, select, update

from billing_core.adapters import owner
from billing_core.adapters.bulk import id_in
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.provisioners.base import Provisioner, ProvisionError, ProvisioningTask
from billing_core.adapters.tables import (
    accounts,
    hold_reasons,
    orders,
    products,
)
from billing_core.adapters.tables import (
    provisioning_requests as pr,
)
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.domain.states import REDUCING, UNSENT_REQUEST, ChangeKind
from billing_core.domain.states import ProvisioningState as State

log = logging.getLogger(__name__)

STATES: tuple[str, ...] = tuple(s.value for s in State)   # as the CLI offers them
DEFAULT_LEASE = timedelta(minutes=10)
DEFAULT_BATCH = 50
_GONE = "its dispatcher stopped before recording the outcome; sent again with the same key"
_LEASE_OUT = "its dispatch lease ran out before the outcome was recorded; sent again with " \
    "the same key"
_KEY_NAMESPACE = uuid.UUID("6f1c3d2a-5b7e-4c1d-9a8f-2e4b6c8d0a1f")


def idempotency_key(order_ref: str, item: str) -> str:
    """Deterministic per (order source reference, item): the same on every re-send."""
    return "lbprov-" + uuid.uuid5(_KEY_NAMESPACE, f"{order_ref}|{item}").hex


@dataclass(frozen=True)
class NewRequest:
    account_id: int
    order_id: int
    product_id: int
    quantity: Decimal
    key: str
    on_hold: bool
    subscription_id: int | None = None
    one_time_charge_id: int | None = None
    change_kind: str = ChangeKind.PROVISION
    effective_date: date | None = None


def create_requests(uow: UnitOfWork, items: Sequence[NewRequest]) -> None:
    """New provisioning requests, in the given order (ids ascending): one statement. A
    reducing one (decrease, deprovision) is ``pending`` even on hold."""
    if not items:
        return
    now = uow.now()
    uow.conn.execute(insert(pr), [
        {"account_id": r.account_id, "order_id": r.order_id, "product_id": r.product_id,
         "quantity": r.quantity, "subscription_id": r.subscription_id,
         "one_time_charge_id": r.one_time_charge_id, "idempotency_key": r.key, "attempts": 0,
         "state": _waiting_or_pending(r.on_hold and r.change_kind not in REDUCING),
         "change_kind": str(r.change_kind), "effective_date": r.effective_date,
         "created_at": now, "updated_at": now} for r in items])


def cancel_from(uow: UnitOfWork, subscription_id: int, day: date) -> int:
    """The subscription ends on ``day``: its unsent changes dated on or after it (quantity
    changes and an earlier-planned end) are cancelled. Returns how many."""
    return uow.conn.execute(update(pr).where(
        pr.c.subscription_id == subscription_id, pr.c.state.in_(UNSENT_REQUEST),
        pr.c.change_kind != ChangeKind.PROVISION, pr.c.effective_date >= day)
        .values(state=State.CANCELLED, updated_at=uow.now(),
                last_error=f"the subscription ends on {day}")).rowcount


def cancel_subscription_requests(uow: UnitOfWork, subscription_id: int) -> int:
    """The subscription was cancelled before it started: none of its unsent requests goes."""
    return uow.conn.execute(update(pr).where(
        pr.c.subscription_id == subscription_id, pr.c.state.in_(UNSENT_REQUEST))
        .values(state=State.CANCELLED, updated_at=uow.now())).rowcount


def hold_requests(uow: UnitOfWork, account_ids: Sequence[int]) -> int:
    """The accounts went (or are) on hold: their pending provisions and increases wait
    (decreases and ends never do). Returns how many."""
    if not account_ids:
        return 0
    return uow.conn.execute(update(pr).where(id_in(uow.conn, pr.c.account_id, account_ids),
                                             pr.c.state == State.PENDING,
                                             pr.c.change_kind.not_in(REDUCING))
                            .values(state=State.AWAITING_HOLD_RELEASE,
                                    updated_at=uow.now())).rowcount


def release_requests(uow: UnitOfWork, account_id: int) -> int:
    """The hold lifted: waiting requests become pending (dispatch takes them in id order)."""
    return uow.conn.execute(update(pr).where(pr.c.account_id == account_id,
                                             pr.c.state == State.AWAITING_HOLD_RELEASE)
                            .values(state=State.PENDING, updated_at=uow.now())).rowcount


def cancel_order_requests(uow: UnitOfWork, order_id: int) -> int:
    """The order is cancelled: what it would still add (unsent provisions and increases) is
    cancelled; what reduces (decreases, deprovisions) still goes. Returns how many."""
    return uow.conn.execute(update(pr).where(pr.c.order_id == order_id,
                                             pr.c.state.in_(UNSENT_REQUEST),
                                             pr.c.change_kind.not_in(REDUCING))
                            .values(state=State.CANCELLED, updated_at=uow.now())).rowcount


def get_request(conn: Connection, request_id: int) -> dict[str, Any]:
    row = conn.execute(select(pr).where(pr.c.id == request_id)).mappings().first()
    if row is None:
        raise NotFound("provisioning_request", request_id)
    return dict(row)


def list_requests(conn: Connection, *, state: str | None = None, account_id: int | None = None,
                  after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    if state is not None and state not in STATES:
        raise ValidationError("state", state, f"must be one of {', '.join(STATES)}")
    stmt = select(pr).where(pr.c.id > after_id).order_by(pr.c.id).limit(limit)
    if state is not None:
        stmt = stmt.where(pr.c.state == state)
    if account_id is not None:
        stmt = stmt.where(pr.c.account_id == account_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def retry_request(uow: UnitOfWork, request_id: int) -> State:
    """A failed request goes back to the queue with its own key; it waits if the account is on
    hold. Returns the new state."""
    row = get_request(uow.conn, request_id)
    if row["state"] != State.FAILED:
        raise InvalidState("provisioning_request", request_id,
                           f"is {row['state']}; only a failed request can be retried")
    state = _waiting_or_pending(row["change_kind"] not in REDUCING
                                and _held(uow.conn, row["account_id"]))
    uow.conn.execute(update(pr).where(pr.c.id == request_id, pr.c.state == State.FAILED).values(
        state=state, next_attempt_at=None, updated_at=uow.now()))
    return state


def mark_provisioned(uow: UnitOfWork, request_id: int) -> None:
    """The receiver confirmed the work is done."""
    row = get_request(uow.conn, request_id)
    if row["state"] not in (State.DISPATCHED, State.PROVISIONED):
        raise InvalidState("provisioning_request", request_id,
                           f"is {row['state']}; only a dispatched request can be provisioned")
    uow.conn.execute(update(pr).where(pr.c.id == request_id).values(
        state=State.PROVISIONED, updated_at=uow.now()))


def _waiting_or_pending(on_hold: bool) -> State:
    return State.AWAITING_HOLD_RELEASE if on_hold else State.PENDING


def _held(conn: Connection, account_id: int) -> bool:
    return conn.execute(select(hold_reasons.c.id).where(
        hold_reasons.c.account_id == account_id).limit(1)).first() is not None


@dataclass
class DispatchReport:
    claimed: int = 0
    dispatched: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    #: Sent, but the claim had run out and another dispatcher owned the row by the time the
    #: outcome came back: recorded by that dispatcher, not by this one.
    lost: list[int] = field(default_factory=list)


def dispatch_pending(engine: Engine, provisioner: Provisioner, *, limit: int | None = 50,
                     worker_id: str = "worker", lease: timedelta = DEFAULT_LEASE,
                     clock: Callable[[], datetime] | None = None,
                     batch: int = DEFAULT_BATCH,
                     should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
    """Claim up to ``limit`` releasable requests (None: until none is left), ``batch`` at a
    time; send each, record each outcome. ``should_stop`` is asked between batches."""
    clock = clock or (lambda: datetime.now(UTC))
    report = DispatchReport()
    while (limit is None or report.claimed < limit) and not should_stop():
        room = batch if limit is None else min(batch, limit - report.claimed)
        tasks = claim(engine, limit=room, now=clock(), lease=lease)
        if not tasks:
            break
        report.claimed += len(tasks)
        for task in tasks:
            _send(engine, provisioner, task, worker_id, clock, report)
    return report


def _send(engine: Engine, provisioner: Provisioner, task: ProvisioningTask, worker_id: str,
          clock: Callable[[], datetime], report: DispatchReport) -> None:
    try:
        outcome: str = provisioner.provision(task)
        error = None
    except ProvisionError as exc:
        outcome, error = State.FAILED, str(exc)
    except Exception as exc:
        # A bug in a provisioner must not strand the rest of the claimed batch in
        # 'dispatching': the request is recorded failed (listed, retriable) with the cause.
        log.exception("provisioner %s raised on request=%s", provisioner.name, task.request_id)
        outcome, error = State.FAILED, f"{type(exc).__name__}: {exc}"
    if not _record(engine, task, outcome, error, clock()):
        report.lost.append(task.request_id)
        log.warning("provisioning request=%s key=%s worker=%s attempt=%s outcome=%s not "
                    "recorded: its claim ran out and another dispatcher took it",
                    task.request_id, task.idempotency_key, worker_id, task.attempt, outcome)
        return
    (report.failed if outcome == State.FAILED else report.dispatched).append(task.request_id)
    log.info("provisioning request=%s key=%s worker=%s attempt=%s outcome=%s%s",
             task.request_id, task.idempotency_key, worker_id, task.attempt, outcome,
             f" error={error}" if error else "")


def reclaim_stale(conn: Connection, now: datetime) -> int:
    """Take back ``dispatching`` requests whose dispatcher is gone or whose lease ran out:
    ``pending``, or ``awaiting_hold_release`` if the account is on hold now. Returns how many."""
    owners = conn.execute(select(pr.c.claimed_by).where(pr.c.state == State.DISPATCHING)
                          .distinct()).scalars().all()
    gone = owner.gone_among(owners)
    stale = or_(pr.c.next_attempt_at <= now, pr.c.claimed_by.in_(gone)) if gone \
        else pr.c.next_attempt_at <= now
    held = and_(exists().where(hold_reasons.c.account_id == pr.c.account_id),
                pr.c.change_kind.not_in(REDUCING))
    return conn.execute(update(pr).where(pr.c.state == State.DISPATCHING, stale).values(
        state=case((held, State.AWAITING_HOLD_RELEASE), else_=State.PENDING),
        claimed_by=None, next_attempt_at=None, updated_at=now,
        last_error=case((pr.c.claimed_by.in_(gone), _GONE), else_=_LEASE_OUT)
        if gone else _LEASE_OUT)).rowcount


_BLOCKING = (State.PENDING, State.AWAITING_HOLD_RELEASE, State.DISPATCHING, State.FAILED)
_SENT = (State.DISPATCHED, State.PROVISIONED)
_EPOCH = date(1, 1, 1)


def claim(engine: Engine, *, limit: int, now: datetime,
          lease: timedelta = DEFAULT_LEASE) -> list[ProvisioningTask]:
    """Transaction 1: take back stale claims, then lock up to ``limit`` claimable requests
    (pending, due by ``now``'s UTC day, of accounts without a hold unless reducing, first of
    their subscription: see the module rules), supersede what a reducing one overtakes, mark
    them ``dispatching`` (attempt, owner, lease), return them."""
    with engine.begin() as conn:
        reclaim_stale(conn, now)
        ids = _one_per_subscription(conn, _claimable(conn, engine.dialect.name, limit, now),
                                    now)
        if not ids:
            return []
        conn.execute(update(pr).where(pr.c.id.in_(ids)).values(
            state=State.DISPATCHING, attempts=pr.c.attempts + 1, next_attempt_at=now + lease,
            claimed_by=owner.current(), updated_at=now))
        rows = conn.execute(
            select(pr, accounts.c.ext_source, accounts.c.ext_id, accounts.c.name,
                   orders.c.source_ref, products.c.sku)
            .join(accounts, accounts.c.id == pr.c.account_id)
            .join(orders, orders.c.id == pr.c.order_id)
            .join(products, products.c.id == pr.c.product_id)
            .where(pr.c.id.in_(ids)).order_by(pr.c.id)).mappings().all()
    return [ProvisioningTask(
        request_id=r["id"], idempotency_key=r["idempotency_key"], attempt=r["attempts"],
        account_id=r["account_id"], account_ext_source=r["ext_source"],
        account_ext_id=r["ext_id"], account_name=r["name"], order_id=r["order_id"],
        order_ref=r["source_ref"], product_id=r["product_id"], product_sku=r["sku"],
        quantity=_plain(r["quantity"]), subscription_id=r["subscription_id"],
        one_time_charge_id=r["one_time_charge_id"], change_kind=r["change_kind"],
        effective_date=r["effective_date"]) for r in rows]


def _claimable(conn: Connection, dialect: str, limit: int, now: datetime) -> list[Any]:
    """Up to ``limit`` claimable rows in id order, locked (PostgreSQL: ``SKIP LOCKED``): the
    due pending requests of accounts without a hold (or reducing) are read a window at a time
    in id order, and those an earlier request of their subscription holds back are skipped
    (one read of the windows' subscriptions' unsent requests), so a claim reads about as many
    rows as it takes, however long the queue."""
    today = now.astimezone(UTC).date()
    reducing = pr.c.change_kind.in_(REDUCING)
    no_hold = or_(reducing, ~exists().where(hold_reasons.c.account_id == pr.c.account_id))
    out: list[Any] = []
    after = 0
    while len(out) < limit:
        stmt = select(pr.c.id, pr.c.subscription_id, pr.c.effective_date, pr.c.change_kind,
                      pr.c.state).where(
            pr.c.state == State.PENDING, pr.c.id > after, no_hold,
            or_(pr.c.effective_date.is_(None), pr.c.effective_date <= today)
        ).order_by(pr.c.id).limit(limit)
        if dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, of=pr)
        window = list(conn.execute(stmt))
        if not window:
            break
        after = int(window[-1].id)
        subs = sorted({int(r.subscription_id) for r in window if r.subscription_id is not None})
        unsent: dict[int, list[Any]] = {}
        sent: dict[int, list[Any]] = {}
        if subs:
            # the states are kept in Python: ``state IN (...)`` in SQL (provisioned among them,
            # most of the table) made SQLite, which has no statistics, walk every request in
            # those states through ix_provisioning_state instead of the windows' subscriptions'
            for e in conn.execute(select(pr.c.id, pr.c.subscription_id, pr.c.effective_date,
                                         pr.c.change_kind, pr.c.state).where(
                    id_in(conn, pr.c.subscription_id, subs))):
                if e.state not in _BLOCKING and e.state not in _SENT:
                    continue
                (sent if e.state in _SENT else unsent).setdefault(
                    int(e.subscription_id), []).append(e)
                if e.state == State.DISPATCHING:        # in flight: as good as sent
                    sent.setdefault(int(e.subscription_id), []).append(e)
        stale: list[tuple[int, int]] = []
        for r in window:
            if r.subscription_id is None:
                out.append(r)
                continue
            later = next((e for e in sent.get(int(r.subscription_id), ())
                          if r.change_kind != ChangeKind.DEPROVISION
                          and _order_key(e) > _order_key(r)), None)
            if later is not None:
                stale.append((int(r.id), int(later.id)))
            elif not any(_holds_back(e, r) for e in unsent.get(int(r.subscription_id), ())):
                out.append(r)
        for request_id, later_id in stale:      # a change dated before one already sent
            conn.execute(update(pr).where(pr.c.id == request_id, pr.c.state == State.PENDING)
                         .values(state=State.SUPERSEDED, updated_at=now,
                                 last_error=f"dated before request {later_id}, already sent: "
                                            "the quantity it set is over"))
        if len(window) < limit:
            break
    return out[:limit]


def _order_key(row: Any) -> tuple[date, int]:
    return row.effective_date or _EPOCH, int(row.id)


def _holds_back(earlier: Any, row: Any) -> bool:
    """Whether ``earlier`` (unsent, in flight or failed) keeps ``row`` of the same
    subscription from being claimed: it comes first, and ``row`` does not supersede it."""
    if earlier.id == row.id or _order_key(earlier) >= _order_key(row):
        return False
    overtaken = (row.change_kind in REDUCING and earlier.state in UNSENT_REQUEST
                 and earlier.change_kind in (ChangeKind.INCREASE, ChangeKind.DECREASE))
    return not overtaken


def _one_per_subscription(conn: Connection, rows: list[Any], now: datetime) -> list[int]:
    """Of the claimable rows (id order), the ids to claim: per subscription the latest in
    (effective date, id) order; it supersedes the earlier unsent increases / decreases of its
    subscription when it is reducing (a racing claim that took one of them first leaves it
    unclaimed). Rows without a subscription all go."""
    best: dict[int, Any] = {}
    ids: list[int] = []
    for r in rows:
        if r.subscription_id is None:
            ids.append(int(r.id))
            continue
        key = (r.effective_date or _EPOCH, r.id)
        held = best.get(r.subscription_id)
        if held is None or key > (held.effective_date or _EPOCH, held.id):
            best[r.subscription_id] = r
    for r in best.values():
        if r.change_kind in REDUCING:
            day = r.effective_date or _EPOCH
            older = or_(func.coalesce(pr.c.effective_date, _EPOCH) < day,
                        and_(func.coalesce(pr.c.effective_date, _EPOCH) == day,
                             pr.c.id < r.id))
            overtaken = [int(i) for i in conn.execute(select(pr.c.id).where(
                pr.c.subscription_id == r.subscription_id, pr.c.id != r.id, older,
                pr.c.state.in_(UNSENT_REQUEST),
                pr.c.change_kind.in_((ChangeKind.INCREASE, ChangeKind.DECREASE)))).scalars()]
            if overtaken:
                done = conn.execute(update(pr).where(
                    pr.c.id.in_(overtaken), pr.c.state.in_(UNSENT_REQUEST)).values(
                    state=State.SUPERSEDED, updated_at=now,
                    last_error=f"superseded by request {r.id} ({r.change_kind} from "
                               f"{r.effective_date or 'now'})")).rowcount
                if done != len(overtaken):
                    continue        # another dispatcher took one of them: this one waits
        ids.append(int(r.id))
    return sorted(ids)


def _plain(quantity: Decimal) -> Decimal:
    """The same quantity on every database (PostgreSQL's NUMERIC pads with zeros)."""
    return quantity.quantize(Decimal(1)) if quantity == quantity.to_integral_value() \
        else quantity.normalize()


def _record(engine: Engine, task: ProvisioningTask, outcome: str, error: str | None,
            now: datetime) -> bool:
    """Transaction 2: the outcome, only if the row is still this claim's (``dispatching``
    with this claim's attempt: every claim counts one). A claim whose lease ran out and that
    another dispatcher took back (and perhaps claimed again) records nothing: the newer claim
    owns the row. Returns whether the outcome was recorded."""
    with engine.begin() as conn:
        return bool(conn.execute(update(pr).where(pr.c.id == task.request_id,
                                                  pr.c.state == State.DISPATCHING,
                                                  pr.c.attempts == task.attempt)
                                 .values(state=outcome, last_error=error, next_attempt_at=None,
                                         claimed_by=None, updated_at=now)).rowcount)
