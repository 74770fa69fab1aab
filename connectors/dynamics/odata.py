"""OData pieces for Dataverse: escaped literals, query strings, `$batch` bodies and answers.

Rules kept here:
- A string literal is quoted with `'` doubled (OData ABNF); the whole query string is then
  percent-encoded (so `&`, `#`, `+` in a value cannot cut or change the query); GUIDs are
  validated before they go into a key segment; datetimes are sent as UTC `...Z`.
- `$batch` is multipart/mixed with one `application/http` part per request, no change sets, so
  `Prefer: odata.continue-on-error` applies to each request; answers come back in request order
  (Dataverse guarantees it) and are matched by position. A part without an HTTP status line
  makes the whole answer a `FatalError` naming the part (the results cannot be matched
  any more); blank lines before a part's status line are skipped.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from connectors.base import FatalError
from connectors.transport import loads

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and _GUID.match(value):
        return value
    return "'" + str(value).replace("'", "''") + "'"


def guid(value: str) -> str:
    if not _GUID.match(value or ""):
        raise FatalError(f"not a GUID: {value!r}")
    return value


def canonical_guid(value: Any) -> Any:
    """A GUID in lower case (Dataverse compares them without case); any other value as it is,
    for the sync boundary to judge."""
    return value.lower() if isinstance(value, str) and _GUID.match(value) else value


def query_string(params: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe=',()=:$')}" for k, v in params.items())


@dataclass
class SubRequest:
    method: str
    url: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubResponse:
    status: int
    headers: dict[str, str]
    body: Any


def build_batch(requests_: list[SubRequest]) -> tuple[str, str]:
    """(content type, body) of a `$batch` request."""
    boundary = f"batch_{uuid.uuid4()}"
    parts = []
    for n, req in enumerate(requests_, start=1):
        lines = [f"--{boundary}", "Content-Type: application/http",
                 "Content-Transfer-Encoding: binary", f"Content-ID: {n}", "",
                 f"{req.method} {req.url} HTTP/1.1"]
        payload = json.dumps(req.body) if req.body is not None else None
        headers = dict(req.headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        lines += [f"{k}: {v}" for k, v in headers.items()] + ["", payload or ""]
        parts.append("\r\n".join(lines))
    return f"multipart/mixed; boundary={boundary}", "\r\n".join(parts) + f"\r\n--{boundary}--\r\n"


def parse_batch(content_type: str, text: str) -> list[SubResponse]:
    """Sub-responses in order; nested change-set multiparts are flattened."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise FatalError(f"$batch answer without a boundary: {content_type!r}")
    out: list[SubResponse] = []
    for part in text.replace("\r\n", "\n").split(f"--{match[1]}")[1:]:
        if part.startswith("--"):
            break
        head, _, rest = part.strip("\n").partition("\n\n")
        inner_type = _header(head, "content-type")
        if inner_type.startswith("multipart/mixed"):
            out += parse_batch(inner_type, rest)
            continue
        status_line, _, after = rest.lstrip("\n").partition("\n")
        words = status_line.split()
        if len(words) < 2 or not words[0].startswith("HTTP/") \
                or not re.fullmatch(r"[1-5][0-9][0-9]", words[1]):
            raise FatalError(f"$batch answer part {len(out) + 1} has no HTTP status line: "
                             f"{status_line[:80]!r}")
        status = int(words[1])
        sub_head, _, body = after.partition("\n\n")
        headers = {}
        for line in sub_head.split("\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        body = body.strip()
        try:
            parsed: Any = loads(body, parse_float=Decimal) if body else None
        except ValueError:
            parsed = body
        out.append(SubResponse(status, headers, parsed))
    return out


def _header(head: str, name: str) -> str:
    for line in head.replace("\r\n", "\n").split("\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""
