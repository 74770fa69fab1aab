"""Every kind of bad CRM record of the corpus (bad_records.py), on SQLite and PostgreSQL.

For each kind, a page of good records with the bad one among them is applied the way the
cycle applies a page: the bad record is quarantined naming the field (or, where the value is
in fact fine, accepted), its stored record is JSON the database itself reads (the hand-off
queries it: a bare NaN there failed every later hand-off of the connection), nothing crashes,
every good record of the page lands, and applying the same page again changes nothing (no new
quarantine entry, nothing upserted).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB

from billing_core.adapters.tables import accounts, products
from billing_core.service import ledger_uow
from sync.bookkeeping import PageResult, quarantine_key
from sync.reconcile import apply_page
from sync.tables import quarantine, sync_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bad_records as corpus  # noqa: E402

GROUPS = [(crm, obj) for crm in corpus.CRMS for obj in corpus.TEXT_FIELDS]


def _apply(engine: Engine, conn: str, obj: str, page: list[dict[str, Any]]) -> PageResult:
    with ledger_uow(engine) as uow:
        res = apply_page(uow, conn, obj, page)
        uow.commit()
    return res


def _landed(engine: Engine, conn: str, obj: str) -> set[str]:
    with engine.connect() as db:
        return {r[0] for r in db.execute(select(sync_records.c.crm_id).where(
            sync_records.c.connection == conn, sync_records.c.object == obj,
            sync_records.c.deleted_at.is_(None)))}


def _quarantined(engine: Engine, conn: str) -> list[Any]:
    with engine.connect() as db:
        return list(db.execute(select(quarantine).where(quarantine.c.connection == conn)))


def _unreadable_json(engine: Engine, conn: str) -> list[str]:
    """The quarantine entries of ``conn`` whose stored record the database cannot read as
    JSON (SQLite: ``json_valid``; PostgreSQL: a cast to ``jsonb`` of each, which refuses)."""
    with engine.connect() as db:
        rows = list(db.execute(select(quarantine.c.crm_id, quarantine.c.record).where(
            quarantine.c.connection == conn)))
        if engine.dialect.name == "sqlite":
            return [r.crm_id for r in rows if not db.execute(
                select(func.json_valid(r.record))).scalar()]
        bad = []
        for r in rows:
            try:
                with db.begin_nested():
                    db.execute(select(cast(r.record, JSONB)))
            except Exception:  # noqa: BLE001 - the database's refusal is the finding
                bad.append(r.crm_id)
        return bad


def _setup_products(engine: Engine, crm: str, conn: str) -> list[dict[str, Any]]:
    """Five products of this connection in billing: four for prices and lines to name, one
    whose SKU a bad product repeats."""
    made = [corpus.good(crm, "product", f"{conn}-p{j}", conn) for j in range(5)]
    res = _apply(engine, conn, "product", made)
    assert res.upserted == 5, res
    return made


def _check_kind(engine: Engine, index: int, kind: corpus.Kind) -> list[str]:
    conn = f"c{index}"
    prods = _setup_products(engine, kind.crm, conn) \
        if kind.obj in ("product", "price", "quote_line") else [{"crm_id": ""}] * 5
    goods = [corpus.good(kind.crm, kind.obj, f"{conn}-g{j}", conn, prods[j]["crm_id"])
             for j in range(3)]
    bad = corpus.good(kind.crm, kind.obj, f"{conn}-bad", conn, prods[3]["crm_id"])
    kind.change(bad)
    if bad.get("sku") == corpus.DUP_IN_PAGE:
        bad["sku"] = goods[0]["sku"]
    elif bad.get("sku") == corpus.DUP_IN_BILLING:
        bad["sku"] = prods[4]["sku"]
    page = [goods[0], bad, goods[1], goods[2]]
    if "twice" in kind.name:
        page.append(dict(bad))
    problems: list[str] = []
    try:
        first = _apply(engine, conn, kind.obj, page)
    except Exception as exc:  # noqa: BLE001 - a crash is what this test reports
        return [f"{kind.name}: crashed: {exc!r}"[:300]]
    landed = _landed(engine, conn, kind.obj)
    missing = {g["crm_id"] for g in goods} - landed
    if missing:
        problems.append(f"{kind.name}: good records did not land: {missing}")
    entries = _quarantined(engine, conn)
    if kind.field is None:
        if entries or bad["crm_id"] not in landed:
            problems.append(f"{kind.name}: should be accepted ({kind.note}); quarantine: "
                            f"{[(e.field, e.reason) for e in entries]}")
    else:
        key = quarantine_key(bad)
        mine = [e for e in entries if e.crm_id == key and e.object == kind.obj]
        if len(entries) != 1 or not mine:
            problems.append(f"{kind.name}: expected one quarantine entry for {key!r}, got "
                            f"{[(e.crm_id, e.field, e.reason) for e in entries]}")
        elif mine[0].field != kind.field or not mine[0].reason:
            problems.append(f"{kind.name}: quarantined as {mine[0].field}: {mine[0].reason}, "
                            f"expected {kind.field}")
        if first.quarantined != 1:
            problems.append(f"{kind.name}: counted {first.quarantined} quarantined")
        unreadable = _unreadable_json(engine, conn)
        if unreadable:
            problems.append(f"{kind.name}: stored records the database cannot read as JSON: "
                            f"{unreadable}")
    if kind.obj == "account":
        with engine.connect() as db:
            in_billing = db.execute(select(func.count()).select_from(accounts).where(
                accounts.c.ext_source == conn)).scalar()
        if in_billing != len(landed):
            problems.append(f"{kind.name}: {in_billing} accounts in billing, {len(landed)} kept")
    again = _apply(engine, conn, kind.obj, page)
    if again.upserted or len(_quarantined(engine, conn)) != len(entries) \
            or again.quarantined != (0 if kind.field is None else 1):
        problems.append(f"{kind.name}: the second apply was not clean: {again}")
    return problems


@pytest.mark.parametrize(("crm", "obj"), GROUPS)
def test_every_bad_record_is_quarantined_alone_or_accepted(engine: Engine, crm: str,
                                                           obj: str) -> None:
    kinds = [(i, k) for i, k in enumerate(corpus.KINDS) if (k.crm, k.obj) == (crm, obj)]
    assert kinds
    problems = [p for i, k in kinds for p in _check_kind(engine, i, k)]
    assert problems == []


def test_the_corpus_is_large_and_covers_both_crms() -> None:
    assert len(corpus.KINDS) >= 100
    assert {k.crm for k in corpus.KINDS} == set(corpus.CRMS)
    assert len({k.name for k in corpus.KINDS}) == len(corpus.KINDS)


def test_products_sku_column_holds_what_salesforce_allows() -> None:
    assert products.c.sku.type.length == 255    # type: ignore[attr-defined]
