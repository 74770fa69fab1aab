"""Admin calls: trigger a resync (answers with the run id at once; the run goes on in the
background; a request for a run already queued answers with that run's id, and a connection
with too many queued runs answers 429 with ``Retry-After``), follow a run, the quarantine
(records and quotes the sync could not take) and the status overview (what
``ledgerbridge status`` shows)."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request, status

from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service.reports import holds_by_reason, provisioning_by_state
from jobs.api.admin_sync import SyncBusy, SyncRunner
from jobs.api.deps import Admin, Uow, router
from jobs.api.errors import ApiError
from jobs.api.models import API_VERSION, MAX_ID, ErrorBody
from jobs.api.models_admin import (
    QuarantineEntryOut,
    StatusOut,
    SyncRequest,
    SyncRunOut,
    SyncStarted,
    jsonable,
)
from jobs.migrate import head
from sync.bookkeeping import quarantine_entries
from sync.mapping import OBJECTS
from sync.status import overview

routes = router("admin")
# The resync endpoints hold no ledger transaction: the sync engine records its runs itself.
sync_routes = router("admin", own_transactions=True)


def _runner(request: Request) -> SyncRunner:
    runner: SyncRunner | None = request.app.state.api.sync_runner
    if runner is None:
        raise ApiError(503, "sync_unavailable", None, None,
                       "this process runs no sync engine: start it with 'ledgerbridge run'")
    return runner


@sync_routes.post("/sync:run", status_code=status.HTTP_202_ACCEPTED,
             responses={429: {"model": ErrorBody,
                              "description": "Too many resyncs of this connection are "
                                             "queued (with Retry-After)."},
                        503: {"model": ErrorBody,
                              "description": "No sync engine in this process."}})
def run_sync(body: SyncRequest, request: Request, _: Admin) -> SyncStarted:
    """Start a resync of one connection (one object, or all; incremental or ``full``;
    optionally one account). Answers at once; follow it at ``status_url``. A run of the same
    connection and scope already queued is not queued twice: its id is the answer."""
    runner = _runner(request)
    known = getattr(runner, "connections", None)
    if known is not None and body.connection not in known:
        raise NotFound("connection", body.connection)
    if body.object is not None and body.object not in OBJECTS:
        raise ValidationError("object", body.object, f"must be one of {', '.join(OBJECTS)}")
    try:
        run_id = runner.start(body.connection, body.object, body.full, body.account)
    except SyncBusy as exc:
        raise ApiError(429, "sync_busy", "connection", body.connection, str(exc),
                       headers={"Retry-After": str(exc.retry_after)}) from None
    return SyncStarted(run_id=run_id, status_url=f"/sync/runs/{run_id}")


@sync_routes.get("/sync/runs/{run_id}",
                 responses={503: {"model": ErrorBody, "description": "No sync engine."}})
def show_sync_run(run_id: Annotated[int, Path(ge=1, le=MAX_ID)], request: Request,
                  _: Admin) -> SyncRunOut:
    run = _runner(request).get(run_id)
    if run is None:
        raise NotFound("run_id", run_id)
    return SyncRunOut(**jsonable({k: v for k, v in run.items()
                                  if k in SyncRunOut.model_fields}))


def _scheduler(state: Any, runner: Any = None) -> dict[str, Any]:
    if state is None:
        return {"running": False, "detail": "no scheduler in this process"}
    info: dict[str, Any] = {"running": bool(getattr(state, "running", False))}
    jobs = getattr(state, "jobs", None)
    if callable(jobs):
        info["jobs"] = jsonable(jobs())
    failures = getattr(runner, "job_failures", None)
    if callable(failures):
        info["failures"] = jsonable(failures())
    return info




@routes.get("/sync/quarantine")
def list_quarantine(uow: Uow, _: Admin, include_closed: bool = False
                    ) -> list[QuarantineEntryOut]:
    """What ``ledgerbridge quarantine list`` shows: the records billing could not take and the
    accepted quotes the hand-off could not take (object ``quote``), with field, value and
    reason; resolved and dropped entries too with ``include_closed``. Oldest first, at most
    1,000."""
    return [QuarantineEntryOut(**row)
            for row in quarantine_entries(uow.conn, include_closed=include_closed)]


@routes.get("/status")
def show_status(request: Request, uow: Uow, _: Admin) -> StatusOut:
    """What ``ledgerbridge status`` shows (last sync per object, backlog, what needs
    attention), plus the database, the scheduler, holds by reason and the provisioning queue."""
    state = request.app.state.api
    sync_overview = overview(state.engine, interval_minutes=state.settings.sync.interval_minutes)
    return StatusOut(
        version=API_VERSION,
        database={"dialect": uow.dialect, "schema_head": head()},
        scheduler=_scheduler(state.scheduler_state, state.sync_runner), holds=holds_by_reason(uow.conn),
        provisioning=provisioning_by_state(uow.conn), overview=dict(jsonable(sync_overview)))
