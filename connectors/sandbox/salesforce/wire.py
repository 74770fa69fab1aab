"""Salesforce's JSON on the wire: values, records, error bodies and the common headers.

Rules this module keeps:
- Timestamps are written as Salesforce does: `2026-11-21T23:43:43.000+0000` (UTC, milliseconds,
  offset without a colon); dates as `2026-11-21`.
- Numbers (currency, double, number(0)) are JSON numbers rendered from Decimal through the
  shortest float text, which a client parsing with `parse_float=Decimal` reads back exactly.
- Top-level errors are `[{"message", "errorCode"[, "fields"]}]`; per-record errors in collection
  results are `{"statusCode", "message", "fields"}` (see `record_error`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Response

from .schema import SObject
from .seed import Row


@functools.lru_cache(maxsize=4096)
def sf_datetime(value: dt.datetime) -> str:
    v = value.astimezone(dt.UTC)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            f".{v.microsecond // 1000:03d}+0000")


def render_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return sf_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (Decimal, int, float)):
        return float(value)
    return value


def record_url(version: str, obj: str, record_id: str) -> str:
    return f"/services/data/{version}/sobjects/{obj}/{record_id}"


def render_record(obj: SObject, row: Row, fields: Iterable[str], version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {"type": obj.name,
                                          "url": record_url(version, obj.name, row["Id"])}}
    for name in fields:
        out[name] = render_value(row.get(name))
    return out


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    headers=headers or {}, content_type="application/json;charset=UTF-8")


def error_response(status: int, code: str, message: str,
                   fields: list[str] | None = None, headers: dict[str, str] | None = None
                   ) -> Response:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return json_response([body], status, headers)


def record_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    return json_response({"error": error, "error_description": description}, status)
