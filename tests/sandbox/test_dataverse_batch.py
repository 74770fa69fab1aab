"""`$batch`: multipart/mixed in and out, change sets, continue-on-error, the 1,000 limit.

The requests are built and the answers parsed with the stdlib `email` package, as a client
would, so the wire format (boundaries, part headers, status lines) is what is checked.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import uuid
from email.message import Message

import requests
from test_dataverse_harness import Dataverse, load_json


def _part(method: str, url: str, body: dict | None = None, content_id: int | None = None,
          headers: dict[str, str] | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id is not None:
        head += f"Content-ID: {content_id}\r\n"
    lines = [f"{method} {url} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append("Content-Type: application/json; type=entry")
    text = head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return text + (json.dumps(body) if body is not None else "") + "\r\n"


def _changeset(parts: list[str]) -> str:
    boundary = f"changeset_{uuid.uuid4().hex}"
    inner = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}"


def _batch(dv: Dataverse, dv_http: requests.Session, parts: list[str],
           prefer: str | None = None) -> tuple[requests.Response, list[Message]]:
    boundary = f"batch_{uuid.uuid4().hex}"
    body = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    headers = dv.headers(**{"Content-Type": f"multipart/mixed; boundary={boundary}"})
    if prefer:
        headers["Prefer"] = prefer
    resp = dv_http.post(f"{dv.api}/$batch", data=body.encode(), headers=headers)
    head = f"Content-Type: {resp.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        head + resp.content)
    parts_out = message.get_payload() if message.is_multipart() else []
    return resp, list(parts_out)  # type: ignore[arg-type]


def _status(part: Message) -> tuple[int, bytes]:
    raw = part.get_payload(decode=True)
    assert isinstance(raw, bytes)
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].strip()


def _ids(dv: Dataverse, *indexes: int) -> list[str]:
    return [dv.side.admin("guid", {"index": i})["id"] for i in indexes]


def test_batch_with_continue_on_error_and_a_failing_change_set(dv: Dataverse,
                                                               dv_http: requests.Session) -> None:
    a, b, c, d = _ids(dv, 20, 21, 22, 23)
    parts = [
        _part("PATCH", f"{dv.api}/accounts({a})", {"new_billinghold": True}),
        _changeset([
            _part("PATCH", f"/api/data/v9.2/accounts({b})", {"new_billinghold": True}, 1),
            _part("PATCH", f"accounts({c})", {"no_such_column": 1}, 2),
        ]),
        _part("GET", f"{dv.api}/accounts({d})?$select=name"),
        _changeset([
            _part("PATCH", f"accounts({c})", {"new_openbalance": 10}, 3),
            _part("PATCH", f"accounts({d})", {"new_openbalance": 20}, 4),
        ]),
    ]
    resp, out = _batch(dv, dv_http, parts, prefer="odata.continue-on-error")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert len(out) == 4
    assert _status(out[0])[0] == 204
    status, body = _status(out[1])  # the failed change set answers with its one error
    assert not out[1].is_multipart() and status == 400
    assert json.loads(body)["error"]["code"] == "0x80060888"
    assert _status(out[2])[0] == 200 and json.loads(_status(out[2])[1])["accountid"] == d
    assert out[3].is_multipart()
    members = out[3].get_payload()
    assert [m["Content-ID"] for m in members] == ["3", "4"]  # type: ignore[union-attr]
    assert [_status(m)[0] for m in members] == [204, 204]  # type: ignore[arg-type]
    rows = {g: dv.side.admin("get", {"id": g}) for g in (a, b, c, d)}
    assert rows[a]["new_billinghold"] is True
    assert rows[b]["new_billinghold"] is None  # rolled back with its change set
    assert rows[c]["new_openbalance"] == 10 and rows[d]["new_openbalance"] == 20
    assert dv.ctx.counters.get("dataverse", "$batch", "POST") == 1


def test_batch_without_continue_on_error_stops_at_the_first_failure(
        dv: Dataverse, dv_http: requests.Session) -> None:
    a, b = _ids(dv, 30, 31)
    parts = [
        _part("PATCH", f"accounts({a})", {"new_billinghold": True}),
        _part("PATCH", f"accounts({b})", {"creditlimit": "not money"}),
        _part("PATCH", f"accounts({b})", {"new_billinghold": True}),
    ]
    resp, out = _batch(dv, dv_http, parts)
    assert resp.status_code == 200
    assert [_status(p)[0] for p in out] == [204, 400]
    assert dv.side.admin("get", {"id": b})["new_billinghold"] is None


def test_batch_etag_conflict_inside_a_change_set_rolls_back(dv: Dataverse,
                                                            dv_http: requests.Session) -> None:
    a, b = _ids(dv, 40, 41)
    parts = [_changeset([
        _part("PATCH", f"accounts({a})", {"new_billinghold": True}, 1),
        _part("PATCH", f"accounts({b})", {"new_billinghold": True}, 2,
              headers={"If-Match": 'W/"1"'}),
    ])]
    _resp, out = _batch(dv, dv_http, parts)
    status, body = _status(out[0])
    assert status == 412 and json.loads(body)["error"]["code"] == "0x80060882"
    assert dv.side.admin("get", {"id": a})["new_billinghold"] is None


def test_change_set_members_can_refer_to_created_rows(dv: Dataverse,
                                                      dv_http: requests.Session) -> None:
    parts = [_changeset([
        _part("POST", "accounts", {"name": "Made in a change set"}, 1),
        _part("PATCH", "$1", {"new_billinghold": True}, 2),
    ])]
    _resp, out = _batch(dv, dv_http, parts)
    members = out[0].get_payload()
    assert [_status(m)[0] for m in members] == [204, 204]  # type: ignore[arg-type]
    found = dv.get(dv_http, "accounts?$filter=name eq 'Made in a change set'").json()["value"]
    assert len(found) == 1 and found[0]["new_billinghold"] is True


def test_batch_of_1000_runs_and_1001_is_refused(dv: Dataverse, dv_http: requests.Session) -> None:
    guid = _ids(dv, 50)[0]
    ok, out = _batch(dv, dv_http, [_part("PATCH", f"accounts({guid})", {"new_oldestoverduedays": n})
                                for n in range(1000)])
    assert ok.status_code == 200 and len(out) == 1000
    assert dv.side.admin("get", {"id": guid})["new_oldestoverduedays"] == 999
    too_many = [_part("GET", "WhoAmI") for _n in range(1001)]
    boundary = "batch_x"
    body = "".join(f"--{boundary}\r\n{p}" for p in too_many) + f"--{boundary}--\r\n"
    resp = dv_http.post(f"{dv.api}/$batch", data=body.encode(), headers=dv.headers(
        **{"Content-Type": f"multipart/mixed; boundary={boundary}"}))
    assert resp.status_code == 400 and "1000" in load_json(resp.text)["error"]["message"]


def test_batch_requires_multipart(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv_http.post(f"{dv.api}/$batch", json={"requests": []}, headers=dv.headers())
    assert resp.status_code == 400
    assert dv_http.get(f"{dv.api}/$batch", headers=dv.headers()).status_code == 405
