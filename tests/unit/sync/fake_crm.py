"""An in-memory CRM behind the ``Connector`` protocol, for the sync engine's tests.

Records are canonical dicts; every change bumps a global sequence, which is the cursor. One page
read = one API call, one ``write`` of up to 200 records = one call (like Salesforce), so tests
can assert on call counts. ``fail_write`` makes the CRM refuse given ids; ``budget_after``
raises ``BudgetExhausted`` once that many calls were made.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.base import Budget, BudgetExhausted, Deletion, Page, WriteResult
from connectors.budget import call_tally

OBJECTS = ("account", "product", "price", "quote", "quote_line")
T0 = datetime(2026, 11, 1, tzinfo=UTC)


class FakeCRM:
    def __init__(self, name: str = "fake", page_size: int = 2000,
                 accepted: frozenset[str] = frozenset({"Accepted"})) -> None:
        self.name = name
        self.page_size = page_size
        self.accepted = accepted
        self.seq = 0
        self.rows: dict[str, dict[str, tuple[int, dict[str, Any] | None]]] = {
            o: {} for o in OBJECTS}
        self.calls = 0
        self.writes: list[tuple[str, list[dict[str, Any]]]] = []
        self.pushed: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_write: dict[str, str] = {}
        self.budget_after: int | None = None

    # -- CRM user side --------------------------------------------------------------------
    def put(self, obj: str, crm_id: str, **fields: Any) -> None:
        self.seq += 1
        old = self.rows[obj].get(crm_id, (0, None))[1] or {}
        record = {**old, **fields, "crm_id": crm_id,
                  "modstamp": T0 + timedelta(seconds=self.seq)}
        self.rows[obj][crm_id] = (self.seq, record)

    def delete(self, obj: str, crm_id: str) -> None:
        self.seq += 1
        self.rows[obj][crm_id] = (self.seq, None)

    def seed_basic(self) -> None:
        self.put("account", "A1", name="Acme", currency="USD", country="US",
                 credit_limit=Decimal(1000), credit_hold=False)
        self.put("account", "A2", name="Globex", currency="EUR", country="DE",
                 credit_limit=Decimal(50000), credit_hold=False)
        self.put("product", "P1", sku="SEAT", name="Seat", billing_type="Recurring",
                 billing_frequency="Monthly", needs_provisioning=True, active=True)
        self.put("product", "P2", sku="SETUP", name="Setup", billing_type="One-Time",
                 active=True)
        for pid in ("P1", "P2"):
            for cur in ("USD", "EUR"):
                self.put("price", f"{pid}-{cur}", product_crm_id=pid, currency=cur,
                         unit_price=Decimal(100), active=True)

    # -- Connector protocol ---------------------------------------------------------------
    def _call(self) -> None:
        if self.budget_after is not None and self.calls >= self.budget_after:
            raise BudgetExhausted("fake budget spent")
        self.calls += 1
        tally = call_tally.get()        # as a real connector's meter counts each reader's calls
        if tally is not None:
            tally.calls += 1

    def objects(self) -> Sequence[str]:
        return OBJECTS

    def accepted_quote_states(self) -> frozenset[str]:
        return self.accepted

    def api_budget(self) -> Budget:
        return Budget(calls=self.calls)

    def check(self) -> list[Any]:
        return []

    def read_changes(self, obj: str, cursor: str | None, *, run_started: datetime | None = None,
                     sweep: Any = None) -> Iterator[Page]:
        since = json.loads(cursor)["seq"] if cursor else 0
        changed = sorted((seq, cid, rec) for cid, (seq, rec) in self.rows[obj].items()
                         if seq > since)
        if cursor is None:
            changed = [c for c in changed if c[2] is not None]
        top = since
        for start in range(0, max(len(changed), 1), self.page_size):
            self._call()
            part = changed[start:start + self.page_size]
            top = part[-1][0] if part else top
            records = [dict(rec) for _, _, rec in part if rec is not None]
            deletions = [Deletion(cid) for _, cid, rec in part if rec is None]
            if cursor is None and sweep is not None:
                if start == 0:
                    sweep.begin()
                sweep.saw([str(r["crm_id"]) for r in records])
                if start + self.page_size >= len(changed):
                    deletions += [Deletion(i, None, "missing") for i in sweep.missing()]
            yield Page(records, deletions, json.dumps({"seq": top}))

    def read_one(self, obj: str, crm_id: str) -> dict[str, Any] | None:
        self._call()
        row = self.rows[obj].get(crm_id)
        return dict(row[1]) if row and row[1] else None

    def lookup(self, obj: str, field: str, value: Any) -> list[dict[str, Any]]:
        self._call()
        return [dict(rec) for _, rec in self.rows[obj].values() if rec and rec.get(field) == value]

    def write(self, obj: str, updates: Sequence[dict[str, Any]], *, redecide: Any = None
              ) -> list[WriteResult]:
        out: list[WriteResult] = []
        for start in range(0, len(updates), 200):
            self._call()
            chunk = list(updates[start:start + 200])
            self.writes.append((obj, chunk))
            for update in chunk:
                cid = update["crm_id"]
                if cid in self.fail_write:
                    out.append(WriteResult(cid, False, "FIELD_INTEGRITY_EXCEPTION",
                                           self.fail_write[cid]))
                    continue
                merged = self.pushed.setdefault((obj, cid), {})
                merged.update({k: v for k, v in update.items() if k != "crm_id"})
                if "credit_hold" in update:      # the CRM's own field: the row changes
                    self.put(obj, cid, credit_hold=update["credit_hold"])
                out.append(WriteResult(cid, True))
        return out


class CountingCRM(FakeCRM):
    """The in-memory CRM with a batched read by id (the targeted resync's): one call per 200
    ids, each counted in ``by_ids`` as (object, ids in the call)."""

    def __init__(self, name: str = "sf") -> None:
        super().__init__(name)
        self.by_ids: list[tuple[str, int]] = []

    def read_by_ids(self, obj: str, ids: list[str]) -> list[dict[str, Any]]:
        found = []
        for start in range(0, len(ids), 200):
            self._call()
            chunk = ids[start:start + 200]
            self.by_ids.append((obj, len(chunk)))
            found += [dict(row[1]) for i in chunk
                      if (row := self.rows[obj].get(i)) is not None and row[1] is not None]
        return found
