"""The Dataverse side of the sandbox: routing, auth, faults, throttling, counting.

Rules kept:
- Every call is counted once as ("dataverse", endpoint, method) before anything can fail;
  endpoints are "openid-configuration", "token", a table name, "$batch", "WhoAmI",
  "EntityDefinitions", "unknown".
- Faults: the plan is consulted once per call; "slow"/"drop" are carried out by
  `enact_transport_fault`; "429", "503", "concurrent_limit" (service protection's limit of 52
  requests at once: a 429 with Retry-After too) and "expire_session" are answered in
  Dataverse's shape (AAD's shape on the identity endpoints, where both limits are a 429).
- Order for the Web API: fault, then bearer token (401), then service protection (429), then
  the request. Requests inside a `$batch` share the batch's token and budget.
- One lock serialises all state; the server may be threaded.
- Every row written through the Web API names the calling client's application user as its
  `_modifiedby_value`, which is also what `WhoAmI` answers that client (`ids.user_id`); rows
  written by an admin action (a person's change) and seed rows name the person.
- `time_zone` (IANA, default UTC) is the zone the org's users enter dates in: "User Local"
  date-only columns hold the UTC instants of local midnights there. Like the credentials, it
  survives `reset`; changing it (admin `set_time_zone`) seeds the rows again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from ..core import Fault, SandboxContext, enact_transport_fault
from . import documents, metadata, writes
from .admin import Admin
from .auth import Authority
from .batch import BatchRunner
from .ids import PERSON, guid_of, salt, user_id
from .paging import parse_prefer, parse_query, project
from .reader import Reader
from .schema import TABLES
from .seed import FIRST_WRITE_VERSION, Seeder
from .store import Store
from .throttle import Throttle
from .wire import (
    API_PREFIX,
    BAD_QUERY,
    CONCURRENCY_LIMITED,
    NOT_FOUND_SEGMENT,
    RATE_LIMITED,
    SERVER_BUSY,
    DataverseError,
    empty_response,
    error_response,
    json_response,
)

_DISCOVERY = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_ROW = re.compile(r"^(\w+)\(([0-9a-fA-F]{8}-[0-9a-fA-F-]{27})\)$")
CRM = "dataverse"
log = logging.getLogger(__name__)


class DataverseSide:
    name = CRM

    def __init__(self, ctx: SandboxContext, seed: int | None = None, accounts: int = 1000,
                 products: int = 40, quotes: int | None = None, lines_per_quote: int = 3,
                 tenant: str | None = None, clients: dict[str, str] | None = None,
                 client_certificates: dict[str, str] | None = None,
                 token_ttl: float | None = None, rate_limit: int = 6000,
                 rate_window: float = 300.0, time_zone: str = "UTC") -> None:
        self.ctx = ctx
        self.time_zone = ZoneInfo(time_zone)
        self.seed = ctx.seed if seed is None else seed
        self.base_url = ctx.base_url.rstrip("/")
        self.api_url = self.base_url + API_PREFIX
        # Half the accounts have a quote by default (at least one per quote statecode).
        self.sizes = (accounts, products, max(8, accounts // 2) if quotes is None else quotes,
                      lines_per_quote)
        h = salt(self.seed, "tenant")
        self.tenant = tenant or _guid(h)
        self.client_id = _guid(salt(self.seed, "client"))
        self.client_secret = f"sbx~{salt(self.seed, 'secret'):016x}"
        self._clients = clients if clients is not None else {self.client_id: self.client_secret}
        self._certs = dict(client_certificates or {})
        self._ttl = ctx.token_ttl if token_ttl is None else token_ttl
        self._rate = (rate_limit, rate_window)
        self._lock = threading.RLock()
        self._epoch = 0
        self._build()

    def _build(self) -> None:
        self._seed_rows()
        self.authority = Authority(self.base_url, self.tenant, self._clients, self._certs,
                                   self._ttl, lambda: self.ctx.clock.now().timestamp())
        self.throttle = Throttle(*self._rate)
        self.admin_ops = Admin(self)

    def _seed_rows(self) -> None:
        accounts, products, quotes, lines = self.sizes
        seeder = Seeder(self.seed, accounts, products, quotes, lines, self.time_zone)
        # Each reset starts a new, higher version range, and delta tokens from before it are
        # expired (as after an environment restore): a stale cursor can never read as current.
        self._epoch += 1
        self.store = Store(seeder, self.ctx.clock.now, FIRST_WRITE_VERSION * self._epoch,
                           actor=user_id(self.seed, PERSON))
        if self.ctx.notifier is not None:   # change events (webhooks)
            from ..notify import dataverse_listener

            self.store.listener = dataverse_listener(self.ctx.notifier, self.store,
                                                     self.ctx.clock.now)
        self.reader = Reader(self.store, self.base_url)
        self.reader.delta_floor = dict.fromkeys(TABLES, self.store.first_version)
        self.batch = BatchRunner(self.store, self.base_url, self._dispatch_inner)

    def set_time_zone(self, name: str) -> None:
        """The zone the org's users enter dates in. The rows are seeded again (entered in that
        zone); tokens, clients and the throttle are kept."""
        with self._lock:
            self.time_zone = ZoneInfo(name)
            self._seed_rows()

    def describe(self) -> str:
        """One line for people: how to get a token (printed by the sandbox CLI)."""
        return (f"authority={self.base_url}/{self.tenant} client_id={self.client_id} "
                f"client_secret={self.client_secret} scope={self.base_url}/.default")

    # --- the Side protocol -------------------------------------------------------------------
    def matches(self, path: str) -> bool:
        return (path.startswith("/api/data/") or bool(_DISCOVERY.match(path) or
                                                       _TOKEN.match(path)))

    def reset(self) -> None:
        with self._lock:
            self._build()

    def admin(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self.admin_ops.run(action, payload or {})

    def handle(self, request: Request) -> Response:
        path = request.path
        endpoint = _endpoint(path)
        self.ctx.counters.count(CRM, endpoint, request.method)
        fault = enact_transport_fault(self.ctx.faults.take(CRM, endpoint))
        with self._lock:
            discovery, token = _DISCOVERY.match(path), _TOKEN.match(path)
            if discovery or token:
                return self._identity(request, discovery, token, fault)
            try:
                if fault is not None:
                    raise self._fault_error(fault)
                client = self.authority.check(request)
                limits = self.throttle.admit(client, self.ctx.clock.now().timestamp())
                self.store.actor = user_id(self.seed, client)
                try:
                    resp = self._dispatch(request, top_level=True)
                finally:
                    self.store.actor = user_id(self.seed, PERSON)
                for key, value in limits.items():
                    resp.headers[key] = value
                return resp
            except DataverseError as err:
                return error_response(err)
            except Exception:  # a sandbox bug must still answer like Dataverse, and be seen
                log.exception("dataverse sandbox: %s %s failed", request.method, path)
                return error_response(DataverseError(500, SERVER_BUSY, "An unexpected error "
                                                     "occurred."))

    # --- internals -----------------------------------------------------------------------------
    def _identity(self, request: Request, discovery: Any, token: Any,
                  fault: Fault | None) -> Response:
        if fault is not None and fault.kind in ("429", "concurrent_limit"):
            resp = self.authority.aad_error(429, "temporarily_unavailable", 90055,
                                            "There are too many incoming requests.")
            resp.headers["Retry-After"] = str(fault.retry_after)
            return resp
        if fault is not None and fault.kind == "503":
            return self.authority.aad_error(503, "temporarily_unavailable", 90033,
                                            "A transient error has occurred. Please try again.")
        if fault is not None:  # expire_session: tokens issued so far stop working
            self.authority.expire_all()
        if discovery:
            if discovery.group(1) != self.tenant:
                return self.authority.aad_error(400, "invalid_tenant", 90002,
                                                f"Tenant '{discovery.group(1)}' not found.")
            return Response(json.dumps(self.authority.openid_configuration()),
                            content_type="application/json")
        if request.method != "POST":
            return self.authority.aad_error(405, "invalid_request", 900561, "The endpoint "
                                            "only accepts POST requests.")
        return self.authority.token(request, token.group(1))

    def _fault_error(self, fault: Fault) -> DataverseError:
        if fault.kind == "429":
            return DataverseError(429, RATE_LIMITED, "Number of requests exceeded the limit of "
                                  f"{self.throttle.limit} over time window of "
                                  f"{int(self.throttle.window)} seconds.",
                                  {"Retry-After": str(fault.retry_after)})
        if fault.kind == "concurrent_limit":
            return DataverseError(429, CONCURRENCY_LIMITED, "Number of concurrent requests "
                                  "exceeded the limit of 52.",
                                  {"Retry-After": str(fault.retry_after)})
        if fault.kind == "503":
            return DataverseError(503, SERVER_BUSY, "The service is temporarily unavailable. "
                                  "Try again later.")
        self.authority.expire_all()
        return self.authority.unauthorized()

    def _dispatch_inner(self, request: Request) -> Response:
        try:
            return self._dispatch(request, top_level=False)
        except DataverseError as err:
            return error_response(err)

    def _dispatch(self, request: Request, top_level: bool) -> Response:
        if not request.path.startswith(API_PREFIX + "/"):
            version = request.path.removeprefix("/api/data/").split("/")[0]
            raise DataverseError(404, NOT_FOUND_SEGMENT, f"Resource not found for the segment "
                                 f"'{version}'.")
        rest = request.path[len(API_PREFIX) + 1:]
        method = request.method
        if rest == "$batch" and top_level:
            _allow(method, "POST")
            _size, _track, cont, _rep = parse_prefer(request.headers.get("Prefer", ""))
            return self.batch.run(request, cont)
        if rest == "WhoAmI":
            _allow(method, "GET")
            return json_response({
                "@odata.context": f"{self.api_url}/$metadata#Microsoft.Dynamics.CRM."
                "WhoAmIResponse", "BusinessUnitId": _guid(salt(self.seed, "bu")),
                "UserId": self.store.actor,
                "OrganizationId": _guid(salt(self.seed, "org"))})
        if rest.startswith("EntityDefinitions"):
            _allow(method, "GET")
            return json_response(metadata.answer(rest, request.args.get("$select"), self.seed,
                                                 self.api_url))
        if rest in TABLES:
            table = TABLES[rest]
            _allow(method, "GET", "POST")
            if method == "GET":
                q = parse_query(request.args, request.headers.get("Prefer", ""), table)
                body, headers = self.reader.read(table, q)
                return json_response(body, headers=headers)
            payload = _json(request)
            if table.name == "annotations":
                payload = documents.checked_note(payload)
            row = writes.create(self.store, table, payload, _ieee754(request))
            return self._written(request, table, row, 201)
        match = _ROW.match(rest)
        if match and match.group(1) in TABLES:
            return self._row(request, TABLES[match.group(1)], match.group(2).lower())
        keyed = documents.ALT_ROW.match(rest)
        if keyed and keyed.group(1) in TABLES:
            return self._keyed(request, TABLES[keyed.group(1)], keyed.group(2), keyed.group(3))
        segment = rest.split("(")[0].split("/")[0] or rest
        raise DataverseError(404, NOT_FOUND_SEGMENT, f"Resource not found for the segment "
                             f"'{segment}'.")

    def _row(self, request: Request, table: Any, guid: str) -> Response:
        method = request.method
        _allow(method, "GET", "PATCH", "DELETE")
        if method == "DELETE":
            writes.delete(self.store, table, guid, request.headers.get("If-Match"))
            return empty_response(204)
        if method == "PATCH":
            row, _created = writes.patch(self.store, table, guid, _json(request),
                                         request.headers.get("If-Match"),
                                         request.headers.get("If-None-Match"),
                                         _ieee754(request))
            return self._written(request, table, row, 200)
        q = parse_query(request.args, "", table)
        index = self.store.index_of(table.name, guid)
        found = self.store.get(table.name, index) if index is not None else None
        if found is None:
            raise writes.not_found(table, guid)
        row = found
        etag = f'W/"{row["versionnumber"]}"'
        if request.headers.get("If-None-Match", "").strip() == etag:
            return empty_response(304, {"ETag": etag})
        body = {"@odata.context": self.reader.context(table, q, "/$entity")}
        body.update(project(row, q.select, table.key))
        return json_response(body, headers={"ETag": etag})

    def _keyed(self, request: Request, table: Any, column: str, raw: str) -> Response:
        """A row addressed by its alternate key (``documents``): GET or PATCH (upsert)."""
        _allow(request.method, "GET", "PATCH")
        if request.method == "PATCH":
            row, created = documents.upsert_by_key(
                self.store, table, column, raw, _json(request), request.headers.get("If-Match"),
                _ieee754(request))
            return self._written(request, table, row, 201 if created else 200)
        row = documents.by_key(self.store, table, column, raw)
        q = parse_query(request.args, "", table)
        body = {"@odata.context": self.reader.context(table, q, "/$entity")}
        body.update(project(row, q.select, table.key))
        return json_response(body, headers={"ETag": f'W/"{row["versionnumber"]}"'})

    def _written(self, request: Request, table: Any, row: dict[str, Any],
                 rep_status: int) -> Response:
        entity = f"{self.api_url}/{table.name}({row[table.key]})"
        _size, _track, _cont, rep = parse_prefer(request.headers.get("Prefer", ""))
        headers = {"OData-EntityId": entity}
        if rep:
            q = parse_query(request.args, "", table)
            body = {"@odata.context": self.reader.context(table, q, "/$entity")}
            body.update(project(row, q.select, table.key))
            return json_response(body, rep_status, headers | {"Preference-Applied":
                                                               "return=representation"})
        return empty_response(204, headers)


def _endpoint(path: str) -> str:
    if _DISCOVERY.match(path):
        return "openid-configuration"
    if _TOKEN.match(path):
        return "token"
    rest = path[len(API_PREFIX) + 1:] if path.startswith(API_PREFIX + "/") else ""
    name = rest.split("(")[0].split("/")[0]
    known = ("$batch", "WhoAmI", "EntityDefinitions")
    return name if name in TABLES or name in known else "unknown"


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise DataverseError(405, BAD_QUERY, f"The requested resource does not support http "
                             f"method '{method}'.", {"Allow": ", ".join(allowed)})


def _json(request: Request) -> Any:
    try:
        return json.loads(request.get_data(as_text=True) or "null", parse_float=Decimal)
    except ValueError as exc:
        raise DataverseError(400, BAD_QUERY, f"Error identified in Payload provided by the "
                             f"user: the body is not valid JSON ({exc}).") from None


def _ieee754(request: Request) -> bool:
    return "ieee754compatible=true" in request.headers.get("Content-Type", "").replace(
        " ", "").lower()


def _guid(number: int) -> str:
    return guid_of(number)
