"""Every error the API answers has one JSON shape: ``{"error": {code, field, value, message}}``.

Mapping (the same codes the CLI prints):
- ``ValidationError`` and malformed requests → 422 (the field is named: ``body.amount``); a
  JSON body sent with another ``Content-Type`` (``curl -d`` sends a form type), which the
  framework hands over unparsed, is 422 naming ``Content-Type`` and its value;
- ``NotFound`` → 404; any other ``LedgerError`` (a ledger rule) → 409;
- authentication → 401 / 403 with the standard ``WWW-Authenticate`` header (RFC 6750);
- a body over the size limit → 413; the database busy or unreachable (a lock held past the
  busy timeout, a lost connection) → 503 ``database_unavailable`` with ``Retry-After``: nothing
  was written, the call can be retried (with the same Idempotency-Key);
- a body that stopped arriving (the client went away, or ``BodyLimit`` cut a chunked body off
  and answers the client 413 itself) → 400 ``body_incomplete``: expected, so no traceback;
- anything unexpected → 500 with no internals in the body (the traceback goes to the log).
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from billing_core.domain.errors import LedgerError, NotFound, ValidationError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API layer itself raises (auth, idempotency, paging): status + error body."""

    def __init__(self, status: int, code: str, field: str | None, value: object, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.value = value
        self.message = message
        self.headers = headers or {}


def _utf8(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (valid in JSON escapes, not in UTF-8) is
    shown escaped instead of breaking the error answer itself."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def scalar(value: object, limit: int = 200) -> str | int | bool | None:
    """A value fit for the error body: JSON scalars as they are, anything else as short text."""
    if isinstance(value, (bool, int, type(None))):
        return value
    text = _utf8(value if isinstance(value, str) else repr(value))
    return text if len(text) <= limit else text[:limit] + "…"


def body(code: str, field: str | None, value: object, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "field": None if field is None else _utf8(field),
                      "value": scalar(value), "message": _utf8(message)}}


def ledger_status(exc: LedgerError) -> int:
    if isinstance(exc, ValidationError):
        return 422
    if isinstance(exc, NotFound):
        return 404
    return 409


def ledger_response(exc: LedgerError) -> JSONResponse:
    data = exc.as_dict()
    return JSONResponse(body(str(data["code"]), str(data["field"]), data["value"],
                             str(data["message"])), status_code=ledger_status(exc))


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(body(exc.code, exc.field, exc.value, exc.message),
                        status_code=exc.status, headers=exc.headers)


def _validation_response(exc: RequestValidationError,
                         content_type: str | None = None) -> JSONResponse:
    problems = list(exc.errors())
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "input": None}
    if tuple(first.get("loc") or ()) == ("body",) and isinstance(first.get("input"),
                                                                  (bytes, bytearray)):
        # the body was not read as JSON: it came with another (or no) Content-Type
        return JSONResponse(body("invalid_input", "Content-Type", content_type,
                                 "Content-Type: must be application/json (the body is "
                                 "JSON)"), status_code=422)
    field = ".".join(str(p) for p in first.get("loc") or ()) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_input"
    return JSONResponse(body(code, field, first.get("input"), message), status_code=422)


def _http_response(exc: StarletteHTTPException) -> JSONResponse:
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
             413: "body_too_large"}
    code = codes.get(exc.status_code, "http_error")
    return JSONResponse(body(code, None, None, str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one JSON shape."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, LedgerError):
            return ledger_response(exc)
        if isinstance(exc, ApiError):
            return api_error_response(exc)
        if isinstance(exc, RequestValidationError):
            return _validation_response(exc, request.headers.get("content-type"))
        if isinstance(exc, StarletteHTTPException):
            return _http_response(exc)
        if isinstance(exc, ClientDisconnect):
            return JSONResponse(body("body_incomplete", "body", None,
                                     "the request body was not received whole"),
                                status_code=400)
        if isinstance(exc, (OperationalError, DisconnectionError)):
            log.warning("api: database unavailable on %s %s: %s", request.method,
                        request.url.path, type(exc).__name__)
            return JSONResponse(body("database_unavailable", None, None,
                                     "the database is busy or unreachable: retry shortly"),
                                status_code=503, headers={"Retry-After": "2"})
        log.exception("api: unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal_error", None, None, "internal error: see the log"),
                            status_code=500)

    for kind in (LedgerError, ApiError, RequestValidationError, StarletteHTTPException,
                 ClientDisconnect, OperationalError, DisconnectionError, Exception):
        app.add_exception_handler(kind, on_error)
