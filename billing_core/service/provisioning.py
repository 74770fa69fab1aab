"""Provisioning requests and the dispatch loop.

Rules kept here
- A request is created with its order (one per subscription line or one-time item whose product
  ``needs_provisioning``, one per quantity change of such a subscription), in state ``pending``
  or, when the account is on hold, ``awaiting_hold_release``. Its ``idempotency_key`` is fixed
  at creation (derived from the order's source reference and the item) and never changes.
- States: ``pending`` → ``dispatching`` → ``dispatched`` → ``provisioned``, or ``failed``;
  ``awaiting_hold_release`` while the account is on hold; ``cancelled`` with the order.
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
  it is re-sent with the SAME key (the receiver deduplicates). Never a new key.
- The claim re-checks the hold: a request whose account has any hold reason at claim time is
  not claimed, whatever its state says.
- Requests are claimed in creation order (``id``), so what waited is released in order.
- A provisioner that raises anything else than ``ProvisionError`` (a bug) fails that request
  with the exception's type and message; the rest of the batch goes on.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, case, exists, insert, or_, select, update

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
from billing_core.domain.states import UNSENT_REQUEST
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


def create_requests(uow: UnitOfWork, items: Sequence[NewRequest]) -> None:
    """New provisioning requests, in the given order (ids ascending): one statement."""
    if not items:
        return
    now = uow.now()
    uow.conn.execute(insert(pr), [
        {"account_id": r.account_id, "order_id": r.order_id, "product_id": r.product_id,
         "quantity": r.quantity, "subscription_id": r.subscription_id,
         "one_time_charge_id": r.one_time_charge_id, "idempotency_key": r.key, "attempts": 0,
         "state": _waiting_or_pending(r.on_hold), "created_at": now,
         "updated_at": now} for r in items])


def hold_requests(uow: UnitOfWork, account_ids: Sequence[int]) -> int:
    """The accounts went (or are) on hold: their pending requests wait. Returns how many."""
    if not account_ids:
        return 0
    return uow.conn.execute(update(pr).where(id_in(uow.conn, pr.c.account_id, account_ids),
                                             pr.c.state == State.PENDING)
                            .values(state=State.AWAITING_HOLD_RELEASE,
                                    updated_at=uow.now())).rowcount


def release_requests(uow: UnitOfWork, account_id: int) -> int:
    """The hold lifted: waiting requests become pending (dispatch takes them in id order)."""
    return uow.conn.execute(update(pr).where(pr.c.account_id == account_id,
                                             pr.c.state == State.AWAITING_HOLD_RELEASE)
                            .values(state=State.PENDING, updated_at=uow.now())).rowcount


def cancel_order_requests(uow: UnitOfWork, order_id: int) -> int:
    return uow.conn.execute(update(pr).where(pr.c.order_id == order_id,
                                             pr.c.state.in_(UNSENT_REQUEST))
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
    state = _waiting_or_pending(_held(uow.conn, row["account_id"]))
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
    _record(engine, task, outcome, error, clock())
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
    held = exists().where(hold_reasons.c.account_id == pr.c.account_id)
    return conn.execute(update(pr).where(pr.c.state == State.DISPATCHING, stale).values(
        state=case((held, State.AWAITING_HOLD_RELEASE), else_=State.PENDING),
        claimed_by=None, next_attempt_at=None, updated_at=now,
        last_error=case((pr.c.claimed_by.in_(gone), _GONE), else_=_LEASE_OUT)
        if gone else _LEASE_OUT)).rowcount


def claim(engine: Engine, *, limit: int, now: datetime,
          lease: timedelta = DEFAULT_LEASE) -> list[ProvisioningTask]:
    """Transaction 1: take back stale claims, then lock up to ``limit`` pending requests of
    accounts without a hold, mark them ``dispatching`` (attempt, owner, lease), return them."""
    no_hold = ~exists().where(hold_reasons.c.account_id == pr.c.account_id)
    stmt = select(pr.c.id).where(pr.c.state == State.PENDING, no_hold).order_by(pr.c.id) \
        .limit(limit)
    if engine.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=pr)
    with engine.begin() as conn:
        reclaim_stale(conn, now)
        ids = [r[0] for r in conn.execute(stmt)]
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
        one_time_charge_id=r["one_time_charge_id"]) for r in rows]


def _plain(quantity: Decimal) -> Decimal:
    """The same quantity on every database (PostgreSQL's NUMERIC pads with zeros)."""
    return quantity.quantize(Decimal(1)) if quantity == quantity.to_integral_value() \
        else quantity.normalize()


def _record(engine: Engine, task: ProvisioningTask, outcome: str, error: str | None,
            now: datetime) -> None:
    """Transaction 2: the outcome, only if the row is still ours (``dispatching``)."""
    with engine.begin() as conn:
        conn.execute(update(pr).where(pr.c.id == task.request_id,
                                      pr.c.state == State.DISPATCHING)
                     .values(state=outcome, last_error=error, next_attempt_at=None,
                             claimed_by=None, updated_at=now))
