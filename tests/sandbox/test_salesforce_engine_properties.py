"""Property tests of the query engine (in process, no HTTP) against a plain-Python reference.

The engine streams seeded rows and merges changed ones; the reference materialises every row
and filters/sorts it naively. They must agree on any filter, order, batch size and writes.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sandbox.core import SandboxClock
from connectors.sandbox.salesforce import schema as S
from connectors.sandbox.salesforce.cursors import Cursor, Cursors, answer
from connectors.sandbox.salesforce.ids import make_id
from connectors.sandbox.salesforce.query import compile_query
from connectors.sandbox.salesforce.seed import Seed
from connectors.sandbox.salesforce.soql import parse
from connectors.sandbox.salesforce.store import Store

UTC = dt.UTC
N = 120
BASE = dt.datetime(2025, 6, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

conditions = st.sampled_from([
    ("Credit_Hold__c = true", lambda r: r["Credit_Hold__c"]),
    ("Credit_Hold__c != true", lambda r: not r["Credit_Hold__c"]),
    ("CurrencyIsoCode IN ('USD', 'JPY')", lambda r: r["CurrencyIsoCode"] in ("USD", "JPY")),
    ("Credit_Limit__c = null", lambda r: r["Credit_Limit__c"] is None),
    ("Credit_Limit__c > 20000", lambda r: r["Credit_Limit__c"] is not None
     and r["Credit_Limit__c"] > 20000),
    ("SystemModstamp >= 2025-06-01T00:00:10Z",
     lambda r: r["SystemModstamp"] >= BASE + dt.timedelta(seconds=10)),
    ("SystemModstamp < 2025-06-01T00:00:25.000+0000",
     lambda r: r["SystemModstamp"] < BASE + dt.timedelta(seconds=25)),
    ("Id > '001Dn000000000k'", lambda r: r["Id"] > "001Dn000000000kIAA"),
    ("Name LIKE '%Ltd'", lambda r: r["Name"].lower().endswith("ltd")),
    ("Billing_Hold__c = true", lambda r: r["Billing_Hold__c"]),
    (f"Id IN ('{make_id('001', 5)[:15]}', '{make_id('001', 72)}', '{make_id('0Q0', 1)}')",
     lambda r: r["Id"] in (make_id("001", 5), make_id("001", 72))),
    ("SystemModstamp IN (2025-06-01T00:00:03Z, 2025-06-01T00:00:30Z)",
     lambda r: r["SystemModstamp"] in (BASE + dt.timedelta(seconds=3),
                                       BASE + dt.timedelta(seconds=30))),
])
orders = st.sampled_from([
    ("", None),
    (" ORDER BY SystemModstamp, Id", lambda r: (r["SystemModstamp"], r["Id"])),
    (" ORDER BY SystemModstamp DESC, Id DESC", "desc"),
    (" ORDER BY Name, Id", lambda r: (r["Name"].casefold(), r["Id"])),
    (" ORDER BY Credit_Limit__c NULLS LAST, Id",
     lambda r: (r["Credit_Limit__c"] is None, r["Credit_Limit__c"] or 0, r["Id"])),
])
writes = st.lists(st.tuples(st.integers(0, N - 1), st.sampled_from(["hold", "limit", "delete",
                                                                    "late"])), max_size=12)


def _store(changes: list[tuple[int, str]]) -> Store:
    clock = SandboxClock()
    clock.set(dt.datetime(2026, 11, 21, tzinfo=UTC))
    store = Store(Seed(11, N, 16), clock)
    for index, kind in changes:
        if store.get(S.ACCOUNT, index)["IsDeleted"]:  # type: ignore[index]
            continue
        clock.advance(1)
        if kind == "hold":
            store.update(S.ACCOUNT, index, {"Billing_Hold__c": True})
        elif kind == "limit":
            store.update(S.ACCOUNT, index, {"Credit_Limit__c": None if index % 2 else Decimal(7)})
        elif kind == "delete":
            store.delete(S.ACCOUNT, index)
        else:
            store.update(S.ACCOUNT, index, {"Credit_Hold__c": True},
                         at=BASE + dt.timedelta(seconds=index % 30, milliseconds=5))
    return store


def _reference(store: Store, where: list[Any], order: Any, all_rows: bool) -> list[str]:
    rows = [store.get(S.ACCOUNT, i) for i in range(N)]
    rows = [r for r in rows if r is not None and (all_rows or not r["IsDeleted"])
            and all(pred(r) for pred in where)]
    if order == "desc":
        rows.sort(key=lambda r: (r["SystemModstamp"], r["Id"]), reverse=True)
    elif order is not None:
        rows.sort(key=order)
    return [r["Id"] for r in rows]


def _soql(where: list[str], order_by: str, limit: int | None) -> str:
    text = "SELECT Id, Name FROM Account"
    if where:
        text += " WHERE " + " AND ".join(where)
    return text + order_by + (f" LIMIT {limit}" if limit else "")


@SETTINGS
@given(st.lists(conditions, max_size=3), orders, writes, st.booleans(),
       st.one_of(st.none(), st.integers(1, 50)))
def test_engine_matches_reference(conds: list, order: tuple, changes: list, all_rows: bool,
                                  limit: int | None) -> None:
    store = _store(changes)
    plan = compile_query(parse(_soql([c for c, _ in conds], order[0], limit)), all_rows, N)
    snap = store.snapshot(S.ACCOUNT)
    expected = _reference(store, [p for _, p in conds], order[1], all_rows)
    got = [r["Id"] for r in plan.rows(snap)]
    if order[1] is None:
        got, expected = sorted(got), sorted(expected)
    assert got == expected[:limit] if limit else got == expected
    assert plan.count(snap) == len(got)


@SETTINGS
@given(writes, st.integers(1, 40), writes)
def test_pages_are_a_consistent_snapshot(before: list, size: int, during: list) -> None:
    store = _store(before)
    plan = compile_query(parse("SELECT Id FROM Account ORDER BY SystemModstamp, Id"), False, N)
    snap = store.snapshot(S.ACCOUNT)
    expected = [r["Id"] for r in plan.rows(snap)]
    plan = compile_query(parse("SELECT Id FROM Account ORDER BY SystemModstamp, Id"), False, N)
    cursors, cursor = Cursors(), Cursor(plan, store.snapshot(S.ACCOUNT), len(expected))
    seen: list[str] = []
    locator, offset = None, 0
    later = iter(during)
    for _ in itertools.count():
        body = answer(cursors, cursor, locator, offset, size, "v59.0", "query",
                      lambda r: {"Id": r["Id"]})
        seen += [r["Id"] for r in body["records"]]
        for index, _kind in itertools.islice(later, 2):
            if not store.get(S.ACCOUNT, index)["IsDeleted"]:  # type: ignore[index]
                store.update(S.ACCOUNT, index, {"Billing_Hold__c": True})
        if body["done"]:
            break
        locator, offset_text = body["nextRecordsUrl"].rsplit("/", 1)[1].split("-")
        offset = int(offset_text)
    assert seen == expected
