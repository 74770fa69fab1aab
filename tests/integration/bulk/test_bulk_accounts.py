"""Bulk account upsert and batched account summaries: same results as the one-by-one forms,
refused items reported per item with field and value, nothing of them written. SQLite and
PostgreSQL (the ``engine`` fixture)."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, insert, select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import accounts, invoices
from billing_core.domain.errors import Duplicate, InvalidState, LedgerError, NotFound
from billing_core.service.accounts import (
    AccountIn,
    create_account,
    update_account,
    upsert_accounts,
)
from billing_core.service.receivables import account_summaries, account_summary

ON = date(2026, 6, 1)
COMPARED = ("ext_id", "name", "number", "currency", "country", "region", "bill_cycle_day",
            "payment_terms_days", "credit_limit_minor", "crm_hold", "status")


def _item(source: str, ext_id: str, **kw: object) -> AccountIn:
    return AccountIn(**{"name": f"Account {ext_id}", "currency": "USD", "ext_id": ext_id,
                        "ext_source": source, **kw})


def _invoice(uow: UnitOfWork, account_id: int, total: int, n: int, due: date,
             issue: date) -> None:
    uow.conn.execute(insert(invoices).values(
        account_id=account_id, currency="USD", series="INV", number=f"B-{n:04d}",
        status="posted", period_start=date(2020, 1, n), period_end=date(2020, 2, n),
        issue_date=issue, due_date=due, subtotal_minor=total, tax_minor=0, total_minor=total,
        applied_minor=0, created_at=uow.now(), posted_at=uow.now()))


def _seed(uow: UnitOfWork, source: str) -> None:
    for ext_id, kw in (("E1", {"credit_limit": "100"}), ("E2", {}), ("E3", {"crm_hold": True}),
                       ("E4", {}), ("E5", {"currency": "EUR"})):
        create_account(uow, _item(source, ext_id, **kw))
    e4 = uow.conn.execute(select(accounts.c.id).where(
        accounts.c.ext_source == source, accounts.c.ext_id == "E4")).scalar_one()
    _invoice(uow, e4, 500, 1 if source == "one" else 2, date(2026, 4, 1), date(2026, 3, 1))


def _changes(source: str) -> list[AccountIn]:
    return [
        _item(source, "E1", credit_limit="250.50"),            # limit changes: touched
        _item(source, "E2"),                                   # unchanged
        _item(source, "E3", crm_hold=False, name="Renamed"),   # flag off: touched
        _item(source, "E4", currency="EUR"),                   # has invoices: refused
        _item(source, "E5", currency="GBP", country="fr"),     # no invoices: allowed
        _item(source, "N1", credit_limit="10"),                # new
        _item(source, "N2", currency="XYZ"),                   # bad currency
        _item(source, "N3", credit_limit="-1"),                # bad limit
        _item(source, "N4", bill_cycle_day=40),                # bad cycle day
        _item(source, "N5", name="First"),                     # new ...
        _item(source, "N5", name="Second", crm_hold=True),     # ... then updated by its twin
        _item(source, "", name="No id"),                       # missing key
    ]


def _one_by_one(uow: UnitOfWork, items: list[AccountIn]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for item in items:
        try:
            with uow.savepoint():
                try:
                    create_account(uow, item)
                    out.append(("created", None))
                    continue
                except Duplicate:
                    pass
                found = uow.conn.execute(select(accounts.c.id).where(
                    accounts.c.ext_source == item.ext_source,
                    accounts.c.ext_id == item.ext_id)).scalar_one()
                out.append(("changed" if update_account(uow, found, item) else "same", None))
        except LedgerError as exc:
            out.append(("error", (type(exc).__name__, exc.field, exc.value)))
    return out


def _rows(uow: UnitOfWork, source: str) -> dict[str, tuple]:
    return {r.ext_id: tuple(getattr(r, c) for c in COMPARED) for r in uow.conn.execute(
        select(accounts).where(accounts.c.ext_source == source))}


def _touched(uow: UnitOfWork, source: str) -> set[str]:
    return {r[0] for r in uow.conn.execute(select(accounts.c.ext_id).where(
        accounts.c.ext_source == source, accounts.c.id.in_(sorted(uow.touched_accounts))))}


def test_upsert_accounts_equals_one_by_one(engine):
    with UnitOfWork(engine) as uow:
        _seed(uow, "one")
        _seed(uow, "bulk")
        uow.touched_accounts.clear()
        expected = _one_by_one(uow, _changes("one"))
        touched_one = _touched(uow, "one")
        uow.touched_accounts.clear()
        results = upsert_accounts(uow, _changes("bulk"))
        touched_bulk = _touched(uow, "bulk")
        got = [("error", (type(r.error).__name__, r.error.field, r.error.value)) if r.error
               else ("created" if r.created else "changed" if r.changed else "same", None)
               for r in results]
        assert got == expected
        assert _rows(uow, "bulk") == _rows(uow, "one")
        assert touched_bulk == touched_one == {"E1", "E3", "N1", "N5"}
        ids = {r[0]: r[1] for r in uow.conn.execute(select(accounts.c.ext_id, accounts.c.id)
                                                     .where(accounts.c.ext_source == "bulk"))}
        assert [r.account_id for r in results] == [
            ids["E1"], ids["E2"], ids["E3"], None, ids["E5"], ids["N1"], None, None, None,
            ids["N5"], ids["N5"], None]


def test_refused_items_are_reported_and_write_nothing(engine):
    with UnitOfWork(engine) as uow:
        _seed(uow, "bulk")
        before = _rows(uow, "bulk")
        results = upsert_accounts(uow, [
            _item("bulk", "E4", currency="EUR"), _item("bulk", "N2", currency="XYZ"),
            _item("bulk", "N3", credit_limit="-1"), _item("bulk", "OK", region="West")])
        errors = [(r.error.field, r.error.value) if r.error else None for r in results]
        assert errors == [("currency", "EUR"), ("currency", "XYZ"), ("credit_limit", "-1"), None]
        assert isinstance(results[0].error, InvalidState)
        after = _rows(uow, "bulk")
        assert after.pop("OK")[COMPARED.index("region")] == "West"
        assert after == before            # the refused items changed nothing
        uow.commit()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar_one() == 6


def test_upsert_accounts_many_in_chunks(engine):
    with UnitOfWork(engine) as uow:
        first = upsert_accounts(uow, [_item("bulk", f"M{i}") for i in range(1203)])
        assert all(r.created for r in first) and len({r.account_id for r in first}) == 1203
        again = upsert_accounts(uow, [_item("bulk", f"M{i}", credit_limit=i % 3 or None)
                                      for i in range(1203)])
        assert [r.account_id for r in again] == [r.account_id for r in first]
        assert sum(r.changed for r in again) == 802
        assert not any(r.created for r in again)


def test_account_summaries_equal_account_summary(engine):
    with UnitOfWork(engine) as uow:
        ids = [create_account(uow, _item("s", f"S{i}", credit_limit="50" if i % 2 else None))
               for i in range(5)]
        _invoice(uow, ids[0], 1000, 1, date(2026, 4, 1), date(2026, 3, 1))
        _invoice(uow, ids[0], 700, 2, date(2026, 7, 1), date(2026, 5, 1))
        _invoice(uow, ids[1], 9000, 3, date(2026, 5, 20), date(2026, 4, 20))
        _invoice(uow, ids[3], 10, 4, date(2026, 6, 30), date(2026, 5, 31))
        batch = account_summaries(uow.conn, ids, ON, grace_days=3)
        assert batch == {a: account_summary(uow.conn, a, ON, grace_days=3) for a in ids}
        assert batch[ids[0]]["last_invoice_number"] == "B-0002"
        assert batch[ids[0]]["oldest_overdue_days"] == 61
        assert batch[ids[1]]["available_credit_minor"] == 5000 - 9000
        assert batch[ids[2]]["last_invoice_number"] is None
        with pytest.raises(NotFound):
            account_summaries(uow.conn, [ids[0], 999_999], ON)
