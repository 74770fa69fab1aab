"""The bill run's database side: read a chunk of accounts, write its invoices, in bulk.

Rules kept here
- Reading a chunk is one SELECT per table, by account-id range (accounts, live invoices,
  subscriptions, quantity changes, one-time charges, unbilled usage, credit grants); the
  catalog, prices and tax rates are read once per run.
- Whether an account is already billed is read again after its charges were read: an account
  another transaction billed meanwhile counts as already billed, not as one with nothing to bill
  (PostgreSQL's READ COMMITTED gives each statement its own snapshot).
- Posted invoices are numbered as the chunk's transaction commits (``UnitOfWork.at_commit``,
  before credit control's hook), in account order, with their audit rows: the number series'
  row lock, which every posting transaction needs and holds to its commit, is then held for
  that last step only, and other workers' chunks write meanwhile. A chunk rolled back, or a
  dry run, takes no number. On SQLite, whose write lock lets one writing transaction run at a
  time from its first statement, numbering late would shorten no wait: there the numbers are
  taken before the insert and written with the invoices (no second pass over the rows). So
  does a chunk whose caller says it is ``alone`` (no other process is writing the run's
  chunks: the series lock held for the whole chunk keeps no one waiting), which saves
  PostgreSQL a second write of every invoice row.
- Writing a chunk is one bulk INSERT per table (invoices with reserved ids, lines, tax per
  rate with its base, credit draws) and one bulk UPDATE per kind of mark (change / charge /
  usage ``invoice_id``, grant ``remaining_minor``, and on SQLite ``billed_through``) through
  :mod:`billing_core.adapters.bulk`; on PostgreSQL one ``UPDATE ... WHERE id = ANY(...)`` per
  distinct (old, new) ``billed_through`` pair. No per-row ORM round trips.
- Nothing is billed twice, by the database: a subscription's range lines and one-time lines
  claim their charge (``invoice_lines.claims_charge``, unique per subscription and period start
  and per one-time charge); every mark changes only what is still as it was read
  (``invoice_id`` still empty, ``billed_through`` unchanged, a grant's remainder still covering
  the draw) and the rows changed are counted. A mark that finds fewer rows than it was given
  raises :class:`LostRace`: another transaction billed some of the chunk first, so the caller
  rolls the chunk back and reads it again.
- Usage events are dated by their UTC day.
- Tax is looked up once per account, for its period start (:class:`TaxTable`): an account
  whose country has no rate that day gets no invoice but an error in ``errors`` naming the
  account, country/region and day (``missing_tax_rate``), unless it is ``tax_exempt``; an
  account with nothing to bill gets neither. An account whose invoice cannot be computed
  (a ``LedgerError``, or a decimal error: an amount out of range, or an amount above the
  ledger's maximum ``money.MAX_MINOR``: :func:`billing_core.domain.invoicing.over_maximum`)
  is that account's error in ``errors``; the chunk's other accounts are billed.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, DecimalException
from typing import Any

from sqlalchemy import Connection, Date, bindparam, func, select, update

from billing_core.adapters.bulk import (
    BulkInsert,
    BulkUpdate,
    executemany,
    fetch,
    id_in,
    reserve_ids,
)
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.gc_pause import gc_paused
from billing_core.adapters.tables import (
    accounts,
    credit_draws,
    credit_grants,
    invoice_lines,
    invoice_taxes,
    invoices,
    one_time_charges,
    products,
    subscription_changes,
    subscriptions,
    usage_events,
)
from billing_core.domain.errors import LedgerError, MissingTaxRate, RuleViolation
from billing_core.domain.invoicing import (
    AccountTerms,
    Change,
    Charge,
    Draft,
    Grant,
    Product,
    Sub,
    Usage,
    compute_invoice,
    over_maximum,
)
from billing_core.domain.money import MAX_MINOR
from billing_core.domain.periods import bill_period, period_of
from billing_core.domain.rating import PriceBook
from billing_core.service import audit
from billing_core.service.numbering import take_numbers
from billing_core.service.pricing import list_prices
from billing_core.service.tax import TaxTable, load_tax_table
from billing_core.service.usage_rating import MeteredWork, load_metered, write_metered


@dataclass
class Catalog:
    book: PriceBook
    products: dict[int, Product]
    tax: TaxTable
    tax_inclusive: bool = False         # the catalog's prices include tax
    # products that are not recurring: a subscription to one has no recurring charge (a usage
    # product's events are rated)
    non_recurring: frozenset[int] = frozenset()


class LostRace(RuntimeError):
    """Another transaction billed part of this chunk after it was read: roll back, read again."""

    def __init__(self, what: str, given: int, changed: int) -> None:
        super().__init__(f"{given - changed} of {given} {what} were billed by another "
                         "transaction meanwhile")
        self.what, self.given, self.changed = what, given, changed


@dataclass
class ChunkData:
    account_ids: list[int]
    drafts: list[Draft] = field(default_factory=list)
    already_billed: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)
    # the due accounts' subscriptions as read: billed_through is what the mark compares with,
    # and a line from the start of the unbilled range on claims its period
    subs: dict[int, Sub] = field(default_factory=dict)
    # metered usage per due account (billing_core.service.usage_rating), marked with the invoice
    metered: dict[int, MeteredWork] = field(default_factory=dict)


@dataclass
class Written:
    invoices: int = 0
    lines: int = 0
    rows: int = 0
    numbers: list[str | None] = field(default_factory=list)     # in the chunk's order


ZERO = Decimal(0)
_LO = bindparam("lo", type_=accounts.c.id.type)
_HI = bindparam("hi", type_=accounts.c.id.type)
# Every read of a chunk is a range on account_id that its index serves (the usage products'
# subscriptions are left out in Python: a product condition here made SQLite walk the product
# index, every subscription of the table, for each chunk).
SELECT_SUBS = select(
    subscriptions.c.id, subscriptions.c.account_id, subscriptions.c.product_id,
    subscriptions.c.quantity, subscriptions.c.frequency, subscriptions.c.start_date,
    subscriptions.c.end_date, subscriptions.c.billed_through, subscriptions.c.unit_price,
).where(subscriptions.c.account_id.between(_LO, _HI), subscriptions.c.status == "active")
SELECT_USAGE = select(
    usage_events.c.id, usage_events.c.account_id, usage_events.c.product_id,
    usage_events.c.quantity, usage_events.c.occurred_at,
).where(usage_events.c.account_id.between(_LO, _HI), usage_events.c.invoice_id.is_(None),
        usage_events.c.occurred_at < bindparam("cutoff", type_=usage_events.c.occurred_at.type))


def load_catalog(conn: Connection, *, tax_inclusive: bool = False) -> Catalog:
    rows = conn.execute(select(products.c.id, products.c.name, products.c.billing_period,
                               products.c.kind)).all()
    prods = {r.id: Product(r.name, r.billing_period) for r in rows}
    non_recurring = frozenset(r.id for r in rows if r.kind != "recurring")
    return Catalog(PriceBook(list_prices(conn)), prods, load_tax_table(conn), tax_inclusive,
                   non_recurring)


@gc_paused
def load_chunk(conn: Connection, catalog: Catalog, run_date: date, after_id: int,
               size: int, *, upto: int | None = None) -> ChunkData:
    """Up to ``size`` accounts after ``after_id`` (and at most ``upto``: a work unit's end),
    read and computed."""
    in_range = accounts.c.id > after_id if upto is None else \
        accounts.c.id.between(after_id + 1, upto)
    acct_rows = conn.execute(select(
        accounts.c.id, accounts.c.currency, accounts.c.bill_cycle_day,
        accounts.c.payment_terms_days, accounts.c.country, accounts.c.region,
        accounts.c.tax_exempt,
    ).where(in_range).order_by(accounts.c.id).limit(size)).all()
    data = ChunkData([r.id for r in acct_rows])
    if not acct_rows:
        return data
    lo, hi = acct_rows[0].id, acct_rows[-1].id
    periods: dict[int, tuple[date, date]] = {}
    for bcd in {r.bill_cycle_day for r in acct_rows}:
        periods[bcd] = bill_period(run_date, bcd)
    latest = _latest_periods(conn, lo, hi)
    due: dict[int, AccountTerms] = {}
    for r in acct_rows:
        start = periods[r.bill_cycle_day][0]
        last = latest.get(r.id)
        if last is not None and last >= start:
            data.already_billed += 1
            continue
        due[r.id] = AccountTerms(r.id, r.currency, r.bill_cycle_day, r.payment_terms_days,
                                 r.country, r.region, bool(r.tax_exempt))
    if not due:
        return data
    max_start = max(periods[a.bill_cycle_day][0] for a in due.values())

    subs: dict[int, list[Sub]] = defaultdict(list)
    by_id: dict[int, Sub] = {}
    for sid, acc, pid, qty, freq, start, end, billed, unit in fetch(conn, SELECT_SUBS,
                                                                  lo=lo, hi=hi):
        if acc in due and pid not in catalog.non_recurring:
            sub = Sub(sid, pid, qty, freq, start, end, billed, unit)
            subs[acc].append(sub)
            by_id[sid] = sub
    if by_id:
        sub_ids = select(subscriptions.c.id).where(subscriptions.c.account_id.between(lo, hi))
        for c in conn.execute(select(
                subscription_changes.c.id, subscription_changes.c.subscription_id,
                subscription_changes.c.effective_date, subscription_changes.c.old_quantity,
                subscription_changes.c.new_quantity, subscription_changes.c.invoice_id,
        ).where(subscription_changes.c.subscription_id.in_(sub_ids),
                subscription_changes.c.status == "active")):
            owner = by_id.get(c.subscription_id)
            if owner is not None:
                owner.changes.append(Change(c.id, c.effective_date, c.old_quantity,
                                          c.new_quantity, c.invoice_id is not None))

    charges: dict[int, list[Charge]] = defaultdict(list)
    for c in conn.execute(select(
            one_time_charges.c.id, one_time_charges.c.account_id, one_time_charges.c.product_id,
            one_time_charges.c.quantity, one_time_charges.c.charge_date,
            one_time_charges.c.unit_price,
    ).where(one_time_charges.c.account_id.between(lo, hi), one_time_charges.c.status == "active",
            one_time_charges.c.invoice_id.is_(None))):
        if c.account_id in due:
            charges[c.account_id].append(Charge(c.id, c.product_id, c.quantity, c.charge_date,
                                                c.unit_price))

    usage: dict[int, list[Usage]] = defaultdict(list)
    cutoff = datetime.combine(max_start, time(), tzinfo=UTC)
    for uid, acc, pid, qty, occurred in fetch(conn, SELECT_USAGE, lo=lo, hi=hi, cutoff=cutoff):
        acct = due.get(acc)
        if acct is None:
            continue
        day = occurred.date()       # UTCDateTime returns aware UTC: this is the UTC day
        if day < periods[acct.bill_cycle_day][0]:
            usage[acc].append(Usage(uid, pid, qty, day))

    billed_usage = _billed_usage(conn, due, periods, usage)

    grants: dict[int, list[Grant]] = defaultdict(list)
    for g in conn.execute(select(
            credit_grants.c.id, credit_grants.c.account_id, credit_grants.c.currency,
            credit_grants.c.remaining_minor, credit_grants.c.expires_on,
    ).where(credit_grants.c.account_id.between(lo, hi), credit_grants.c.remaining_minor > 0)):
        acct = due.get(g.account_id)
        if acct is not None and g.currency == acct.currency:
            grants[g.account_id].append(Grant(g.id, g.remaining_minor, g.expires_on))

    data.metered = load_metered(conn, catalog.book, catalog.products, due, periods)

    # Read last, so an account billed by another transaction while the reads above ran counts
    # as already billed (a charge read before that commit is refused by the marks instead).
    latest = _latest_periods(conn, lo, hi)
    for account_id, acct in list(due.items()):
        last = latest.get(account_id)
        if last is not None and last >= periods[acct.bill_cycle_day][0]:
            data.already_billed += 1
            del due[account_id]
    data.subs = by_id
    for account_id, acct in due.items():
        start, end = periods[acct.bill_cycle_day]
        found = None if acct.tax_exempt else catalog.tax.find(acct.country, acct.region, start)
        try:
            draft = compute_invoice(acct, start, end, run_date, subs.get(account_id, []),
                                    charges.get(account_id, []), usage.get(account_id, []),
                                    grants.get(account_id, []), catalog.products, catalog.book,
                                    found[0] if found else ZERO, catalog.tax_inclusive,
                                    data.metered[account_id].invoice_lines()
                                    if account_id in data.metered else (),
                                    billed_usage.get(account_id, ()))
            if draft is not None and found is None and not acct.tax_exempt:
                raise MissingTaxRate(account_id, acct.country, acct.region, start)
            too_big = None if draft is None else over_maximum(draft)
            if too_big is not None:
                raise RuleViolation("account", account_id, f"its invoice cannot be computed: "
                                    f"{too_big} minor units is above the ledger's maximum of "
                                    f"{MAX_MINOR} minor units of {acct.currency}; check its "
                                    "prices and quantities")
        except LedgerError as exc:
            data.errors.append({"account_id": account_id, **exc.as_dict()})
            continue
        except DecimalException as exc:
            # an amount out of decimal range (1e400 units of usage, stored before the intake
            # refused such quantities): this account's error, the others are billed
            data.errors.append({"account_id": account_id, **RuleViolation(
                "account", account_id, f"its invoice cannot be computed: an amount is out of "
                f"the ledger's decimal range ({type(exc).__name__}); check its usage "
                "quantities and prices").as_dict()})
            continue
        if draft is not None:
            data.drafts.append(draft)
    return data


def _billed_usage(conn: Connection, due: dict[int, AccountTerms],
                  periods: dict[int, tuple[date, date]], usage: dict[int, list[Usage]]
                  ) -> dict[int, list[Usage]]:
    """For the late usage of the chunk (an event dated before the usage period the run bills,
    whose period was invoiced already), the events of the same product and usage period on
    live invoices: the period is re-rated as a whole (``invoicing._usage_lines``). One query
    for the chunk's late accounts, none in a chunk without late usage."""
    late: dict[int, set[tuple[int, date, date]]] = {}
    for account_id, events in usage.items():
        acct = due.get(account_id)
        if acct is None:
            continue
        bcd = acct.bill_cycle_day
        last = periods[bcd][0] - timedelta(days=1)
        recent = period_of(last, "monthly", bcd, last)[0]
        keys = {(e.product_id, *period_of(e.day, "monthly", bcd, e.day))
                for e in events if e.day < recent}
        if keys:
            late[account_id] = keys
    found: dict[int, list[Usage]] = {}
    if not late:
        return found
    since = min(start for keys in late.values() for _, start, _ in keys)
    until = max(end for keys in late.values() for _, _, end in keys)
    for r in conn.execute(select(
            usage_events.c.id, usage_events.c.account_id, usage_events.c.product_id,
            usage_events.c.quantity, usage_events.c.occurred_at).join(
            invoices, invoices.c.id == usage_events.c.invoice_id).where(
            id_in(conn, usage_events.c.account_id, sorted(late)),
            usage_events.c.occurred_at >= datetime.combine(since, time(), tzinfo=UTC),
            usage_events.c.occurred_at < datetime.combine(until, time(), tzinfo=UTC),
            invoices.c.status != "void")):
        day = r.occurred_at.date()
        bcd = due[r.account_id].bill_cycle_day
        if (r.product_id, *period_of(day, "monthly", bcd, day)) in late[r.account_id]:
            found.setdefault(r.account_id, []).append(
                Usage(r.id, r.product_id, r.quantity, day))
    return found


def _latest_periods(conn: Connection, lo: int, hi: int) -> dict[int, date]:
    """Each account's latest live invoice period start, for the accounts ``lo..hi``."""
    return {a: p for a, p in conn.execute(
        select(invoices.c.account_id, func.max(invoices.c.period_start))
        .where(invoices.c.account_id.between(lo, hi), invoices.c.status != "void")
        .group_by(invoices.c.account_id)).all()}


INVOICE_COLS = ("id", "account_id", "currency", "series", "number", "status", "period_start",
                "period_end", "issue_date", "due_date", "subtotal_minor", "tax_minor",
                "total_minor", "applied_minor", "bill_run_id", "created_at", "posted_at")
LINE_COLS = ("invoice_id", "line_no", "kind", "description", "product_id", "subscription_id",
             "quantity", "unit_price", "period_start", "period_end", "amount_minor", "tax_rate",
             "tax_minor", "one_time_charge_id", "claims_charge")
DRAW_COLS = ("grant_id", "invoice_id", "kind", "amount_minor", "created_at")
TAX_COLS = ("invoice_id", "tax_rate", "base_minor", "tax_minor")
INSERT_INVOICE = BulkInsert(invoices, INVOICE_COLS)
INSERT_LINE = BulkInsert(invoice_lines, LINE_COLS)
INSERT_DRAW = BulkInsert(credit_draws, DRAW_COLS)
INSERT_TAX = BulkInsert(invoice_taxes, TAX_COLS)
SET_CHANGE_INVOICE = BulkUpdate(subscription_changes, "invoice_id", guard="unset")
SET_CHARGE_INVOICE = BulkUpdate(one_time_charges, "invoice_id", guard="unset")
SET_USAGE_INVOICE = BulkUpdate(usage_events, "invoice_id", guard="unset")
# a posted invoice's number, set as its chunk commits (:func:`_number`)
#: Where writing transactions run side by side, so a chunk takes its numbers as it commits
#: (the module rules); elsewhere (SQLite) before its insert.
NUMBER_AT_COMMIT_DIALECTS: tuple[str, ...] = ("postgresql",)
SET_NUMBER = BulkUpdate(invoices, "number", guard="unset", text_values=True)
DRAW_GRANT = BulkUpdate(credit_grants, "remaining_minor", subtract=True, guard="covers")
# SQLite: by primary key, only while billed_through is still what the chunk read (IS: NULL too)
SET_BILLED_THROUGH = update(subscriptions).where(
    subscriptions.c.id == bindparam("k_id", type_=subscriptions.c.id.type),
    subscriptions.c.billed_through.is_not_distinct_from(bindparam("old", type_=Date())),
).values(billed_through=bindparam("v_new", type_=Date()))
BILLED_THROUGH_NAMES = ("k_id", "old", "v_new")


def _set_billed_through(conn: Connection, rows: list[tuple[int, date | None, date]]) -> int:
    """Move each (subscription, old, new) from old to new, only where it is still old; returns
    the rows moved. SQLite: one executemany by primary key (no SQL text to build per chunk).
    PostgreSQL: one UPDATE ... WHERE id = ANY(...) per distinct (old, new) pair (a chunk has
    few: its accounts' cycle days and new subscriptions)."""
    if conn.dialect.name != "postgresql":
        return executemany(conn, SET_BILLED_THROUGH, BILLED_THROUGH_NAMES, rows)
    by_pair: dict[tuple[date | None, date], list[int]] = defaultdict(list)
    for sub_id, old, new in rows:
        by_pair[(old, new)].append(sub_id)
    moved = 0
    for (old, new), ids in by_pair.items():
        moved += conn.execute(update(subscriptions).where(
            id_in(conn, subscriptions.c.id, ids),
            subscriptions.c.billed_through.is_not_distinct_from(old),
        ).values(billed_through=new)).rowcount
    return moved


def _marked(what: str, given: int, changed: int) -> int:
    """The rows a guarded mark changed: all it was given, or the chunk lost a race."""
    if changed != given:
        raise LostRace(what, given, changed)
    return changed


@dataclass
class Prepared:
    """A chunk's rows, built from its drafts before any id or number exists: plain tuples (cheap
    to hand to another thread or process), each row naming its invoice by its index in
    ``invoices``. :func:`apply_chunk` takes the numbers and ids and writes them."""
    # (account_id, currency, period_start, period_end, issue_date, due_date, subtotal, tax,
    #  total)
    invoices: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)     # (index, *LINE_COLS[1:])
    taxes: list[tuple[Any, ...]] = field(default_factory=list)     # (index, rate, base, tax)
    billed_through: list[tuple[int, date | None, date]] = field(default_factory=list)
    changes: list[tuple[int, int]] = field(default_factory=list)   # (change id, index)
    charges: list[tuple[int, int]] = field(default_factory=list)
    usage: list[tuple[int, int]] = field(default_factory=list)
    draws: list[tuple[int, int, int]] = field(default_factory=list)  # (grant, index, amount)
    overflow: list[tuple[int, int]] = field(default_factory=list)  # (index, overflow_minor)
    # (index, draft, its metered usage): write_metered numbers the ratings by the draft's lines
    metered: list[tuple[int, Draft, MeteredWork]] = field(default_factory=list)
    # the dialect whose driver values ``lines`` and ``taxes`` hold (:func:`to_driver`), if any
    driver: str | None = None


@gc_paused
def to_driver(prep: Prepared, dialect: Any) -> Prepared:
    """Convert the lines' and tax rows' values (all but the invoice index) to what the
    driver takes, here rather than in the writer (a reader process does it)."""
    prep.lines = INSERT_LINE.driver_rows(dialect, prep.lines, skip=1)
    prep.taxes = INSERT_TAX.driver_rows(dialect, prep.taxes, skip=1)
    prep.driver = dialect.name
    return prep


@gc_paused
def prepare_chunk(data: ChunkData) -> Prepared:
    """The rows of the chunk's invoices (no database: a reader may build them)."""
    out = Prepared()
    subs = data.subs
    # where each subscription's range not billed yet starts: a line from there on claims its
    # period; a catch-up proration of an earlier period (before it) does not
    unbilled_from = {sid: sub.billed_through or sub.start_date for sid, sub in subs.items()}
    lines, taxes = out.lines, out.taxes
    for k, d in enumerate(data.drafts):
        out.invoices.append((d.account_id, d.currency, d.period_start, d.period_end,
                             d.issue_date, d.due_date, d.subtotal_minor, d.tax_minor,
                             d.total_minor))
        # compute_invoice writes one one_time line per charge, in the order of d.charges
        charge_ids = iter(d.charges)
        for no, ln in enumerate(d.lines, 1):
            sid, charge_id, claims = ln.subscription_id, None, False
            if sid is not None:
                claims = ln.period_start is not None and ln.period_start >= unbilled_from[sid]
            elif ln.kind == "one_time":
                charge_id = next(charge_ids, None)
                if charge_id is None:
                    raise RuntimeError(f"account {d.account_id}: a one-time line, no charge")
                claims = True
            lines.append((k, no, ln.kind, ln.description[:255], ln.product_id, sid,
                          ln.quantity, ln.unit_price, ln.period_start, ln.period_end,
                          ln.amount_minor, ln.tax_rate, ln.tax_minor, charge_id, claims))
        if next(charge_ids, None) is not None:
            raise RuntimeError(f"account {d.account_id}: a one-time charge, no line")
        out.billed_through.extend((sid, subs[sid].billed_through, end)
                                  for sid, end in d.billed_through.items())
        if d.changes:
            out.changes.extend((cid, k) for cid in d.changes)
        if d.charges:
            out.charges.extend((cid, k) for cid in d.charges)
        if d.usage:
            out.usage.extend((uid, k) for uid in d.usage)
        out.draws.extend((grant_id, k, amount) for grant_id, amount in d.draws)
        taxes.extend((k, t.rate, t.base_minor, t.tax_minor) for t in d.taxes)
        if d.overflow_minor:
            out.overflow.append((k, d.overflow_minor))
        if d.account_id in data.metered:
            out.metered.append((k, d, data.metered[d.account_id]))
    return out


def write_chunk(uow: UnitOfWork, data: ChunkData, *, run_id: int | None, post: bool,
                series: str, issue_date: date, alone: bool = False) -> Written:
    """Insert the chunk's invoices (posted, numbered in account order) and mark what they bill."""
    return apply_chunk(uow, prepare_chunk(data), run_id=run_id, post=post, series=series,
                       alone=alone)


def apply_chunk(uow: UnitOfWork, prep: Prepared, *, run_id: int | None, post: bool,
                series: str, alone: bool = False) -> Written:
    """Write a prepared chunk: ids taken and one bulk statement per table and per kind of
    guarded mark (see the module rules); posted invoices get their numbers, and their audit
    rows, when the transaction commits (:func:`_number`), or with the insert on SQLite and
    when the caller is ``alone`` (no other process writing the run's chunks now)."""
    out = Written()
    if not prep.invoices:
        return out
    conn, now = uow.conn, uow.now()
    count = len(prep.invoices)
    ids = reserve_ids(conn, invoices, count)
    status, posted_at = ("posted", now) if post else ("draft", None)
    out.numbers = [None] * count
    number_now = post and (alone or conn.dialect.name not in NUMBER_AT_COMMIT_DIALECTS)
    if number_now:
        out.numbers[:] = take_numbers(conn, series, count)
    inv_rows = [(i, a, cur, series, n, status, ps, pe, issue, due, sub, tax, total, 0,
                 run_id, now, posted_at)
                for (a, cur, ps, pe, issue, due, sub, tax, total), i, n
                in zip(prep.invoices, ids, out.numbers, strict=True)]
    lines = [(ids[ln[0]], *ln[1:]) for ln in prep.lines]
    taxes = [(ids[k], rate, base, tax) for k, rate, base, tax in prep.taxes]
    converted = prep.driver == conn.dialect.name
    out.rows = INSERT_INVOICE.run(conn, inv_rows)
    out.rows += INSERT_LINE.run(conn, lines, converted=converted)
    out.rows += INSERT_TAX.run(conn, taxes, converted=converted)
    if prep.metered:
        out.rows += _marked("metered usage events", *write_metered(conn, [
            (ids[k], d, work) for k, d, work in prep.metered]))
    subs_bt = prep.billed_through
    out.rows += _marked("subscriptions", len(subs_bt), _set_billed_through(conn, subs_bt))
    for what, marks, stmt in (("quantity changes", prep.changes, SET_CHANGE_INVOICE),
                              ("one-time charges", prep.charges, SET_CHARGE_INVOICE),
                              ("usage events", prep.usage, SET_USAGE_INVOICE)):
        out.rows += _marked(what, len(marks), stmt.run(conn, [(m, ids[k]) for m, k in marks]))
    grants = [(g, amount) for g, _, amount in prep.draws]
    out.rows += _marked("credit grants", len(grants), DRAW_GRANT.run(conn, grants))
    out.rows += INSERT_DRAW.run(conn, [(g, ids[k], "usage", amount, now)
                                       for g, k, amount in prep.draws])
    # the trail: one row per invoice (``changes`` encoded here from plain values, keys
    # sorted: no per-value conversion), written with the numbers
    dumps = json.dumps
    changes = [dumps({"bill_run_id": [None, run_id], "period_start": [None, row[2].isoformat()],
                      "status": [None, status], "total_minor": [None, row[8]]})
               for row in prep.invoices]
    if post and not number_now:
        uow.at_commit(lambda u: _number(u, prep, ids, changes, series, out))
    else:
        _trail(uow, prep, ids, changes, out.numbers, "posted" if post else "created")
    for k, overflow in prep.overflow:
        from billing_core.service.memos import issue_credit_memo

        issue_credit_memo(uow, prep.invoices[k][0], overflow,
                          f"Invoice below zero for {prep.invoices[k][2]}",
                          origin="invoice_overflow", origin_invoice_id=ids[k], activate=True)
        out.rows += 1
    if post:
        for row in prep.invoices:
            uow.touch(row[0])
    out.invoices, out.lines = count, len(lines)
    return out


def _number(uow: UnitOfWork, prep: Prepared, ids: list[int], changes: list[str], series: str,
            out: Written) -> None:
    """The chunk's posted invoices take their numbers, in account order, as the transaction
    commits: the series row stays locked from here to the commit (numbers are gapless), so
    other workers' chunks write everything else meanwhile. Then their audit rows."""
    numbers = take_numbers(uow.conn, series, len(ids))
    _marked("invoice numbers", len(ids), SET_NUMBER.run(uow.conn, list(zip(ids, numbers,
                                                                            strict=True))))
    out.numbers[:] = numbers
    _trail(uow, prep, ids, changes, out.numbers, "posted")


def _trail(uow: UnitOfWork, prep: Prepared, ids: list[int], changes: list[str],
           numbers: list[str | None], action: str) -> None:
    audit.record_many(uow, [audit.Entry(action, "invoice", inv_id, n, row[0], change)
                            for row, n, inv_id, change
                            in zip(prep.invoices, numbers, ids, changes, strict=True)])
