"""``ledgerbridge sweep``: the drift sweep now (docs/SYNC.md, "Drift sweep").

Exit codes (``jobs.cli.exits``, per run): 0 nothing to repair or everything repaired; 1 a
record repaired was quarantined, or the sweep stopped (the API budget: the next sweep resumes
with the objects left); 2 an unknown connection, a missing secret or refused credentials; 3 the
CRM could not be reached; 130 interrupted.
"""
from __future__ import annotations

import sys

import click

from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app
from jobs.sweep import sweep
from jobs.worker import Worker
from sync.drift import KINDS, last_sweep


@click.command("sweep")
@click.option("--connection", "-c", default=None, help="Only this connection (default: all).")
@json_option
@pass_app
def sweep_command(app: AppContext, connection: str | None, as_json: bool) -> None:
    """Compare the CRM's ids and modification stamps with the ledger, and resync what is
    missing, changed or deleted (waits for a running sync of the same connection)."""
    if connection is not None and connection not in app.settings.connections:
        raise click.BadParameter(f"{connection!r} is not configured (configured: "
                                 f"{', '.join(app.settings.connections) or 'none'})",
                                 param_hint="'--connection'")
    worker = Worker(app.engine, app.settings)
    try:
        reports = sweep(worker, connection, wait=True)
    finally:
        worker.close()
    rows = []
    with app.engine.connect() as conn:
        for report in reports:
            found = last_sweep(conn, report.connection) or {}
            total = found.get("total") or {}
            rows.append({"connection": report.connection, "run": report.run_id,
                         "outcome": report.outcome, "cause": report.cause,
                         **{k: total.get(k, 0) for k in KINDS},
                         "quarantined": report.total("quarantined"),
                         "pending": ",".join(found.get("pending") or []) or None,
                         "repairs": found.get("repairs") or {}})
    emit(rows, ["connection", "run", "outcome", *KINDS, "quarantined", "pending"],
         as_json=as_json, title="drift sweep")
    code = exits.worst(exits.for_run(r) for r in reports)
    if code:
        sys.exit(code)


COMMANDS: list[click.Command] = [sweep_command]
