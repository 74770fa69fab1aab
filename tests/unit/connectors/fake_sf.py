"""A tiny Salesforce REST stand-in for `responses`: token, query/queryAll paging, collections."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
from conn_support import SF_URL

BASE = f"{SF_URL}/services/data/v59.0"


def stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def account(n: int, at: datetime, **extra: Any) -> dict[str, Any]:
    row = {"attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{n}"},
           "Id": f"001{n:015d}", "Name": f"Account {n}", "Credit_Limit__c": 1000.5,
           "Credit_Hold__c": False, "SystemModstamp": stamp(at), "IsDeleted": False}
    row.update(extra)
    return row


class FakeSalesforce:
    def __init__(self, rows: list[dict[str, Any]] | None = None,
                 limit_info: str = "api-usage=10/100000"):
        self.rows = rows or []
        self.limit_info = limit_info
        self.usage: tuple[int, int] | None = None  # (used before the test, limit): counts up
        self.data_calls = 0
        self.server_page: int | None = 3  # Salesforce may answer smaller pages than asked
        self.batch_headers: list[str | None] = []
        self.tokens = 0
        self.queries: list[str] = []
        self.raw_urls: list[str] = []
        self.query_urls: list[str] = []
        self.collection_calls: list[dict[str, Any]] = []
        self.expire_next = 0  # answer this many data calls with INVALID_SESSION_ID
        self.limit_exceeded = False
        self.fail_ids: dict[str, tuple[str, str]] = {}
        self._results: dict[str, list[dict[str, Any]]] = {}

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.POST, f"{SF_URL}/services/oauth2/token", self._token)
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(BASE)}/query(All)?/.*"),
                          self._query)
        rsps.add_callback(responses.PATCH, f"{BASE}/composite/sobjects", self._collections)

    def _headers(self) -> dict[str, str]:
        info = self.limit_info
        if self.usage:
            info = f"api-usage={self.usage[0] + self.data_calls}/{self.usage[1]}"
        return {"Sforce-Limit-Info": info, "Content-Type": "application/json"}

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.tokens += 1
        body = {"access_token": f"TOKEN{self.tokens}", "instance_url": SF_URL,
                "token_type": "Bearer", "id": "x", "issued_at": "1", "signature": "s"}
        return 200, {}, json.dumps(body)

    def _guard(self) -> tuple[int, dict[str, str], str] | None:
        self.data_calls += 1
        if self.expire_next:
            self.expire_next -= 1
            return 401, {}, json.dumps([{"errorCode": "INVALID_SESSION_ID",
                                         "message": "Session expired or invalid"}])
        if self.limit_exceeded:
            return 403, {}, json.dumps([{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                         "message": "TotalRequests Limit exceeded."}])
        return None

    def _query(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._guard()
        if refused:
            return refused
        self.raw_urls.append(request.url)
        parts = urlsplit(request.url)
        locator = parts.path.rsplit("/", 1)[-1]
        if locator in self._results or "-" in locator:
            key, offset = locator.rsplit("-", 1)
            rows, start = self._results[key], int(offset)
        else:
            soql = parse_qs(parts.query)["q"][0]
            self.queries.append(soql)
            self.query_urls.append(request.url)
            rows = self._select(soql, include_deleted="/queryAll/" in parts.path)
            key, start = f"01g{len(self._results)}", 0
            self._results[key] = rows
        self.batch_headers.append(request.headers.get("Sforce-Query-Options"))
        size = self.server_page or int(
            request.headers.get("Sforce-Query-Options", "batchSize=2000").split("=")[1])
        page = rows[start:start + size]
        done = start + size >= len(rows)
        body: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            body["nextRecordsUrl"] = f"/services/data/v59.0/query/{key}-{start + size}"
        return 200, self._headers(), json.dumps(body)

    def _select(self, soql: str, include_deleted: bool) -> list[dict[str, Any]]:
        rows = [r for r in self.rows if include_deleted or not r.get("IsDeleted")]
        since = re.search(r"SystemModstamp >= (\S+)", soql)
        if since:
            floor = datetime.fromisoformat(since[1])
            rows = [r for r in rows if _parse(r["SystemModstamp"]) >= floor]
        by_id = re.search(r"WHERE Id = '((?:[^'\\]|\\.)*)'", soql)
        if by_id:
            rows = [r for r in rows if r["Id"] == by_id[1]]
        return sorted(rows, key=lambda r: (_parse(r["SystemModstamp"]), r["Id"]))

    def _collections(self, request: Any) -> tuple[int, dict[str, str], str]:
        refused = self._guard()
        if refused:
            return refused
        payload = json.loads(request.body)
        self.collection_calls.append(payload)
        out = []
        for rec in payload["records"]:
            if rec["id"] in self.fail_ids:
                code, message = self.fail_ids[rec["id"]]
                out.append({"id": rec["id"], "success": False,
                            "errors": [{"statusCode": code, "message": message, "fields": []}]})
            else:
                out.append({"id": rec["id"], "success": True, "errors": []})
        return 200, self._headers(), json.dumps(out)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text[:-2] + ":" + text[-2:])
