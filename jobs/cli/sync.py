"""``ledgerbridge sync | status | quarantine | outbox | run``: the admin's view of the sync
(``doctor`` is in ``jobs.cli.doctor``).

- ``sync`` runs a resync now (waits for a daemon's run of the same connection to end first, so
  it is safe beside a running daemon), with a progress bar on a terminal and a summary after.
  Ctrl-C or SIGTERM stops it like the daemon: the page in hand commits and the run is recorded
  ``stopped: shutdown`` with its counts (what it pulled but did not hand off stays owed for the
  next run); a second Ctrl-C interrupts at once and the run is recorded ``interrupted``.
- ``status`` exits 1 when something needs attention (for monitoring): a last run that failed
  or stopped, a run older than three intervals, open quarantine, dead letters, failed
  provisioning.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import Table, func, select, update

from billing_core.service import ledger_uow
from jobs.cli import exits
from jobs.cli.common import ID, AppContext, emit, json_option, pass_app
from jobs.logs import FORMATS, configure, level_for
from jobs.worker import Worker
from sync.handoff import run_handoffs
from sync.mapping import revive
from sync.reconcile import apply_page
from sync.runs import RunReport
from sync.states import OutboxState
from sync.status import overview
from sync.tables import outbox, quarantine


def _worker(app: AppContext) -> Worker:
    return Worker(app.engine, app.settings)


def _not_blank(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(f"{value!r}: must not be empty", param=param)
    return value


@click.command("sync")
@click.option("--connection", "-c", help="Only this connection (default: all).")
@click.option("--object", "-o", "obj", type=click.Choice(
    ["account", "product", "price", "quote", "quote_line"]), help="Only this object.")
@click.option("--full", is_flag=True, help="Ignore cursors; report what disappeared.")
@click.option("--account", "account", callback=_not_blank,
              help="One account (CRM id) and its quotes (with -c when several connections "
                   "are configured).")
@json_option
@pass_app
def sync_command(app: AppContext, connection: str | None, obj: str | None, full: bool,
                 account: str | None, as_json: bool) -> None:
    """Resync now: pull, reconcile, hand off, push. Exit codes: ``jobs.cli.exits`` (0 ok,
    1 partial or stopped, 2 bad input or configuration, 3 CRM unreachable, 130 interrupted)."""
    if connection is not None and connection not in app.settings.connections:
        raise click.BadParameter(f"{connection!r} is not configured (configured: "
                                 f"{', '.join(app.settings.connections) or 'none'})",
                                 param_hint="'--connection'")
    if account is not None and connection is None and len(app.settings.connections) > 1:
        raise click.BadParameter("an account id belongs to one CRM: name its connection "
                                 "with -c", param_hint="'--account'")
    worker = _worker(app)
    try:
        with _stop_on_signals(worker.stop):
            reports = _sync_all(worker, connection, obj, full, account, as_json)
    finally:
        worker.close()
    rows = [{"run": r.run_id, "connection": r.connection, "object": obj_name,
             **{k: getattr(s, k) for k in ("read", "upserted", "unchanged", "quarantined",
                                           "deleted", "pushed", "failed", "api_calls")},
             "outcome": s.outcome} for r in reports for obj_name, s in r.objects.items()]
    if as_json:
        emit([r.as_dict() for r in reports], as_json=True)
    else:
        emit(rows, as_json=False, title="sync")
        for r in reports:
            click.echo(f"run {r.run_id} {r.connection}: {r.outcome}"
                       f"{'; handed off ' + str(r.handed_off) + ' quote(s)' if r.handed_off else ''}"
                       f"{'; disappeared: ' + ', '.join(r.disappeared[:20]) if r.disappeared else ''}")
    for r in reports:
        for crm_id in r.not_found:
            click.echo(f"error: account {crm_id!r} not found in connection {r.connection!r}",
                       err=True)
    code = exits.worst(exits.for_run(r) for r in reports)
    if worker.stop.is_set():
        code = exits.worst((code, exits.INTERRUPTED))
    if code:
        sys.exit(code)



@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the cycle finishes its page and records the run);
    after the first, SIGINT is Python's own again, so a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield                   # signal handlers belong to the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        click.echo(f"signal {signum}: stopping after the page in hand "
                   "(Ctrl-C again to interrupt now)", err=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def _sync_all(worker: Worker, connection: str | None, obj: str | None, full: bool,
              account: str | None, as_json: bool) -> list[RunReport]:
    names = [connection] if connection else list(worker.connections)
    if not names:
        raise click.UsageError("no connections configured ([connections.NAME] in the config)")
    reports = []
    for name in names:
        if worker.stop.is_set():
            break               # stopped by a signal: the next connections wait for next time
        options = worker.options("manual", objects=(obj,) if obj else None, full=full,
                                 account=account)
        if sys.stderr.isatty() and not as_json:
            from rich.progress import Progress, SpinnerColumn, TextColumn
            with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                          TextColumn("{task.completed} records"), transient=True) as bar:
                task = bar.add_task(f"{name}", total=None)

                def progress(o: str, n: int, task: Any = task, name: str = name) -> None:
                    bar.update(task, advance=n, description=f"{name} {o}")

                report = worker.sync_connection(name, options, wait=True, progress=progress)
        else:
            report = worker.sync_connection(name, options, wait=True)
        if report is not None:
            reports.append(report)
    return reports


@click.command("status")
@json_option
@pass_app
def status_command(app: AppContext, as_json: bool) -> None:
    """Last run per connection and object, backlog counts; exit 1 when something needs you."""
    data = overview(app.engine, interval_minutes=app.settings.sync.interval_minutes)
    if as_json:
        emit(data, as_json=True)
    else:
        emit([{k: r[k] for k in ("connection", "object", "outcome", "age", "read", "upserted",
                                 "quarantined", "pushed", "failed", "api_calls")}
              for r in data["runs"]], as_json=False, title="last runs")
        emit({k: v for k, v in data.items() if k not in ("runs", "attention")},
             as_json=False, title="backlog")
        for line in data["attention"]:
            click.echo(f"attention: {line}")
    if data["attention"]:
        sys.exit(1)


@click.group("quarantine")
def quarantine_group() -> None:
    """Records the CRM sent that billing could not take."""


@quarantine_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved and dropped.")
@json_option
@pass_app
def quarantine_list(app: AppContext, show_all: bool, as_json: bool) -> None:
    stmt = select(quarantine).order_by(quarantine.c.id)
    if not show_all:
        stmt = stmt.where(quarantine.c.status == "open")
    with app.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    emit(rows, ["id", "connection", "object", "crm_id", "field", "value", "reason", "attempts",
                "last_seen", "status"], as_json=as_json, title="quarantine")


@quarantine_group.command("retry")
@click.argument("ids", nargs=-1, type=ID)
@pass_app
def quarantine_retry(app: AppContext, ids: tuple[int, ...]) -> None:
    """Apply the stored records again (all open ones without IDS); a quarantined quote is
    handed off again (its entry is resolved once it becomes an order)."""
    stmt = select(quarantine).where(quarantine.c.status == "open").order_by(quarantine.c.id)
    if ids:
        _check_ids(app, quarantine, ids, "open")
        stmt = stmt.where(quarantine.c.id.in_(ids))
    with app.engine.connect() as conn:
        rows = list(conn.execute(stmt).mappings())
    quotes: dict[str, set[str]] = {}
    for row in rows:
        with ledger_uow(app.engine, policy=app.settings.credit, actor=app.actor) as uow:
            res = apply_page(uow, row["connection"], row["object"],
                             [revive(json.loads(row["record"]))])
            uow.commit()
        if res.quotes_touched:
            quotes.setdefault(row["connection"], set()).update(res.quotes_touched)
        if row["object"] == "quote":     # a quote the hand-off refused: hand it off again
            quotes.setdefault(row["connection"], set()).add(row["crm_id"])
    if quotes:
        worker = _worker(app)
        try:
            for name, quote_ids in quotes.items():
                accepted = worker.connector(name).accepted_quote_states()
                run_handoffs(app.engine, None, name, quote_ids, accepted,
                             uow_factory=lambda: ledger_uow(app.engine, actor=app.actor))
        finally:
            worker.close()
    with app.engine.connect() as conn:     # what is still open, the hand-off's refusals too
        still = conn.execute(select(func.count()).select_from(quarantine).where(
            quarantine.c.id.in_([r["id"] for r in rows]),
            quarantine.c.status == "open")).scalar_one() if rows else 0
    click.echo(f"retried {len(rows)}: {len(rows) - still} applied, {still} still refused")
    if still:
        sys.exit(exits.ATTENTION)


@quarantine_group.command("drop")
@click.argument("ids", nargs=-1, type=ID, required=True)
@pass_app
def quarantine_drop(app: AppContext, ids: tuple[int, ...]) -> None:
    """Give up on these records (they come back if they change in the CRM)."""
    _check_ids(app, quarantine, ids, "open")
    with app.engine.begin() as conn:
        done = conn.execute(update(quarantine).where(quarantine.c.id.in_(ids),
                                                     quarantine.c.status == "open")
                            .values(status="dropped")).rowcount
    click.echo(f"dropped {done}")


def _check_ids(app: AppContext, table: Table, ids: tuple[int, ...], wanted: str) -> None:
    """Every id names a row of ``table`` in the ``wanted`` state (``status`` of quarantine,
    ``state`` of the outbox); otherwise bad input naming the first that does not, before
    anything is written (exit 2)."""
    from billing_core.domain.errors import InvalidState, NotFound

    column = table.c.status if "status" in table.c else table.c.state
    with app.engine.connect() as conn:
        found = dict(conn.execute(select(table.c.id, column).where(table.c.id.in_(ids))).all())
    for row_id in ids:
        if row_id not in found:
            raise NotFound(f"{table.name} id", row_id)
        if found[row_id] != wanted:
            raise InvalidState(f"{table.name} id", row_id, f"is {found[row_id]}, not {wanted}")


@click.group("outbox")
def outbox_group() -> None:
    """What billing pushes to the CRM: pending rows and dead letters."""


@outbox_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in OutboxState]),
              default=OutboxState.DEAD.value, show_default=True)
@json_option
@pass_app
def outbox_list(app: AppContext, state: str, as_json: bool) -> None:
    with app.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(outbox).where(outbox.c.state == state)
                                              .order_by(outbox.c.id).limit(1000)).mappings()]
    emit(rows, ["id", "connection", "object", "crm_id", "state", "attempts", "last_error",
                "updated_at"], as_json=as_json, title=f"outbox: {state}")


@outbox_group.command("retry")
@click.argument("ids", nargs=-1, type=ID)
@pass_app
def outbox_retry(app: AppContext, ids: tuple[int, ...]) -> None:
    """Send dead letters again at the next push (all of them without IDS)."""
    stmt = update(outbox).where(outbox.c.state == OutboxState.DEAD)
    if ids:
        _check_ids(app, outbox, ids, OutboxState.DEAD.value)
        stmt = stmt.where(outbox.c.id.in_(ids))
    with app.engine.begin() as conn:
        done = conn.execute(stmt.values(state=OutboxState.PENDING, attempts=0, dead_at=None,
                                        next_attempt_at=datetime.now(UTC))).rowcount
    click.echo(f"{done} row(s) will be sent again at the next push")


@click.command("run")
@click.option("--log-format", type=click.Choice(FORMATS), default=None,
              help="Same as ledgerbridge --log-format (kept for the service recipes).")
@click.option("--api/--no-api", default=True, show_default=True,
              help="Serve the HTTP API beside the worker.")
@click.option("--api-host", default="127.0.0.1", show_default=True,
              help="Address of the API; anything but loopback is logged as a warning (use TLS).")
@click.option("--api-port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the API (0: any free port, logged at start).")
@click.option("--once", is_flag=True, help="Run every job once and exit.")
@pass_app
def run_command(app: AppContext, log_format: str | None, api: bool, api_host: str, api_port: int,
                once: bool) -> None:
    """Start the worker: scheduled sync, bill run, holds, provisioning, push, and the API."""
    from jobs.config_metrics import apply_config_metrics
    from jobs.daemon import (  # the API and scheduler: run only
        DaemonRefused,
        JobsStillRunning,
        run_daemon,
    )

    configure(log_format or app.log_format, app.verbosity,
              level=min(logging.INFO, level_for(app.verbosity)))
    apply_config_metrics(app.engine, app.settings)      # [metrics.CODE]: refused -> exit 2
    worker = None
    if once:
        from jobs.worker import Worker

        worker = Worker(app.engine, app.settings)
    try:
        reports = run_daemon(app.engine, app.settings, api=api, host=api_host, port=api_port,
                             once=once, worker=worker)
    except (DaemonRefused, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exits.BAD_INPUT)
    except JobsStillRunning:
        # a stop that was asked for: end now, not when the job's thread would end
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exits.OK)
    code = exits.worst(exits.for_run(r) for r in reports)     # --once: its sync runs
    if worker is not None and worker.stop.is_set():             # --once stopped by a signal
        code = exits.worst((code, exits.INTERRUPTED))
    if code:
        sys.exit(code)


COMMANDS = [sync_command, status_command, quarantine_group, outbox_group,
            run_command]
