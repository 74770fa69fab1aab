"""Credit control in the ledger: reads each account's credit facts, lets the domain decide
(``billing_core.domain.credit``: the reasons, the figures, what to place and lift), writes the
outcome and what follows from it.

Rules kept here
- The reasons are computed from scratch from the ledger each time: the facts of a batch of
  accounts are read together (:func:`read_facts`: the account rows, their current reasons, the
  exposure from ``receivables.exposures_minor`` for accounts a limit applies to, their open
  debts: a few grouped queries per batch, not per account), so evaluating a whole bill-run chunk
  in the commit hook costs little more than evaluating one account.
- :func:`reevaluate_account` brings ``hold_reasons`` in line with ``credit.decide``: it places
  and lifts ``credit_limit`` and ``overdue`` (source ``billing``) and mirrors ``crm`` from the
  flag (source and actor ``crm:<connection>``: only the CRM's flag clears it). It never places or
  lifts ``manual``. Each change writes hold history. A reason that stays keeps its original
  ``placed_at`` and figures.
- On PostgreSQL the account row is locked for the evaluation, so concurrent transactions
  touching the same account take turns (each reason placed once, one history row).
- Consequences, in the same transaction: on hold, pending provisioning requests wait; not on
  hold, held orders and pending quantity changes activate in creation order and waiting
  requests become pending (dispatched in creation order).
- :func:`reevaluate_touched_hook` runs this before commit for every account the unit of work
  touched (a posted invoice, a payment, a memo, a limit or flag change, an order), so a hold
  decision commits with the change that caused it. :func:`run_reevaluation` is the hourly job
  (days passing make documents overdue): the accounts with a document past due + grace, one
  transaction per chunk; :func:`reevaluate_all` does every account in one unit of work.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, select, union

from billing_core.adapters.bulk import id_in
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    orders,
    provisioning_requests,
    subscription_changes,
    subscriptions,
)
from billing_core.domain import credit
from billing_core.domain.credit import CreditFacts, CreditPolicy, HoldReason, OpenDebt
from billing_core.domain.errors import NotFound
from billing_core.domain.states import ItemStatus, OrderStatus, ProvisioningState
from billing_core.service import orders as order_service
from billing_core.service.accounts import get_account
from billing_core.service.holds import NewReason, current_reasons_many, lift_reason, place_reasons
from billing_core.service.provisioning import hold_requests, release_requests
from billing_core.service.receivables import exposures_minor, open_debts

log = logging.getLogger(__name__)

BATCH = 2000    # accounts read (and locked) per query
# what the decisions read of an account row (the whole row costs ~10 us per account to read)
DECISION_COLUMNS = (accounts.c.id, accounts.c.ext_source, accounts.c.crm_hold,
                    accounts.c.credit_limit_minor, accounts.c.credit_limit_override_minor,
                    accounts.c.currency)


def effective_limit_minor(account: Mapping[Any, Any], policy: CreditPolicy) -> int | None:
    """The exposure above which ``credit_limit`` applies to this account row; None = never."""
    return credit.hold_threshold_minor(_limit(account), policy)


def expected_reasons(conn: Connection, account_id: int, on_date: date,
                     policy: CreditPolicy) -> dict[HoldReason, dict[str, Any]]:
    """The computed reasons the account should carry now, each with its figures."""
    facts = read_facts(conn, {account_id: get_account(conn, account_id)}, on_date, policy)
    return credit.expected_reasons(facts[account_id], policy, on_date)


def read_facts(conn: Connection, rows: Mapping[int, RowMapping], on_date: date,
               policy: CreditPolicy, *, fresh: Collection[int] = (),
               skip_clear: bool = False) -> dict[int, CreditFacts]:
    """The credit facts of the accounts whose rows (``DECISION_COLUMNS``) are given, read
    together. ``fresh`` accounts were created in this unit of work with nothing else written
    for them: no reasons, no debts and zero exposure, so nothing is read for them.

    ``skip_clear``: leave out the accounts nothing can hold: no CRM flag, no reason carried,
    no limit that applies and nothing overdue. ``credit.decide`` places and lifts nothing for
    them and they end with no reason (most accounts in a bill run's chunk: the invoices it
    just posted are not due yet), so a caller may take them as decided without their facts."""
    known = [a for a in rows if a not in fresh]
    current = current_reasons_many(conn, known) if known else {}
    limited = {a for a, row in rows.items() if credit.limit_applies(_limit(row), policy)}
    to_read = sorted(a for a in limited if a not in fresh)
    exposure = (exposures_minor(conn, to_read, on_date,
                                include_unbilled=policy.include_unbilled_orders)
                if to_read else {})
    exposure.update((a, 0) for a in rows if a in fresh)
    # Only what is overdue counts: the rest (in a bill run, every invoice just posted) is not
    # read at all.
    cutoff = credit.overdue_cutoff(on_date, policy.overdue_grace_days)
    debts: dict[int, list[OpenDebt]] = {}
    for d in open_debts(conn, account_ids=known, due_before=cutoff) if known else ():
        debts.setdefault(int(d["account_id"]), []).append(OpenDebt(
            type=d["type"], id=d["id"], number=d["number"], due_date=d["due_date"],
            balance_minor=d["balance_minor"]))
    if skip_clear:
        rows = {a: row for a, row in rows.items()
                if row["crm_hold"] or a in current or a in debts or a in limited}
    return {a: CreditFacts(
        currency=row["currency"], connection=row["ext_source"], crm_hold=bool(row["crm_hold"]),
        limit_minor=_limit(row), exposure_minor=exposure.get(a),
        debts=tuple(debts[a]) if a in debts else (),
        held=tuple(HoldReason(r) for r in current[a]) if a in current else ())
        for a, row in rows.items()}


def _limit(account: Mapping[Any, Any]) -> int | None:
    """Finance's override when set, else the CRM's limit (:mod:`billing_core.service.accounts`);
    a row without the override column has none."""
    limit = account.get("credit_limit_override_minor")
    if limit is None:
        limit = account["credit_limit_minor"]
    return None if limit is None else int(limit)


@dataclass
class Evaluation:
    account_id: int
    placed: list[HoldReason] = field(default_factory=list)
    lifted: list[HoldReason] = field(default_factory=list)
    reasons: list[HoldReason] = field(default_factory=list)

    @property
    def on_hold(self) -> bool:
        return bool(self.reasons)


def reevaluate_account(uow: UnitOfWork, account_id: int, policy: CreditPolicy | None = None,
                       on_date: date | None = None) -> Evaluation:
    """Bring the account's computed reasons in line, then hold or release what waits."""
    return reevaluate_accounts(uow, [account_id], policy, on_date)[0]


def reevaluate_accounts(uow: UnitOfWork, account_ids: Iterable[int],
                        policy: CreditPolicy | None = None, on_date: date | None = None,
                        *, fresh: Collection[int] = ()) -> list[Evaluation]:
    """:func:`reevaluate_account` for many accounts, in id order; the account rows (locked on
    PostgreSQL), current reasons and what waits are read per batch, not per account.

    ``fresh`` accounts were created in this unit of work and nothing else of theirs was
    written (``UnitOfWork.new_accounts``): they have no reasons, nothing waiting and zero
    exposure, so those are not read; the same decisions are taken on those known values."""
    policy = policy or uow.policy or CreditPolicy()
    on_date = on_date or uow.now().date()
    ids = sorted(set(account_ids))
    results: list[Evaluation] = []
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        rows = _lock_accounts(uow, batch)
        missing = [a for a in batch if a not in rows]
        if missing:
            raise NotFound("account", missing[0])
        known = [a for a in batch if a not in fresh]
        waiting = _waiting(uow.conn, known) if known else set()
        # new, no flag: no reason can apply yet, nothing to read or decide
        decided = {a: row for a, row in rows.items() if a not in fresh or row["crm_hold"]}
        facts = read_facts(uow.conn, decided, on_date, policy, fresh=fresh, skip_clear=True)
        placements: list[NewReason] = []
        evaluations = [_apply(uow, account_id, facts[account_id], policy, on_date, placements)
                       if account_id in facts else Evaluation(account_id)
                       for account_id in batch]
        place_reasons(uow, placements)
        hold_requests(uow, [e.account_id for e in evaluations
                            if e.on_hold and e.account_id not in fresh])
        for e in evaluations:
            if not e.on_hold and e.account_id in waiting:
                release_account(uow, e.account_id)
        results += evaluations
    return results


def _apply(uow: UnitOfWork, account_id: int, facts: CreditFacts, policy: CreditPolicy,
           on_date: date, placements: list[NewReason]) -> Evaluation:
    """Decide; lift now, add placements to ``placements`` (written with the batch's others;
    what follows from on hold / released is the caller's)."""
    decision = credit.decide(facts, policy, on_date)
    if not decision.place and not decision.lift:
        return Evaluation(account_id, reasons=list(decision.reasons))
    for reason, details in decision.place.items():
        source = credit.actor(reason, facts.connection)
        placements.append(NewReason(account_id, reason, source, source, details))
    for reason, details in decision.lift.items():
        lift_reason(uow, account_id, reason, actor=credit.actor(reason, facts.connection),
                    details=details)
    result = Evaluation(account_id, list(decision.place), list(decision.lift),
                        list(decision.reasons))
    if result.placed or result.lifted:
        log.info("hold account=%s placed=%s lifted=%s now=%s", account_id,
                 _names(result.placed), _names(result.lifted), _names(result.reasons) or "none")
    return result


def _names(reasons: list[HoldReason]) -> list[str]:
    """As the log line has always shown them (``['crm']``, not the members' repr)."""
    return [r.value for r in reasons]


def _lock_accounts(uow: UnitOfWork, account_ids: list[int]) -> dict[int, RowMapping]:
    """The account rows; on PostgreSQL locked, in id order: two transactions evaluating the
    same account queue instead of both placing (unique violation) or both lifting (two history
    rows). SQLite's write lock already serialises writers. The lock is ``FOR NO KEY UPDATE``:
    it queues the evaluations as well, but not behind the key-share locks every insert of a
    row naming the account takes (a payment, an audit row). With ``FOR UPDATE`` two payments
    of one account each waited at commit for the other's insert: a deadlock."""
    stmt = select(*DECISION_COLUMNS).where(id_in(uow.conn, accounts.c.id, account_ids)
                                           ).order_by(accounts.c.id)
    if uow.dialect == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return {int(r["id"]): r for r in uow.conn.execute(stmt).mappings().all()}


def _waiting(conn: Connection, account_ids: list[int]) -> set[int]:
    """Accounts with a held order, a pending quantity change or a waiting request."""
    held = select(orders.c.account_id).where(id_in(conn, orders.c.account_id, account_ids),
                                             orders.c.status == OrderStatus.HELD)
    waiting = select(provisioning_requests.c.account_id).where(
        id_in(conn, provisioning_requests.c.account_id, account_ids),
        provisioning_requests.c.state == ProvisioningState.AWAITING_HOLD_RELEASE)
    changes = (select(subscriptions.c.account_id)
               .join(subscription_changes,
                     subscriptions.c.id == subscription_changes.c.subscription_id)
               .where(id_in(conn, subscriptions.c.account_id, account_ids),
                      subscription_changes.c.status == ItemStatus.PENDING))
    return {int(r[0]) for r in conn.execute(union(held, waiting, changes))}


def release_account(uow: UnitOfWork, account_id: int) -> int:
    """No reason left: activate held orders and pending quantity changes in creation order,
    then let waiting provisioning requests go. Returns how many items were activated."""
    conn = uow.conn
    held = conn.execute(select(orders.c.id, orders.c.created_at).where(
        orders.c.account_id == account_id, orders.c.status == OrderStatus.HELD)).all()
    changes = conn.execute(
        select(subscription_changes.c.id, subscription_changes.c.created_at)
        .join(subscriptions, subscriptions.c.id == subscription_changes.c.subscription_id)
        .where(subscriptions.c.account_id == account_id,
               subscription_changes.c.status == ItemStatus.PENDING)).all()
    items = sorted([(created, 0, oid) for oid, created in held]
                   + [(created, 1, cid) for cid, created in changes])
    for _, kind, item_id in items:
        if kind == 0:
            order_service.activate_order(uow, item_id)
        else:
            order_service.activate_change(uow, item_id)
    release_requests(uow, account_id)
    return len(items)


def reevaluate_touched_hook(policy: object | None = None) -> Callable[[UnitOfWork], None]:
    """The before-commit hook ``ledger_uow`` installs. ``None`` = the default policy."""
    if policy is not None and not isinstance(policy, CreditPolicy):
        raise TypeError(f"policy must be a CreditPolicy or None, not {type(policy).__name__}")
    effective = policy or CreditPolicy()

    def hook(uow: UnitOfWork) -> None:
        if uow.read_only:
            return
        # Touched-but-unseen accounts only: activation touches the same account again, and
        # the set stays intact for any hook that runs after this one.
        done: set[int] = set()
        while todo := sorted(uow.touched_accounts - done):
            reevaluate_accounts(uow, todo, effective, fresh=frozenset(uow.new_accounts))
            done.update(todo)

    return hook


def reevaluate_all(uow: UnitOfWork, on_date: date | None = None,
                   policy: CreditPolicy | None = None, *, chunk_size: int = 500,
                   account_ids: list[int] | None = None) -> dict[str, int]:
    """Re-evaluate every account (or ``account_ids``) in this unit of work, reading ids in
    keyset chunks of ``chunk_size``. For big ledgers prefer :func:`run_reevaluation`."""
    summary = {"accounts": 0, "placed": 0, "lifted": 0}
    after = 0
    while True:
        if account_ids is not None:
            ids = sorted(a for a in account_ids if a > after)[:chunk_size]
        else:
            ids = [r[0] for r in uow.conn.execute(select(accounts.c.id).where(
                accounts.c.id > after).order_by(accounts.c.id).limit(chunk_size))]
        if not ids:
            return summary
        for result in reevaluate_accounts(uow, ids, policy, on_date):
            summary["accounts"] += 1
            summary["placed"] += len(result.placed)
            summary["lifted"] += len(result.lifted)
        after = ids[-1]


def run_reevaluation(engine: Engine, on_date: date | None = None,
                     policy: CreditPolicy | None = None, *, only_past_due: bool = True,
                     chunk_size: int = 500,
                     uow_factory: Callable[[], UnitOfWork] | None = None) -> dict[str, int]:
    """The hourly job: one transaction per chunk, so a long run never holds SQLite's write lock
    for long. Days passing can only add ``overdue``, so by default only accounts with a
    document past its due date + grace are looked at; ``only_past_due=False`` does all."""
    policy = policy or CreditPolicy()
    if uow_factory is None:
        def uow_factory() -> UnitOfWork:
            return UnitOfWork(engine)
    with uow_factory() as uow:
        on_date = on_date or uow.now().date()
        if only_past_due:
            # only the documents past due + grace are read (in SQL), not every open one
            cutoff = credit.overdue_cutoff(on_date, policy.overdue_grace_days)
            candidates = sorted({d["account_id"]
                                 for d in open_debts(uow.conn, due_before=cutoff)})
        else:
            candidates = [r[0] for r in uow.conn.execute(
                select(accounts.c.id).order_by(accounts.c.id))]
    summary = {"accounts": 0, "placed": 0, "lifted": 0}
    for start in range(0, len(candidates), chunk_size):
        with uow_factory() as uow:
            part = reevaluate_all(uow, on_date, policy, chunk_size=chunk_size,
                                  account_ids=candidates[start:start + chunk_size])
            uow.commit()
        for key in summary:
            summary[key] += part[key]
    return summary
