"""One sync cycle of one connection: pull → map → reconcile → hand off → outbox → push.

Rules kept here:
- Objects are pulled in the order of ``PULL_ORDER`` (products, prices, quotes, then quote
  lines and accounts side by side), whatever ``[sync] objects`` or the run's options list: a
  line's product is known when it arrives, and every account read starts after every quote
  read ended. A hold set in the CRM before a quote's acceptance was committed before the quote
  read that saw the acceptance, hence before the account read that follows (the incremental
  read has no upper stamp bound), and that account page's transaction places the ``crm`` hold
  reason before the hand-off places the order: provisioning waits. Quote lines and accounts
  (``SIDE_BY_SIDE``, ``pull_stages``) are read at the same time, each by its own reader, and
  their pages are applied one at a time as they arrive, each object's in its order with its
  own cursor: neither waits on the other, and the hand-off starts only when both are pulled.
  Each reader's CRM calls are counted apart (``connectors.budget.call_tally``), and the
  budget's share is checked and spent under one lock. A run hands off only after a complete
  account pull (accounts are pulled in every run whose connector maps them, even when not
  listed); a run whose account pull failed leaves its quotes owed, as a stopped run does. So
  does a run whose quote line pull failed: a quote accepted in it would be handed off with
  the lines an earlier run read, short of those added since. One
  account (``account=``) reads its quotes and lines, then the account, and hands off its quotes
  only, every one of them whether it changed or not (the other accounts were not read again:
  their owed quotes wait for the next cycle).
- One transaction per page (``ledger_uow``: credit control re-evaluates every account the page
  touched before it commits); the object's cursor is saved in that transaction.
- The next pages are read while the current one is applied (``connectors.prefetch``: up to
  ``READ_AHEAD`` pages ahead of each object, in a thread that is stopped and joined when the
  object's pull ends, however it ends). A read that fails (``ConnectorError``) fails its
  object only: the object read beside it goes on. A page read but never applied (shutdown,
  budget, error) is simply read again by the next run, from the cursor saved with the last
  applied page.
- ``should_stop`` is checked between pages: a shutdown finishes the page in hand, commits, and
  ends the run as ``stopped: shutdown``; nothing is half-written.
- A push that fails (the CRM unreachable after the transport's bounded retries, or refusing
  the call as a whole) leaves its rows pending for the next run and makes the run ``partial``
  with the error, its cause ``unreachable`` or ``config`` when it is one (exit 3 / 2): the
  objects after it are not pushed then. A shutdown during the push ends the run as
  ``stopped: shutdown``. Either way the pushed fields are not read back.
- ``BudgetExhausted`` stops the run (``stopped: API budget``): no further reads, no push; what
  was committed stays, and the next run resumes from the saved cursors.
- What the hand-off owes is written with the page that brought it (``handoff_reads.mark_owed``),
  and so is a handed-off quote that changed (``handoff_looks``): a run stopped (shutdown,
  budget) or killed after the pull leaves its accepted quotes owed and its changed ones noted,
  and every cycle hands off everything owed or noted, whatever run pulled it, reading it from
  the database a page at a time (nothing of it is held in the run's memory); ``full=True``
  also marks every accepted quote still without its hand-off row.
- An interrupt raised inside the run (Ctrl-C: ``KeyboardInterrupt``) is recorded as
  ``interrupted`` with the counts so far, then raised on; a run killed outright is closed as
  ``abandoned`` by the next run of its connection (``sync.runs``).
- Every run is recorded (``sync.runs``) with per-object counts and API calls, and logged as one
  line with the run id, connection and counts.
- Our own writes are read back once, in the run that made them: after the push of an object,
  when the connector says a read now pays (``settles_writes``: it can then leave those writes
  out of the next reads, see ``connectors.cursor``), the object is pulled again like any pull
  (a person's change made during the push is applied like any other). The next run with
  nothing changed then reads nothing of ours; without it every run read our writes again until
  the overlap window passed them (10,000 accounts, then 8,000 on every run: bench/sync_nochange.py).
- A cursor equal to the one saved is not written again.
- ``full=True`` ignores the cursors (a full read), reports what disappeared from the CRM and
  refreshes every outbox row. What a full read returned is kept in the database
  (``sync.sweep``), not in memory; a connector that falls back to a full read by itself (an
  expired change-tracking token) reports what disappeared the same way.
- ``account=CRMID`` resyncs one account and its quotes only.
- A targeted resync (:meth:`Cycle.run_targeted`, the CRM's change events: ``sync.resync``)
  reads given records by id (``read_by_ids``, batched) in ``PULL_ORDER`` and applies them as
  pages of the same handlers (an accepted quote's lines are read with it, as a cycle reads
  them before its hand-off); an id the CRM no longer returns is a deletion, handled as the
  cycle handles deletes (an id billing never knew changes nothing). The accounts of the
  quotes and lines it read are read after them, so the hand-off of its quotes sees a hold
  state at least as fresh (see ``PULL_ORDER``); it hands off those quotes only, refreshes
  and pushes the outbox like a cycle, and reads nothing back (no cursor moves).
- Each page goes through its object's handler (``sync.reconcile.apply_page``). The hand-off
  does not read the CRM itself: an account a quote names that was not pulled yet is asked of
  the engine (:meth:`Cycle.fetch_account`), which reads it once and reconciles it like a page.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.gc_pause import gc_paused
from billing_core.service import ledger_uow
from connectors.base import (
    AuthError,
    BudgetExhausted,
    Connector,
    ConnectorError,
    Deletion,
    Page,
    RetriableError,
)
from connectors.budget import CallTally, call_tally
from connectors.credentials import CredentialError
from connectors.prefetch import Arrivals, Prefetch
from sync import handoff, handoff_reads, outbox, push
from sync.bookkeeping import PageResult, ledger_id_of
from sync.boundary import same_id
from sync.documents import pdf_files
from sync.handoff import FetchedAccount
from sync.mapping import OBJECTS
from sync.reconcile import apply_page
from sync.runs import (
    RunReport,
    current_run,
    finish_run,
    get_cursor,
    save_cursor,
    start_run,
)
from sync.sweep import SeenTable
from sync.tables import sync_records

log = logging.getLogger(__name__)
Progress = Callable[[str, int], None]
# Pages read ahead of the one being applied: three let the CRM answer the next request while
# the reader parses (100,000 + 100,000 full pull: 59 s against 65 s with one; bench/sync.py).
READ_AHEAD = 3
def failure_cause(exc: BaseException) -> str | None:
    """``config`` for a credential missing or refused, ``unreachable`` for a CRM that did not
    answer after the transport's bounded retries, None for anything else."""
    if isinstance(exc, (AuthError, CredentialError)):
        return "config"
    if isinstance(exc, RetriableError):
        return "unreachable"
    return None


#: The phases' stopwatch (monotonic wall seconds).
_timer = time.perf_counter

#: The pull order (see the module's rules): accounts after every quote read.
PULL_ORDER = ("product", "price", "quote", "quote_line", "account")
#: Objects read side by side once the objects before them are pulled (see the module's rules).
SIDE_BY_SIDE = frozenset({"quote_line", "account"})


def pull_stages(objects: Sequence[str]) -> list[list[str]]:
    """The objects of a pull (in ``PULL_ORDER``) as its stages: one after another, except
    that neighbours in ``SIDE_BY_SIDE`` share a stage."""
    stages: list[list[str]] = []
    for obj in objects:
        if obj in SIDE_BY_SIDE and stages and stages[-1][-1] in SIDE_BY_SIDE:
            stages[-1].append(obj)
        else:
            stages.append([obj])
    return stages


@dataclass
class _Reading:
    """One object being read in a pull: its pages read ahead, its full-read sweep, the
    cursor saved last and the calls its reader made."""

    obj: str
    pages: Prefetch[Page]
    sweep: SeenTable
    saved: str | None
    tally: CallTally


@dataclass(frozen=True)
class SyncOptions:
    trigger: str = "manual"
    objects: tuple[str, ...] | None = None
    full: bool = False
    account: str | None = None
    push: bool = True
    grace_days: int = 0
    #: the credit policy's ``include_unbilled_orders``: the exposure and available credit
    #: pushed count unbilled orders only when credit control does
    include_unbilled: bool = True
    push_batch_size: int = 1000
    push_max_attempts: int = 8
    write_crm_hold: bool = False
    #: The ``[documents]`` render options (``RenderOptions``) and tax note for the PDFs of the
    #: documents push (a connection's ``push_documents``); None: the built-in defaults.
    render_options: Any = None
    tax_inclusive: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Cycle:
    def __init__(self, engine: Engine, connector: Connector, options: SyncOptions, *,
                 clock: Callable[[], datetime] = _utcnow,
                 should_stop: Callable[[], bool] = lambda: False,
                 progress: Progress | None = None, policy: object | None = None) -> None:
        self.engine, self.connector, self.options = engine, connector, options
        self.clock, self.should_stop, self.progress = clock, should_stop, progress
        self.policy = policy
        self.name = connector.name
        self.quotes: set[str] = set()   # a targeted run's quotes for its hand-off
        self.accepted: frozenset[str] | None = None
        self.holds_read = False      # the accounts were read after this run's quote reads
        self.lines_failed = False    # this run's quote line read failed: lines may be missing
        #: A targeted resync's records: object -> CRM ids (``run_targeted``).
        self.targets: dict[str, list[str]] | None = None
        self.report: RunReport | None = None

    @property
    def rep(self) -> RunReport:
        if self.report is None:
            raise RuntimeError("the cycle has not started")
        return self.report

    def uow(self) -> UnitOfWork:
        return ledger_uow(self.engine, clock=self.clock, policy=self.policy)

    def calls(self) -> int:
        try:
            return int(self.connector.api_budget().calls)
        except Exception:  # noqa: BLE001 - a connector without a meter reports no calls
            return 0

    def start(self) -> RunReport:
        """Record the run (committed), so its id exists before the work starts."""
        opts = self.options
        self.report = start_run(self.engine, self.name, opts.trigger, {
            "objects": opts.objects, "full": opts.full, "account": opts.account}, self.clock())
        return self.report

    def run(self) -> RunReport:
        opts = self.options
        report = self.report or self.start()
        token = current_run.set(report.run_id)
        try:
            return self._body(report, opts)
        finally:
            current_run.reset(token)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Add this block's wall time to the run's ``phases[name]``."""
        started = _timer()
        try:
            yield
        finally:
            phases = self.rep.phases
            phases[name] = round(phases.get(name, 0.0) + _timer() - started, 3)

    def _body(self, report: RunReport, opts: SyncOptions) -> RunReport:
        try:
            with self._phase("pull"):
                if self.targets is not None:
                    self._by_ids(self.targets)
                elif opts.account:
                    self._one_account(opts.account)
                else:
                    for stage in pull_stages(self._objects()):
                        if not self._pull_side_by_side(stage) or self.should_stop():
                            break
            if report.outcome == "running" and self.should_stop():
                report.outcome = "stopped: shutdown"
            self._after_pull()
        except BudgetExhausted as exc:
            report.outcome, report.error = "stopped: API budget", str(exc)
        except Exception as exc:
            report.outcome, report.error = "failed", f"{type(exc).__name__}: {exc}"
            report.cause = report.cause or failure_cause(exc)
            log.exception("sync run failed run=%s connection=%s", report.run_id, self.name)
        except BaseException as exc:      # Ctrl-C, exit: recorded with its counts, raised on
            report.outcome, report.error = "interrupted", type(exc).__name__
            self._finish(report, opts)
            raise
        return self._finish(report, opts)

    def _finish(self, report: RunReport, opts: SyncOptions) -> RunReport:
        if report.outcome == "running":
            bad = report.total("quarantined") + report.total("failed")
            pulled = [s.outcome for s in report.objects.values()]
            if pulled and all(o.startswith("failed") for o in pulled):
                report.outcome = "failed"          # nothing could be read (e.g. login refused)
            else:
                report.outcome = "partial" if bad or report.error else "ok"
        budget = self.connector.api_budget()
        report.api_used, report.api_limit = budget.used, budget.limit
        finish_run(self.engine, report, self.clock())
        log.info("sync run=%s connection=%s trigger=%s outcome=%s read=%s upserted=%s "
                 "unchanged=%s quarantined=%s deleted=%s handed_off=%s pushed=%s failed=%s "
                 "api_calls=%s seconds=%s", report.run_id, self.name, opts.trigger,
                 report.outcome, *(report.total(k) for k in ("read", "upserted", "unchanged",
                                                            "quarantined", "deleted")),
                 report.handed_off, report.total("pushed"), report.total("failed"),
                 report.total("api_calls"), _seconds(report.phases))
        return report

    def _objects(self) -> list[str]:
        mapped = set(self.connector.objects())
        wanted = {*(self.options.objects or OBJECTS), "account"}     # accounts: see PULL_ORDER
        self.holds_read = "account" not in mapped     # no CRM account, no CRM hold to miss
        return [o for o in PULL_ORDER if o in mapped and o in wanted]

    @gc_paused
    def _apply(self, obj: str, page: Page, save: bool | str | None) -> PageResult:
        """Apply one page; ``save`` says whether to save its cursor (a text: the cursor saved
        now, not written again when the page's equals it)."""
        with self.uow() as uow:
            res = apply_page(uow, self.name, obj, page.records, page.deletions)
            touched = res.quotes_touched | res.deleted_quotes
            if touched:     # what is owed, and what to look at again, written with the page
                kept = handoff_reads.mark_owed(uow.conn, self.name, touched, self._accepted(),
                                               self.clock())
                if self._targeted():
                    self.quotes |= kept
            if save is not False and page.cursor is not None and page.cursor != save:
                save_cursor(uow.conn, self.name, obj, page.cursor, self.clock())
            uow.commit()
        stats = self.rep.stats(obj)
        for key in ("read", "upserted", "unchanged", "quarantined", "deleted"):
            setattr(stats, key, getattr(stats, key) + getattr(res, key))
        self.rep.disappeared += [f"{obj}:{i}" for i in res.disappeared]
        if self.progress:
            self.progress(obj, res.read)
        return res

    def _pull(self, obj: str, started: datetime | None = None, full: bool | None = None
              ) -> bool:
        """Pull one object; False when the run must not go on (budget, shutdown). ``started``
        caps the cursor (the run's start unless said: a read-back after the push starts later);
        ``full`` overrides the run's option."""
        return self._pull_side_by_side([obj], started, full)

    def _pull_side_by_side(self, objs: Sequence[str], started: datetime | None = None,
                           full: bool | None = None) -> bool:
        """Pull these objects, read side by side, each page applied as it arrives (each
        object's pages in their order, with its cursor); False when the run must not go on
        (budget, shutdown). An object whose read fails is recorded as failed; the others go
        on."""
        full = self.options.full if full is None else full
        arrivals = Arrivals()
        reading: dict[str, _Reading] = {}
        try:
            for obj in objs:
                reading[obj] = self._open(obj, started, full, arrivals)
            while reading:
                obj = arrivals.next_ready({o: r.pages for o, r in reading.items()})
                one = reading[obj]
                try:
                    page = next(one.pages)
                except StopIteration:
                    self._close(reading.pop(obj))
                    self.holds_read = self.holds_read or obj == "account"
                    continue
                except BudgetExhausted:
                    for left in reading:        # the reader beside it stops with it
                        self.rep.stats(left).outcome = "stopped: API budget"
                    raise
                except ConnectorError as exc:
                    self._close(reading.pop(obj))
                    self._failed(obj, exc)
                    continue
                self._apply(obj, page, save=one.saved)
                one.saved = page.cursor if page.cursor is not None else one.saved
                if self.should_stop():
                    for left in reading:
                        self.rep.stats(left).outcome = "stopped: shutdown"
                    return False
            return True
        finally:
            for one in reading.values():
                self._close(one)

    def _open(self, obj: str, started: datetime | None, full: bool, arrivals: Arrivals
              ) -> _Reading:
        """Start reading one object: from its saved cursor (or all of it), ahead of the
        applies, its calls counted apart."""
        with self.engine.connect() as conn:
            saved = get_cursor(conn, self.name, obj)
        sweep = SeenTable(self.engine, self.name, obj)
        tally = CallTally()
        token = call_tally.set(tally)   # the reader's thread runs in a copy of this context
        try:
            pages = Prefetch(self.connector.read_changes(
                obj, None if full else saved, run_started=started or self.rep.started_at,
                sweep=sweep), name=f"prefetch-{self.name}-{obj}", depth=READ_AHEAD,
                arrivals=arrivals, tag=obj)
        except BaseException:
            sweep.close()
            raise
        finally:
            call_tally.reset(token)
        return _Reading(obj, pages, sweep, saved, tally)

    def _close(self, one: _Reading) -> None:
        try:
            one.pages.close()
        finally:
            one.sweep.close()
            self.rep.stats(one.obj).api_calls += one.tally.calls

    def _failed(self, obj: str, exc: ConnectorError) -> None:
        self.lines_failed = self.lines_failed or obj == "quote_line"
        self.rep.stats(obj).outcome = f"failed: {exc}"[:32]
        self.rep.error = f"{obj}: {exc}"
        self.rep.cause = self.rep.cause or failure_cause(exc)
        log.warning("sync object failed run=%s connection=%s object=%s error=%s",
                    self.rep.run_id, self.name, obj, exc)

    def _one_account(self, crm_id: str) -> None:
        """Resync one account and its quotes (and their lines) now; the catalog is brought up
        to date first (incrementally) so the lines' products are known."""
        crm_id = same_id(crm_id)
        for obj in ("product", "price"):
            if obj in self.connector.objects() and not self._pull(obj):
                return
        before = self.calls()
        lookup = getattr(self.connector, "lookup", None)
        if lookup is not None:
            quotes = lookup("quote", "account_crm_id", crm_id)
            self._apply("quote", Page(quotes, [], None), save=False)
            # every quote of the account is looked at, changed or not: one owed or noted by an
            # earlier run (stopped after its pull) is settled now, not at the next cycle
            self.quotes |= {str(same_id(q["crm_id"])) for q in quotes if q.get("crm_id")}
            for quote in quotes:
                lines = lookup("quote_line", "quote_crm_id", quote.get("crm_id"))
                self._apply("quote_line", Page(lines, [], None), save=False)
        record = self.connector.read_one("account", crm_id)     # last: see PULL_ORDER
        if record is None:
            self.rep.not_found.append(crm_id)
            self._apply("account", Page([], [Deletion(crm_id, None, "missing")], None),
                        save=False)
        else:
            self._apply("account", Page([record], [], None), save=False)
        self.holds_read = True
        self.rep.stats("account").api_calls += self.calls() - before

    def run_targeted(self, targets: Mapping[str, Sequence[str]]) -> RunReport:
        """A targeted resync of these records (object -> CRM ids): see the module's rules."""
        self.targets = {obj: list(dict.fromkeys(same_id(i) for i in ids))
                        for obj, ids in targets.items() if ids}
        return self.run()

    def _by_ids(self, targets: Mapping[str, list[str]]) -> None:
        mapped = set(self.connector.objects())
        accounts = list(targets.get("account", ()))
        for obj in PULL_ORDER:
            ids = accounts if obj == "account" else targets.get(obj, [])
            if not ids or obj not in mapped:
                continue
            before = self.calls()
            try:
                records = read_by_ids(self.connector, obj, ids)
                # compared without case: a GUID may come back in another case than asked, and
                # two 18-character Salesforce ids never differ by case alone
                found = {str(same_id(r.get("crm_id"))).lower() for r in records}
                gone = [Deletion(i, None, "deleted") for i in ids if i.lower() not in found]
                self._apply(obj, Page(records, gone, None), save=False)
            finally:
                self.rep.stats(obj).api_calls += self.calls() - before
            if obj == "quote":
                self._lines_of_accepted(records, targets)
            if obj in ("quote", "quote_line"):      # their accounts: read last (PULL_ORDER)
                with self.engine.connect() as conn:
                    named = _accounts_of(conn, self.name, obj, ids)
                accounts += [a for a in named if a not in accounts]
            if self.should_stop():
                self.rep.outcome = "stopped: shutdown"
                return
        self.holds_read = "account" in mapped or not accounts

    def _lines_of_accepted(self, quotes: Sequence[Mapping[str, Any]],
                           targets: Mapping[str, list[str]]) -> None:
        """The lines of the accepted quotes a targeted resync read, read with them (as a
        cycle reads every line after the quotes): the CRM sends a quote's event and its lines'
        events apart, and a hand-off must not see the accepted quote without its lines. The
        lines named by events of their own are read in their turn. One read per
        ``READ_BY_IDS_BATCH`` quotes with a connector's ``lookup_in``, else one per quote."""
        lookup = getattr(self.connector, "lookup", None)
        if lookup is None or "quote_line" not in self.connector.objects():
            return
        accepted = self._accepted()
        named = set(targets.get("quote_line", ()))
        ids = list(dict.fromkeys(str(q.get("crm_id")) for q in quotes
                                 if q.get("status") in accepted))
        # the lines of up to READ_BY_IDS_BATCH quotes per read (``lookup_in``: one SOQL
        # ``QuoteId IN (...)`` / one Dataverse ``$filter`` of ``or``), else one lookup a quote
        lookup_in = getattr(self.connector, "lookup_in", None)
        chunks = ([ids[i:i + READ_BY_IDS_BATCH] for i in range(0, len(ids), READ_BY_IDS_BATCH)]
                  if lookup_in is not None else [[i] for i in ids])
        before = self.calls()
        try:
            for chunk in chunks:
                found = (lookup_in("quote_line", "quote_crm_id", chunk) if lookup_in is not None
                         else lookup("quote_line", "quote_crm_id", chunk[0]))
                lines = [r for r in found if same_id(r.get("crm_id")) not in named]
                if lines:
                    self._apply("quote_line", Page(lines, [], None), save=False)
        finally:
            self.rep.stats("quote_line").api_calls += self.calls() - before

    def fetch_account(self, uow: UnitOfWork, crm_id: str) -> FetchedAccount:
        """The hand-off's port (``handoff.AccountFetcher``): an account a quote names that was
        not pulled yet, read from the CRM once and reconciled in the hand-off's unit of work."""
        record = self.connector.read_one("account", crm_id)
        if record is None:
            return FetchedAccount(in_crm=False, ledger_id=None)
        apply_page(uow, self.name, "account", [record])
        return FetchedAccount(in_crm=True,
                              ledger_id=ledger_id_of(uow.conn, self.name, "account", crm_id))

    def _targeted(self) -> bool:
        """Whether this run hands off only the quotes it touched (one account, CRM events)."""
        return bool(self.options.account) or self.targets is not None

    def _accepted(self) -> frozenset[str]:
        if self.accepted is None:
            self.accepted = self.connector.accepted_quote_states()
        return self.accepted

    def _after_pull(self) -> None:
        report, opts = self.rep, self.options
        stopped = report.outcome.startswith("stopped")
        accepted = self._accepted()
        with self._phase("handoff"):
            if opts.full:
                with self.engine.begin() as conn:
                    for page in handoff_reads.accepted_quotes(conn, self.name, accepted):
                        handoff_reads.mark_owed(conn, self.name, page, accepted, self.clock(),
                                                looks=False)
            # One account's read is fresh for its own quotes only: the others' owed wait. A
            # cycle reads what its hand-off owes or must look at from the database, a page at
            # a time.
            quotes = set(self.quotes) if self._targeted() else None
            something = bool(quotes) if quotes is not None else handoff_reads.anything_due(
                self.engine, self.name)
            if something and not stopped and (not self.holds_read or self.lines_failed):
                log.warning("hand-off left for the next run (%s not read) run=%s "
                            "connection=%s", "quote lines" if self.lines_failed else "accounts",
                            report.run_id, self.name)
            elif something and not stopped:
                result = handoff.run_handoffs(self.engine, self.fetch_account, self.name,
                                              quotes, accepted, uow_factory=self.uow)
                report.handed_off = result.counts["placed"]
        with self._phase("outbox"):
            outbox.refresh(self.engine, self.name, self.clock(), full=opts.full,
                           grace_days=opts.grace_days, include_unbilled=opts.include_unbilled,
                           write_hold=opts.write_crm_hold,
                           documents=pushes_documents(self.connector))
        if opts.push and not stopped:
            with self._phase("push"):
                self._push()

    def _push(self) -> None:
        docs = outbox.DOCUMENT_OBJECTS if pushes_documents(self.connector) else ()
        files = pdf_files(self.engine, self.options.render_options,
                          tax_inclusive=self.options.tax_inclusive) if docs else None
        for obj in ("account", "quote", *docs):
            before = self.calls()
            result = push.push(self.engine, self.connector, self.name, objects=(obj,),
                               batch_size=self.options.push_batch_size,
                               max_attempts=self.options.push_max_attempts, clock=self.clock,
                               should_stop=self.should_stop, files=files)
            stats = self.rep.stats(obj)
            stats.pushed += result.pushed.get(obj, 0)
            stats.failed += result.failed.get(obj, 0)
            stats.api_calls += self.calls() - before
            if result.stopped:
                stats.outcome = result.stopped[:32]
                if result.stopped.startswith("stopped"):
                    self.rep.outcome = result.stopped
                    return
                # A failed push leaves its rows pending for the next run, and the run says so
                # (partial; unreachable after the transport's bounded retries: exit 3).
                self.rep.error = self.rep.error or f"push {obj}: {result.error}"
                cause = failure_cause(result.error) if result.error is not None else None
                self.rep.cause = self.rep.cause or cause
                log.warning("sync push failed run=%s connection=%s object=%s error=%s",
                            self.rep.run_id, self.name, obj, result.error)
                if cause is not None:       # the CRM is unreachable or refuses us: stop here
                    return
                continue
            if result.pushed.get(obj) and self._settles(obj) and not self.options.account \
                    and self.targets is None:
                # Read our writes back now (see the module's rules), from the saved cursor.
                if not self._pull(obj, started=self.clock(), full=False) \
                        or self.should_stop():
                    return

    def _settles(self, obj: str) -> bool:
        settles = getattr(self.connector, "settles_writes", None)
        return obj in self.connector.objects() and settles is not None and bool(settles(obj))


#: Ids per ``read_by_ids`` call the engine asks for (Salesforce's ``Id IN (...)`` of 200, a
#: Dataverse ``$filter`` of 200 key comparisons): the connector batches again if it must.
READ_BY_IDS_BATCH = 200


def read_by_ids(connector: Connector, obj: str, ids: Sequence[str]) -> list[Any]:
    """The records of ``ids`` the CRM still has: the connector's batched ``read_by_ids``, or
    one ``read_one`` per id for a connector without it."""
    batched = getattr(connector, "read_by_ids", None)
    found: list[Any] = []
    for start in range(0, len(ids), READ_BY_IDS_BATCH):
        chunk = list(ids[start:start + READ_BY_IDS_BATCH])
        if batched is not None:
            found += batched(obj, chunk)
        else:
            found += [r for r in (connector.read_one(obj, i) for i in chunk) if r is not None]
    return found


def _accounts_of(conn: Connection, connection: str, obj: str, ids: Sequence[str]) -> list[str]:
    """The CRM accounts of these quotes (or of these lines' quotes), as billing knows them."""
    rec = sync_records
    quotes = list(ids)
    if obj == "quote_line":
        quotes = [str(q) for q in conn.execute(select(rec.c.parent_crm_id).where(
            rec.c.connection == connection, rec.c.object == "quote_line",
            rec.c.crm_id.in_(quotes), rec.c.parent_crm_id.is_not(None)).distinct()).scalars()]
    if not quotes:
        return []
    return [str(a) for a in conn.execute(select(rec.c.parent_crm_id).where(
        rec.c.connection == connection, rec.c.object == "quote", rec.c.crm_id.in_(quotes),
        rec.c.parent_crm_id.is_not(None)).distinct().order_by(rec.c.parent_crm_id)).scalars()]


def pushes_documents(connector: Connector) -> bool | str:
    """Whether the connection pushes issued documents (``push_documents``, off by default):
    ``"lines"`` when its field map also keeps their lines (a ``document_line`` object: the
    native Dynamics 365 invoice), so the outbox puts them in the documents' payloads."""
    settings = getattr(connector, "settings", None)
    if not getattr(settings, "push_documents", False):
        return False
    fieldmap = getattr(connector, "fieldmap", None)
    return "lines" if "document_line" in getattr(fieldmap, "objects", {}) else True


def _seconds(phases: Mapping[str, float]) -> str:
    """The run's phases for its log line: ``pull:12.3,handoff:4.1,outbox:2.0`` (or ``-``)."""
    return ",".join(f"{k}:{v:.1f}" for k, v in phases.items()) or "-"


def run_cycle(engine: Engine, connector: Connector, options: SyncOptions | None = None,
              **kw: Any) -> RunReport:
    return Cycle(engine, connector, options or SyncOptions(), **kw).run()
