"""Metered usage in the bill run: aggregated in SQL, rated per usage period, marked billed.

Tables: ``metered_events`` (raw, :mod:`billing_core.service.usage_ingest`), ``usage_metrics``
(:mod:`billing_core.service.usage_metrics`), ``usage_ratings`` (one row per metered usage line:
invoice and line, account, metric, group value, usage period, aggregate, event count, priced
amount, whether it is an adjustment).

Rules kept here (the metric and rating rules: :mod:`billing_core.domain.metering`)
- For an account due for ``[P, E)``, every unbilled event dated (UTC) before ``P`` is rated,
  by the usage period (the account's monthly bill period) it falls in. Events are never
  loaded one by one: per chunk of accounts and bill cycle day, one query finds the (account,
  metric, usage period) keys with unbilled events, and one query per metric version
  aggregates them (``GROUP BY`` account, group value, period or price-row bucket).
- A key whose usage period no earlier live invoice covered and billed is billed as usage
  lines: one per group value and price row (additive aggregations; the others one per
  group value). A key whose usage period was already invoiced (an invoice for a later period
  exists, or an earlier line billed this metric for it) gets one adjustment line per group:
  ``rate(the period's aggregate over all its events now) - what live invoices billed for it``
  (``usage_ratings``), nothing when that is zero. Late events and corrections (a negative
  value, or a ``replaces`` event whose original no longer counts) both arrive this way. The
  earlier invoice is never touched.
- Exactly once, as the bill run's other marks (:mod:`billing_core.service.billing_io`): the
  invoice's transaction marks the account's unbilled events dated before ``P`` with id up to
  the largest read (``invoice_id`` set only while empty) and compares the rows changed with
  the count read; a difference means another transaction billed or stored events meanwhile:
  the chunk is rolled back and read again. What was billed is also summed from
  ``usage_ratings`` of live invoices, so even an event the mark missed is never billed twice.
- Voiding an invoice clears its events' mark (:mod:`billing_core.service.voiding`) and its
  ratings stop counting (they join live invoices only).
- An account whose metered usage cannot be priced (no price for the metric's product in its
  currency) is not billed: its error is reported as for any other charge.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    bindparam,
    case,
    cast,
    distinct,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)

from billing_core.adapters.bulk import executemany
from billing_core.adapters.tables import invoices, metered_events, usage_ratings
from billing_core.domain.errors import LedgerError
from billing_core.domain.invoicing import AccountTerms, Draft, Line, Product
from billing_core.domain.metering import (
    NO_GROUP,
    Metric,
    RatedPart,
    describe,
    describe_adjustment,
    from_e6,
    rate_parts,
    version_for,
)
from billing_core.domain.periods import period_of
from billing_core.domain.rating import Price, PriceBook
from billing_core.service.usage_metrics import load_metrics

ZERO = Decimal(0)
ONE_DAY = timedelta(days=1)
EV = metered_events
_REP = metered_events.alias("rep")


@dataclass
class MeteredLine:
    line: Line
    day: date                       # the day its usage is dated by for credit grants
    rating: dict[str, Any]          # the usage_ratings row, without invoice and line


@dataclass
class MeteredWork:
    """One account's metered usage for its invoice, and the mark that bills it."""

    cutoff: datetime
    max_id: int = 0
    expected: int = 0
    lines: list[MeteredLine] = field(default_factory=list)
    error: LedgerError | None = None

    def invoice_lines(self) -> list[tuple[Line, date]]:
        if self.error is not None:
            raise self.error
        return [(m.line, m.day) for m in self.lines]


def _utc(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _period_starts(first: date, stop: date, bcd: int) -> list[date]:
    """The usage periods' starts from the one holding ``first`` up to (not including) ``stop``."""
    out: list[date] = []
    start = period_of(first, "monthly", bcd, first)[0]
    while start < stop:
        out.append(start)
        start = period_of(start, "monthly", bcd, start)[1]
    return out


def _bucket(cuts: Sequence[date]) -> Any:
    """The index of the last cut at or before an event's time (cuts ascending)."""
    if len(cuts) < 2:
        return literal_column("0", Integer)
    return case(*[(EV.c.occurred_at >= _utc(c), i) for i, c in reversed(list(enumerate(cuts)))
                  if i > 0], else_=0)


def _prop(name: str) -> Any:
    return cast(EV.c.properties[name].as_string(), String)


def load_metered(conn: Connection, book: PriceBook, products: Mapping[int, Product],
                 due: Mapping[int, AccountTerms],
                 periods: Mapping[int, tuple[date, date]]) -> dict[int, MeteredWork]:
    """The metered usage lines of the due accounts (``periods`` by bill cycle day)."""
    metrics = load_metrics(conn)
    if not metrics or not due:
        return {}
    by_bcd: dict[int, list[int]] = defaultdict(list)
    for acc in due.values():
        by_bcd[acc.bill_cycle_day].append(acc.id)
    out: dict[int, MeteredWork] = {}
    for bcd, ids in by_bcd.items():
        _load_group(conn, book, products, due, metrics, bcd, periods[bcd][0], ids, out)
    return out


def _load_group(conn: Connection, book: PriceBook, products: Mapping[int, Product],
                due: Mapping[int, AccountTerms], metrics: Mapping[str, list[Metric]],
                bcd: int, start: date, ids: list[int], out: dict[int, MeteredWork]) -> None:
    cutoff = _utc(start)
    mine = EV.c.account_id.in_(ids)
    unbilled = [mine, EV.c.invoice_id.is_(None), EV.c.occurred_at < cutoff]
    earliest = conn.execute(select(func.min(EV.c.occurred_at)).where(*unbilled)).scalar()
    if earliest is None:
        return
    # periods of events that unbilled corrections replace are rated again too
    old = EV.alias("old")
    replaced = conn.execute(select(old.c.account_id, old.c.metric_code, old.c.occurred_at)
                            .join(EV, EV.c.replaces == old.c.event_id).where(*unbilled)).all()
    first = min([earliest, *(r.occurred_at for r in replaced)]).date()
    starts = _period_starts(first, start, bcd)
    bounds = [*starts, start]
    keys: set[tuple[int, str, int]] = set()
    period_k = _bucket(starts).label("k")
    for acc, code, k, n, top in conn.execute(
            select(EV.c.account_id, EV.c.metric_code, period_k, func.count(),
                   func.max(EV.c.id)).where(*unbilled, EV.c.occurred_at >= _utc(starts[0]))
            .group_by(EV.c.account_id, EV.c.metric_code, literal_column("k"))):
        work = out.setdefault(acc, MeteredWork(cutoff))
        work.expected += n
        work.max_id = max(work.max_id, top)
        keys.add((acc, code, k))
    for r in replaced:
        k = max(i for i, s in enumerate(starts) if _utc(s) <= r.occurred_at)
        keys.add((r.account_id, r.metric_code, k))
    latest = dict(conn.execute(select(invoices.c.account_id, func.max(invoices.c.period_start))
                               .where(invoices.c.account_id.in_(ids),
                                      invoices.c.status != "void")
                               .group_by(invoices.c.account_id)).all())
    prior = _prior(conn, ids, starts[0])
    for code in sorted({c for _, c, _ in keys}):
        versions = metrics.get(code)
        if not versions:
            continue      # ingestion refuses unknown metrics; a removed one rates nothing
        wanted = {(a, k) for a, c, k in keys if c == code}
        # consecutive periods rated by the same version: one aggregate query each
        runs: list[tuple[Metric, int, int]] = []
        for k, s in enumerate(starts):
            v = version_for(versions, s)
            if runs and runs[-1][0] is v:
                runs[-1] = (v, runs[-1][1], k)
            else:
                runs.append((v, k, k))
        for metric, ka, kb in runs:
            accts = sorted({a for a, k in wanted if ka <= k <= kb})
            if not accts:
                continue
            lo, hi = bounds[ka], bounds[kb + 1]
            cuts = sorted({*starts[ka:kb + 1], *(book.starts_within(metric.product_id, lo, hi)
                                                 if metric.additive else ())})
            aggs = _aggregate(conn, metric, accts, lo, hi, cuts)
            for acc in accts:
                work = out[acc]
                if work.error is not None:
                    continue
                try:
                    for k in range(ka, kb + 1):
                        if (acc, k) in wanted:
                            _rate_key(work, book, products, due[acc], metric,
                                      (bounds[k], bounds[k + 1]), aggs.get(acc, {}),
                                      prior.get((acc, code, bounds[k]), {}),
                                      (acc, code, bounds[k]) in prior
                                      or (latest.get(acc) or date.min) >= bounds[k + 1])
                except LedgerError as exc:
                    work.error, work.lines = exc, []


Aggs = dict[int, dict[date, dict[str | None, tuple[Decimal, int]]]]


def _aggregate(conn: Connection, metric: Metric, accts: list[int], lo: date, hi: date,
               cuts: list[date]) -> Aggs:
    """``{account: {cut: {group: (aggregate, events)}}}`` of the events in ``[lo, hi)``,
    bucketed by ``cuts`` (period starts, and price-row starts for additive aggregations)."""
    conds = [EV.c.account_id.in_(accts), EV.c.metric_code == metric.code,
             EV.c.occurred_at >= _utc(lo), EV.c.occurred_at < _utc(hi),
             ~exists().where(_REP.c.replaces == EV.c.event_id)]
    for name, values in metric.filters.items():
        conds.append(_prop(name).in_(list(values)))
    bucket = _bucket(cuts)
    keys = [EV.c.account_id, bucket] + ([_prop(metric.group_by)] if metric.group_by else [])
    agg = metric.aggregation
    if agg == "latest":
        inner = select(*[k.label(f"k{i}") for i, k in enumerate(keys)], EV.c.value_e6.label("v"),
                       func.row_number().over(partition_by=keys, order_by=[
                           EV.c.occurred_at.desc(), EV.c.id.desc()]).label("rn"),
                       func.count().over(partition_by=keys).label("n")).where(*conds).subquery()
        stmt = select(*[inner.c[f"k{i}"] for i in range(len(keys))], inner.c.v,
                      inner.c.n).where(inner.c.rn == 1)
    else:
        value = {"count": func.count(), "sum": func.sum(EV.c.value_e6),
                 "max": func.max(EV.c.value_e6),
                 "unique_count": func.count(distinct(_prop(metric.property or "")))}[agg]
        labelled = [k.label(f"k{i}") for i, k in enumerate(keys)]
        # by the labels: PostgreSQL would not match expressions holding bound parameters
        stmt = select(*labelled, value, func.count()).where(*conds).group_by(
            *[literal_column(f"k{i}") for i in range(len(keys))])
    out: Aggs = {}
    for row in conn.execute(stmt):
        acc, b = row[0], row[1]
        grp = (row[2] if row[2] is not None else NO_GROUP) if metric.group_by else None
        v, n = row[-2], row[-1]
        figure = Decimal(v or 0) if agg in ("count", "unique_count") else from_e6(v or 0)
        out.setdefault(acc, {}).setdefault(cuts[b], {})[grp] = (figure, int(n))
    return out


def _rate_key(work: MeteredWork, book: PriceBook, products: Mapping[int, Product],
              acct: AccountTerms, metric: Metric, period: tuple[date, date],
              by_cut: Mapping[date, Mapping[str | None, tuple[Decimal, int]]],
              billed: Mapping[str | None, tuple[Decimal, int, int]], invoiced: bool) -> None:
    """The lines of one (account, metric, usage period): usage lines, or adjustments when
    the period was invoiced already (see the module rules)."""
    ps, pe = period
    cur, pid = acct.currency, metric.product_id
    name = products[pid].name
    groups: dict[str | None, list[tuple[date, Decimal, int]]] = defaultdict(list)
    for cut, per_group in by_cut.items():
        if ps <= cut < pe:
            for grp, (figure, n) in per_group.items():
                groups[grp].append((cut, figure, n))
    last_day = pe - ONE_DAY
    for grp in sorted(set(groups) | set(billed), key=lambda g: (g is not None, g or "")):
        pieces = sorted(groups.get(grp, []))
        events = sum(n for _, _, n in pieces)
        parts: list[tuple[Price, Decimal]] = []
        counts: list[int] = []          # events per part
        if metric.additive:
            for cut, figure, n in pieces:
                price = book.price_for(pid, cur, cut)
                if parts and parts[-1][0] is price:
                    parts[-1] = (price, parts[-1][1] + figure)
                    counts[-1] += n
                else:
                    parts.append((price, figure))
                    counts.append(n)
        elif pieces:
            parts = [(book.price_for(pid, cur, last_day), pieces[0][1])]
            counts = [events]
        total = sum((q for _, q in parts), ZERO)
        rated: list[RatedPart] = rate_parts(parts, cur) if parts else []
        if not invoiced:
            several = len(rated) > 1
            for part, n in zip(rated, counts, strict=True):
                text = describe(name, metric, grp, part.quantity, n, period,
                                max(part.price_from, ps) if several else None)
                work.lines.append(_line(text, part.amount_minor, pid, part.quantity,
                                        part.unit_price, period, last_day, metric, grp, n,
                                        adjustment=False))
            continue
        b_qty, b_events, b_amount = billed.get(grp, (ZERO, 0, 0))
        amount = sum(p.amount_minor for p in rated)
        if amount == b_amount and total == b_qty:
            continue
        text = describe_adjustment(name, metric, grp, total, b_qty, events, period)
        work.lines.append(_line(text, amount - b_amount, pid, total - b_qty,
                                rated[-1].unit_price if rated else None, period, last_day,
                                metric, grp, events - b_events, adjustment=True))


def _line(text: str, amount: int, pid: int, quantity: Decimal, unit: Decimal | None,
          period: tuple[date, date], day: date, metric: Metric, grp: str | None, events: int,
          *, adjustment: bool) -> MeteredLine:
    ps, pe = period
    return MeteredLine(Line("usage", text, amount, pid, None, quantity, unit, ps, pe), day, {
        "account_id": None, "metric_code": metric.code, "group_value": grp,
        "period_start": ps, "period_end": pe, "quantity": quantity, "events": events,
        "amount_minor": amount, "adjustment": adjustment})


Billed = dict[tuple[int, str, date], dict[str | None, tuple[Decimal, int, int]]]


def _prior(conn: Connection, ids: list[int], since: date) -> Billed:
    """What live invoices billed per (account, metric, usage period start) and group:
    (quantity, events, amount)."""
    out: Billed = {}
    rows = conn.execute(select(
        usage_ratings.c.account_id, usage_ratings.c.metric_code, usage_ratings.c.period_start,
        usage_ratings.c.group_value, usage_ratings.c.quantity, usage_ratings.c.events,
        usage_ratings.c.amount_minor).join(invoices, invoices.c.id == usage_ratings.c.invoice_id)
        .where(usage_ratings.c.account_id.in_(ids), usage_ratings.c.period_start >= since,
               invoices.c.status != "void"))
    for acc, code, p_start, grp, qty, events, amount in rows:
        groups = out.setdefault((acc, code, p_start), {})
        q, n, a = groups.get(grp, (ZERO, 0, 0))
        groups[grp] = (q + qty, n + events, a + amount)
    return out


MARK = update(metered_events).where(
    metered_events.c.account_id == bindparam("k_acc", type_=metered_events.c.account_id.type),
    metered_events.c.invoice_id.is_(None),
    metered_events.c.occurred_at < bindparam("k_cut", type_=metered_events.c.occurred_at.type),
    metered_events.c.id <= bindparam("k_max", type_=metered_events.c.id.type),
).values(invoice_id=bindparam("v_inv", type_=metered_events.c.invoice_id.type))
MARK_NAMES = ("k_acc", "k_cut", "k_max", "v_inv")


def write_metered(conn: Connection, placed: Sequence[tuple[int, Draft, MeteredWork]]
                  ) -> tuple[int, int]:
    """Record the ratings of the invoices just inserted and mark their events billed;
    returns (events read, events marked): the caller refuses a difference (a lost race)."""
    ratings: list[dict[str, Any]] = []
    marks: list[tuple[Any, ...]] = []
    for inv_id, draft, work in placed:
        numbers = {id(line): no for no, line in enumerate(draft.lines, 1)}
        for m in work.lines:
            ratings.append({**m.rating, "account_id": draft.account_id, "invoice_id": inv_id,
                            "line_no": numbers[id(m.line)]})
        if work.expected:
            marks.append((draft.account_id, work.cutoff, work.max_id, inv_id))
    if ratings:
        conn.execute(insert(usage_ratings), ratings)
    given = sum(work.expected for _, _, work in placed)
    return given, executemany(conn, MARK, MARK_NAMES, marks)
