"""A record that passes the boundary yet fails below it (here: a database error raised while
writing it) is quarantined alone; the page, its other records and the transaction go on, on
both databases. The account handler's bulk write falls back to one account at a time."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts
from billing_core.service import ledger_uow
from sync.handlers import account as account_handler
from sync.handlers import price as price_handler
from sync.reconcile import apply_page
from sync.tables import quarantine, sync_records

_FAIL = text("INSERT INTO sync_cursors (connection, object, updated_at) "
             "VALUES (NULL, 'x', CURRENT_TIMESTAMP)")     # NOT NULL: refused by both


def _account(i: int, name: str | None = None) -> dict[str, Any]:
    return {"crm_id": f"A{i}", "name": name or f"Acme {i}", "currency": "USD"}


def _kept(engine: Engine, obj: str) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(select(sync_records.c.crm_id).where(
            sync_records.c.object == obj))}


def _entries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(quarantine)))


def test_a_database_error_in_the_bulk_account_write_quarantines_that_account_only(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = account_handler.upsert_accounts
    calls: list[int] = []

    def failing(uow: UnitOfWork, items: Any) -> Any:
        calls.append(len(items))
        if any(item.name == "BOOM" for item in items):
            uow.conn.execute(_FAIL)
        return real(uow, items)

    monkeypatch.setattr(account_handler, "upsert_accounts", failing)
    page = [_account(1), _account(2, "BOOM"), _account(3), _account(4)]
    with ledger_uow(engine) as uow:
        res = apply_page(uow, "sf", "account", page)
        uow.commit()
    assert calls == [4, 1, 1, 1, 1]             # the bulk write, then one at a time
    assert (res.upserted, res.quarantined) == (3, 1)
    assert _kept(engine, "account") == {"A1", "A3", "A4"}
    (entry,) = _entries(engine)
    assert (entry.crm_id, entry.field) == ("A2", "record")
    assert entry.reason.startswith("the database refused it")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar() == 3
    monkeypatch.setattr(account_handler, "upsert_accounts", real)     # fixed: retried
    with ledger_uow(engine) as uow:
        again = apply_page(uow, "sf", "account", page)
        uow.commit()
    assert (again.upserted, again.unchanged, again.quarantined) == (1, 3, 0)
    assert [e.status for e in _entries(engine)] == ["resolved"]


def test_the_normal_page_is_written_in_one_bulk_call(engine: Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = account_handler.upsert_accounts
    calls: list[int] = []

    def counted(uow: UnitOfWork, items: Any) -> Any:
        calls.append(len(items))
        return real(uow, items)

    monkeypatch.setattr(account_handler, "upsert_accounts", counted)
    with ledger_uow(engine) as uow:
        apply_page(uow, "sf", "account", [_account(i) for i in range(50)])
        uow.commit()
    assert calls == [50]


def test_a_database_error_writing_one_price_quarantines_that_price_only(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with ledger_uow(engine) as uow:
        apply_page(uow, "sf", "product", [
            {"crm_id": f"P{i}", "sku": f"S{i}", "name": f"Plan {i}"} for i in range(3)])
        uow.commit()
    real = price_handler.set_price

    def failing(uow: UnitOfWork, product_id: int, currency: str, day: Any,
                price: Decimal) -> int:
        if price == Decimal(7777):
            uow.conn.execute(_FAIL)
        return real(uow, product_id, currency, day, price)

    monkeypatch.setattr(price_handler, "set_price", failing)
    page = [{"crm_id": f"E{i}", "product_crm_id": f"P{i}", "currency": "USD",
             "unit_price": Decimal(7777) if i == 1 else Decimal(10)} for i in range(3)]
    with ledger_uow(engine) as uow:
        res = apply_page(uow, "sf", "price", page)
        uow.commit()
    assert (res.upserted, res.quarantined) == (2, 1)
    assert _kept(engine, "price") == {"E0", "E2"}
    (entry,) = _entries(engine)
    assert (entry.crm_id, entry.field) == ("E1", "record")
