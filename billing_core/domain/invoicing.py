"""One account's invoice for one bill period, computed from plain data (no I/O).

Rules kept here (the dates and proration are :mod:`billing_core.domain.periods`'s)
- Lines, in order: per subscription its catch-up prorations for quantity changes in periods
  already billed, each against the quantity in effect on its own date, and the credit for the
  days billed after its end date (``proration``, negative for a decrease; the rules are
  :mod:`billing_core.domain.history`'s), then its charges for the range not
  yet billed, ``[billed_through or start, end of its own period containing the invoice period
  start)`` cut at period boundaries, quantity changes and price changes (``recurring`` for a
  whole period, ``proration`` for a part); then one-time charges (``one_time``); then usage
  (``usage``: one line per product, usage period and price row in effect on the events' days,
  rated with the product's tiers on the period's total quantity and split across the period's
  price rows by their units, :func:`billing_core.domain.rating.running_amounts`); then the
  prepaid credit draw (``credit_draw``); then, when the invoice would go below zero, the carry
  to a credit memo (``credit_memo``).
- A subscription's price is its negotiated ``unit_price`` or the catalog price in effect on each
  day; the price is per the product's billing period (month or year), so an annual subscription
  of a monthly-priced product costs 12 x the monthly price per term, and a monthly subscription
  of a yearly-priced product 1/12 of it per month.
- Every line is rounded once (ROUND_HALF_UP, the currency's minor units). A usage period split
  across price rows rounds the running total after each row and bills the differences, so its
  lines add up to the rounded period total.
- Tax is computed once per rate on that rate's taxable base, after credits: base = the sum of
  the lines at the rate (the ``credit_draw`` line included, so tax applies to what remains),
  tax = ``round(base x rate)``, one rounding per rate (545.00 usage - 155.00 credit at 8.25 %:
  tax 32.18 on 390.00, not 44.96 - 12.79 = 32.17 line by line). Each line shows its share:
  the running tax after it minus the running tax before it (``round(running base x rate)``),
  so the lines' taxes add up to the rate's tax. The invoice keeps (rate, base, tax) per rate
  (``Draft.taxes``; rate 0 keeps none). Subtotal = sum of lines; tax = sum of the rates' taxes;
  total = both.
- Tax-inclusive prices (``tax_inclusive``; exclusive is the default): the priced amounts
  already hold their tax; per rate, tax = ``round(gross x rate / (1 + rate))`` on the gross sum
  of its lines after credits, base = gross - tax; each line's tax is its running share as
  above and the line keeps the net (priced - its tax), so the total is the sum of the priced
  amounts and subtotal, tax and total hold as for exclusive prices.
- Prepaid credits draw down the usage lines' total (before tax), earliest expiry first, no
  expiry last, then oldest grant. A grant draws only for usage dated on or before its
  ``expires_on`` (no expiry: all of it), so a grant that expires inside a usage period still
  pays for the usage before it expired: what that usage costs is each usage line's amount x
  its units dated on or before the expiry / its units, rounded per line (ROUND_HALF_UP). Each
  grant takes ``min(its remainder, cost of the usage it may pay for - what earlier grants
  drew)``; an expired grant with no usage dated before its expiry draws nothing. The draw line
  is taxed with the usage (it lowers the base).
- A negative total is carried to a credit memo: a ``credit_memo`` line of ``-total`` (no tax)
  brings the invoice to exactly zero, and the caller issues the memo for that amount.
- Every amount of an invoice (each line's amount and tax, each rate's base and tax, the
  subtotal, tax, total and the carry) is at most ``money.MAX_MINOR`` minor units either way,
  the ledger's maximum: :func:`over_maximum` names the first that is not, and the bill run
  refuses that account's invoice (its error; the others are billed), as the columns could not
  hold it or the sums over it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from billing_core.domain.history import billed_pieces, catch_ups, ordered
from billing_core.domain.money import MAX_MINOR, round_minor, to_minor
from billing_core.domain.periods import bill_period, period_of, prorate, split_by_period
from billing_core.domain.rating import Price, PriceBook, rate, running_amounts

ZERO = Decimal(0)
ONE_DAY = timedelta(days=1)
# (product billing period, subscription frequency) -> (numerator, denominator) of the price
_FACTOR = {("month", "monthly"): (1, 1), ("month", "annual"): (12, 1),
           ("year", "annual"): (1, 1), ("year", "monthly"): (1, 12)}


def period_factor(billing_period: str | None, frequency: str) -> tuple[int, int]:
    """(numerator, denominator) turning a product's price per its ``billing_period`` (month |
    year; None: month) into one period's charge of a subscription billed ``frequency``
    (monthly | annual): 12 months of a monthly price a year, a twelfth of a yearly one a
    month."""
    return _FACTOR.get((billing_period or "month", frequency), (1, 1))


@dataclass(slots=True)
class AccountTerms:
    id: int
    currency: str
    bill_cycle_day: int
    payment_terms_days: int = 30
    country: str | None = None
    region: str | None = None
    tax_exempt: bool = False


@dataclass(slots=True)
class Change:
    id: int
    effective_date: date
    old_quantity: Decimal
    new_quantity: Decimal
    invoiced: bool = False


@dataclass(slots=True)
class Sub:
    id: int
    product_id: int
    quantity: Decimal
    frequency: str
    start_date: date
    end_date: date | None = None
    billed_through: date | None = None
    unit_price: Decimal | None = None
    changes: list[Change] = field(default_factory=list)


@dataclass(slots=True)
class Charge:
    id: int
    product_id: int
    quantity: Decimal
    charge_date: date
    unit_price: Decimal | None = None


@dataclass(slots=True)
class Usage:
    id: int
    product_id: int
    quantity: Decimal
    day: date


@dataclass(slots=True)
class Grant:
    id: int
    remaining_minor: int
    expires_on: date | None


@dataclass(slots=True)
class Product:
    name: str
    billing_period: str | None = "month"


@dataclass(slots=True)
class Line:
    kind: str
    description: str
    amount_minor: int
    product_id: int | None = None
    subscription_id: int | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    period_start: date | None = None
    period_end: date | None = None
    tax_rate: Decimal | None = None
    tax_minor: int = 0


@dataclass(slots=True)
class TaxBase:
    """One rate's tax on an invoice: the taxable base after credits and the tax, rounded once."""

    rate: Decimal
    base_minor: int
    tax_minor: int


class _UsagePiece(NamedTuple):
    """A usage line's amount with the events it bills (a grant draws by the events' days)."""

    amount_minor: int
    quantity: Decimal
    events: list[Usage]


@dataclass(slots=True)
class Draft:
    account_id: int
    currency: str
    period_start: date
    period_end: date
    issue_date: date
    due_date: date
    lines: list[Line]
    subtotal_minor: int = 0
    tax_minor: int = 0
    total_minor: int = 0
    billed_through: dict[int, date] = field(default_factory=dict)
    changes: list[int] = field(default_factory=list)
    charges: list[int] = field(default_factory=list)
    usage: list[int] = field(default_factory=list)
    draws: list[tuple[int, int]] = field(default_factory=list)
    overflow_minor: int = 0
    taxes: list[TaxBase] = field(default_factory=list)


class _Pricer:
    """Unrounded charge for a quantity over days, by negotiated or catalog price."""

    def __init__(self, book: PriceBook, currency: str) -> None:
        self.book = book
        self.currency = currency

    def segments(self, sub: Sub, start: date,
                 end: date) -> Sequence[tuple[date, date, Price | None]]:
        if sub.unit_price is not None:
            return [(start, end, None)]
        return self.book.segments(sub.product_id, self.currency, start, end)

    @staticmethod
    def amount(sub: Sub, price: Price | None, quantity: Decimal) -> Decimal:
        return quantity * sub.unit_price if price is None else rate(price, quantity)  # type: ignore[operator]


def _fmt(d: date) -> str:
    return d.isoformat()


def _quantity_at(timeline: list[Change], base: Decimal, day: date) -> Decimal:
    q = base
    for c in timeline:
        if c.effective_date <= day:
            q = c.new_quantity
        else:
            break
    return q


@lru_cache(maxsize=4096)
def _n(number: Decimal) -> str:
    """A quantity as people write it (PostgreSQL returns 2.0000000000 for 2)."""
    return format(number.normalize(), "f")


@lru_cache(maxsize=4096)
def _range(start: date, end: date) -> str:
    return f"{start.isoformat()} to {(end - ONE_DAY).isoformat()}"


# (price, negotiated price, quantity, currency, name, period, factor) -> (description, amount)
_STEADY: dict[tuple[object, ...], tuple[str, int]] = {}
_STEADY_MAX = 65_536


def _steady_line(sub: Sub, product: Product, acct: AccountTerms, period_start: date,
                 pricer: _Pricer, draft: Draft, num: int, den: int) -> bool:
    """The common case, one whole period at one price and quantity (the same line the general
    path makes, without its cutting). False when the case is not that simple."""
    p_start, p_end = bill_period(period_start, acct.bill_cycle_day)
    if sub.end_date is not None and sub.end_date < p_end:
        return False
    segments = pricer.segments(sub, p_start, p_end)
    if len(segments) != 1:
        return False
    price = segments[0][2]
    # The line's text and amount depend only on these values (compared by value: equal
    # numbers give equal amounts and the same normalised text), and they repeat across a bill
    # run's accounts: compute each distinct one once.
    key = (price, sub.unit_price, sub.quantity, acct.currency, product.name, p_start, p_end,
           num, den)
    hit = _STEADY.get(key)
    if hit is None:
        amount = pricer.amount(sub, price, sub.quantity)
        if num != den:
            amount = amount * num / den
        hit = (f"{product.name} x {_n(sub.quantity)}, {_range(p_start, p_end)}",
               to_minor(amount, acct.currency))
        if len(_STEADY) >= _STEADY_MAX:
            _STEADY.clear()
        _STEADY[key] = hit
    draft.lines.append(Line("recurring", hit[0], hit[1], sub.product_id, sub.id, sub.quantity,
                            sub.unit_price if price is None else price.unit_price, p_start, p_end))
    draft.billed_through[sub.id] = p_end
    return True


def _end_credit(sub: Sub, product: Product, acct: AccountTerms, pricer: _Pricer, draft: Draft,
                timeline: list[Change], base: Decimal, billed: date, num: int, den: int) -> None:
    """Credit the days from the end date to ``billed`` at the quantities billed on them, and
    move the subscription's ``billed_through`` back to its end date."""
    end = sub.end_date
    if end is None:
        return
    for start, stop, quantity in billed_pieces(timeline, base, end, billed):
        for a, b, dip in split_by_period(start, stop, sub.frequency, acct.bill_cycle_day,
                                         sub.start_date):
            for a2, b2, price in pricer.segments(sub, a, b):
                days = (b2 - a2).days
                amount = prorate(Decimal(1), pricer.amount(sub, price, quantity) * num / den,
                                 days, dip)
                draft.lines.append(Line(
                    "proration", f"{product.name} x {_n(quantity)} ended {_fmt(end)}: credit "
                    f"{_fmt(a2)} to {_fmt(b2 - ONE_DAY)} ({days}/{dip} days)",
                    -to_minor(amount, acct.currency), sub.product_id, sub.id, -quantity,
                    sub.unit_price if price is None else price.unit_price, a2, b2))
    draft.billed_through[sub.id] = end


def _subscription_lines(sub: Sub, product: Product, acct: AccountTerms, period_start: date,
                        pricer: _Pricer, draft: Draft) -> None:
    bcd, freq, anchor, cur = acct.bill_cycle_day, sub.frequency, sub.start_date, acct.currency
    num, den = period_factor(product.billing_period, freq)
    billed = sub.billed_through or sub.start_date
    if not sub.changes and billed == period_start and freq == "monthly" \
            and _steady_line(sub, product, acct, period_start, pricer, draft, num, den):
        return
    timeline = ordered(sub.changes)
    base = timeline[0].old_quantity if timeline else sub.quantity
    # 1. quantity changes inside ranges already billed: prorated difference against the
    # quantity in effect on the change's own date (billing_core.domain.history)
    for c, old, start, stop in catch_ups(timeline, base, billed, sub.end_date):
        for a, b, dip in split_by_period(start, stop, freq, bcd, anchor):
            for a2, b2, price in pricer.segments(sub, a, b):
                delta = pricer.amount(sub, price, c.new_quantity) - pricer.amount(
                    sub, price, old)
                amount = prorate(Decimal(1), delta * num / den, (b2 - a2).days, dip)
                draft.lines.append(Line(
                    "proration", f"{product.name}: quantity {_n(old)} -> {_n(c.new_quantity)}"
                    f" from {_fmt(a2)} to {_fmt(b2 - ONE_DAY)} ({(b2 - a2).days}/{dip} days)",
                    to_minor(amount, cur), sub.product_id, sub.id,
                    c.new_quantity - old, sub.unit_price if price is None
                    else price.unit_price, a2, b2))
        draft.changes.append(c.id)
    # 1b. an end date inside the range already billed: what was billed after it comes back
    if sub.end_date is not None and sub.end_date < billed:
        _end_credit(sub, product, acct, pricer, draft, timeline, base, billed, num, den)
        return
    # 2. the range not billed yet, when it starts on or before this period's start
    if billed > period_start or (sub.end_date is not None and billed >= sub.end_date):
        return
    end = period_of(period_start, freq, bcd, anchor)[1]
    if sub.end_date is not None and sub.end_date < end:
        end = sub.end_date
    points = sorted({c.effective_date for c in timeline if billed < c.effective_date < end})
    for a, b, dip in split_by_period(billed, end, freq, bcd, anchor):
        cuts = [a, *(p for p in points if a < p < b), b]
        for qa, qb in pairwise(cuts):
            quantity = _quantity_at(timeline, base, qa)
            for a2, b2, price in pricer.segments(sub, qa, qb):
                days = (b2 - a2).days
                whole = days == dip
                amount = prorate(Decimal(1), pricer.amount(sub, price, quantity) * num / den,
                                 days, dip)
                label = "" if whole else f" ({days}/{dip} days)"
                draft.lines.append(Line(
                    "recurring" if whole else "proration",
                    f"{product.name} x {_n(quantity)}, {_fmt(a2)} to {_fmt(b2 - ONE_DAY)}{label}",
                    to_minor(amount, cur), sub.product_id, sub.id, quantity,
                    sub.unit_price if price is None else price.unit_price, a2, b2))
    draft.billed_through[sub.id] = end
    draft.changes.extend(c.id for c in timeline
                         if not c.invoiced and billed <= c.effective_date < end)


def compute_invoice(acct: AccountTerms, period_start: date, period_end: date, issue_date: date,
                    subs: list[Sub], charges: list[Charge], usage: list[Usage],
                    grants: list[Grant], products: dict[int, Product], book: PriceBook,
                    tax_rate: Decimal = ZERO, tax_inclusive: bool = False,
                    metered: Sequence[tuple[Line, date]] = (),
                    billed_usage: Sequence[Usage] = ()) -> Draft | None:
    """The invoice for ``[period_start, period_end)``, or None when there is nothing to bill.
    ``tax_inclusive``: the prices include ``tax_rate`` (see the module rules). ``metered``:
    metered usage lines rated from SQL aggregates (:mod:`billing_core.service.usage_rating`),
    each with the day its usage is dated by; they go after the usage lines and are drawn
    from by prepaid credits and taxed like them. ``billed_usage``: the usage events already
    on live invoices in the usage periods of late events (:func:`_usage_lines`)."""
    cur = acct.currency
    draft = Draft(acct.id, cur, period_start, period_end, issue_date,
                  issue_date + timedelta(days=acct.payment_terms_days), [])
    pricer = _Pricer(book, cur)
    for sub in subs:
        _subscription_lines(sub, products[sub.product_id], acct, period_start, pricer, draft)
    for ch in charges:
        if ch.charge_date >= period_end:
            continue
        if ch.unit_price is None:
            price = book.price_for(ch.product_id, cur, ch.charge_date)
            amount, unit = rate(price, ch.quantity), price.unit_price
        else:
            amount, unit = ch.quantity * ch.unit_price, ch.unit_price
        draft.lines.append(Line("one_time", f"{products[ch.product_id].name} x {_n(ch.quantity)}",
                                to_minor(amount, cur), ch.product_id, None, ch.quantity, unit,
                                ch.charge_date, ch.charge_date + ONE_DAY))
        draft.charges.append(ch.id)
    pieces = _usage_lines(acct, period_start, usage, products, book, draft, billed_usage)
    for line, day in metered:
        draft.lines.append(line)
        quantity = line.quantity if line.quantity is not None else ZERO
        pieces.append(_UsagePiece(line.amount_minor, quantity,
                                  [Usage(0, line.product_id or 0, quantity, day)]))
    _draw_credits(grants, pieces, draft)
    if not draft.lines:
        return None
    draft.taxes = _apply_taxes(draft.lines, tax_rate, tax_inclusive)
    subtotal = sum(line.amount_minor for line in draft.lines)
    tax = sum(t.tax_minor for t in draft.taxes)
    if subtotal + tax < 0:
        draft.overflow_minor = -(subtotal + tax)
        draft.lines.append(Line("credit_memo", "Carried to a credit memo (invoice below zero)",
                                draft.overflow_minor, tax_rate=ZERO))
        subtotal += draft.overflow_minor
    draft.subtotal_minor, draft.tax_minor = subtotal, tax
    draft.total_minor = subtotal + tax
    return draft


def over_maximum(draft: Draft) -> str | None:
    """The first amount of ``draft`` above ``MAX_MINOR`` minor units either way, as
    ``what=minor units``; None when every one is within (see the module rules)."""
    # on the bill run's compute path: the usual draft is checked without building a name
    if (max(abs(draft.subtotal_minor), abs(draft.tax_minor), abs(draft.total_minor),
            abs(draft.overflow_minor)) <= MAX_MINOR
            and all(abs(ln.amount_minor) <= MAX_MINOR and abs(ln.tax_minor) <= MAX_MINOR
                    for ln in draft.lines)
            and all(abs(t.base_minor) <= MAX_MINOR for t in draft.taxes)):
        return None
    amounts = [(f"line {i} amount", ln.amount_minor) for i, ln in enumerate(draft.lines, 1)]
    amounts += [(f"line {i} tax", ln.tax_minor) for i, ln in enumerate(draft.lines, 1)]
    amounts += [(f"tax base at {t.rate}", t.base_minor) for t in draft.taxes]
    amounts += [("subtotal", draft.subtotal_minor), ("tax", draft.tax_minor),
                ("total", draft.total_minor), ("carry to a credit memo", draft.overflow_minor)]
    return next((f"{what}={minor}" for what, minor in amounts if abs(minor) > MAX_MINOR), None)


@lru_cache(maxsize=65_536)
def _line_tax(amount_minor: int, tax_rate: Decimal) -> int:
    """Tax on a base, ``round(base x rate)`` (bases and rates repeat across a run)."""
    return round_minor(amount_minor * tax_rate)


@lru_cache(maxsize=65_536)
def _included_tax(gross_minor: int, tax_rate: Decimal) -> int:
    """The tax a tax-inclusive amount holds, ``round(gross x rate / (1 + rate))``."""
    return round_minor(gross_minor * tax_rate / (1 + tax_rate))


def _usage_lines(acct: AccountTerms, period_start: date, usage: list[Usage],
                 products: dict[int, Product], book: PriceBook,
                 draft: Draft, billed: Sequence[Usage] = ()) -> list[_UsagePiece]:
    """One line per product, usage period and price row in effect on the events' days; the
    rows of one period share its tiers (:func:`rating.running_amounts`). A late event, in a
    usage period some of whose usage is billed already (``billed``), re-rates the period's
    total: its lines bill what the whole period costs now less what the billed part cost
    (rule 6: tiers apply to the period's total), per price row, so a volume tier reached late
    can make a line negative."""
    cur = acct.currency
    groups: dict[tuple[int, date, date], dict[int, tuple[Price, list[Usage]]]] = {}
    for ev in usage:
        if ev.day >= period_start:
            continue
        price = book.price_for(ev.product_id, cur, ev.day)
        p_start, p_end = period_of(ev.day, "monthly", acct.bill_cycle_day, ev.day)
        by_row = groups.setdefault((ev.product_id, p_start, p_end), {})
        by_row.setdefault(id(price), (price, []))[1].append(ev)
    before: dict[tuple[int, date, date], dict[int, tuple[Price, Decimal]]] = {}
    for ev in billed:
        p_start, p_end = period_of(ev.day, "monthly", acct.bill_cycle_day, ev.day)
        if (ev.product_id, p_start, p_end) not in groups:
            continue
        price = book.price_for(ev.product_id, cur, ev.day)
        rows_before = before.setdefault((ev.product_id, p_start, p_end), {})
        old = rows_before.get(id(price), (price, ZERO))[1]
        rows_before[id(price)] = (price, old + ev.quantity)
    pieces: list[_UsagePiece] = []
    for key in sorted(groups):
        product_id, p_start, p_end = key
        name = products[product_id].name
        prior = before.get(key)
        if prior:
            _late_usage_lines(cur, name, key, groups[key], prior, draft, pieces)
            continue
        rows = sorted(groups[key].values(), key=lambda row: row[0].effective_from)
        parts = [(price, sum((e.quantity for e in events), ZERO)) for price, events in rows]
        amounts = _rated(parts, cur)
        if len(parts) == 1:
            texts = [f"{name}: {_n(parts[0][1])} used {_range(p_start, p_end)}"]
        else:
            total = _n(sum((q for _, q in parts), ZERO))
            texts = [f"{name}: {_n(q)} of {total} used {_range(p_start, p_end)} (price from "
                     f"{_fmt(max(price.effective_from, p_start))})" for price, q in parts]
        for (price, events), (_, quantity), amount, text in zip(rows, parts, amounts, texts,
                                                                strict=True):
            draft.lines.append(Line("usage", text, amount, product_id, None, quantity,
                                    price.unit_price, p_start, p_end))
            draft.usage.extend(e.id for e in events)
            pieces.append(_UsagePiece(amount, quantity, events))
    return pieces


def _rated(parts: list[tuple[Price, Decimal]], cur: str) -> list[int]:
    """Each price row's amount in minor units, the rows sharing the period's tiers."""
    if len(parts) == 1:
        price, quantity = parts[0]
        return [to_minor(rate(price, quantity), cur)]
    running = [to_minor(amount, cur) for amount in running_amounts(parts)]
    return [b - a for a, b in pairwise([0, *running])]


def _late_usage_lines(cur: str, name: str, key: tuple[int, date, date],
                      new: dict[int, tuple[Price, list[Usage]]],
                      prior: dict[int, tuple[Price, Decimal]], draft: Draft,
                      pieces: list[_UsagePiece]) -> None:
    """The lines of late usage: per price row, what the period costs now less what its
    billed usage cost (worked: graduated <=1,000 @0.10, <=5,000 @0.08; 900 billed 90.00, 200
    late -> 1,100 cost 108.00: a line of 18.00)."""
    product_id, p_start, p_end = key
    prices = {k: price for k, (price, _) in prior.items()}
    prices.update((k, price) for k, (price, _) in new.items())
    order = sorted(prices, key=lambda k: prices[k].effective_from)
    added = {k: sum((e.quantity for e in new[k][1]), ZERO) if k in new else ZERO
             for k in order}
    had = {k: prior[k][1] if k in prior else ZERO for k in order}
    now = _rated([(prices[k], had[k] + added[k]) for k in order], cur)
    then = _rated([(prices[k], had[k]) for k in order], cur)
    total_had = _n(sum(had.values(), ZERO))
    for k, amount_now, amount_then in zip(order, now, then, strict=True):
        amount = amount_now - amount_then
        if not amount and not added[k]:
            continue
        events = new[k][1] if k in new else []
        text = (f"{name}: {_n(added[k])} more used {_range(p_start, p_end)}, reported late "
                f"(the period re-rated with the {total_had} billed before)")
        draft.lines.append(Line("usage", text, amount, product_id, None, added[k],
                                prices[k].unit_price, p_start, p_end))
        draft.usage.extend(e.id for e in events)
        pieces.append(_UsagePiece(amount, added[k], events))


def _usage_through(pieces: list[_UsagePiece], day: date) -> int:
    """What the usage dated on or before ``day`` costs: each line's amount x its units dated
    then / its units, rounded (ROUND_HALF_UP) per line."""
    due = 0
    for piece in pieces:
        units = sum((e.quantity for e in piece.events if e.day <= day), ZERO)
        if units == piece.quantity:
            due += piece.amount_minor
        elif piece.quantity:
            due += round_minor(piece.amount_minor * units / piece.quantity)
    return due


def _draw_credits(grants: list[Grant], pieces: list[_UsagePiece], draft: Draft) -> None:
    owed = sum(piece.amount_minor for piece in pieces)
    if owed <= 0:
        return
    last_day = max(e.day for piece in pieces for e in piece.events)
    usable = sorted((g for g in grants if g.remaining_minor > 0),
                    key=lambda g: (g.expires_on is None, g.expires_on or date.min, g.id))
    drawn = 0
    for g in usable:
        cap = owed
        if g.expires_on is not None and g.expires_on < last_day:
            cap = min(owed, _usage_through(pieces, g.expires_on))
        take = min(g.remaining_minor, cap - drawn)
        if take <= 0:
            continue
        draft.draws.append((g.id, take))
        drawn += take
        if drawn == owed:
            break
    if drawn:
        draft.lines.append(Line("credit_draw", f"Prepaid credits applied to usage "
                                f"({len(draft.draws)} grant{'s' if len(draft.draws) > 1 else ''})",
                                -drawn))


def _apply_taxes(lines: list[Line], default_rate: Decimal, inclusive: bool) -> list[TaxBase]:
    """Each line's share of its rate's tax, and the tax per rate (see the module rules)."""
    by_rate: dict[Decimal, list[Line]] = {}
    for line in lines:
        if line.tax_rate is None:
            line.tax_rate = default_rate
        by_rate.setdefault(line.tax_rate, []).append(line)
    out: list[TaxBase] = []
    for tax_rate, taxed_lines in sorted(by_rate.items()):
        if not tax_rate:
            continue
        running = due = 0       # running base (gross when inclusive) and its tax
        for line in taxed_lines:
            running += line.amount_minor
            now_due = _included_tax(running, tax_rate) if inclusive \
                else _line_tax(running, tax_rate)
            line.tax_minor = now_due - due
            due = now_due
            if inclusive:
                line.amount_minor -= line.tax_minor
        out.append(TaxBase(tax_rate, running - due if inclusive else running, due))
    return out
