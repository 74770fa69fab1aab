"""A tiny Dataverse Web API stand-in for `responses`: msal endpoints, OData paging, change
tracking, `$batch` with etags, injected 401/429."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import responses
from conn_support import D365_URL

BASE = f"{D365_URL}/api/data/v9.2/"
AUTHORITY = "https://login.example.com/tenant1"


def guid(n: int) -> str:
    return f"{n:08d}-0000-0000-0000-000000000000"


class FakeDataverse:
    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {"accounts": [], "products": []}
        self.tracked = {"accounts"}
        self.deleted: list[tuple[int, str, str]] = []  # (version, table, id)
        self.version = 0
        self.tokens = 0
        self.token_posts = 0
        self.token_bodies: list[str] = []
        self.expire_next = 0
        self.throttle_next = 0
        self.expired_links = False
        self.fail_ids: dict[str, tuple[int, str, str]] = {}
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.user = "0000abcd-0000-0000-0000-000000000001"      # WhoAmI's UserId

    # -- data ---------------------------------------------------------------------------
    def put(self, table: str, n: int, modifiedon: str, **extra: Any) -> dict[str, Any]:
        self.version += 1
        key = table[:-1] + "id"
        row = {key: guid(n), "name": f"Row {n}", "modifiedon": modifiedon,
               "versionnumber": self.version, "@odata.etag": f'W/"{self.version}"', **extra}
        rows = self.tables[table]
        rows[:] = [r for r in rows if r[key] != row[key]] + [row]
        return row

    def delete(self, table: str, n: int) -> None:
        self.version += 1
        key = table[:-1] + "id"
        self.tables[table] = [r for r in self.tables[table] if r[key] != guid(n)]
        self.deleted.append((self.version, table, guid(n)))

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.GET, f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
                          self._discovery)
        rsps.add_callback(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", self._token)
        rsps.add_callback(responses.POST, f"{BASE}$batch", self._batch)
        rsps.add_callback(responses.GET, re.compile(re.escape(BASE) + r".*"), self._get)

    def _discovery(self, request: Any) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({
            "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "issuer": f"{AUTHORITY}/v2.0"})

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.token_posts += 1
        self.token_bodies.append(str(request.body))
        self.tokens += 1
        return 200, {}, json.dumps({"token_type": "Bearer", "expires_in": 3599,
                                    "access_token": f"DTOKEN{self.tokens}"})

    def _refuse(self, request: Any) -> tuple[int, dict[str, str], str] | None:
        if self.expire_next:
            self.expire_next -= 1
            return 401, {}, json.dumps({"error": {"code": "0x80072560", "message": "expired"}})
        if self.throttle_next:
            self.throttle_next -= 1
            return 429, {"Retry-After": "3"}, json.dumps(
                {"error": {"code": "0x80072322", "message": "Number of requests exceeded"}})
        assert request.headers["Authorization"].startswith("Bearer DTOKEN")
        return None

    # -- reads --------------------------------------------------------------------------
    def _get(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refuse(request)
        if refused:
            return refused
        parts = urlsplit(request.url)
        table = parts.path.rsplit("/", 1)[-1]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.gets.append((request.url, dict(request.headers)))
        if table == "WhoAmI":     # the application user our writes are stamped with
            return 200, {}, json.dumps({"UserId": self.user})
        one = re.fullmatch(r"(\w+)\(([0-9a-f-]{36})\)", table)
        if one:
            key = one[1][:-1] + "id"
            rows = [r for r in self.tables[one[1]] if r[key] == one[2]]
            if not rows:
                return 404, {}, json.dumps({"error": {"code": "0x80040217", "message": "no"}})
            return 200, {}, json.dumps(rows[0])
        prefer = request.headers.get("Prefer", "")
        size = int(re.search(r"maxpagesize=(\d+)", prefer)[1])  # type: ignore[index]
        key = table[:-1] + "id"
        if "$deltatoken" in query:
            if self.expired_links:
                return 400, {}, json.dumps({"error": {"code": "0x80044352",
                                                      "message": "token expired"}})
            since = int(query["$deltatoken"])
            rows = [r for r in self.tables[table] if r["versionnumber"] > since]
            rows += [{"@odata.context": f"{BASE}$metadata#{table}/$deletedEntity", "id": i,
                      "reason": "deleted"} for v, t, i in self.deleted if t == table and v > since]
        else:
            rows = sorted(self.tables[table], key=lambda r: (r["modifiedon"], r[key]))
            flt = query.get("$filter", "")
            match = re.search(r"modifiedon ge (\S+)", flt)
            if match:
                rows = [r for r in rows if r["modifiedon"] >= match[1]]
            match = re.search(r"name eq '((?:[^']|'')*)'", flt)
            if match:
                rows = [r for r in rows if r["name"] == match[1].replace("''", "'")]
        start = int(query.get("$skiptoken", 0))
        page = rows[start:start + size]
        body: dict[str, Any] = {"@odata.context": f"{BASE}$metadata#{table}", "value": page}
        if start + size < len(rows):
            rest = {k: v for k, v in query.items() if k != "$skiptoken"}
            tail = "&".join(f"{k}={v}" for k, v in rest.items())
            body["@odata.nextLink"] = f"{BASE}{table}?$skiptoken={start + size}&{tail}"
        elif table in self.tracked and "odata.track-changes" in prefer:
            body["@odata.deltaLink"] = f"{BASE}{table}?$deltatoken={self.version}"
        return 200, {"Preference-Applied": f"odata.maxpagesize={size}"}, json.dumps(body)

    # -- writes -------------------------------------------------------------------------
    def _batch(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._refuse(request)
        if refused:
            return refused
        boundary = re.search(r"boundary=([^;]+)", request.headers["Content-Type"])[1]  # type: ignore[index]
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        subs = []
        for part in body.split(f"--{boundary}")[1:-1]:
            _, _, http = part.strip("\r\n").partition("\r\n\r\n")
            head, _, payload = http.partition("\r\n\r\n")
            lines = head.split("\r\n")
            method, url, _ = lines[0].split(" ")
            headers = dict(line.split(": ", 1) for line in lines[1:])
            subs.append({"method": method, "url": unquote(url), "headers": headers,
                         "body": json.loads(payload) if payload.strip() else None})
        self.batches.append(subs)
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        parts = []
        for sub in subs:
            status, answer = self._patch(sub)
            text = json.dumps(answer) if answer else ""
            parts.append(f"--{out_boundary}\r\nContent-Type: application/http\r\n"
                         f"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {status} X\r\n"
                         f"Content-Type: application/json\r\n\r\n{text}\r\n")
        return 200, {"Content-Type": f"multipart/mixed; boundary={out_boundary}"}, (
            "".join(parts) + f"--{out_boundary}--\r\n")

    def _patch(self, sub: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        table, gid = re.search(r"/(\w+)\(([0-9a-f-]{36})\)$", sub["url"]).groups()  # type: ignore[union-attr]
        if gid in self.fail_ids:
            status, code, message = self.fail_ids[gid]
            return status, {"error": {"code": code, "message": message}}
        key = table[:-1] + "id"
        rows = [r for r in self.tables[table] if r[key] == gid]
        if_match = sub["headers"].get("If-Match")
        if not rows:
            return 404, {"error": {"code": "0x80040217", "message": "Does Not Exist"}}
        if if_match not in ("*", rows[0]["@odata.etag"]):
            return 412, {"error": {"code": "0x80060882", "message": "version mismatch"}}
        self.put(table, int(gid[:8]), rows[0]["modifiedon"], **{
            k: v for k, v in {**rows[0], **sub["body"]}.items()
            if k not in (key, "modifiedon", "versionnumber", "@odata.etag")})
        return 204, None
