"""The CRM's change-event receivers: Dataverse webhooks, Salesforce outbound messages and JSON
callouts (docs/API.md#crm-events, docs/CRM_SETUP.md#change-events).

Rules kept here
- No bearer token (a CRM cannot send ours): each connection's ``[connections.NAME.events]``
  authenticates its requests (``connectors.events``: a webhook key or header, the Salesforce
  organization id, an HMAC signature), compared in constant time. A refused request is 401 and
  stores nothing; a connection without ``events`` (or unknown) is 404.
- The daemon is woken (``on_events``: its events job runs now, not at its next interval), so
  an event is read back within the time of one round; its interval remains the fallback.
- Fast: the body is bounded (``MAX_EVENT_BYTES``), parsed, and its events stored with one
  committed multi-row insert (``sync.inbox.store``) before the answer; nothing else happens
  inline (no CRM call, no billing). The targeted resync (``sync.resync``) does the work.
- Stored, then acknowledged: the 2xx answer (Salesforce: the SOAP ``Ack``) is sent only after
  the insert committed. A re-sent event is acknowledged and not stored twice. The database
  busy or down is a 503 (``jobs.api.errors``): the CRM retries.
- The echo of the sync's own writes is stored ``skipped`` (``sync.inbox``), never read back:
  an event whose every named modifier (``connectors.events.by_user``) is the connection's
  integration user, as the daemon's worker learned it from the CRM (``Worker.own_user``:
  Dataverse ``WhoAmI``, Salesforce ``userinfo``). Without a worker, or before it learned
  the user, every event is read.
- The CRM's table / sObject name is mapped to the sync's objects by the connection's field map
  (one Dataverse table can be two objects: ``product`` is also ``price`` in the built-in map);
  an event of a table the map does not hold is acknowledged and ignored (logged).
- Secrets are resolved on first use per connection (``env:`` / ``file:``) and never logged;
  one that resolves to an empty value (a placeholder left empty in the secrets file) is a
  connection that cannot authenticate: 503 ``events_not_configured``, never "" as the key;
  paths only are used (no absolute URL is built), so the receivers work behind a reverse proxy.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connectors import credentials, fieldmap
from connectors.base import OBJECTS
from connectors.events import (
    SOAP_ACK,
    EventRefused,
    WireEvent,
    by_user,
    check_dataverse_auth,
    check_signature,
    fit_event_id,
    parse_callout,
    parse_dataverse,
    parse_outbound,
    same_secret,
)
from connectors.settings import ConnectionSettings, EventSettings
from jobs.api.deps import router
from jobs.api.errors import ApiError
from sync import inbox

log = logging.getLogger(__name__)
routes = router("events", ledger=False)
#: A Dataverse body is trimmed by the platform past 256 KB; an outbound message holds at most
#: 100 notifications. Anything bigger is not an event.
MAX_EVENT_BYTES = 512 * 1024
_SOAP_XML = "text/xml; charset=utf-8"


@dataclass(frozen=True)
class _Receiver:
    """What one connection's receivers need, resolved once (the secrets kept out of repr)."""

    settings: ConnectionSettings
    events: EventSettings
    key: str | None = field(repr=False)
    hmac_secret: str | None = field(repr=False)
    objects: dict[str, tuple[str, ...]]      # CRM name (lower case) -> canonical objects


_CACHE: dict[tuple[int, str], _Receiver] = {}
_GUARD = threading.Lock()


def _receiver(request: Request, connection: str, crm: str) -> _Receiver:
    settings = request.app.state.api.settings
    conn: ConnectionSettings | None = settings.connections.get(connection)
    if conn is None or conn.events is None or conn.crm != crm:
        raise ApiError(404, "not_found", "connection", connection,
                       f"no {crm} connection {connection!r} with [connections.NAME.events]")
    cache_key = (id(settings), connection)
    with _GUARD:
        hit = _CACHE.get(cache_key)
    if hit is not None:
        return hit
    events = conn.events
    refs = {k: v for k, v in (("key", events.key), ("hmac_secret", events.hmac_secret))
            if v is not None}
    try:
        secrets = credentials.resolve(connection, refs, conn.secrets_file)
    except credentials.CredentialError as exc:
        log.error("events connection=%s: %s", connection, exc)
        raise ApiError(503, "events_not_configured", "connection", connection,
                       "this connection's event secrets cannot be read: see the log") from None
    empty = sorted(k for k in refs if not _text(secrets.get(k)))
    if empty:
        # "" would be the key: a request without one (or signed with "") would match it
        log.error("events connection=%s: %s resolves to an empty value", connection,
                  " and ".join(empty))
        raise ApiError(503, "events_not_configured", "connection", connection,
                       "this connection's event secrets cannot be read: see the log")
    fmap = fieldmap.load(conn.fieldmap, conn.fieldmap_overrides)
    objects: dict[str, list[str]] = {}
    for name in OBJECTS:
        if name not in fmap.objects:
            continue
        om = fmap.object(name)
        crm_name = (om.logical_name or om.crm_object) if crm == "dynamics" else om.crm_object
        objects.setdefault(crm_name.lower(), []).append(name)
    built = _Receiver(conn, events, _text(secrets.get("key")), _text(secrets.get("hmac_secret")),
                      {k: tuple(v) for k, v in objects.items()})
    with _GUARD:
        _CACHE[cache_key] = built
    return built


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.reveal() if isinstance(value, credentials.Secret) else str(value)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise ApiError(413, "body_too_large", "body", None,
                       f"an event body is at most {MAX_EVENT_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_EVENT_BYTES:
        raise ApiError(413, "body_too_large", "body", None,
                       f"an event body is at most {MAX_EVENT_BYTES} bytes")
    return raw


def _refused(exc: EventRefused, connection: str, source: str) -> ApiError:
    log.warning("events refused connection=%s source=%s status=%s: %s", connection, source,
                exc.status, exc.message)
    code = "unauthenticated" if exc.status == 401 else "invalid_event"
    return ApiError(exc.status, code, "body" if exc.status == 400 else None, None, exc.message)


async def _store(request: Request, receiver: _Receiver, source: str,
                 events: list[WireEvent]) -> dict[str, int]:
    """Map and store the events (committed) before the caller answers."""
    rows: list[inbox.InboxEvent] = []
    ignored = skipped = 0
    learned = getattr(request.app.state.api.sync_runner, "own_user", None)
    me = learned(receiver.settings.name) if callable(learned) else None
    for event in events:
        objs = receiver.objects.get(event.crm_object.lower())
        if not objs:
            ignored += 1
            continue
        ours = by_user(event, me)
        skipped += ours
        for obj in objs:
            event_id = event.event_id if len(objs) == 1 or event.event_id is None \
                else fit_event_id(f"{event.event_id}/{obj}")
            rows.append(inbox.InboxEvent(event_id, obj, event.crm_id, event.action, ours))
    if ignored:
        log.warning("events connection=%s: %d event(s) of a table the field map does not hold "
                    "ignored (%s)", receiver.settings.name, ignored,
                    ", ".join(sorted({e.crm_object for e in events
                                      if e.crm_object.lower() not in receiver.objects})))
    clock = request.app.state.api.clock or (lambda: datetime.now(UTC))
    stored = await run_in_threadpool(inbox.store, request.app.state.api.engine,
                                     receiver.settings.name, source, rows, clock()) if rows else 0
    wake = request.app.state.api.on_events
    if stored and wake is not None and any(not r.skipped for r in rows):
        try:
            wake()
        except Exception:  # noqa: BLE001 - the events are stored: the job's interval still runs
            log.exception("events: could not wake the events job")
    return {"received": len(events), "stored": stored, "duplicates": len(rows) - stored,
            "ignored": ignored, "skipped": skipped}


@routes.post("/events/dataverse/{connection}", responses={
    200: {"description": "Stored (or a re-sent event, already stored)."},
    401: {"description": "The webhook key / header is missing or wrong: nothing stored."}})
async def dataverse_event(connection: str, request: Request) -> JSONResponse:
    """A Dataverse webhook (service endpoint) post: one ``RemoteExecutionContext``."""
    receiver = _receiver(request, connection, "dynamics")
    raw = await _body(request)
    try:
        check_dataverse_auth(receiver.events.auth, receiver.events.key_name,
                             receiver.key or "", request.headers, request.query_params)
        event = parse_dataverse(raw, request.headers)
    except EventRefused as exc:
        raise _refused(exc, connection, "dataverse") from None
    return JSONResponse(await _store(request, receiver, "dataverse", [event]))


@routes.post("/events/salesforce/{connection}", response_class=Response, responses={
    200: {"content": {"text/xml": {}}, "description": "The outbound message's Ack envelope."},
    401: {"description": "Not this connection's organization (or key): nothing stored."}})
async def salesforce_outbound(connection: str, request: Request) -> Response:
    """A Salesforce outbound message (SOAP ``notifications``); answered with ``Ack = true``
    once its notifications are stored."""
    receiver = _receiver(request, connection, "salesforce")
    raw = await _body(request)
    try:
        if receiver.key is not None:
            if not same_secret(request.query_params.get(receiver.events.key_name or "key"),
                               receiver.key):
                raise EventRefused(401, "the endpoint key is missing or wrong")
        events = parse_outbound(raw, receiver.events.organization_id)
    except EventRefused as exc:
        err = _refused(exc, connection, "salesforce_soap")
        return Response(_soap_fault(err.message), status_code=err.status,
                        media_type=_SOAP_XML)
    await _store(request, receiver, "salesforce_soap", events)
    return Response(SOAP_ACK, media_type=_SOAP_XML)


@routes.post("/events/salesforce/{connection}/json", responses={
    200: {"description": "Stored (or re-sent, already stored)."},
    401: {"description": "The signature is missing or wrong: nothing stored."}})
async def salesforce_callout(connection: str, request: Request) -> JSONResponse:
    """A Flow / Apex callout: ``{"sobject": "Account", "ids": [...], "event_id": "..."}``,
    signed with HMAC-SHA256 of the raw body."""
    receiver = _receiver(request, connection, "salesforce")
    raw = await _body(request)
    try:
        if receiver.hmac_secret is None:
            raise EventRefused(401, "this connection takes no JSON callouts (no hmac_secret)")
        check_signature(raw, receiver.hmac_secret,
                        request.headers.get(receiver.events.signature_header))
        events = parse_callout(raw, request.headers)
    except EventRefused as exc:
        raise _refused(exc, connection, "salesforce_json") from None
    return JSONResponse(await _store(request, receiver, "salesforce_json", events))


def _soap_fault(message: str) -> str:
    from xml.sax.saxutils import escape

    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            "<soapenv:Body><soapenv:Fault><faultcode>soapenv:Client</faultcode>"
            f"<faultstring>{escape(message)}</faultstring></soapenv:Fault>"
            "</soapenv:Body></soapenv:Envelope>")

