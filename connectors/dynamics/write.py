"""Dataverse writes: `$batch` of PATCH requests, per-request results mapped back to the input.

Rules kept here:
- Up to 1,000 requests per `$batch`, no change sets, `Prefer: odata.continue-on-error`: one
  failed request does not stop the others; results are matched to inputs by position.
- An update touching a `guarded` field (billing decides it from CRM state, e.g. `creditonhold`)
  must carry the `_etag` it was decided from and is sent with `If-Match: <etag>`; without one it
  fails alone with `ETAG_REQUIRED`. Updates of fields billing owns carry no version check:
  `If-Match: *`, which only stops Dataverse's PATCH from *creating* a record that was deleted.
- A 412 (`0x80060882`) on a guarded update: with a `redecide` callback, the record is re-read,
  `redecide(current, update)` returns a new update (or None to drop it), which is sent once more
  with the new etag; without one, the result says `CONFLICT` for the engine to handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.base import (
    AuthError,
    ConnectorError,
    FatalError,
    Record,
    Redecide,
    WriteResult,
)
from connectors.dynamics import odata
from connectors.fieldmap import FieldMapError, ObjectMap

if TYPE_CHECKING:
    from connectors.dynamics.connector import DynamicsConnector

BATCH_MAX = 1000


def _sub_request(conn: DynamicsConnector, om: ObjectMap, update: Record) -> odata.SubRequest:
    crm_id = odata.guid(str(update.get("crm_id", "")))
    body = om.to_crm(update)
    etag = update.get("_etag")
    if om.guarded(update) and not etag:
        raise FieldMapError("ETAG_REQUIRED: a guarded field is written without the etag it "
                            "was decided from")
    if_match = str(etag) if om.guarded(update) else "*"
    return odata.SubRequest("PATCH", f"{conn.base}{om.crm_object}({crm_id})", body,
                            {"If-Match": if_match})


def _send(conn: DynamicsConnector, subs: list[odata.SubRequest]) -> list[odata.SubResponse]:
    content_type, body = odata.build_batch(subs)
    try:
        resp = conn.request("POST", "$batch", prefer="odata.continue-on-error",
                            data=body.encode("utf-8"), headers={"Content-Type": content_type})
    except FatalError as exc:
        if isinstance(exc, AuthError):
            raise
        error = {"error": {"code": exc.code, "message": exc.message}}
        return [odata.SubResponse(exc.status or 400, {}, error)] * len(subs)
    return odata.parse_batch(resp.headers.get("Content-Type", ""), resp.text)


def _result(crm_id: str, sub: odata.SubResponse | None) -> WriteResult:
    if sub is None:
        return WriteResult(crm_id, False, "NO_RESULT", "Dataverse returned no answer for it")
    if sub.status < 300:
        return WriteResult(crm_id, True, etag=sub.headers.get("etag"))
    err = sub.body.get("error", {}) if isinstance(sub.body, dict) else {}
    code = "CONFLICT" if sub.status == 412 else err.get("code") or str(sub.status)
    return WriteResult(crm_id, False, code, str(err.get("message") or sub.body or sub.status))


def write(conn: DynamicsConnector, obj: str, updates: Sequence[Record],
          redecide: Redecide | None) -> list[WriteResult]:
    om = conn.fieldmap.object(obj)
    results: list[WriteResult | None] = [None] * len(updates)
    pending: list[tuple[int, Record, odata.SubRequest]] = []
    for i, update in enumerate(updates):
        try:
            pending.append((i, update, _sub_request(conn, om, update)))
        except (FieldMapError, FatalError) as exc:
            code, _, message = str(exc).partition(": ")
            code = code if code == "ETAG_REQUIRED" else "INVALID_FIELD"
            results[i] = WriteResult(str(update.get("crm_id", "")), False, code, message or code)
    retry: list[tuple[int, Record, odata.SubRequest]] = []
    for round_ in (1, 2):
        for start in range(0, len(pending), BATCH_MAX):
            chunk = pending[start:start + BATCH_MAX]
            try:
                answers = _send(conn, [sub for _, _, sub in chunk])
            except ConnectorError as exc:  # budget, retries exhausted, auth: stop, keep results
                exc.partial_results = _filled(results, updates, str(exc))
                raise
            for n, (i, update, _) in enumerate(chunk):
                sub = answers[n] if n < len(answers) else None
                results[i] = _result(str(update.get("crm_id")), sub)
                if round_ == 1 and sub is not None and sub.status == 412 and redecide:
                    again = _redecide(conn, om, obj, update, redecide)
                    if again is not None:
                        try:
                            retry.append((i, again, _sub_request(conn, om, again)))
                        except (FieldMapError, FatalError) as exc:
                            results[i] = WriteResult(str(update.get("crm_id")), False,
                                                     "INVALID_FIELD", str(exc))
                    else:
                        results[i] = WriteResult(str(update.get("crm_id")), True, "DROPPED",
                                                 "re-decided after a conflict: nothing to write")
        if not retry:
            break
        pending, retry = retry, []
    return _filled(results, updates, "not sent", "NO_RESULT")


def _filled(results: list[WriteResult | None], updates: Sequence[Record], why: str,
            code: str = "NOT_SENT") -> list[WriteResult]:
    return [r or WriteResult(str(u.get("crm_id", "")), False, code, why)
            for r, u in zip(results, updates, strict=True)]


def _redecide(conn: DynamicsConnector, om: ObjectMap, obj: str, update: Record,
              redecide: Redecide) -> Record | None:
    current = conn.read_one(obj, str(update.get("crm_id")))
    if current is None:
        return None
    again = redecide(current, update)
    if again is None:
        return None
    return {**again, "crm_id": update.get("crm_id"), "_etag": current.get("_etag")}


