"""Ops endpoints: liveness (no token), readiness and Prometheus metrics (token needed)."""
from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from jobs.api.deps import Reader, router
from jobs.api.metrics import CONTENT_TYPE
from jobs.api.models_admin import Health

# Plain routes: no unit of work, so liveness never waits for the database.
routes = router("ops", ledger=False)


@routes.get("/healthz")
def healthz() -> Health:
    """Liveness: the process answers. Needs no token."""
    return Health(status="ok")


@routes.get("/readyz", responses={503: {"model": Health, "description": "Not ready."}})
def readyz(request: Request, _: Reader) -> Response:
    """Readiness: the database answers and (in the daemon) the scheduler is running."""
    state = request.app.state.api
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execution_options(ledger_read_only=True).execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if state.scheduler_state is not None:
        checks["scheduler"] = "ok" if getattr(state.scheduler_state, "running", False) \
            else "not running"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(Health(status="ok" if ready else "unavailable", checks=checks)
                        .model_dump(), status_code=200 if ready else 503)


@routes.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}},
                             "description": "Prometheus text exposition format."}})
def metrics(request: Request, _: Reader) -> Response:
    return Response(request.app.state.api.metrics.render(), media_type=CONTENT_TYPE)


def add_openapi_route(app: FastAPI) -> None:
    """``GET /openapi.json``: the app's own document, behind a token like every other call."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(_: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())
