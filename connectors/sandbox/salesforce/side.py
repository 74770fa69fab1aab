"""The Salesforce side of the sandbox: routing, counting, faults, auth and limits per request.

Rules this module keeps:
- Serves `/services/...` only. Each request is counted once as (salesforce, endpoint, method),
  where endpoint is one of: token, versions, limits, query, queryAll, describe, sobject, deleted,
  updated, composite/sobjects, unknown.
- Order per request: count → injected fault (slow/drop by the server; 503 SERVER_UNAVAILABLE,
  429 with Retry-After, concurrent_limit → 403 REQUEST_LIMIT_EXCEEDED "ConcurrentRequests
  (Concurrent API Requests) Limit exceeded.", expire_session → this caller's token revoked) →
  session check (401 INVALID_SESSION_ID) → API allowance (403 REQUEST_LIMIT_EXCEEDED
  "TotalRequests Limit exceeded.") → the resource. Both 403s share the code; only the message
  tells the daily allowance (stop) from the concurrency limit (transient); neither spends one.
- Every /services/data answer (errors included) carries `Sforce-Limit-Info: api-usage=used/limit`;
  the token endpoint's answers do not.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from werkzeug.wrappers import Request, Response

from ..core import SandboxContext, enact_transport_fault
from . import admin, describe, documents
from . import schema as S
from .auth import ORG_ID, Credentials, TokenEndpoint, Tokens
from .cursors import Cursor, Cursors, answer, batch_size
from .ids import INTEGRATION_USER, make_id
from .limits import ApiUsage
from .query import compile_query
from .replication import ReplicationError, deleted, updated
from .seed import Row, Seed
from .soql import SoqlError, parse
from .store import Store
from .wire import error_response, json_response, record_url, render_record, render_value
from .writes import MAX_COLLECTION, WriteError, collection, target_row, values_for

CRM = "salesforce"
log = logging.getLogger(__name__)
_DATA = re.compile(r"^/services/data/(v\d+\.\d)(/.*)?$")
_LOCATOR = re.compile(r"^/(query|queryAll)/([0-9A-Za-z]{18})-(\d+)$")
_UPSERT_MANY = re.compile(r"^/composite/sobjects/(\w+)/(\w+)/?$")
_UPSERT_ONE = re.compile(r"^/sobjects/(\w+)/(\w+)/([^/]+)/?$")
_SOBJECT = re.compile(r"^/sobjects/(\w+)(?:/(\w+))?/?$")
_REPLICATION = re.compile(r"^/sobjects/(\w+)/(deleted|updated)/?$")
_DESCRIBE = re.compile(r"^/sobjects(?:/(\w+)(/describe)?)?/?$")


class SalesforceSide:
    name = CRM

    def __init__(self, ctx: SandboxContext, seed: int = 0, accounts: int = 100,
                 quotes: int | None = None, api_limit: int = 100_000,
                 credentials: Credentials | None = None, token_ttl: float | None = None) -> None:
        self.ctx = ctx
        self.credentials = credentials or Credentials()
        self.token_ttl = token_ttl
        if quotes is None:  # default: every status at least once, about one per two accounts
            quotes = max(8, accounts // 2) if accounts else 0
        self.store = Store(Seed(seed, accounts, quotes), ctx.clock)
        if ctx.notifier is not None:   # change events (outbound messages, callouts)
            from ..notify import salesforce_listener

            self.store.listener = salesforce_listener(ctx.notifier)
        self.tokens = Tokens(ctx.clock, lambda: self.token_ttl or ctx.token_ttl)
        self.token_endpoint = TokenEndpoint(self.credentials, self.tokens, ctx.clock, ctx.base_url)
        self.usage = ApiUsage(api_limit)
        self.cursors = Cursors()
        self.purge_mark: dt.datetime | None = None

    def matches(self, path: str) -> bool:
        return path == "/services" or path.startswith("/services/")

    def reset(self) -> None:
        """Seeded rows, API usage, cursors and the delete-log purge mark; sessions survive."""
        self.store.reset()
        self.usage.reset()
        self.cursors.clear()
        self.purge_mark = None

    def admin(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return admin.run(self, action, payload)

    def issue_token(self) -> str:
        """A fresh access token, without a call to the token endpoint (for in-process tests)."""
        return self.tokens.issue()

    def account_id(self, index: int) -> str:
        """Id of the seeded account at `index` (likewise quote_id, product_id)."""
        return make_id(S.ACCOUNT.prefix, index)

    def quote_id(self, index: int) -> str:
        return make_id(S.QUOTE.prefix, index)

    def product_id(self, index: int) -> str:
        return make_id(S.PRODUCT.prefix, index)

    # -- request handling -------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        data = _DATA.match(path)
        endpoint = self._endpoint(path, data, request.method)
        self.ctx.counters.count(CRM, endpoint, request.method)
        fault = enact_transport_fault(self.ctx.faults.take(CRM, endpoint))
        if fault is not None and fault.kind == "503":
            return self._limited(error_response(503, "SERVER_UNAVAILABLE",
                                                "Server temporarily unavailable"))
        if fault is not None and fault.kind == "429":
            return self._limited(error_response(
                429, "TOO_MANY_REQUESTS", f"Too many requests: retry after {fault.retry_after}s",
                headers={"Retry-After": str(fault.retry_after)}))
        if fault is not None and fault.kind == "concurrent_limit":
            return self._limited(error_response(
                403, "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded."))
        if endpoint == "token":
            return self.token_endpoint.handle(request)
        if path in ("/services/data", "/services/data/"):
            return self._limited(json_response([{"label": "Winter '24",
                                                 "url": "/services/data/v59.0",
                                                 "version": "59.0"}]))
        token = _bearer(request)
        if fault is not None and fault.kind == "expire_session":
            self.tokens.revoke(token)
        if not self.tokens.valid(token):
            return self._limited(error_response(401, "INVALID_SESSION_ID",
                                                "Session expired or invalid"))
        if not self.usage.spend():
            return self._limited(error_response(403, "REQUEST_LIMIT_EXCEEDED",
                                                "TotalRequests Limit exceeded."))
        version, rest = (data.group(1), data.group(2) or "") if data else ("v59.0", "")
        try:
            return self._limited(self._route(request, endpoint, version, rest))
        except SoqlError as exc:
            return self._limited(error_response(400, exc.code, exc.message))
        except Exception:  # a sandbox bug: answer as Salesforce does, keep the trace in the log
            log.exception("sandbox salesforce: %s %s failed", request.method, path)
            return self._limited(error_response(500, "UNKNOWN_EXCEPTION",
                                                "An unexpected error occurred in the sandbox"))

    def _limited(self, response: Response) -> Response:
        response.headers.update(self.usage.header())
        return response

    @staticmethod
    def _endpoint(path: str, data: re.Match[str] | None, method: str) -> str:
        if path.rstrip("/") == "/services/oauth2/token":
            return "token"
        if path.rstrip("/") == "/services/oauth2/userinfo":
            return "userinfo"
        if data is None:
            return "versions" if path.rstrip("/") == "/services/data" else "unknown"
        rest = data.group(2) or ""
        if rest in ("/query", "/query/") or rest.startswith("/query/"):
            return "query"
        if rest in ("/queryAll", "/queryAll/") or rest.startswith("/queryAll/"):
            return "queryAll"
        if rest.rstrip("/") == "/limits":
            return "limits"
        if rest.rstrip("/") == "/composite/sobjects":
            return "composite/sobjects"
        if _UPSERT_MANY.match(rest):
            return "composite/upsert"
        if _UPSERT_ONE.match(rest) and method == "PATCH":
            return "upsert"
        replication = _REPLICATION.match(rest)
        if replication:
            return replication.group(2)
        if _DESCRIBE.match(rest) and method == "GET":
            return "describe"
        return "sobject" if _SOBJECT.match(rest) else "unknown"

    def _route(self, request: Request, endpoint: str, version: str, rest: str) -> Response:
        if endpoint == "userinfo":     # who the session is: the org's integration user
            return json_response({"sub": f"{self.ctx.base_url}/id/{ORG_ID}/{INTEGRATION_USER}",
                                  "user_id": INTEGRATION_USER, "organization_id": ORG_ID,
                                  "preferred_username": self.credentials.username})
        if endpoint in ("query", "queryAll"):
            return self._query(request, endpoint, version, rest)
        if endpoint == "limits":
            return json_response(self.usage.as_limits_json())
        if endpoint in ("deleted", "updated"):
            return self._replication(request, endpoint, rest)
        if endpoint == "composite/sobjects":
            return self._collection(request)
        if endpoint in ("composite/upsert", "upsert"):
            return self._upsert(request, endpoint, rest)
        if endpoint == "sobject":
            return self._sobject(request, version, rest)
        if endpoint == "describe":
            return self._describe(version, rest)
        return error_response(404, "NOT_FOUND", "The requested resource does not exist")

    def _query(self, request: Request, endpoint: str, version: str, rest: str) -> Response:
        size = batch_size(request.headers.get("Sforce-Query-Options"))
        locator = _LOCATOR.match(rest)
        if locator:
            cursor = self.cursors.get(locator.group(2))
            if cursor is None:
                return error_response(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            return json_response(answer(self.cursors, cursor, locator.group(2),
                                        int(locator.group(3)), size, version, endpoint,
                                        self._renderer(cursor, version)))
        text = request.args.get("q")
        if not text:
            return error_response(400, "MALFORMED_QUERY", "The q parameter is required")
        parsed = parse(text)
        obj = S.sobject(parsed.sobject)
        base = self.store.seed.counts.get(obj.name, 0) if obj else 0
        plan = compile_query(parsed, endpoint == "queryAll", base)
        snap = self.store.snapshot(plan.obj)
        if plan.is_count:
            return json_response({"totalSize": plan.count(snap), "done": True, "records": []})
        cursor = Cursor(plan, snap, plan.count(snap))
        return json_response(answer(self.cursors, cursor, None, 0, size, version, endpoint,
                                    self._renderer(cursor, version)))

    @staticmethod
    def _describe(version: str, rest: str) -> Response:
        match = _DESCRIBE.match(rest)
        name = match.group(1) if match else None
        if name is None:
            return json_response(describe.describe_global(version))
        obj = S.sobject(name)
        if obj is None:
            return error_response(404, "NOT_FOUND", "The requested resource does not exist")
        if match and match.group(2):
            return json_response(describe.describe(version, obj))
        return json_response(describe.basic_info(version, obj))

    def _renderer(self, cursor: Cursor, version: str) -> Any:
        obj, fields = cursor.plan.obj, cursor.plan.fields
        paths = [f.split(".") for f in fields if "." in f]
        if not paths:
            return lambda row: render_record(obj, row, fields, version)

        def render(row: Row) -> dict[str, Any]:
            out = render_record(obj, row, [f for f in fields if "." not in f], version)
            for path in paths:
                self._follow(out, obj, row, path, version)
            return out
        return render

    def _follow(self, out: dict[str, Any], obj: S.SObject, row: Row, path: list[str],
                version: str) -> None:
        """Render one relationship path of ``row`` into ``out`` as Salesforce does: the related
        record nested under the relationship name with its own ``attributes`` (several paths
        through one lookup share it), or null when the lookup is empty."""
        found = S.relationship(obj, path[0])
        if found is None:
            return
        fld, target = found
        name = S.relationship_name(fld) or path[0]
        ref = row.get(fld.name)
        related = self.store.get_by_id(target, ref) if isinstance(ref, str) else None
        if related is None or related.get("IsDeleted"):
            out[name] = None
            return
        nested = out.get(name)
        if not isinstance(nested, dict):
            nested = out[name] = {"attributes": {
                "type": target.name, "url": record_url(version, target.name, related["Id"])}}
        if len(path) == 2:
            leaf = target.field(path[1])
            if leaf is not None:
                nested[leaf.name] = render_value(related.get(leaf.name))
            return
        self._follow(nested, target, related, path[1:], version)

    def _replication(self, request: Request, endpoint: str, rest: str) -> Response:
        match = _REPLICATION.match(rest)
        obj = S.sobject(match.group(1)) if match else None
        if obj is None:
            return error_response(404, "NOT_FOUND", "The requested resource does not exist")
        try:
            if endpoint == "deleted":
                return json_response(deleted(self.store, obj, dict(request.args), self.purge_mark))
            return json_response(updated(self.store, obj, dict(request.args)))
        except ReplicationError as exc:
            return error_response(400, exc.code, exc.message)

    def _collection(self, request: Request) -> Response:
        if request.method == "DELETE":
            records: Any = [i for i in request.args.get("ids", "").split(",") if i]
            all_or_none = request.args.get("allOrNone", "false").lower() == "true"
        elif request.method in ("POST", "PATCH"):
            body = _json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                return error_response(400, "JSON_PARSER_ERROR",
                                      "The request body must be {\"allOrNone\": ..., "
                                      "\"records\": [...]}")
            records, all_or_none = body["records"], bool(body.get("allOrNone", False))
        else:
            return error_response(405, "METHOD_NOT_ALLOWED",
                                  f"HTTP Method '{request.method}' not allowed. Allowed are "
                                  "POST, PATCH, DELETE")
        if len(records) > MAX_COLLECTION:
            return error_response(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit "
                                  f"more than {MAX_COLLECTION} records into this call")
        return json_response(collection(self.store, request.method, records, all_or_none))

    def _upsert(self, request: Request, endpoint: str, rest: str) -> Response:
        """Upsert by external id (``documents``): collections (PATCH only) or one record."""
        many = endpoint == "composite/upsert"
        match = (_UPSERT_MANY if many else _UPSERT_ONE).match(rest)
        obj = S.sobject(match.group(1)) if match else None
        if match is None or obj is None:
            return error_response(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method != "PATCH":
            return error_response(405, "METHOD_NOT_ALLOWED",
                                  f"HTTP Method '{request.method}' not allowed. Allowed are PATCH")
        body = _json_body(request)
        if many:
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                return error_response(400, "JSON_PARSER_ERROR", "The request body must be "
                                      "{\"allOrNone\": ..., \"records\": [...]}")
            answer = documents.upsert_collection(self.store, obj, match.group(2),
                                                 body["records"],
                                                 bool(body.get("allOrNone", False)))
            if isinstance(answer, WriteError):
                err = answer.error
                status = 404 if err["statusCode"] == "NOT_FOUND" else 400
                return error_response(status, err["statusCode"], err["message"])
            return json_response(answer)
        try:
            fld = documents.external_field(obj, match.group(2))
            record_id, created = documents.upsert_one(self.store, obj, fld, match.group(3),
                                                      body)
        except WriteError as exc:
            err = exc.error
            status = {"NOT_FOUND": 404, "DUPLICATE_EXTERNAL_ID": 300}.get(err["statusCode"], 400)
            return error_response(status, err["statusCode"], err["message"], err["fields"])
        if created:
            return json_response({"id": record_id, "success": True, "errors": [],
                                  "created": True}, 201)
        return Response(status=204)

    def _sobject(self, request: Request, version: str, rest: str) -> Response:
        match = _SOBJECT.match(rest)
        obj = S.sobject(match.group(1)) if match else None
        if match is None or obj is None:
            return error_response(404, "NOT_FOUND", "The requested resource does not exist")
        record_id, method = match.group(2), request.method
        try:
            if record_id is None:
                if method != "POST":
                    return error_response(405, "METHOD_NOT_ALLOWED",
                                          f"HTTP Method '{method}' not allowed. Allowed are POST")
                body = _json_body(request)
                if not isinstance(body, dict):
                    return error_response(400, "JSON_PARSER_ERROR", "The body must be an object")
                if obj is S.CONTENT_VERSION:
                    new_id = documents.create_content_version(self.store, body)
                    return json_response({"id": new_id, "success": True, "errors": []}, 201)
                row = self.store.create(obj, values_for(self.store, obj, body, creating=True),
                                        by=INTEGRATION_USER)
                return json_response({"id": row["Id"], "success": True, "errors": []}, 201)
            index = target_row(self.store, obj, record_id)
            if method == "GET":
                row = self.store.get(obj, index) or {}
                return json_response(render_record(obj, row, [f.name for f in obj.fields],
                                                   version))
            if method == "PATCH":
                body = _json_body(request)
                if not isinstance(body, dict):
                    return error_response(400, "JSON_PARSER_ERROR", "The body must be an object")
                self.store.update(obj, index, values_for(self.store, obj, body, creating=False),
                                  by=INTEGRATION_USER)
                return Response(status=204)
            if method == "DELETE":
                self.store.delete(obj, index, by=INTEGRATION_USER)
                return Response(status=204)
        except WriteError as exc:
            err = exc.error
            if err["statusCode"] in ("INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID") and not err[
                    "fields"]:
                return error_response(404, "NOT_FOUND", "The requested resource does not exist")
            if err["statusCode"] == "ENTITY_IS_DELETED":
                return error_response(404, "ENTITY_IS_DELETED", "entity is deleted", [])
            return error_response(400, err["statusCode"], err["message"], err["fields"])
        return error_response(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") and token else None


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        return None
