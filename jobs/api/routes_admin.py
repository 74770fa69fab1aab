"""Admin calls: trigger a resync (answers with the run id at once; the run goes on in the
background), follow a run, and the status overview (what ``ledgerbridge status`` shows)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import Path, Request, status
from sqlalchemy import Connection, func, select

from billing_core.domain.errors import NotFound, ValidationError
from jobs.api.deps import Admin, Uow, router
from jobs.api.errors import ApiError
from jobs.api.models import MAX_ID, ErrorBody
from jobs.api.models_admin import StatusOut, SyncRequest, SyncRunOut, SyncStarted, jsonable

routes = router("admin")
# The resync endpoints hold no ledger transaction: the sync engine records its runs itself.
sync_routes = router("admin", own_transactions=True)


def _runner(request: Request) -> Any:
    runner = request.app.state.api.sync_runner
    if runner is None:
        raise ApiError(503, "sync_unavailable", None, None,
                       "this process runs no sync engine: start it with 'ledgerbridge run'")
    return runner


def _sync_objects() -> tuple[str, ...]:
    try:
        from sync.mapping import OBJECTS
    except ModuleNotFoundError:
        return ()
    return tuple(OBJECTS)


@sync_routes.post("/sync:run", status_code=status.HTTP_202_ACCEPTED,
             responses={503: {"model": ErrorBody,
                              "description": "No sync engine in this process."}})
def run_sync(body: SyncRequest, request: Request, _: Admin) -> SyncStarted:
    """Start a resync of one connection (one object, or all; incremental or ``full``;
    optionally one account). Answers at once; follow it at ``status_url``."""
    runner = _runner(request)
    known = getattr(runner, "connections", None)
    if known is not None and body.connection not in known:
        raise NotFound("connection", body.connection)
    objects = _sync_objects()
    if body.object is not None and objects and body.object not in objects:
        raise ValidationError("object", body.object, f"must be one of {', '.join(objects)}")
    run_id = runner.start(body.connection, body.object, body.full, body.account)
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


def _scheduler(state: Any) -> dict[str, Any]:
    if state is None:
        return {"running": False, "detail": "no scheduler in this process"}
    info: dict[str, Any] = {"running": bool(getattr(state, "running", False))}
    jobs = getattr(state, "jobs", None)
    if callable(jobs):
        info["jobs"] = jsonable(jobs())
    return info


def _counts(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    from billing_core.adapters.tables import hold_reasons
    from billing_core.adapters.tables import provisioning_requests as pr

    holds = {str(r): int(n) for r, n in conn.execute(
        select(hold_reasons.c.reason, func.count()).group_by(hold_reasons.c.reason))}
    queue = {str(s): int(n) for s, n in conn.execute(
        select(pr.c.state, func.count()).group_by(pr.c.state))}
    return holds, queue


def _overview(state: Any) -> dict[str, Any]:
    """What ``ledgerbridge status --json`` prints (last run per object, backlog, attention)."""
    try:
        from jobs.cli.sync import status_data
    except ModuleNotFoundError:
        return {}
    return dict(jsonable(status_data(SimpleNamespace(engine=state.engine,
                                                     settings=state.settings))))


@routes.get("/status")
def show_status(request: Request, uow: Uow, _: Admin) -> StatusOut:
    """What ``ledgerbridge status`` shows (last sync per object, backlog, what needs
    attention), plus the database, the scheduler, holds by reason and the provisioning queue."""
    from jobs.api.app import API_VERSION
    from jobs.migrate import head

    state = request.app.state.api
    holds, queue = _counts(uow.conn)
    return StatusOut(
        version=API_VERSION,
        database={"dialect": uow.dialect, "schema_head": head()},
        scheduler=_scheduler(state.scheduler_state), holds=holds, provisioning=queue,
        overview=_overview(state))
