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
  what is still unbilled; ``retried_chunks`` counts them. The CLI takes the ``bill-run`` job
  lock for its whole run; the daemon's workers pass through it (they wait for a manual run,
  then share the run of their date).
- Partitioned (the default for a run that writes): the run's accounts are cut into units of
  ``chunk_size`` account ids (``work_units``, job ``bill_run:<id>``,
  :mod:`billing_core.adapters.work_units`), created with the ``bill_runs`` row. Every process
  that runs a bill run for the same date while one is ``running`` joins it (on PostgreSQL the
  creation is serialised by a transaction-scoped advisory lock, on SQLite by its write lock)
  and claims units until none is left: each unit is claimed by one process at a time, with a
  lease (``BillRunOptions.lease``) that the process extends with every chunk it commits. A
  unit is marked done in the transaction of its last chunk, so a unit is done exactly when its
  invoices are committed; a process that dies leaves its units to the lease (or, on the same
  host, to the next claim, which sees the process gone), and another process finishes them.
  A process that finds nothing to claim while others still hold units waits for them (their
  leases), then the last one closes the run (``finished``, ``invoices_created`` counted from
  the invoices that name the run). ``share=False`` (and a dry run) walks every account itself.
- One process overlaps its reads with its writes: the next units are read, computed and turned
  into plain rows (:func:`billing_core.service.billing_io.prepare_chunk`) by a reader while
  the current one is written and committed; the writer only takes numbers and ids, runs the
  bulk statements and the commit hook. On SQLite the readers are processes
  (``BillRunOptions.reader_url``, runs of at least ``PROCESS_READER_UNITS`` units: the rows
  cross as plain tuples), because a reader thread and SQLite's per-row steps take turns on the
  interpreter lock; ``reader_processes`` of them (2) compute the units claimed ahead side by
  side, as reading and computing a unit takes longer than writing it, and their results are
  written in claim order; on PostgreSQL (the writer mostly waits on the server) and for small runs,
  a thread. Claims are taken in the writer's transaction, a few units ahead.
- Accounts are processed in chunks of ``chunk_size`` by id, one transaction per chunk: one
  SELECT per table per chunk, executemany INSERTs and UPDATEs. A crash loses at most the chunk
  in flight, which nothing marked billed; a rerun bills it once.
- A run's row names the process that created it (``claimed_by``); a bill run of the same date
  joins a ``running`` row and finishes it; one of another date closes a ``running`` row whose
  process is gone as ``abandoned`` (:func:`close_abandoned`) unless a live process still holds
  one of its units; ``status`` counts such rows (and rows running longer than a bound, wherever
  they ran) as abandoned until then.
- Invoices are posted as they are created (``post=True``): numbers for the whole chunk are taken
  from the gapless sequence inside the chunk's transaction, in account order within the chunk
  (with several workers, chunks take numbers in the order they commit). On PostgreSQL, while
  another process holds a live unit of the run, they are taken as the chunk commits, so the
  sequence's row lock covers only the numbering, the audit rows, the commit hook and the
  commit, and several workers' writes overlap; a process alone in the run (asked per chunk,
  in its transaction) takes them with the insert, which writes every invoice row once. On
  SQLite, whose write lock lets one transaction write at a time, always with the insert
  (:mod:`billing_core.service.billing_io`, docs/SCALING.md). With
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
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from billing_core.adapters import owner, work_units
from billing_core.adapters.bulk import inserted_id
from billing_core.adapters.db import UnitOfWork, bulk_cache
from billing_core.adapters.gc_pause import gc_paused
from billing_core.adapters.tables import accounts, bill_runs, invoices
from billing_core.adapters.tables import work_units as work_units_table
from billing_core.domain.errors import LedgerError
from billing_core.domain.periods import check_billable_date
from billing_core.service.billing_io import (
    NUMBER_AT_COMMIT_DIALECTS,
    Catalog,
    ChunkData,
    LostRace,
    Prepared,
    Written,
    apply_chunk,
    load_catalog,
    load_chunk,
    prepare_chunk,
    to_driver,
)

log = logging.getLogger(__name__)
MAX_CHUNK_ATTEMPTS = 5
#: A run of fewer units reads on a thread: starting the reader process costs about a second.
PROCESS_READER_UNITS = 8
#: Where a reader process pays: SQLite (see the module rules); PostgreSQL reads on a thread.
PROCESS_READER_DIALECTS: tuple[str, ...] = ("sqlite",)
#: The advisory lock that makes creating a run's units single on PostgreSQL (transaction-scoped).
SETUP_LOCK_KEY = 0x6C62_6269_6C6C_7275     # "lbbillru"
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
    joined: bool = False            # this process joined a run another one created
    reader: str = "none"            # where its units were read: process | thread | none
    held: list[int] = field(default_factory=list)   # work units held right now (ids)


def run_bill_run(engine: Engine, run_date: date, *, dry_run: bool = False,
                 chunk_size: int = 2000, post: bool = True, series: str = "INV",
                 uow_factory: Callable[[], UnitOfWork] | None = None,
                 progress: Callable[[int], None] | None = None,
                 tax_inclusive: bool = False, share: bool = True,
                 options: BillRunOptions | None = None) -> BillRunResult:
    """Bill every account due on ``run_date``; see the module docstring for the rules.
    ``tax_inclusive``: catalog and negotiated prices include tax (the default adds it).
    ``share``: create or join the partitioned run of ``run_date`` (False: bill every account
    in this process, in one walk)."""
    if not isinstance(run_date, date):
        raise TypeError("run_date must be a date")
    check_billable_date(run_date)
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    opts = options or BillRunOptions()
    if uow_factory is None:
        from billing_core.service import ledger_uow

        def uow_factory() -> UnitOfWork:
            return ledger_uow(engine)
    result = BillRunResult(run_date=run_date, dry_run=dry_run)
    if dry_run or not share:
        if not dry_run:
            with UnitOfWork(engine) as uow:
                close_abandoned(uow)
                result.run_id = _new_run(uow, run_date)
                uow.commit()
        try:
            _walk(engine, uow_factory, run_date, chunk_size, post, series, dry_run, progress,
                  tax_inclusive, result)
        except BaseException as exc:
            _fail(engine, result, exc)
            raise
        if result.run_id is not None:
            with UnitOfWork(engine) as uow:
                _close(uow, result.run_id, result.invoices_created, len(result.errors))
                uow.commit()
        return result
    result.run_id, result.joined = _create_or_join(engine, run_date, chunk_size, opts)
    part = _Partitioned(engine, uow_factory, run_date, post, series, progress, tax_inclusive,
                        result, opts, chunk_size)
    try:
        part.run()
    except BaseException as exc:
        _fail(engine, result, exc, worker=part.me, now=opts.clock())
        raise
    return result


@dataclass(frozen=True)
class BillRunOptions:
    """How a process takes part in a partitioned run."""
    lease: timedelta = timedelta(seconds=120)   # a claim not extended for this long is free
    claim_ahead: int = 2                        # units claimed beyond the one being written
    poll_seconds: float = 0.5                   # waiting for other processes' units
    wait_for_others: bool = True                # False: return when nothing is claimable
    pipeline: bool = True                       # read the next unit while writing this one
    # read and compute in a second process connected to this URL (SQLite; a thread without
    # it or on PostgreSQL): a reader thread and SQLite's writes take turns on the interpreter
    # lock (see the module rules)
    reader_url: str | None = None
    # reader processes (with ``reader_url``): each reads and computes a claimed unit ahead,
    # their results written in claim order; more than ``claim_ahead`` would have nothing to do
    reader_processes: int = 2
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def job_name(run_id: int) -> str:
    """The ``work_units`` job of a bill run."""
    return f"bill_run:{run_id}"


def joinable_run(conn: Connection, now: datetime) -> date | None:
    """The date of a ``running`` partitioned run that has a unit to claim (pending, or held
    past its lease or by a process that is gone), for a worker that starts or wakes up while
    it runs; None when there is none."""
    for run_id, run_date in conn.execute(select(bill_runs.c.id, bill_runs.c.run_date).where(
            bill_runs.c.status == "running").order_by(bill_runs.c.id)):
        p = work_units.progress(conn, job_name(run_id), now)
        if p.pending or p.expired:
            return run_date  # type: ignore[no-any-return]
        gone = {h for h in work_units.holders(conn, job_name(run_id))
                if owner.is_gone(h.split("#", 1)[0])}
        if gone:
            return run_date  # type: ignore[no-any-return]
    return None


def _new_run(uow: UnitOfWork, run_date: date) -> int:
    return inserted_id(uow.conn.execute(insert(bill_runs).values(
        run_date=run_date, started_at=uow.now(), status="running",
        claimed_by=owner.current())))


def _create_or_join(engine: Engine, run_date: date, chunk_size: int,
                    opts: BillRunOptions) -> tuple[int, bool]:
    """The ``running`` partitioned run of ``run_date`` (joined), or a new one with its units."""
    with UnitOfWork(engine) as uow:
        conn = uow.conn
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SETUP_LOCK_KEY})
        for run_id in conn.execute(select(bill_runs.c.id).where(
                bill_runs.c.run_date == run_date, bill_runs.c.status == "running")
                .order_by(bill_runs.c.id.desc())).scalars():
            if work_units.remaining(conn, job_name(run_id)) or \
                    work_units.progress(conn, job_name(run_id), opts.clock()).total:
                uow.commit()
                return int(run_id), True
        close_abandoned(uow)
        run_id = _new_run(uow, run_date)
        work_units.create_units(conn, job_name(run_id),
                                work_units.key_ranges(conn, accounts.c.id, chunk_size),
                                opts.clock())
        uow.commit()
        return run_id, False


def _fail(engine: Engine, result: BillRunResult, exc: BaseException, *,
          worker: str | None = None, now: datetime | None = None) -> None:
    """This process's part of the run failed. Its units go back at once (``worker``: the
    claimer of a partitioned run). The run is ``failed`` unless another process still holds a
    live unit of it: that one bills what is left, these units included, and closes the run
    ``finished`` (a run one worker lost its database under is not a failed run)."""
    if result.run_id is None:
        return
    error = f"{type(exc).__name__}: {exc}"[:2000]
    with UnitOfWork(engine) as uow:
        work_units.release(uow.conn, result.held, worker=worker)
        if worker is not None and work_units.others_holding(
                uow.conn, job_name(result.run_id), now or uow.now(), worker):
            log.warning("bill run %s: this process's part failed (%s); its units were given "
                        "back and the other workers finish the run", result.run_id, error)
        else:
            uow.conn.execute(update(bill_runs).where(
                bill_runs.c.id == result.run_id, bill_runs.c.status == "running").values(
                status="failed", finished_at=uow.now(),
                invoices_created=result.invoices_created, error=error))
        uow.commit()


def _close(uow: UnitOfWork, run_id: int, invoices_created: int, errors: int) -> bool:
    """``finished``, only while ``running`` (several processes may try: one does)."""
    return uow.conn.execute(update(bill_runs).where(
        bill_runs.c.id == run_id, bill_runs.c.status == "running").values(
        status="finished", finished_at=uow.now(), invoices_created=invoices_created,
        error=None if not errors else f"{errors} account(s) not billed")).rowcount == 1


def _walk(engine: Engine, uow_factory: Callable[[], UnitOfWork], run_date: date,
          chunk_size: int, post: bool, series: str, dry_run: bool,
          progress: Callable[[int], None] | None, tax_inclusive: bool,
          result: BillRunResult) -> None:
    """Every account, chunk after chunk, in this process (a dry run, ``share=False``)."""
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


@dataclass
class _Piece:
    """What the reader hands the writer: a chunk of a unit, read and computed (``data`` None
    for an empty last read), and whether it is the unit's last."""
    unit: work_units.Unit
    after_id: int
    data: ChunkData | None          # its ids, already-billed count and errors (no drafts)
    last: bool
    prep: Prepared | None = None    # its rows, built by the reader


_STOP = object()
_UNIT_COUNTS = ("accounts", "invoices", "lines", "rows", "already_billed", "errors",
                "retried_chunks")


def _tally(r: BillRunResult) -> tuple[int, ...]:
    return (r.invoices_created, r.lines_written, r.rows_written, r.already_billed,
            len(r.errors), r.retried_chunks)


class _Partitioned:
    """One process's part of a partitioned run: claim, read (a thread), write, finish."""

    def __init__(self, engine: Engine, uow_factory: Callable[[], UnitOfWork], run_date: date,
                 post: bool, series: str, progress: Callable[[int], None] | None,
                 tax_inclusive: bool, result: BillRunResult, opts: BillRunOptions,
                 chunk_size: int) -> None:
        self.engine, self.uow_factory, self.run_date = engine, uow_factory, run_date
        self.post, self.series, self.progress = post, series, progress
        self.tax_inclusive, self.result, self.opts = tax_inclusive, result, opts
        self.size = chunk_size
        assert result.run_id is not None
        self.run_id = result.run_id
        self.job = job_name(result.run_id)
        self.me = f"{owner.current()}#{uuid.uuid4().hex[:8]}"   # one claimer per call
        self.catalog: Catalog | None = None
        self.to_read: queue.Queue[object] = queue.Queue()
        self.to_write: queue.Queue[object] = queue.Queue(maxsize=2)
        self.unit_counts: dict[int, dict[str, int]] = {}
        self.lost: set[int] = set()
        self.pool: Any = None                   # the reader process (``reader_url``)
        self.reading: deque[Any] = deque()      # its results, one per unit, in claim order
        self.pieces: list[_Piece] = []
        self.submitted = 0                      # accounts (at most) handed to the reader process

    def _units(self) -> int:
        with self.engine.connect() as conn:
            return work_units.progress(conn, self.job, self.opts.clock()).total

    # -- claims (in the writer's transaction, or a short one of their own) -----------------
    def _claim(self, conn: Connection, holding: int) -> list[work_units.Unit]:
        """Up to ``1 + claim_ahead`` units held, counting ``holding`` already held."""
        want = 1 + self.opts.claim_ahead - holding
        if want <= 0:
            return []
        return work_units.claim(conn, self.job, self.opts.clock(), self.opts.lease,
                                limit=want, worker=self.me)

    def _hold(self, units: list[work_units.Unit]) -> None:
        """Claimed units, once their claim is committed: held, and queued for reading."""
        for unit in units:
            self.result.held.append(unit.id)
            if self.pool is not None:
                # the first units' rows stay Python values: the run's previews read them
                raw = self.submitted < PREVIEW_LIMIT
                self.submitted += self.size
                self.reading.append(self.pool.apply_async(_read_unit, (unit, raw)))
            else:
                self.to_read.put(unit)

    def _next_piece(self, threaded: bool) -> object:
        if self.pool is None:
            return self.to_write.get() if threaded else self._read_one()
        if not self.pieces:
            try:
                self.pieces.extend(self.reading.popleft().get())
            except Exception as exc:  # noqa: BLE001 (raised by the caller)
                return exc
        return self.pieces.pop(0)

    def run(self) -> None:
        with UnitOfWork(self.engine) as uow:
            self.catalog = load_catalog(uow.conn, tax_inclusive=self.tax_inclusive)
            units = self._claim(uow.conn, 0)
            uow.commit()
        reader = None
        if self.opts.pipeline and self.opts.reader_url \
                and self.engine.dialect.name in PROCESS_READER_DIALECTS \
                and self._units() >= PROCESS_READER_UNITS:
            self.pool = _reader_pool(self.opts.reader_url, self.run_date, self.size,
                                     self.tax_inclusive,
                                     max(1, min(self.opts.reader_processes,
                                                self.opts.claim_ahead)))
        self._hold(units)
        self.result.reader = "process" if self.pool is not None else \
            "thread" if self.opts.pipeline else "none"
        if self.opts.pipeline and self.pool is None:
            reader = threading.Thread(target=self._reader, name=f"bill-run-{self.run_id}-read",
                                      daemon=True)
            reader.start()
        try:
            while True:
                if not self.result.held:
                    if not self._wait_for_units():
                        break
                    continue
                piece = self._next_piece(reader is not None)
                if isinstance(piece, BaseException):
                    raise piece
                assert isinstance(piece, _Piece)
                self._write(piece)
        finally:
            self.to_read.put(_STOP)
            if self.pool is not None:
                self.pool.terminate()
                self.pool.join()
            if reader is not None:
                while reader.is_alive():        # let a reader blocked on a full queue end
                    try:
                        self.to_write.get(timeout=0.05)
                    except queue.Empty:
                        pass
                reader.join()

    def _wait_for_units(self) -> bool:
        """Nothing held: claim more, or wait for other processes' units (their leases), or
        close the run when every unit is done. False: this process's part is over."""
        while True:
            with UnitOfWork(self.engine) as uow:
                units = self._claim(uow.conn, 0)
                left = work_units.remaining(uow.conn, self.job) if not units else 1
                if not left:
                    invoices_n = int(uow.conn.execute(select(func.count()).select_from(
                        invoices).where(invoices.c.bill_run_id == self.run_id)).scalar_one())
                    errors = work_units.progress(uow.conn, self.job,
                                                 self.opts.clock()).totals.get("errors", 0)
                    _close(uow, self.run_id, invoices_n, errors)
                uow.commit()
            if units:
                self._hold(units)
                return True
            if not left or not self.opts.wait_for_others:
                return False
            time.sleep(self.opts.poll_seconds)

    # -- reading (the reader thread, or inline without the pipeline) ------------------------
    def _reader(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(ledger_read_only=True)
                while True:
                    unit = self.to_read.get()
                    if unit is _STOP:
                        return
                    assert isinstance(unit, work_units.Unit)
                    for piece in self._pieces(conn, unit):
                        self.to_write.put(piece)
        except BaseException as exc:  # noqa: BLE001 (handed to the writer, which raises it)
            self.to_write.put(exc)

    def _read_one(self) -> _Piece:
        """Without the pipeline: the next piece, read on a connection of its own."""
        pending = getattr(self, "_inline", None)
        if not pending:
            unit = self.to_read.get()
            assert isinstance(unit, work_units.Unit)
            with self.engine.connect() as conn:
                conn = conn.execution_options(ledger_read_only=True)
                pending = self._inline = list(self._pieces(conn, unit))
        return pending.pop(0)

    def _pieces(self, conn: Connection, unit: work_units.Unit) -> Iterator[_Piece]:
        assert self.catalog is not None
        return _unit_pieces(conn, self.catalog, self.run_date, self.size, unit)

    # -- writing (this thread) --------------------------------------------------------------
    def _write(self, piece: _Piece) -> None:
        unit, result = piece.unit, self.result
        if unit.id in self.lost:
            return                                  # the rest of a unit taken over
        counts = self.unit_counts.setdefault(unit.id, dict.fromkeys(_UNIT_COUNTS, 0))
        fresh: list[work_units.Unit] = []

        def in_transaction(uow: UnitOfWork, data: ChunkData | None = None,
                           written: Written | None = None) -> bool:
            """The unit done (its last chunk) or its lease extended, the other held units'
            leases extended, and the next units claimed: all in the chunk's transaction."""
            now, conn = self.opts.clock(), uow.conn
            if piece.last:
                final = dict(counts)
                if data is not None and written is not None:
                    for key, n in (("accounts", len(data.account_ids)),
                                   ("invoices", written.invoices), ("lines", written.lines),
                                   ("rows", written.rows),
                                   ("already_billed", data.already_billed),
                                   ("errors", len(data.errors))):
                        final[key] += n
                ok = work_units.finish(conn, unit.id, now, final, worker=self.me)
            else:
                ok = work_units.extend(conn, [unit.id], now, self.opts.lease,
                                       worker=self.me) == 1
            if not ok:
                return False
            others = [i for i in result.held if i != unit.id]
            if others:
                work_units.extend(conn, others, now, self.opts.lease, worker=self.me)
            fresh[:] = self._claim(conn, len(others) + (0 if piece.last else 1))
            return True

        seen_now = [len(piece.data.account_ids) if piece.data is not None else 0]
        before = _tally(result)
        lost = False
        with bulk_cache(), self.uow_factory() as uow:
            if uow.run_id is None:
                uow.run_id = self.job                   # the audit rows' run
            if piece.data is None:
                lost = not in_transaction(uow)
                if lost:
                    uow.rollback()
                else:
                    uow.commit()
            else:
                try:
                    _run_chunk(uow, self.catalog, self.run_date, piece.after_id, self.size,
                               self.post, self.series, False, result, upto=unit.hi,
                               preread=(piece.data, piece.prep) if piece.prep else None,
                               before_commit=in_transaction, alone=self._alone(uow.conn))
                except _LeaseLost:
                    lost = True
        if lost:
            self.lost.add(unit.id)
            self._drop(unit.id)
            log.warning("bill run %s: unit %s was taken over by another process (its lease "
                        "passed); this process's chunk of it was rolled back", self.run_id,
                        unit.unit_no)
            return
        for key, b, a in zip(_UNIT_COUNTS[1:], before, _tally(result), strict=True):
            counts[key] += a - b
        counts["accounts"] += seen_now[0]
        result.accounts_seen += seen_now[0]
        if piece.last:
            self._drop(unit.id)
        self._hold(fresh)
        if seen_now[0] and self.progress is not None:
            self.progress(seen_now[0])

    def _alone(self, conn: Connection) -> bool:
        """No other process holds a live claim on this run's units now: this chunk then takes
        its invoice numbers with the insert, as it keeps no other writer waiting (a process
        that joins meanwhile waits for this one chunk's commit; from its claim on, chunks here
        number at commit). Only asked where numbering at commit is the default."""
        if not self.post or conn.dialect.name not in NUMBER_AT_COMMIT_DIALECTS:
            return False
        return not work_units.others_holding(conn, self.job, self.opts.clock(), self.me)

    def _drop(self, unit_id: int) -> None:
        if unit_id in self.result.held:
            self.result.held.remove(unit_id)


_READER: dict[str, Any] = {}


def _reader_pool(url: str, run_date: date, size: int, tax_inclusive: bool,
                 processes: int) -> Any:
    """The reader processes (spawned: no inherited connections or threads), each with its own
    engine and the run's catalog."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(processes, initializer=_reader_init,
                    initargs=(url, run_date, size, tax_inclusive))


def _reader_init(url: str, run_date: date, size: int, tax_inclusive: bool) -> None:
    from billing_core.adapters.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        catalog = load_catalog(conn, tax_inclusive=tax_inclusive)
    _READER.update(engine=engine, catalog=catalog, run_date=run_date, size=size)


def _read_unit(unit: work_units.Unit, raw: bool) -> list[_Piece]:
    """In the reader process: the unit's chunks, read and computed, on a read transaction
    each, their rows converted for the driver unless ``raw``."""
    r = _READER
    with r["engine"].connect() as conn:
        conn = conn.execution_options(ledger_read_only=True)
        pieces = list(_unit_pieces(conn, r["catalog"], r["run_date"], r["size"], unit))
        if not raw:
            for piece in pieces:
                if piece.prep is not None:
                    to_driver(piece.prep, conn.dialect)
        return pieces


def _unit_pieces(conn: Connection, catalog: Catalog, run_date: date, size: int,
                 unit: work_units.Unit) -> Iterator[_Piece]:
    after = unit.lo - 1
    while True:
        data = load_chunk(conn, catalog, run_date, after, size, upto=unit.hi)
        conn.rollback()                     # a fresh snapshot for the next chunk
        ids = data.account_ids
        if not ids:
            yield _Piece(unit, after, None, True)
            return
        last = len(ids) < size or ids[-1] >= unit.hi
        # the rows are built here, on the reader's side; the drafts stay here
        yield _Piece(unit, after, ChunkData(ids, [], data.already_billed, data.errors), last,
                     prepare_chunk(data))
        if last:
            return
        after = ids[-1]


class _LeaseLost(RuntimeError):
    """The unit this chunk belongs to was claimed by another process: roll the chunk back."""


def close_abandoned(uow: UnitOfWork) -> int:
    """Close the ``running`` bill runs whose process is known to be gone as ``abandoned``
    (what they billed stays billed: each chunk committed whole), unless a live process still
    holds one of their units (a partitioned run other processes are finishing). Returns how
    many."""
    running = uow.conn.execute(select(bill_runs.c.id, bill_runs.c.claimed_by).where(
        bill_runs.c.status == "running")).all()
    gone = set(owner.gone_among(r.claimed_by for r in running))
    now = uow.now()
    closed = 0
    for run_id, holder in running:
        if holder not in gone:
            continue
        live = uow.conn.execute(select(func.count()).select_from(work_units_table).where(
            work_units_table.c.job == job_name(run_id), work_units_table.c.state == "claimed",
            work_units_table.c.lease_until >= now,
            work_units_table.c.claimed_by.not_in(sorted(gone)))).scalar_one()
        if live:
            continue
        closed += uow.conn.execute(update(bill_runs).where(
            bill_runs.c.id == run_id, bill_runs.c.status == "running").values(
            status="abandoned", finished_at=now,
            error="its process ended while the run was running (killed)")).rowcount
    return closed


@gc_paused
def _run_chunk(uow: UnitOfWork, catalog: object, run_date: date, after_id: int, size: int,
               post: bool, series: str, dry_run: bool,
               result: BillRunResult, *, upto: int | None = None,
               preread: tuple[ChunkData, Prepared] | None = None,
               before_commit: Callable[[UnitOfWork, ChunkData, Written], bool] | None = None,
               alone: bool = False) -> tuple[int, int]:
    """Bill one chunk of accounts in one transaction; returns (last id, accounts seen).
    ``preread``: the chunk as read elsewhere (the first attempt writes it; a lost race reads
    again here). ``before_commit``: run in the transaction before it commits; False rolls the
    chunk back and raises :class:`_LeaseLost`. ``alone``: no other process writes the run's
    chunks now (numbers are then taken with the insert: :func:`apply_chunk`)."""
    for attempt in range(1, MAX_CHUNK_ATTEMPTS + 1):
        try:
            if preread is not None and attempt == 1:
                data, prep = preread
            else:
                if upto is None:
                    data = load_chunk(uow.conn, catalog, run_date, after_id,  # type: ignore[arg-type]
                                      size)
                else:
                    data = load_chunk(uow.conn, catalog, run_date, after_id,  # type: ignore[arg-type]
                                      size, upto=upto)
                prep = prepare_chunk(data)
            if not data.account_ids:
                uow.rollback()
                return after_id, 0
            written = apply_chunk(uow, prep, run_id=result.run_id, post=post, series=series,
                                  alone=alone)
            if before_commit is not None and not before_commit(uow, data, written):
                uow.rollback()
                raise _LeaseLost(after_id)
            if dry_run:
                uow.run_commit_steps()      # the numbers it would take, for the previews
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
        _previews(result, prep, written.numbers)
        return data.account_ids[-1], len(data.account_ids)
    raise AssertionError("unreachable")


def _previews(result: BillRunResult, prep: Prepared, numbers: list[str | None]) -> None:
    """The first ``PREVIEW_LIMIT`` invoices of the run, from the rows written."""
    room = PREVIEW_LIMIT - len(result.invoices)
    if room <= 0 or not prep.invoices or prep.driver is not None:
        return
    lines: dict[int, list[PreviewLine]] = {}
    for ln in prep.lines:
        if ln[0] < room:
            lines.setdefault(ln[0], []).append(PreviewLine(ln[2], ln[3], ln[6], ln[8], ln[9],
                                                           ln[10], ln[11], ln[12]))
    taxes: dict[int, list[tuple[Decimal, int, int]]] = {}
    for k, rate, base, tax in prep.taxes:
        if k < room:
            taxes.setdefault(k, []).append((rate, base, tax))
    for k, (row, number) in enumerate(zip(prep.invoices[:room], numbers, strict=False)):
        account, currency, start, end, _, _, subtotal, tax, total = row
        mine = lines.get(k, [])
        result.invoices.append(InvoicePreview(account, number, currency, start, end, len(mine),
                                              subtotal, tax, total, mine, taxes.get(k, [])))


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


__all__ = ["BillRunOptions", "BillRunResult", "InvoicePreview", "LedgerError", "job_name",
           "joinable_run", "run_bill_run"]
