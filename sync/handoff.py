"""Hand-off: an accepted CRM quote becomes a billing order, exactly once per revision.

Rules kept here:
- The order's source reference is ``<connection>:<quote crm id>:rev<revision>``
  (``sync.refs``); billing's ``place_order`` returns the existing order for a known reference,
  and ``handoffs`` has the same key unique, so a crash anywhere re-runs into "already done".
  A hand-off's state is a :class:`sync.states.HandoffState`.
- A quote's order and its ``handoffs`` row commit together: quotes are handed off in chunks
  of ``CHUNK``, one transaction per chunk. Each quote is first looked at (waiting, withdrawn,
  reversed; its account fetched in a savepoint of its own); the chunk's orders then go through the
  gate together (``gate.accept_orders``: place + credit evaluation + provisioning, a few
  statements per chunk, not per order), which refuses an order alone (nothing of it written,
  its quote left waiting with the reason). A chunk that raises anything (a database error,
  a CRM error reading an account) is undone and handed off again quote by quote, each in a
  savepoint of its own: only the quote that fails is refused (left waiting with the reason, or
  quarantined when even that cannot be written); the others become orders. A budget stop (or
  an interrupt) goes on after the orders of the quotes before it are committed.
- What a cycle's hand-off looks at is read from the database a page at a time
  (``handoff_reads.due``: the owed quotes and the quotes noted in ``handoff_looks``), so a run
  holds one page, whatever the backlog; each chunk deletes the looks of the quotes it looked
  at (and of the page's quotes not worth a look before them) in its own transaction, and a
  budget stop keeps those of the quotes it did not reach. Given quotes (a targeted run, a
  retry by hand) are handed off the same way, their looks deleted too. The report counts the
  outcomes; it lists the quotes only for given quotes.
- A revision that does not fit ``handoffs.revision`` (``MAX_REVISION``) is quarantined.
- Only a primary quote is ordered (``QuoteRec.primary``, mapped from CPQ's
  ``SBQQ__Primary__c``; a map without it makes every quote primary): an accepted quote that is
  not its opportunity's primary one, not handed off before, is refused (waiting, quarantined
  naming ``primary``) until it is made primary, so an alternative quote accepted beside the
  primary one is no second order.
- An owed revision replaced by a newer accepted one before its hand-off is ``withdrawn``
  (superseded): only the quote's current revision becomes an order, as before.
  What a chunk needs is read with a few queries per chunk (``sync.handoff_reads``).
- A quote whose account is not known yet waits (``waiting``); when the engine gave a way to
  fetch one (:data:`AccountFetcher`), the account is asked for once, read from the CRM and
  reconciled by the engine; if the CRM has no such account the quote is quarantined.
- A newer revision of a handed-off quote is an amendment, handed off as the difference
  against what the deal ordered (``billing_core.service.amendments``; ``amends_order_id`` =
  the previous revision's order). Its previous revision is the latest placed one of the same
  quote record (Salesforce's revision field) or of the other records of the same account and
  quote number (Dataverse's ``revisionnumber``: a revised quote is a new record); while one of
  those other records is still owed, the newer revision waits for it. Its start date is the
  quote's start date (else its lines' earliest, else today). A quote closed because a newer
  revision replaced it (Dataverse) is not reported as reversed.
- An amendment or renewal quote of its own (``QuoteRec.kind``; CPQ, a Dataverse renewal) with
  no earlier revision of its own record or number continues the deal of the quote it names
  (``origin_quote``): an amendment amends the deal's newest order (``deals.deal_head``: the
  origin's order, then each order amending it in turn), a renewal is an order with
  ``renews_order_id`` = that order. It waits while its origin is owed, or while an earlier
  quote of the same deal (by start date, number, id) is; an origin not named, never read,
  deleted or never handed off is refused (waiting, quarantined naming ``origin_quote``).
- A line of quantity 0 orders nothing: an amendment removes its item; a new order of only
  such lines is refused. An amendment whose lines the sync saw deleted, all of them
  (``Known.emptied``), removes every item; a quote with no lines read is refused (its lines may
  simply not be read yet).
- Cancellation dates (``end_date`` on the quote or a line) end the deal's subscriptions by
  billing's ``end_subscription`` after the quote is placed, and again whenever a handed-off
  quote changes (idempotent: an end already there or earlier is left); a refusal is
  quarantined naming ``end_date`` without touching the hand-off's state.
- Usage products become subscriptions that rate usage (no recurring charge), so a usage-only
  quote is an order like any other.
- Nothing is stuck in silence: a quote the hand-off cannot take (billing refused its order or
  amendment, it has no lines, a product is unknown) stays ``waiting`` with the reason and is
  quarantined (object ``quote``, field, value, reason): ``quarantine list`` and the status
  show it. It is looked at again every cycle, so a fix in the CRM (the quote, a line, a
  price, a product) takes it, and so does ``quarantine retry``; the refusal is logged (and the
  quarantine entry counted) only when it is new or its reason changed, not on every run.
  Placing it resolves its quarantine entry.
- A quote that leaves the accepted state (or is deleted) after hand-off is reported once
  (``reversed_in_crm``, a warning line), never silently reversed in billing.
"""
from __future__ import annotations

import json
import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import Engine, bindparam, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.gc_pause import gc_paused
from billing_core.domain.errors import InvalidState, LedgerError
from billing_core.domain.states import ItemStatus
from billing_core.service import amendments as amendments_service
from billing_core.service import gate, ledger_uow, order_reads
from billing_core.service import orders as orders_service
from billing_core.service import subscriptions as subscriptions_service
from billing_core.service.deals import deal_head, deal_orders
from billing_core.service.pricing import get_product
from connectors.base import BudgetExhausted
from sync import mapping
from sync.bookkeeping import ledger_id_of, quarantine_record
from sync.handoff_reads import (
    HANDOFF_CHUNK,
    HANDOFF_PAGE,
    MAX_REVISION,
    Known,
    Siblings,
    clear_looks,
    due,
    run_siblings,
    to_hand_off,
)
from sync.mapping import Invalid, QuoteLineRec, QuoteRec
from sync.reconcile import stamp_sync
from sync.refs import source_ref
from sync.runs import current_run
from sync.states import PLACED, HandoffState
from sync.tables import handoffs, quarantine

log = logging.getLogger(__name__)


@dataclass
class HandoffReport:
    """The outcomes of a hand-off run: counted always, listed (the quotes) only when the caller
    gave the quotes (a cycle's run lists nothing: it would hold every quote of its backlog)."""

    placed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    reversed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    listed: bool = True


@dataclass(frozen=True)
class FetchedAccount:
    """What asking the engine for a missing account gave: whether the CRM has it, and its
    billing id (None when the CRM has none, or billing refused it and it is quarantined)."""

    in_crm: bool
    ledger_id: int | None


#: The engine's port for an account a quote names that was not pulled yet: read it from the
#: CRM now and reconcile it in the hand-off's unit of work (given the account's CRM id).
AccountFetcher = Callable[[UnitOfWork, str], FetchedAccount]


CHUNK = HANDOFF_CHUNK      # quotes per transaction


def run_handoffs(engine: Engine, fetch_account: AccountFetcher | None, connection: str,
                 quote_ids: Iterable[str] | None, accepted: frozenset[str], *,
                 uow_factory: Callable[[], UnitOfWork] | None = None) -> HandoffReport:
    """Hand off these quotes (those worth it), or with ``quote_ids=None`` everything the
    connection's hand-off owes or must look at (``handoff_reads.due``), a page at a time;
    without ``fetch_account`` (a retry by hand) a quote whose account is not known waits."""
    report = HandoffReport(listed=quote_ids is not None)
    factory = uow_factory or (lambda: ledger_uow(engine))
    if quote_ids is None:
        pages: Iterable[list[str]] = due(engine, connection, HANDOFF_PAGE)
    else:
        given = sorted(set(quote_ids))
        pages = (given[i:i + HANDOFF_PAGE] for i in range(0, len(given), HANDOFF_PAGE))
    for page in pages:
        _run_page(engine, fetch_account, connection, sorted(page), accepted, factory, report)
    return report


def _run_page(engine: Engine, fetch_account: AccountFetcher | None, connection: str,
              page: list[str], accepted: frozenset[str], factory: Callable[[], UnitOfWork],
              report: HandoffReport) -> None:
    """One page of a hand-off run (``page`` sorted): its quotes worth a look, in chunks of
    ``CHUNK``, one transaction each; every quote of the page has its look deleted by the
    chunk that reached it (the page's last ones, not worth a look, by a transaction of their
    own)."""
    todo = to_hand_off(engine, connection, set(page), accepted)
    with engine.connect().execution_options(ledger_read_only=True) as conn:
        siblings = run_siblings(conn, connection, todo)
    cleared = 0         # the page's quotes before this index have their looks deleted
    for start in range(0, len(todo), CHUNK):
        cleared = _run_chunk(fetch_account, connection, page, cleared, todo[start:start + CHUNK],
                             accepted, factory, report, siblings)
    if cleared < len(page):
        with engine.begin() as conn:
            clear_looks(conn, connection, page[cleared:])


@gc_paused
def _run_chunk(fetch_account: AccountFetcher | None, connection: str, page: list[str],
               cleared: int, chunk: list[str], accepted: frozenset[str],
               factory: Callable[[], UnitOfWork], report: HandoffReport,
               siblings: Siblings | None) -> int:
    """One chunk of a page, in its own transaction, with the looks of ``page[cleared:]`` up
    to the chunk's last quote deleted; returns the index the page is cleared to."""
    reached = bisect_right(page, chunk[-1])
    outcomes: list[tuple[str, str | None]] = []
    with factory() as uow:
        stamp_sync(uow, connection)
        known = Known.read(uow, connection, chunk, siblings)
        try:
            with uow.savepoint():
                outcomes = _chunk(uow, fetch_account, connection, chunk, accepted, known)
        except Exception as exc:  # noqa: BLE001 - any failure: retried quote by quote
            log.warning("hand-off chunk failed, retried quote by quote run=%s connection=%s "
                        "error=%s", current_run.get(), connection, _reason(exc))
            try:
                outcomes = _one_by_one(uow, fetch_account, connection, chunk, accepted,
                                       known, outcomes)
            except BaseException:
                # A budget stop or an interrupt: the quotes before it are handed off and
                # commit, as they would one transaction per quote; the looks of the quotes
                # not reached stay for the next run.
                looked = {q for q, _ in outcomes}
                clear_looks(uow.conn, connection, [
                    q for q in page[cleared:reached] if q in looked or q not in chunk])
                uow.commit()
                _count(report, outcomes)
                raise
        clear_looks(uow.conn, connection, page[cleared:reached])
        uow.commit()
    _count(report, outcomes)
    return reached


def _count(report: HandoffReport, outcomes: list[tuple[str, str | None]]) -> None:
    for quote_id, outcome in outcomes:
        if outcome:
            report.counts[outcome] += 1
            if report.listed:
                getattr(report, outcome).append(quote_id)


def _chunk(uow: UnitOfWork, fetch_account: AccountFetcher | None, connection: str,
           quote_ids: list[str], accepted: frozenset[str], known: Known
           ) -> list[tuple[str, str | None]]:
    """Hand these quotes off in the caller's transaction; their orders go through the gate
    together."""
    orders: list[tuple[QuoteRec, Placing]] = []
    outcomes: list[tuple[str, str | None]] = [
        (quote_id, _one(uow, fetch_account, connection, quote_id, accepted, known, orders))
        for quote_id in quote_ids]
    return outcomes + list(_place(uow, connection, orders, known))


def _one_by_one(uow: UnitOfWork, fetch_account: AccountFetcher | None, connection: str,
                quote_ids: list[str], accepted: frozenset[str], known: Known,
                outcomes: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The chunk again, each quote in a savepoint of its own: a quote that raises is refused
    alone. ``outcomes`` collects as it goes (the caller commits them on a budget stop)."""
    outcomes.clear()
    for quote_id in quote_ids:
        try:
            with uow.savepoint():
                outcomes += _chunk(uow, fetch_account, connection, [quote_id], accepted, known)
        except BudgetExhausted:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, this quote only
            _refuse_alone(uow, connection, known, quote_id, exc)
            outcomes.append((quote_id, "failed"))
    return outcomes


def _reason(exc: BaseException) -> str:
    """An error as one short line: a database error's driver message, not its statement."""
    return f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"[:500]


def _refuse_alone(uow: UnitOfWork, connection: str, known: Known, quote_id: str,
                  exc: Exception) -> None:
    """A quote whose hand-off raised: left waiting with the reason (looked at again each
    cycle); quarantined when even its waiting row cannot be written."""
    quote = known.quotes[quote_id][0]
    log.warning("hand-off failed run=%s connection=%s quote=%s error=%s", current_run.get(),
                connection, quote_id, _reason(exc))
    try:
        with uow.savepoint():
            _set(uow, connection, quote, HandoffState.WAITING, f"hand-off failed: {_reason(exc)}")
    except Exception:   # noqa: BLE001 - the row itself is what fails: quarantine the quote
        quarantine_record(uow, connection, "quote", json.loads(mapping.rec_to_json(quote)),
                          Invalid("quote", quote_id, f"hand-off failed: {_reason(exc)}"))


def _set(uow: UnitOfWork, connection: str, quote: QuoteRec, state: HandoffState, detail: str,
         order_id: int | None = None) -> None:
    ref = source_ref(connection, quote.crm_id, quote.revision)
    now = uow.now()
    done = uow.conn.execute(update(handoffs).where(handoffs.c.source_ref == ref).values(
        state=state, detail=detail, order_id=order_id, updated_at=now))
    if done.rowcount == 0:
        uow.conn.execute(insert(handoffs).values(
            connection=connection, quote_crm_id=quote.crm_id, revision=quote.revision,
            source_ref=ref, order_id=order_id, state=state, detail=detail,
            created_at=now, updated_at=now))


#: What the hand-off places for a quote: a new order, or an amendment of the deal before it.
Placing = orders_service.OrderIn | amendments_service.AmendmentIn


def _one(uow: UnitOfWork, fetch_account: AccountFetcher | None, connection: str, quote_id: str,
         accepted: frozenset[str], known: Known,
         orders: list[tuple[QuoteRec, Placing]]) -> str | None:
    """Decide what the quote needs; an order or amendment to place is added to ``orders``
    (placed with the chunk's others by :func:`_place`)."""
    if quote_id not in known.quotes:
        return None
    quote, deleted = known.quotes[quote_id]
    history = known.history.get(quote_id, [])
    placed = [h for h in history if h["state"] in PLACED]
    if deleted or quote.status not in accepted:
        now_status = "deleted" if deleted else repr(quote.status)
        reversed_any = False
        # a quote closed because a newer revision replaced it is the deal going on
        to_report = [] if quote_id in known.revised and not deleted else placed
        for h in to_report:
            if h["state"] == HandoffState.DONE:
                uow.conn.execute(update(handoffs).where(handoffs.c.id == h["id"]).values(
                    state=HandoffState.REVERSED_IN_CRM, updated_at=uow.now(),
                    detail=f"quote is now {now_status} in the CRM; order {h['order_id']} "
                           "left as it is"))
                log.warning("quote left accepted state after hand-off run=%s connection=%s "
                            "quote=%s order=%s status=%s", current_run.get(), connection,
                            quote_id, h["order_id"], now_status)
                reversed_any = True
        if reversed_any:
            return "reversed"
        uow.conn.execute(update(handoffs).where(
            handoffs.c.connection == connection, handoffs.c.quote_crm_id == quote_id,
            handoffs.c.state == HandoffState.WAITING).values(state=HandoffState.WITHDRAWN,
                                                             updated_at=uow.now()))
        return None
    older = [h["id"] for h in history
             if h["state"] == HandoffState.WAITING and h["revision"] < quote.revision]
    if older:       # owed revisions a newer accepted one replaced before they were handed off
        uow.conn.execute(update(handoffs).where(handoffs.c.id.in_(older)).values(
            state=HandoffState.WITHDRAWN, updated_at=uow.now(),
            detail=f"superseded by revision {quote.revision} before its hand-off"))
    done_now = [h for h in history if h["revision"] == quote.revision and h["state"] in PLACED]
    if done_now:        # handed off before: a cancellation date set since is applied now
        if done_now[-1]["order_id"] and _ends(quote, known):
            _apply_ends(uow, connection, quote, int(done_now[-1]["order_id"]), known)
        return None
    if not quote.primary:       # CPQ orders only the primary quote of an opportunity
        _refused(uow, connection, quote, known, Invalid(
            "primary", False, "the accepted quote is not its opportunity's primary quote: "
            "only the primary quote is ordered (an alternative accepted beside it would bill "
            "twice); make it primary to order it"))
        return "failed"
    if not 0 <= quote.revision <= MAX_REVISION:
        quarantine_record(uow, connection, "quote", json.loads(mapping.rec_to_json(quote)),
                          Invalid("revision", quote.revision,
                                  f"is above {MAX_REVISION}, the largest revision handed off"))
        return "failed"
    account_id = known.accounts.get(quote.account_crm_id)
    if account_id is None:      # fetched for an earlier quote of this chunk, perhaps
        account_id = ledger_id_of(uow.conn, connection, "account", quote.account_crm_id)
    if account_id is None and fetch_account is not None:
        with uow.savepoint():       # the CRM read may fail (budget): undone alone
            account_id = _fetch_account(uow, fetch_account, connection, quote)
        if account_id is None:
            return "failed"
    if account_id is None:
        _set(uow, connection, quote, HandoffState.WAITING,
             f"account {quote.account_crm_id} not pulled yet")
        return "waiting"
    lines = known.lines.get(quote_id, [])
    refused_lines = known.refused_lines.get(quote_id)
    if refused_lines:       # billed without them, the quote would be billed short
        line_id, field, reason = refused_lines[0]
        more = f" and {len(refused_lines) - 1} more" if len(refused_lines) > 1 else ""
        _refused(uow, connection, quote, known, Invalid(
            "lines", line_id, f"line {line_id}{more} of the accepted quote is in quarantine "
            f"({field}: {reason}): the quote is handed off once its lines are fixed"))
        return "failed"
    no_lines = Invalid("lines", 0, "the accepted quote has no lines" + (
        " (to cancel items, set their quantity to 0)" if quote.kind != "new" else ""))
    if not lines and quote_id not in known.emptied:
        _refused(uow, connection, quote, known, no_lines)
        return "failed"
    prior = [h for h in known.prior.get(quote_id, ()) if h["revision"] < quote.revision]
    owed_before = [h for h in prior if h["state"] == HandoffState.WAITING]
    if owed_before:
        _set(uow, connection, quote, HandoffState.WAITING,
             f"waits for revision {owed_before[-1]['revision']} (quote "
             f"{owed_before[-1]['quote_crm_id']}) to be handed off first")
        return "waiting"
    previous = sorted((h for h in [*placed, *prior]
                       if h["revision"] < quote.revision and h["order_id"]),
                      key=lambda h: (h["revision"], h["id"]))
    amends = renews = None
    if previous:            # a later revision of the same quote (record or number)
        amends = deal_head(uow, int(previous[-1]["order_id"]))
    elif quote.kind != "new":   # an amendment or renewal quote of its own (CPQ, Dataverse)
        found = _origin_order(uow, connection, quote, known)
        if isinstance(found, str):
            return found
        if quote.kind == "renewal":
            renews = found
        else:
            amends = found
    if not lines and amends is None:    # only an amendment may remove every item
        _refused(uow, connection, quote, known, no_lines)
        return "failed"
    try:
        orders.append((quote, _placing(uow, connection, quote, int(account_id), lines, amends,
                                       known, renews=renews)))
    except Invalid as exc:
        _refused(uow, connection, quote, known, exc)
        return "failed"
    return None


def _origin_order(uow: UnitOfWork, connection: str, quote: QuoteRec, known: Known
                  ) -> int | str:
    """The order an amendment or renewal quote continues: the newest order of the deal of the
    quote it names (``origin_quote``), or the outcome when there is none yet: ``waiting``
    (the origin, or an earlier quote of the same deal, is still owed) or ``failed`` (refused
    and quarantined with the reason: no origin named, or one that was never handed off)."""
    what = f"the {quote.kind} quote"
    origin_id = quote.origin_quote
    origin = known.origins.get(origin_id) if origin_id else None
    problem: Invalid | None = None
    if origin_id is None or origin is None:
        named = f" (contract {quote.origin_ref} has no quote)" if quote.origin_ref else ""
        problem = Invalid("origin_quote", quote.origin_ref,
                          f"{what} names no earlier quote{named}: its deal is unknown")
    elif origin_id == quote.crm_id:
        problem = Invalid("origin_quote", origin_id, f"{what} names itself")
    if problem is not None:
        _refused(uow, connection, quote, known, problem)
        return "failed"
    assert origin is not None and origin_id is not None
    placed = [r for r in origin.rows if r["state"] in PLACED and r["order_id"]]
    if not placed:
        if any(r["state"] == HandoffState.WAITING for r in origin.rows):
            _set(uow, connection, quote, HandoffState.WAITING,
                 f"waits for quote {origin_id}, whose deal it continues, to be handed off "
                 "first")
            return "waiting"
        if origin.rec is None:
            reason = "was not read from the CRM (not pulled yet, or not visible to us)"
        elif origin.deleted:
            reason = "was deleted in the CRM before it was handed off"
        else:
            reason = (f"was never handed off (status {origin.rec.status!r}): only the deal "
                      "of an accepted quote can be amended or renewed")
        _refused(uow, connection, quote, known, Invalid("origin_quote", origin_id, reason))
        return "failed"
    earlier = [q for q, rows in known.followers.get(origin_id, ())
               if q.crm_id != quote.crm_id and _sequence(q) < _sequence(quote)
               and any(r["state"] == HandoffState.WAITING for r in rows)]
    if earlier:
        first = min(earlier, key=_sequence)
        _set(uow, connection, quote, HandoffState.WAITING,
             f"waits for the earlier {first.kind} quote {first.crm_id} of the same deal to be "
             "handed off first")
        return "waiting"
    return deal_head(uow, int(placed[-1]["order_id"]))


def _sequence(quote: QuoteRec) -> tuple[date, str, str]:
    """The order in which quotes continuing one deal are handed off: by start date, then
    number, then CRM id (a quote without a start date last)."""
    return (quote.start_date or date.max, quote.number or "", quote.crm_id)


def _refused(uow: UnitOfWork, connection: str, quote: QuoteRec, known: Known,
             exc: LedgerError) -> None:
    """The hand-off cannot take the quote: it stays waiting (looked at again every cycle) with
    the reason, and is quarantined; logged only when the refusal is new or changed."""
    detail = f"billing refused the order: {exc}"
    _set(uow, connection, quote, HandoffState.WAITING, detail)
    _quarantine(uow, connection, quote, exc)


def _quarantine(uow: UnitOfWork, connection: str, quote: QuoteRec, exc: LedgerError) -> None:
    """Quarantine the quote with the error's field and reason (once: a repeat only updates
    when it was last seen)."""
    entry = uow.conn.execute(select(quarantine.c.id, quarantine.c.field, quarantine.c.reason)
                             .where(quarantine.c.connection == connection,
                                    quarantine.c.object == "quote",
                                    quarantine.c.crm_id == quote.crm_id,
                                    quarantine.c.status == "open")).first()
    if entry is not None and (entry.field, entry.reason) == (exc.field[:64], exc.problem):
        uow.conn.execute(update(quarantine).where(quarantine.c.id == entry.id)
                         .values(last_seen=uow.now()))
        return
    log.warning("hand-off refused run=%s connection=%s quote=%s error=%s",
                current_run.get(), connection, quote.crm_id, exc)
    quarantine_record(uow, connection, "quote", json.loads(mapping.rec_to_json(quote)), exc)


def _place(uow: UnitOfWork, connection: str, orders: list[tuple[QuoteRec, Placing]],
           known: Known) -> list[tuple[str, str]]:
    """Place the chunk's orders through the gate together, then its amendments (the gate
    decides with the unit of work's credit policy: the configured one); a refused one leaves
    its quote waiting, quarantined."""
    outcomes: list[tuple[str, str]] = []
    done: list[tuple[QuoteRec, str, int]] = []
    new = [(q, o) for q, o in orders if isinstance(o, orders_service.OrderIn)]
    amended = [(q, o) for q, o in orders if isinstance(o, amendments_service.AmendmentIn)]
    results: list[int | LedgerError] = []
    if new:
        results += gate.accept_orders(uow, [o for _, o in new])
    if amended:
        results += amendments_service.amend_orders(uow, [o for _, o in amended])
    placing: list[tuple[QuoteRec, Placing]] = [*new, *amended]
    for (quote, order), result in zip(placing, results, strict=True):
        if isinstance(result, LedgerError):
            _refused(uow, connection, quote, known, result)
            outcomes.append((quote.crm_id, "failed"))
            continue
        if isinstance(order, amendments_service.AmendmentIn):
            detail = f"amendment of order {order.amends_order_id}"
        elif order.renews_order_id is not None:
            detail = f"renewal of order {order.renews_order_id}"
        else:
            detail = "order placed"
        done.append((quote, detail, result))
        log.info("handed off connection=%s quote=%s revision=%s order=%s", connection,
                 quote.crm_id, quote.revision, result)
        outcomes.append((quote.crm_id, "placed"))
    _set_done(uow, connection, done, known)
    for quote, _, order_id in done:     # after: placing resolved the quote's quarantine
        if _ends(quote, known):
            _apply_ends(uow, connection, quote, order_id, known)
    orders.clear()
    return outcomes


def _ends(quote: QuoteRec, known: Known) -> bool:
    """Whether the quote or one of its lines carries a cancellation date (``end_date``)."""
    return quote.end_date is not None or any(
        ln.end_date is not None for ln in known.lines.get(quote.crm_id, ()))


def _apply_ends(uow: UnitOfWork, connection: str, quote: QuoteRec, order_id: int,
                known: Known) -> None:
    """End the deal's subscriptions at the quote's cancellation dates, by billing's own rule
    (``end_subscription``: days billed in advance after the end are credited by the next bill
    run; a committed term follows the product's early-termination setting). The quote's
    ``end_date`` ends every subscription of the deal, a line's ``end_date`` those of its
    product (and negotiated price, when the line has one); the earlier date wins. A
    subscription already ending on or before the date is left as it is, so applying the same
    dates again changes nothing. A refusal (an early termination the product refuses) is
    quarantined naming ``end_date``; the order stays placed."""
    today = uow.now().date()
    deal = deal_orders(uow, deal_head(uow, order_id))
    subs = [row for o in deal for row in order_reads.list_subscriptions(
        uow.conn, on=today, order_id=o, limit=10_000)
        if row["status"] != ItemStatus.CANCELLED]
    lines = [ln for ln in known.lines.get(quote.crm_id, ()) if ln.end_date is not None]
    problems: list[LedgerError] = []
    for sub in subs:
        dates = [quote.end_date] if quote.end_date is not None else []
        for line in lines:
            if known.products.get(line.product_crm_id) == sub["product_id"] and (
                    line.unit_price is None or sub["unit_price"] is None
                    or line.unit_price == sub["unit_price"]):
                assert line.end_date is not None
                dates.append(line.end_date)
        if not dates:
            continue
        at = min(dates)
        if sub["end_date"] is not None and sub["end_date"] <= at:
            continue
        try:
            with uow.savepoint():
                ended = subscriptions_service.end_subscription(uow, int(sub["id"]), at)
        except InvalidState:
            continue                # it already ends on or before that day
        except LedgerError as exc:
            problems.append(Invalid("end_date", at.isoformat(),
                                    f"subscription {sub['id']} cannot end then: {exc.problem}"))
            continue
        log.info("ended from the CRM connection=%s quote=%s subscription=%s at=%s", connection,
                 quote.crm_id, sub["id"], ended)
    if problems:
        _quarantine(uow, connection, quote, problems[0])


def _set_done(uow: UnitOfWork, connection: str, done: list[tuple[QuoteRec, str, int]],
              known: Known) -> None:
    """:func:`_set` ``done`` for the chunk's placed quotes: the revisions seen before (owed
    or waiting) are updated with one statement, the new ones inserted with one."""
    now, fresh, seen = uow.now(), [], []
    for quote, detail, order_id in done:
        if any(h["revision"] == quote.revision for h in known.history.get(quote.crm_id, ())):
            seen.append({"b_ref": source_ref(connection, quote.crm_id, quote.revision),
                         "b_detail": detail, "b_order": order_id})
            continue
        fresh.append({"connection": connection, "quote_crm_id": quote.crm_id,
                      "revision": quote.revision, "order_id": order_id,
                      "state": HandoffState.DONE,
                      "source_ref": source_ref(connection, quote.crm_id, quote.revision),
                      "detail": detail, "created_at": now, "updated_at": now})
    if seen:
        uow.conn.execute(update(handoffs).where(handoffs.c.source_ref == bindparam("b_ref"))
                         .values(state=HandoffState.DONE, detail=bindparam("b_detail"),
                                 order_id=bindparam("b_order"), updated_at=now), seen)
    if fresh:
        uow.conn.execute(insert(handoffs), fresh)
    ids = sorted({quote.crm_id for quote, _, _ in done})
    if ids:             # a refusal quarantined before is over
        uow.conn.execute(update(quarantine).where(
            quarantine.c.connection == connection, quarantine.c.object == "quote",
            quarantine.c.crm_id.in_(ids), quarantine.c.status == "open").values(
            status="resolved", last_seen=now))


def _fetch_account(uow: UnitOfWork, fetch_account: AccountFetcher, connection: str,
                   quote: QuoteRec) -> int | None:
    """The quote's account was not pulled yet: the engine fetches it once; a quote naming an
    account the CRM does not have is quarantined."""
    fetched = fetch_account(uow, quote.account_crm_id)
    if not fetched.in_crm:
        quarantine_record(uow, connection, "quote", json.loads(mapping.rec_to_json(quote)),
                          Invalid("account_crm_id", quote.account_crm_id, "unknown account"))
    return fetched.ledger_id


def _quote_pricing(quote: QuoteRec, account_currency: str | None
                   ) -> Callable[[QuoteLineRec, bool], Decimal | None]:
    """How the quote's lines are priced: refused (``Invalid``) when the quote is in another
    currency than its account (billing does not convert) or carries a discount amount or a
    freight charge on the whole quote (they belong to no one line); a discount percentage on
    the whole quote lowers every line's price by it, so a line without a price (or a usage
    line, rated at the catalog price) is refused with it."""
    if quote.currency and account_currency and quote.currency != account_currency:
        raise Invalid("currency", quote.currency,
                      f"the quote is in {quote.currency} and its account bills in "
                      f"{account_currency}: billing does not convert; quote in "
                      f"{account_currency}")
    if quote.discount_amount:
        raise Invalid("discount_amount", quote.discount_amount,
                      "is a discount on the whole quote, which no one line carries: give it "
                      "on the lines, or as a percentage of the quote")
    if quote.freight_amount:
        raise Invalid("freight_amount", quote.freight_amount,
                      "is a charge on the whole quote (freight, shipping and handling), which "
                      "no line carries and billing would not bill: quote it as a line (a "
                      "one-time product) and set it to 0")
    percent = quote.discount_percent

    def price(line: QuoteLineRec, usage: bool) -> Decimal | None:
        if not percent:
            return None if usage else line.unit_price
        if usage or line.unit_price is None:
            raise Invalid("discount_percent", percent,
                          f"is a discount on the whole quote, and line {line.crm_id} has no "
                          "price of its own to lower (" + ("usage is rated at the catalog "
                          "price" if usage else "it takes the catalog price") + ")")
        return mapping.less_percent(line.unit_price, percent)

    return price


def _placing(uow: UnitOfWork, connection: str, quote: QuoteRec, account_id: int,
             lines: list[QuoteLineRec], amends: int | None, known: Known, *,
             renews: int | None = None) -> Placing:
    """The quote as a new order (``renews``: the renewal of that order's deal), or
    (``amends``: the deal's newest order) as the new content of its deal, from the
    amendment's start date. A line of quantity 0 orders nothing: in an amendment, its item
    is removed."""
    subs: list[orders_service.SubscriptionItem] = []
    charges: list[orders_service.OneTimeItem] = []
    price = _quote_pricing(quote, known.currencies.get(account_id))
    today = uow.now().date()
    effective = quote.start_date or min(
        (ln.start_date for ln in lines if ln.start_date), default=today)
    for line in lines:
        if line.quantity == 0:
            continue
        product_id = known.products.get(line.product_crm_id)
        if product_id is None:
            raise Invalid("product_crm_id", line.product_crm_id, "unknown product")
        product = known.product_rows.get(product_id) or get_product(uow.conn, product_id)
        start: date = line.start_date or quote.start_date or today
        if amends is not None:      # nothing of an amendment starts before the amendment
            start = max(start, effective)
        if product["kind"] in ("recurring", "usage"):
            # usage is rated at the catalog price (tiers) from its events: no negotiated price
            usage = product["kind"] == "usage"
            subs.append(orders_service.SubscriptionItem(
                product_id=int(product_id), quantity=line.quantity, start_date=start,
                frequency="annual" if product["billing_period"] == "year" else "monthly",
                unit_price=price(line, usage)))
        elif product["kind"] == "one_time":
            charges.append(orders_service.OneTimeItem(
                product_id=int(product_id), quantity=line.quantity, charge_date=start,
                unit_price=price(line, False)))
    ref = source_ref(connection, quote.crm_id, quote.revision)
    if amends is None and not subs and not charges:
        raise Invalid("lines", len(lines), "every line of the accepted quote has quantity 0")
    if amends is not None:
        return amendments_service.AmendmentIn(
            account_id=account_id, source_ref=ref, amends_order_id=amends,
            effective_date=effective, subscriptions=tuple(subs),
            one_time_charges=tuple(charges))
    return orders_service.OrderIn(
        account_id=account_id, source_ref=ref, order_date=quote.start_date or today,
        subscriptions=tuple(subs), one_time_charges=tuple(charges), renews_order_id=renews)
