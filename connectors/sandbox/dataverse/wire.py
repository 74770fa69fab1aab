"""Dataverse wire helpers: JSON answers, OData error bodies, timestamps.

Rules kept:
- Every error body has Dataverse's shape `{"error": {"code": "0x...", "message": "..."}}`.
- Every answer carries `OData-Version: 4.0`; JSON answers say `odata.metadata=minimal`.
- Timestamps on the wire are UTC at second precision: `2026-11-21T23:43:43Z`.
- A "User Local" date-only value is the UTC instant of its local midnight in the zone of the
  user who entered it (`local_midnight`): 1 January entered in UTC+1 is `2025-12-31T23:00:00Z`.
- Money and Decimal values are kept as `Decimal` and written as JSON numbers.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Response

API_PREFIX = "/api/data/v9.2"
JSON_TYPE = "application/json; odata.metadata=minimal"

# Codes seen in Dataverse answers. Where a code could not be confirmed in the public docs, it
# says so; connectors must branch on the HTTP status first, the code second.
BAD_QUERY = "0x80060888"  # query syntax / unknown property / unsupported option
NOT_FOUND_SEGMENT = "0x8006088a"  # "Resource not found for the segment '...'"
ROW_NOT_FOUND = "0x80040217"  # "<entity> With Id = <guid> Does Not Exist"
DUPLICATE = "0x80040237"  # "A record with matching key values already exists."
VERSION_MISMATCH = "0x80060882"  # If-Match etag mismatch (412)
RATE_LIMITED = "0x80072322"  # service protection: number of requests in the window
CONCURRENCY_LIMITED = "0x80072326"  # unconfirmed: service protection, concurrent requests
EXPIRED_DELTA = "0x80044352"  # ExpiredVersionStamp; unconfirmed for the Web API delta link
BATCH_TOO_LARGE = "0x8006088a"  # unconfirmed: code for a $batch over 1,000 requests
SERVER_BUSY = "0x80040216"  # unconfirmed: generic "unexpected error" used for the 503 fault
AUTH_FAILED = "0x80072560"  # unconfirmed for an expired token; real answers rely on the 401


class DataverseError(Exception):
    """An error to answer in Dataverse's shape."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Values carry at most a few decimals; float's shortest repr writes them back exactly.
        return float(value)
    if isinstance(value, dt.datetime):
        return fmt_time(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(body: Any) -> str:
    return json.dumps(body, default=_default, separators=(",", ":"))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(dumps(body), status=status, content_type=JSON_TYPE)
    resp.headers["OData-Version"] = "4.0"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    resp = Response(b"", status=status)
    resp.headers["OData-Version"] = "4.0"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(err: DataverseError) -> Response:
    return json_response(error_body(err.code, err.message), err.status, err.headers)


def fmt_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_midnight(day: dt.date, zone: dt.tzinfo) -> str:
    """The wire value of a "User Local" date-only column holding `day` entered in `zone`."""
    return fmt_time(dt.datetime.combine(day, dt.time(), zone))


def parse_time(text: str) -> dt.datetime:
    """Parse an OData DateTimeOffset literal (or a wire timestamp) to aware UTC."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no offset")
    return value.astimezone(dt.UTC)
