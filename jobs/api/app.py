"""The HTTP API application: ``build_app`` wires the routers, and ``serve_in_thread`` runs it
with uvicorn inside the daemon.

Rules kept here
- Nothing happens at import: the engine, settings and adapters come in through ``build_app``.
- Bodies over ``max_body_bytes`` (1 MiB) are refused with 413 before anything parses them:
  by ``Content-Length`` when given, else while the body streams in.
- The OpenAPI document is served at ``/openapi.json``, to a token with ``billing:read`` like
  everything else but ``/healthz`` (so there is no browser ``/docs`` page: point any OpenAPI
  viewer at the document).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from jobs.api import (
    errors,
    metrics,
    routes_accounts,
    routes_admin,
    routes_audit,
    routes_billing,
    routes_credit,
    routes_email,
    routes_events,
    routes_ops,
    routes_orders,
    routes_payments,
    routes_products,
    routes_reconcile,
    routes_usage,
)
from jobs.api.admin_sync import SyncRunner
from jobs.api.errors import body as error_body
from jobs.api.models import API_VERSION

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


@dataclass
class ApiState:
    """What the endpoints reach through ``request.app.state.api``."""
    engine: Engine
    settings: Settings
    sync_runner: SyncRunner | None = None
    scheduler_state: Any = None
    clock: Callable[[], datetime] | None = None
    metrics: Any = field(default=None, repr=False)
    #: Called after CRM events were stored (the daemon runs its events job now, instead of at
    #: its next interval); never raises into the receiver.
    on_events: Callable[[], None] | None = None


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, before any parsing."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES,
                 larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}      # path -> its own limit (a batch route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            # Past the limit the app sees a disconnect (whatever it answers is dropped) and the
            # client gets the 413 below.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            if refused:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        payload = json.dumps(error_body("body_too_large", "body", None,
                                        f"the request body is over {limit} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def build_app(engine: Engine, settings: Settings, *, sync_runner: SyncRunner | None = None,
              scheduler_state: Any = None, clock: Callable[[], datetime] | None = None,
              max_body_bytes: int = MAX_BODY_BYTES,
              on_events: Callable[[], None] | None = None) -> FastAPI:
    """The API over ``engine``. ``sync_runner`` starts resyncs (``POST /sync:run``);
    ``scheduler_state`` (anything with a ``running`` attribute) feeds ``/readyz``."""
    app = FastAPI(title="ledgerbridge API", version=API_VERSION, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Billing documents, payments and credits for payment systems; "
                              "holds, resyncs and status for admins. Bearer tokens with "
                              "scopes billing:read, billing:write, admin.")
    app.state.api = ApiState(engine=engine, settings=settings, sync_runner=sync_runner,
                             scheduler_state=scheduler_state, clock=clock, on_events=on_events,
                             metrics=metrics.ApiMetrics(engine, sync_runner, scheduler_state))
    errors.install(app)
    for module in (routes_billing, routes_orders, routes_payments, routes_credit, routes_admin,
                   routes_ops, routes_accounts, routes_products, routes_audit, routes_email):
        app.include_router(module.routes)
    app.include_router(routes_admin.sync_routes)
    app.include_router(routes_usage.routes)         # metered usage: ingestion and metrics
    app.include_router(routes_reconcile.routes)     # vendor reconciliation
    app.include_router(routes_events.routes)        # the CRM's change events: no bearer token
    routes_ops.add_openapi_route(app)
    app.add_middleware(metrics.RequestMetrics)
    app.add_middleware(BodyLimit, limit=max_body_bytes,
                       larger={"/usage/events": routes_usage.MAX_EVENTS_BODY,
                               "/reconciliation/vendor": routes_reconcile.MAX_FILE_BODY})
    return app


class ServerHandle:
    """A uvicorn server on its own thread; ``stop()`` shuts it down and waits."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, *,
                    startup_timeout: float = 10.0) -> ServerHandle:
    """Serve ``app`` with uvicorn on a daemon thread; returns once it accepts connections.
    Binding to anything but loopback is allowed and logged as a warning (put TLS in front)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("api: listening on %s:%s without TLS: put a TLS proxy in front of it",
                    host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ledgerbridge-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise OSError(f"the API could not listen on {host}:{port} (port in use?)")
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    log.info("api: listening on http://%s:%s", host, bound)
    return ServerHandle(server, thread)
