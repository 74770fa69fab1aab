"""`POST /api/data/v9.2/$batch`: multipart/mixed requests, change sets, continue-on-error.

Rules kept:
- MIME is parsed and built with the stdlib `email` package; only the inner HTTP request line
  (`METHOD URL HTTP/1.1`) and status line are text handled here.
- At most 1,000 requests per batch (change set members included); more is a 400 and nothing runs.
- Requests run in order; the answer has one part per request (a change set answers as one
  nested multipart, each part with its `Content-ID`), in the same order.
- A change set is one transaction: if any member fails, everything it did is rolled back and its
  place in the answer is that one error response.
- Without `Prefer: odata.continue-on-error` the batch stops after the first failure (the error
  is the last part); with it, the remaining requests still run. The batch itself answers 200.
- Inside a change set, a URL `$<content-id>` refers to the row an earlier member created.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from urllib.parse import urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from .store import Store, restore, snapshot
from .wire import BAD_QUERY, BATCH_TOO_LARGE, DataverseError

MAX_REQUESTS = 1000
Dispatch = Callable[[Request], Response]


def _parse(content_type: str, body: bytes) -> Message:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)


def _parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    if not parts:
        raise DataverseError(400, BAD_QUERY, "A multipart batch or change set has no parts.")
    return parts


def _inner(part: Message) -> tuple[str, str, dict[str, str], bytes]:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise DataverseError(400, BAD_QUERY, "A batch part must be an application/http request.")
    line, _, rest = raw.replace(b"\r\n", b"\n").partition(b"\n")
    words = line.decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise DataverseError(400, BAD_QUERY, f"The request line '{line[:80]!r}' in a batch part "
                             "is not valid.")
    inner = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(rest)
    body = inner.get_payload(decode=False)
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else b""
    return words[0].upper(), words[1], dict(inner.items()), data.strip()


def _http_part(resp: Response, content_id: str | None) -> bytes:
    reason = HTTPStatus(resp.status_code).phrase
    lines = [f"HTTP/1.1 {resp.status_code} {reason}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items() if k.lower() != "content-length"]
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        head.append(f"Content-ID: {content_id}")
    text = "\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return text.encode() + resp.get_data() + b"\r\n"


def _multipart(boundary: str, parts: list[bytes]) -> bytes:
    out = b"".join(f"--{boundary}\r\n".encode() + p for p in parts)
    return out + f"--{boundary}--\r\n".encode()


class BatchRunner:
    def __init__(self, store: Store, base_url: str, dispatch: Dispatch) -> None:
        self.store = store
        self.base = base_url.rstrip("/")
        self.dispatch = dispatch

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 refs: dict[str, str], auth: str) -> Request:
        if url.startswith("$") and url[1:].split("/")[0] in refs:
            head, _, tail = url[1:].partition("/")
            url = refs[head] + ("/" + tail if tail else "")
        parts = urlsplit(url)
        path = parts.path if parts.path.startswith("/") else "/api/data/v9.2/" + parts.path
        headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        headers["Authorization"] = auth
        env = EnvironBuilder(method=method, path=path, query_string=parts.query,
                             headers=list(headers.items()), data=body,
                             base_url=self.base).get_environ()
        return Request(env)

    def run(self, request: Request, continue_on_error: bool) -> Response:
        message = _parse(request.headers.get("Content-Type", ""), request.get_data())
        if not message.is_multipart():
            raise DataverseError(400, BAD_QUERY, "The batch request must be multipart/mixed.")
        top = _parts(message)
        total = sum(len(_parts(p)) if p.is_multipart() else 1 for p in top)
        if total > MAX_REQUESTS:
            raise DataverseError(400, BATCH_TOO_LARGE, f"The number of requests in the batch "
                                 f"({total}) exceeds the limit of {MAX_REQUESTS}.")
        auth = request.headers.get("Authorization", "")
        out: list[bytes] = []
        for part in top:
            if part.is_multipart():
                body, failed = self._changeset(part, auth)
            else:
                resp = self.dispatch(self._request(*_inner(part), refs={}, auth=auth))
                body, failed = _http_part(resp, None), resp.status_code >= 400
            out.append(body)
            if failed and not continue_on_error:
                break
        boundary = f"batchresponse_{uuid.uuid4()}"
        resp = Response(_multipart(boundary, out), status=200,
                        content_type=f"multipart/mixed; boundary={boundary}")
        resp.headers["OData-Version"] = "4.0"
        return resp

    def _changeset(self, part: Message, auth: str) -> tuple[bytes, bool]:
        saved = snapshot(self.store)
        refs: dict[str, str] = {}
        answers: list[bytes] = []
        self.store.hold()   # change events leave only when the change set commits
        committed = False
        try:
            for member in _parts(part):
                content_id = member.get("Content-ID")
                resp = self.dispatch(self._request(*_inner(member), refs=refs, auth=auth))
                if resp.status_code >= 400:
                    restore(self.store, saved)
                    return _http_part(resp, content_id), True
                entity = resp.headers.get("OData-EntityId")
                if content_id is not None and entity:
                    refs[str(content_id)] = urlsplit(entity).path
                answers.append(_http_part(resp, content_id))
            committed = True
        finally:
            self.store.release(committed)
        boundary = f"changesetresponse_{uuid.uuid4()}"
        head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        return head + _multipart(boundary, answers) + b"\r\n", False
