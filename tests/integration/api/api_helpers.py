"""Helpers for the HTTP API tests: a client with a token per scope, accounts and posted
invoices made straight in the schema (so these tests do not depend on the bill run), and fakes
for the sync runner and the scheduler state."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import invoices
from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.documents import find

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@dataclass
class FakeSyncRunner:
    """Records what it was asked to start; runs nothing."""
    started: list[tuple[str, str | None, bool, str | None]] = field(default_factory=list)

    def start(self, connection: str, object: str | None, full: bool,
              account: str | None) -> int:
        from billing_core.domain.errors import NotFound

        if connection == "nope":
            raise NotFound("connection", connection)
        self.started.append((connection, object, full, account))
        return len(self.started)

    def budgets(self) -> dict[str, Any]:
        from connectors.base import Budget

        return {"salesforce": Budget(calls=3, used=120, limit=1000, share=0.8)}

    def get(self, run_id: int) -> dict[str, Any] | None:
        if not 1 <= run_id <= len(self.started):
            return None
        return {"id": run_id, "connection": self.started[run_id - 1][0], "trigger": "api",
                "outcome": "running", "objects": []}


@dataclass
class SchedulerState:
    running: bool = True


@dataclass
class Api:
    """A test client plus the ledger under it."""
    client: TestClient
    engine: Engine
    tokens: dict[str, str]
    sync: FakeSyncRunner
    scheduler: SchedulerState

    def headers(self, scope: str = "admin", key: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.tokens[scope]}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def get(self, path: str, scope: str = "billing:read", **kw: Any) -> Any:
        return self.client.get(path, headers=self.headers(scope), **kw)

    def post(self, path: str, json: Any = None, scope: str = "billing:write",
             key: str | None = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self.headers(scope, key), **kw)

    def run(self, fn: Callable[[UnitOfWork], Any]) -> Any:
        with ledger_uow(self.engine) as uow:
            result = fn(uow)
            uow.commit()
            return result

    def read(self, fn: Callable[[Any], Any]) -> Any:
        with self.engine.connect() as conn:
            return fn(conn)


def make_account(uow: UnitOfWork, ext_id: str = "ACC1", currency: str = "USD",
                 limit: str | None = None) -> int:
    return create_account(uow, AccountIn(name=f"Account {ext_id}", currency=currency,
                                         ext_id=ext_id, credit_limit=limit, tax_exempt=True))


def post_invoice(uow: UnitOfWork, account_id: int, total_minor: int,
                 due: date | None = None) -> int:
    """A posted invoice as the bill run would leave it (numbered, due in 30 days)."""
    conn = uow.conn
    seq = conn.execute(select(func.count()).select_from(invoices)).scalar_one() + 1
    today = uow.now().date()
    invoice_id = conn.execute(insert(invoices).values(
        account_id=account_id, currency="USD", series="INV", number=f"INV-{seq:06d}",
        status="posted", period_start=date(2000 + seq, 1, 1),
        period_end=date(2000 + seq, 2, 1), issue_date=today,
        due_date=due or today + timedelta(days=30), subtotal_minor=total_minor, tax_minor=0,
        total_minor=total_minor, applied_minor=0, created_at=uow.now(),
        posted_at=uow.now())).inserted_primary_key[0]
    uow.touch(account_id)
    return int(invoice_id)


def doc(api: Api, doc_type: str, ref: object) -> Any:
    return api.read(lambda conn: find(conn, doc_type, ref))


def eventually(what: str, probe: Callable[[], Any], *, wait: float, every: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something truthy, for at most ``wait`` seconds (a bound
    on background work on a loaded machine, not a target)."""
    deadline = time.monotonic() + wait
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for: {what}")
        time.sleep(every)
