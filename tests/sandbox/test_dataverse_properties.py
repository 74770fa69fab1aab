"""Property tests, in process (no HTTP): GUID codec, paging cookies, paging and delta
completeness under random writes, and `$filter` comparisons against plain Python."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sandbox.core import SandboxContext
from connectors.sandbox.dataverse.filters import compile_filter
from connectors.sandbox.dataverse.ids import GuidCodec
from connectors.sandbox.dataverse.paging import make_cookie, parse_query, read_cookie
from connectors.sandbox.dataverse.schema import ACCOUNTS
from connectors.sandbox.dataverse.side import DataverseSide

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.integers(0, 2**31), st.sampled_from(["accounts", "quotes", "products"]),
       st.integers(0, 2**40))
def test_guid_codec_round_trips(seed: int, table: str, index: int) -> None:
    codec = GuidCodec(seed, table)
    guid = codec.guid(index)
    assert len(guid) == 36 and guid == guid.lower()
    assert codec.index(guid) == index
    assert codec.index(guid.upper()) == index
    assert GuidCodec(seed + 1, table).index(guid) is None


@FAST
@given(st.integers(1, 10_000), st.dictionaries(st.sampled_from(["resume", "offset", "version"]),
                                               st.integers(0, 10**12)), st.booleans())
def test_paging_cookie_round_trips(page: int, attrs: dict[str, int], tracking: bool) -> None:
    number, back = read_cookie(make_cookie(page, ACCOUNTS, attrs, tracking))
    assert number == page and {k: int(v) for k, v in back.items()} == attrs


def _side() -> DataverseSide:
    ctx = SandboxContext("https://127.0.0.1:1", seed=5)
    ctx.clock.set(dt.datetime(2026, 11, 21, 23, 43, 43, tzinfo=dt.UTC))
    return DataverseSide(ctx, accounts=120, products=5, quotes=8)


def _read(side: DataverseSide, prefer: str, query: dict[str, str]) -> tuple[list[dict], str]:
    rows: list[dict] = []
    args = dict(query)
    while True:
        body, _headers = side.reader.read(ACCOUNTS, parse_query(args, prefer, ACCOUNTS))
        rows += body["value"]
        link = body.get("@odata.nextLink")
        if not link:
            return rows, body.get("@odata.deltaLink", "")
        args = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


_OPS = st.lists(st.tuples(st.sampled_from(["update", "delete", "create"]),
                          st.integers(0, 140)), max_size=25)


@FAST
@given(st.integers(1, 60), _OPS)
def test_paged_read_and_delta_see_every_row_once(page_size: int,
                                                 ops: list[tuple[str, int]]) -> None:
    side = _side()
    prefer = f"odata.track-changes,odata.maxpagesize={page_size}"
    first, delta = _read(side, prefer, {"$select": "name"})
    ids = [r["accountid"] for r in first]
    assert len(ids) == len(set(ids)) == 120
    touched: dict[str, Any] = {}
    for n, (op, index) in enumerate(ops):
        live = [i for i, _r in side.store.scan("accounts")]
        target = live[index % len(live)]
        if op == "update":
            row = side.admin("update", {"table": "accounts", "index": target,
                                        "values": {"name": f"v{n}"}})
            touched[row["accountid"]] = f"v{n}"
        elif op == "delete" and len(live) > 1:
            touched[side.admin("delete", {"table": "accounts", "index": target})["deleted"]] = None
        elif op == "create":
            row = side.admin("create", {"table": "accounts", "row": {"name": f"new{n}"}})
            touched[row["accountid"]] = f"new{n}"
    args = {k: v[0] for k, v in parse_qs(urlsplit(delta).query).items()}
    changes: list[dict] = []
    while True:
        body, _h = side.reader.read(ACCOUNTS, parse_query(args, f"odata.maxpagesize={page_size}",
                                                          ACCOUNTS))
        changes += body["value"]
        if "@odata.nextLink" not in body:
            break
        args = {k: v[0] for k, v in parse_qs(urlsplit(body["@odata.nextLink"]).query).items()}
    seen = {c.get("accountid") or c["id"]: c.get("name") for c in changes}
    assert len(seen) == len(changes)  # each changed row once, in its latest state
    assert seen == touched
    after, _d = _read(side, f"odata.maxpagesize={page_size}", {})
    assert [r["accountid"] for r in after] == [side.store.get("accounts", i)["accountid"]
                                               for i, _r in side.store.scan("accounts")]


_COLUMNS = {"creditlimit": st.one_of(st.none(), st.decimals(0, 10**6, places=2)),
            "creditonhold": st.one_of(st.none(), st.booleans()),
            "name": st.one_of(st.none(), st.text("ab'c ", max_size=4)),
            "statecode": st.one_of(st.none(), st.integers(0, 3))}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


@FAST
@given(st.data())
def test_filter_comparison_matches_python(data: st.DataObject) -> None:
    column = data.draw(st.sampled_from(sorted(_COLUMNS)))
    op = data.draw(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]))
    if column == "creditonhold":
        op = data.draw(st.sampled_from(["eq", "ne"]))
    literal = data.draw(_COLUMNS[column].filter(lambda v: v is not None))
    cell = data.draw(_COLUMNS[column])
    predicate = compile_filter(f"{column} {op} {_literal(literal)}", ACCOUNTS)
    lit = Decimal(str(literal)) if isinstance(literal, Decimal) else literal
    if cell is None:
        expected = op == "ne"
    else:
        expected = {"eq": cell == lit, "ne": cell != lit, "gt": cell > lit, "ge": cell >= lit,
                    "lt": cell < lit, "le": cell <= lit}[op]
    assert predicate({column: cell}) is expected
    negated = compile_filter(f"not ({column} {op} {_literal(literal)})", ACCOUNTS)
    assert negated({column: cell}) is (not expected)
