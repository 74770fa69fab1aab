"""The server's own JSON endpoints under `/__admin__/` (never counted, never faulted).

Rules this module keeps:
- GET  /__admin__                       → {"base_url", "ca_bundle", "sides"}
- GET  /__admin__/counters              → {"calls": [{"crm","endpoint","method","count"}], "total"}
- POST /__admin__/counters/reset        → counters cleared
- GET  /__admin__/faults                → {"faults": [...]}
- POST /__admin__/faults                → add one: {"crm","endpoint","kind","rate","count",
                                          "retry_after","delay"}; DELETE /__admin__/faults clears
- GET|POST /__admin__/clock             → {"now"}; POST body {"set": iso} | {"advance": seconds}
                                          | {"reset": true}
- POST /__admin__/reset                 → every side back to its seed; counters, faults, clock
- GET  /__admin__/notify                → change events: {"config", "counters": {"dataverse":
                                          {...}, "salesforce": {...}, "total": {...},
                                          "pending"}} (notify.COUNTER_NAMES); 404 without notify
- POST /__admin__/notify/flush          → waits (body {"timeout": s}, default 10) until nothing
                                          is pending; {"flushed": bool, "counters"}
- POST /__admin__/notify/faults         → {"drop","duplicate","reorder","delay","seed"} (each
                                          optional); the draws restart from the seed
- POST /__admin__/notify/reset          → pending events forgotten, counters cleared
- GET  /__admin__/<side>                → side.admin("info", {}) (URLs, credentials, sizes)
- POST /__admin__/<side>/<action>       → side.admin(action, body)
- Bad input is 400 {"error": message}; unknown paths 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from .salesforce.soql import parse_datetime

if TYPE_CHECKING:
    from .server import Sandbox


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def handle(sandbox: Sandbox, request: Request) -> Response:
    parts = [p for p in request.path.split("/") if p][1:]
    try:
        body = json.loads(request.get_data() or b"{}") if request.method in ("POST", "PUT") else {}
        if not isinstance(body, dict):
            raise TypeError("the body must be a JSON object")
        return _route(sandbox, request.method, parts, body)
    except (ValueError, KeyError, TypeError) as exc:
        return _json({"error": f"{type(exc).__name__}: {exc}"}, 400)


def _route(sandbox: Sandbox, method: str, parts: list[str], body: dict[str, Any]) -> Response:
    if not parts:
        return _json({"base_url": sandbox.url, "ca_bundle": sandbox.ca_bundle,
                      "sides": [s.name for s in sandbox.sides]})
    head = parts[0]
    if head == "counters":
        if parts[1:] == ["reset"] or method == "DELETE":
            sandbox.counters.reset()
        return _json({"calls": sandbox.counters.as_json(), "total": sandbox.counters.total()})
    if head == "faults":
        if method == "DELETE":
            sandbox.faults.clear()
        elif method == "POST":
            sandbox.faults.add(body.get("crm", "*"), body.get("endpoint", "*"), body["kind"],
                           rate=float(body.get("rate", 1.0)), count=body.get("count"),
                           retry_after=int(body.get("retry_after", 1)),
                           delay=float(body.get("delay", 0.05)))
        return _json({"faults": sandbox.faults.as_json()})
    if head == "clock":
        if "set" in body:
            sandbox.clock.set(parse_datetime(str(body["set"])))
        if "advance" in body:
            sandbox.clock.advance(float(body["advance"]))
        if body.get("reset"):
            sandbox.clock.reset()
        return _json({"now": sandbox.clock.now().isoformat()})
    if head == "notify":
        return _notify(sandbox, method, parts[1:], body)
    if head == "reset" and method == "POST":
        sandbox.reset()
        return _json({"reset": True})
    side = next((s for s in sandbox.sides if s.name == head), None)
    if side is not None and len(parts) == 1 and method == "GET":
        return _json(side.admin("info", {}))
    if side is not None and len(parts) == 2 and method == "POST":
        return _json(side.admin(parts[1], body))
    return _json({"error": f"no admin resource {'/'.join(parts)!r} for {method}"}, 404)


def _notify(sandbox: Sandbox, method: str, rest: list[str], body: dict[str, Any]) -> Response:
    notifier = sandbox.notifier
    if notifier is None:
        return _json({"error": "this sandbox sends no change events (start it with notify)"},
                     404)
    if method == "POST" and rest == ["flush"]:
        flushed = notifier.flush(float(body.get("timeout", 10.0)))
        return _json({"flushed": flushed, "counters": notifier.counters()})
    if method == "POST" and rest == ["faults"]:
        seed = body.get("seed")
        notifier.configure_faults(drop=body.get("drop"), duplicate=body.get("duplicate"),
                                  reorder=body.get("reorder"), delay=body.get("delay"),
                                  seed=None if seed is None else int(seed))
    elif method == "POST" and rest == ["reset"]:
        notifier.reset()
    elif rest or method != "GET":
        return _json({"error": f"no admin resource notify/{'/'.join(rest)} for {method}"}, 404)
    return _json({"config": notifier.config.as_json(), "counters": notifier.counters()})
