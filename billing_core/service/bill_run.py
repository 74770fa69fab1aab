"""The bill run: one consolidated invoice per account per bill period, in chunks.

Rules kept here
- A run for date D bills every account whose bill period containing D (``[P, E)``, see
  :mod:`billing_core.domain.periods`) has no live invoice yet, and no live invoice for a later
  period either (a run for an older date never bills behind a newer invoice). What goes on the
  invoice is :func:`billing_core.domain.invoicing.compute_invoice`'s. An account with nothing to
  bill gets no invoice.
- Idempotent, by code and by the database: what is billed is marked in the same transaction as
  the invoice (``subscriptions.billed_through``, ``subscription_changes.invoice_id``,
  ``one_time_charges.invoice_id``, ``usage_events.invoice_id``, the grants' remainders).
- Exactly once under any concurrency, without relying on a lock: two runs, for the same date
  or any two dates, may read the same unbilled charges; the database lets only one bill them
  (unique indexes on one live invoice per account and period start, on the lines that claim a
  subscription's period or a one-time charge, and marks that change only what is still
  unbilled, counted: :mod:`billing_core.service.billing_io`). The chunk that loses (a unique
  violation, a mark that found fewer rows than it was given, a deadlock or a serialization
  failure) is rolled back and read again, up to ``MAX_CHUNK_ATTEMPTS`` times, and then bills
  what is still unbilled; ``retried_chunks`` counts them. Callers still take the ``bill-run``
  job lock (the daemon, the CLI) so that runs do not race in the first place.
- Accounts are processed in chunks of ``chunk_size`` by id, one transaction per chunk: one
  SELECT per table per chunk, executemany INSERTs and UPDATEs. A crash loses at most the chunk
  in flight, which nothing marked billed; a rerun bills it once.
- A run's row names its process (``claimed_by``); the next bill run closes a ``running`` row
  whose process is gone as ``abandoned`` (:func:`close_abandoned`); ``status`` counts such rows
  (and rows running longer than a bound, wherever they ran) as abandoned until then.
- Invoices are posted as they are created (``post=True``): numbers for the whole chunk are taken
  from the gapless sequence inside the chunk's transaction, in account order. With
  ``post=False`` they stay drafts (no number) for :func:`billing_core.service.invoices.post_invoice`.
- A posted invoice touches its account (credit control re-evaluates in the commit hook). An
  invoice that would go below zero is brought to zero and the remainder becomes an active
  credit memo (origin ``invoice_overflow``).
- ``dry_run`` runs the same code on the same transaction and rolls it back: nothing is written,
  not even the ``bill_runs`` row. An account whose invoice cannot be computed (e.g. no price on a
  day it charges, or no tax rate for its country: :mod:`billing_core.service.billing_io`) is
  reported in ``errors`` with the reason and left unbilled; the run goes on. The first
  ``PREVIEW_LIMIT`` invoices are kept in ``invoices`` with their lines and tax per rate (what
  ``--dry-run`` shows).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from billing_core.adapters import owner
from billing_core.adapters.bulk import inserted_id
from billing_core.adapters.db import UnitOfWork, bulk_cache
from billing_core.adapters.tables import bill_runs
from billing_core.domain.errors import LedgerError
from billing_core.service.billing_io import (
    ChunkData,
    LostRace,
    load_catalog,
    load_chunk,
    write_chunk,
)

log = logging.getLogger(__name__)
MAX_CHUNK_ATTEMPTS = 5
PREVIEW_LIMIT = 500


@dataclass
class PreviewLine:
    kind: str
    description: str
    quantity: Decimal | None
    period_start: date | None
    period_end: date | None
    amount_minor: int
    tax_rate: Decimal | None
    tax_minor: int


@dataclass
class InvoicePreview:
    account_id: int
    number: str | None
    currency: str
    period_start: date
    period_end: date
    lines: int
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    line_items: list[PreviewLine] = field(default_factory=list)
    # per rate: (rate, taxable base, tax), as the invoice keeps them
    taxes: list[tuple[Decimal, int, int]] = field(default_factory=list)


@dataclass
class BillRunResult:
    run_date: date
    dry_run: bool
    run_id: int | None = None
    accounts_seen: int = 0
    invoices_created: int = 0
    lines_written: int = 0
    rows_written: int = 0
    already_billed: int = 0
    retried_chunks: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)
    invoices: list[InvoicePreview] = field(default_factory=list)


def run_bill_run(engine: Engine, run_date: date, *, dry_run: bool = False,
                 chunk_size: int = 2000, post: bool = True, series: str = "INV",
                 uow_factory: Callable[[], UnitOfWork] | None = None,
                 progress: Callable[[int], None] | None = None,
                 tax_inclusive: bool = False) -> BillRunResult:
    """Bill every account due on ``run_date``; see the module docstring for the rules.
    ``tax_inclusive``: catalog and negotiated prices include tax (the default adds it)."""
    if not isinstance(run_date, date):
        raise TypeError("run_date must be a date")
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if uow_factory is None:
        from billing_core.service import ledger_uow

        def uow_factory() -> UnitOfWork:
            return ledger_uow(engine)
    result = BillRunResult(run_date=run_date, dry_run=dry_run)
    if not dry_run:
        with UnitOfWork(engine) as uow:
            close_abandoned(uow)
            result.run_id = inserted_id(uow.conn.execute(insert(bill_runs).values(
                run_date=run_date, started_at=uow.now(), status="running",
                claimed_by=owner.current())))
            uow.commit()
    try:
        after_id = 0
        catalog = None
        while True:
            with bulk_cache(), uow_factory() as uow:
                if uow.run_id is None and result.run_id is not None:
                    uow.run_id = f"bill_run:{result.run_id}"     # the audit rows' run
                if catalog is None:
                    catalog = load_catalog(uow.conn, tax_inclusive=tax_inclusive)
                next_after, seen = _run_chunk(uow, catalog, run_date, after_id, chunk_size,
                                              post, series, dry_run, result)
            if seen == 0:
                break
            result.accounts_seen += seen
            after_id = next_after
            if progress is not None:
                progress(seen)
    except BaseException as exc:
        if result.run_id is not None:
            with UnitOfWork(engine) as uow:
                uow.conn.execute(update(bill_runs).where(bill_runs.c.id == result.run_id).values(
                    status="failed", finished_at=uow.now(), invoices_created=result.invoices_created,
                    error=f"{type(exc).__name__}: {exc}"[:2000]))
                uow.commit()
        raise
    if result.run_id is not None:
        with UnitOfWork(engine) as uow:
            uow.conn.execute(update(bill_runs).where(bill_runs.c.id == result.run_id).values(
                status="finished", finished_at=uow.now(),
                invoices_created=result.invoices_created,
                error=None if not result.errors else f"{len(result.errors)} account(s) not billed"))
            uow.commit()
    return result


def close_abandoned(uow: UnitOfWork) -> int:
    """Close the ``running`` bill runs whose process is known to be gone as ``abandoned``
    (what they billed stays billed: each chunk committed whole). Returns how many."""
    running = uow.conn.execute(select(bill_runs.c.claimed_by).where(
        bill_runs.c.status == "running").distinct()).scalars()
    gone = owner.gone_among(running)
    if not gone:
        return 0
    return uow.conn.execute(update(bill_runs).where(
        bill_runs.c.status == "running", bill_runs.c.claimed_by.in_(gone)).values(
        status="abandoned", finished_at=uow.now(),
        error="its process ended while the run was running (killed)")).rowcount


def _run_chunk(uow: UnitOfWork, catalog: object, run_date: date, after_id: int, size: int,
               post: bool, series: str, dry_run: bool,
               result: BillRunResult) -> tuple[int, int]:
    """Bill one chunk of accounts in one transaction; returns (last id, accounts seen)."""
    for attempt in range(1, MAX_CHUNK_ATTEMPTS + 1):
        try:
            data: ChunkData = load_chunk(uow.conn, catalog, run_date, after_id, size)  # type: ignore[arg-type]
            if not data.account_ids:
                uow.rollback()
                return after_id, 0
            written = write_chunk(uow, data, run_id=result.run_id, post=post, series=series,
                                  issue_date=run_date)
            if dry_run:
                uow.rollback()
            else:
                uow.commit()
        except (IntegrityError, DBAPIError, LostRace) as exc:
            if not _is_race(exc) or attempt == MAX_CHUNK_ATTEMPTS:
                raise
            # Another transaction billed some of this chunk first: read it again, and bill
            # what is still unbilled.
            log.warning("bill run %s: chunk after account %s lost a race (attempt %s: %s); "
                        "retrying", result.run_id, after_id, attempt,
                        exc if isinstance(exc, LostRace) else type(exc.orig).__name__)
            uow.rollback()
            result.retried_chunks += 1
            continue
        result.already_billed += data.already_billed
        result.errors.extend(data.errors)
        result.invoices_created += written.invoices
        result.lines_written += written.lines
        result.rows_written += written.rows
        room = PREVIEW_LIMIT - len(result.invoices)
        for d, number in written.previews[:max(room, 0)]:
            result.invoices.append(InvoicePreview(
                d.account_id, number, d.currency, d.period_start, d.period_end, len(d.lines),
                d.subtotal_minor, d.tax_minor, d.total_minor,
                [PreviewLine(ln.kind, ln.description, ln.quantity, ln.period_start,
                             ln.period_end, ln.amount_minor, ln.tax_rate, ln.tax_minor)
                 for ln in d.lines],
                [(t.rate, t.base_minor, t.tax_minor) for t in d.taxes]))
        return data.account_ids[-1], len(data.account_ids)
    raise AssertionError("unreachable")


def _is_race(exc: DBAPIError | LostRace) -> bool:
    """A guarded mark that lost, a unique violation, a deadlock or a serialization failure:
    the chunk can be read and computed again."""
    if isinstance(exc, LostRace):
        return True
    if isinstance(exc, IntegrityError):
        text = str(exc.orig).lower()
        return "uq_invoices_account_period" in text or "unique" in text or "remaining" in text
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40P01", "40001")


__all__ = ["BillRunResult", "InvoicePreview", "LedgerError", "run_bill_run"]
