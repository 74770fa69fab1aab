"""SOQL execution over seeded base rows and stored overrides, streaming where the order allows.

Rules this module keeps:
- Every name is resolved against the schema: unknown object → INVALID_TYPE, unknown field or a
  value of the wrong type → INVALID_FIELD (errors are SoqlError, rendered by the side).
- `query` hides IsDeleted rows; `queryAll` shows them.
- Streaming: with no ORDER BY, or ORDER BY monotone fields (Id, SystemModstamp, LastModifiedDate,
  CreatedDate, QuoteLineItem.QuoteId, PricebookEntry.Product2Id) all in one direction, base rows
  are read in index order and merged with the (small, sorted) set of changed rows; range filters on
  those fields narrow the base index range
  by bisection, so "SystemModstamp >= :cursor ORDER BY SystemModstamp, Id" never scans the table.
- Any other ORDER BY collects (sort values, index) pairs — not rows — and sorts them.
- Ties keep Id order, so paging is deterministic.
- A SELECT list may follow lookups by relationship name (`SBQQ__MasterContract__r.SBQQ__Quote__c`,
  up to five hops as in Salesforce): `select_field` checks the path against the schema and
  keeps its canonical spelling; the side renders it as Salesforce does, a nested record with
  its own `attributes`, or null when the lookup is empty. WHERE and ORDER BY take plain fields
  only (MALFORMED_QUERY otherwise).
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import schema as S
from .ids import make_id, parse_id, to18
from .seed import LINES_PER_QUOTE, Row, stamp
from .soql import (
    LIKE_PERCENT,
    LIKE_UNDERSCORE,
    BoolOp,
    Compare,
    In,
    Like,
    Literal,
    Not,
    Query,
    SoqlError,
)
from .store import Snapshot

Pred = Callable[[Row], bool]
_EXPECTED = {S.BOOLEAN: ("boolean",), S.DATE: ("date",), S.DATETIME: ("datetime",),
             S.CURRENCY: ("number",), S.DOUBLE: ("number",), S.INT: ("number",),
             S.STRING: ("string",), S.PICKLIST: ("string",), S.ID: ("string",),
             S.REFERENCE: ("string",)}
_TYPE_NAME = {S.BOOLEAN: "boolean", S.DATE: "date", S.DATETIME: "dateTime", S.CURRENCY: "currency",
              S.DOUBLE: "double", S.INT: "double", S.STRING: "string", S.PICKLIST: "picklist",
              S.ID: "id", S.REFERENCE: "reference"}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _norm(ftype: str, value: Any) -> Any:
    """Comparable form of a row or literal value for a field of type `ftype`."""
    if value is None:
        return None
    if ftype in (S.STRING, S.PICKLIST):
        return value.casefold()
    if ftype in (S.ID, S.REFERENCE):
        return to18(value) or value
    if ftype in (S.CURRENCY, S.DOUBLE, S.INT):
        return value if isinstance(value, (Decimal, int)) else Decimal(str(value))
    return value


def _monotone_key(obj: S.SObject, name: str) -> Callable[[int], Any] | None:
    """Value of a monotone field for base row i, computed without generating the row."""
    if name == "Id":
        return lambda i: make_id(obj.prefix, i)
    if name in ("SystemModstamp", "LastModifiedDate"):
        return stamp
    if name == "CreatedDate":
        return lambda i: stamp(i) - dt.timedelta(days=30)
    if obj.name == "QuoteLineItem" and name == "QuoteId":
        return lambda i: make_id("0Q0", i // LINES_PER_QUOTE)
    if obj.name == "SBQQ__QuoteLine__c" and name == "SBQQ__Quote__c":
        return lambda i: make_id("a0Q", i // LINES_PER_QUOTE)
    if obj.name == "PricebookEntry" and name == "Product2Id":
        return lambda i: make_id("01t", i // len(S.CURRENCIES))
    return None


@dataclass
class Plan:
    obj: S.SObject
    fields: tuple[str, ...]
    predicate: Pred
    order: tuple[tuple[S.Field, bool, bool], ...]
    limit: int | None
    include_deleted: bool
    is_count: bool
    base_lo: int = 0
    base_hi: int | None = None
    base_ids: list[int] | None = None  # Id IN (...): only these base indices
    exact: bool = True  # every base row in the narrowed range matches (no scan needed to count)
    _matches: list[int] | None = field(default=None, repr=False)  # filtered base indices, cached

    def _visible(self, row: Row) -> bool:
        return (self.include_deleted or not row["IsDeleted"]) and self.predicate(row)

    def _base(self, snap: Snapshot, reverse: bool = False) -> Iterator[Row]:
        """Unchanged base rows that match, in index order (or reversed).

        Without a residual filter the narrowed range streams as is; with one, the matching
        indices are found by one scan and kept (ints, not rows) for count and every page.
        """
        hi = snap.base_count if self.base_hi is None else min(self.base_hi, snap.base_count)
        if self.base_ids is None and self.exact:
            return snap.base_rows(self.base_lo, hi, reverse)
        if self._matches is None:
            if self.base_ids is None:
                candidates: Iterator[int] = iter(range(self.base_lo, hi))
            else:
                candidates = (i for i in self.base_ids if self.base_lo <= i < hi)
            changed, get, pred = snap.changed, snap.get, self.predicate
            self._matches = [i for i in candidates if i not in changed
                             and (r := get(i)) is not None and (self.exact or pred(r))]
        picked = reversed(self._matches) if reverse else self._matches
        return (r for i in picked if (r := snap.get(i)) is not None)

    def _changed(self, snap: Snapshot) -> list[Row]:
        return [r for r in snap.changed.values() if self._visible(r)]

    def streaming(self) -> bool:
        return all(f.monotone for f, _, _ in self.order) and len({d for _, d, _ in self.order}) <= 1

    def rows(self, snap: Snapshot) -> Iterator[Row]:
        rows = self._stream(snap) if self.streaming() else self._sorted(snap)
        return rows if self.limit is None else itertools.islice(rows, self.limit)

    def _stream(self, snap: Snapshot) -> Iterator[Row]:
        names = [f.name for f, _, _ in self.order] + ["Id"]
        desc = bool(self.order) and self.order[0][1]

        def key(row: Row) -> tuple[Any, ...]:
            return tuple(row[n] for n in names)

        changed = sorted(self._changed(snap), key=key, reverse=desc)
        return heapq.merge(self._base(snap, desc), changed, key=key, reverse=desc)

    def _sorted(self, snap: Snapshot) -> Iterator[Row]:
        """Sort (values, Id, changed row or None) entries: Id first, then each key, stably."""
        names = [f.name for f, _, _ in self.order]
        entries: list[tuple[tuple[Any, ...], str, Row | None]] = [
            (tuple(r[n] for n in names), r["Id"], r) for r in self._changed(snap)]
        entries += [(tuple(r[n] for n in names), r["Id"], None) for r in self._base(snap)]
        entries.sort(key=lambda e: e[1])
        for pos in range(len(self.order) - 1, -1, -1):
            fld, desc, nulls_first = self.order[pos]
            null_rank = 0 if nulls_first != desc else 1

            def sort_key(e: tuple[Any, ...], pos: int = pos, fld: S.Field = fld, nr: int = null_rank) -> Any:
                value = e[0][pos]
                return (nr, None) if value is None else (1 - nr, _norm(fld.type, value))

            entries.sort(key=sort_key, reverse=desc)
        for _, record_id, row in entries:
            row = row if row is not None else snap.get(_index(record_id))
            if row is not None:
                yield row

    def count(self, snap: Snapshot) -> int:
        changed = len(self._changed(snap))
        if self.exact and self.base_ids is None:
            hi = snap.base_count if self.base_hi is None else min(self.base_hi, snap.base_count)
            lo = min(self.base_lo, hi)
            overridden = sum(1 for i in snap.changed if lo <= i < hi)
            name, exists = self.obj.name, snap.seed.exists
            present = (hi - lo) if snap.seed.dense(name) else sum(
                1 for i in range(lo, hi) if exists(name, i))
            total = changed + present - overridden
        else:
            total = changed + sum(1 for _ in self._base(snap))
        return total if self.limit is None else min(total, self.limit)


def _index(record_id: str) -> int:
    parsed = parse_id(record_id)
    return parsed[1] if parsed else -1


class _Compiler:
    def __init__(self, obj: S.SObject) -> None:
        self.obj = obj

    def select_field(self, name: str) -> str:
        """A selected field or relationship path, in its canonical spelling."""
        if "." not in name:
            return self.field(name).name
        *hops, last = name.split(".")
        if len(hops) > 5:
            raise SoqlError("MALFORMED_QUERY", f"relationship path '{name}' is deeper than five "
                            "levels")
        obj, out = self.obj, []
        for hop in hops:
            found = S.relationship(obj, hop)
            if found is None:
                raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{hop}' in "
                                "field path. If you are attempting to use a custom relationship, "
                                "be sure to append the '__r' after the custom relationship name. "
                                "Please reference your WSDL or the describe call for the "
                                "appropriate names.")
            out.append(S.relationship_name(found[0]) or hop)
            obj = found[1]
        fld = _Compiler(obj).field(last)
        return ".".join([*out, fld.name])

    def field(self, name: str) -> S.Field:
        if "." in name:
            raise SoqlError("MALFORMED_QUERY", f"relationship path '{name}' is not supported "
                            "in WHERE or ORDER BY by the sandbox's SOQL subset")
        fld = self.obj.field(name)
        if fld is None:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{self.obj.name}'"
                            ". If you are attempting to use a custom field, be sure to append the "
                            "'__c' after the custom field name. Please reference your WSDL or the "
                            "describe call for the appropriate names.")
        return fld

    def value(self, fld: S.Field, lit: Literal) -> Any:
        if lit.kind != "null" and lit.kind not in _EXPECTED[fld.type]:
            quoted = " and should not be enclosed in quotes" if lit.kind == "string" else ""
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{fld.name}' "
                            f"must be of type {_TYPE_NAME[fld.type]}{quoted}")
        return _norm(fld.type, lit.value)

    def cond(self, node: Any) -> Pred:
        if isinstance(node, BoolOp):
            preds = [self.cond(i) for i in node.items]
            if node.op == "and":
                return lambda r: all(p(r) for p in preds)
            return lambda r: any(p(r) for p in preds)
        if isinstance(node, Not):
            inner = self.cond(node.item)
            return lambda r: not inner(r)
        fld = self.field(node.field)
        name, ftype = fld.name, fld.type
        if isinstance(node, Like):
            if ftype not in (S.STRING, S.PICKLIST, S.ID, S.REFERENCE):
                raise SoqlError("INVALID_FIELD", f"invalid operator on field: {name}: LIKE")
            regex = re.compile("".join(
                ".*" if c == "%" else "." if c == "_" else re.escape(
                    "%" if c == LIKE_PERCENT else "_" if c == LIKE_UNDERSCORE else c)
                for c in node.pattern), re.IGNORECASE | re.DOTALL)
            return lambda r: r[name] is not None and regex.fullmatch(r[name]) is not None
        if isinstance(node, In):
            values = {self.value(fld, v) for v in node.values}
            if node.negate:
                return lambda r: _norm(ftype, r[name]) not in values
            return lambda r: _norm(ftype, r[name]) in values
        value = self.value(fld, node.value)
        if ftype == S.BOOLEAN and node.op not in ("=", "!="):
            raise SoqlError("INVALID_FIELD", f"invalid operator on boolean field: {name}")
        compare = _OPS[node.op]
        if value is None:
            if node.op not in ("=", "!="):
                raise SoqlError("MALFORMED_QUERY", f"invalid operator with null: {node.op}")
            return (lambda r: r[name] is None) if node.op == "=" else (lambda r: r[name] is not None)
        if node.op == "!=":
            return lambda r: r[name] is None or _norm(ftype, r[name]) != value
        return lambda r: r[name] is not None and compare(_norm(ftype, r[name]), value)

    def narrow(self, plan: Plan, conjuncts: list[Any], base_count: int) -> None:
        """Use range conditions on monotone fields to bound the base rows to read."""
        for node in conjuncts:
            consumed = False
            if isinstance(node, Compare) and node.value.kind != "null":
                fld = self.field(node.field)
                key = _monotone_key(self.obj, fld.name) if fld.monotone else None
                if fld.name == "IsDeleted" and node.op in ("=", "!="):
                    if (node.value.value is True) == (node.op == "="):
                        plan.base_hi = 0
                    consumed = True
                elif key is not None and node.op != "!=":
                    value = self.value(fld, node.value)
                    seq = range(base_count)
                    if node.op in (">", ">=", "="):
                        find = bisect.bisect_right if node.op == ">" else bisect.bisect_left
                        plan.base_lo = max(plan.base_lo, find(seq, value, key=key))
                    if node.op in ("<", "<=", "="):
                        find = bisect.bisect_left if node.op == "<" else bisect.bisect_right
                        hi = find(seq, value, key=key)
                        plan.base_hi = hi if plan.base_hi is None else min(plan.base_hi, hi)
                    consumed = True
            elif isinstance(node, In) and not node.negate:
                consumed = self._narrow_in(plan, node, base_count)
            plan.exact = plan.exact and consumed


    def _narrow_in(self, plan: Plan, node: In, base_count: int) -> bool:
        """`Id IN (...)` → those rows; `<other monotone field> IN (...)` → their index ranges."""
        fld = self.field(node.field)
        key = _monotone_key(self.obj, fld.name) if fld.monotone else None
        if key is None:
            return False
        if fld.name == "Id":
            found = {_index(v.value) for v in node.values if isinstance(v.value, str)
                     and (to18(v.value) or "")[:3] == self.obj.prefix}
        else:
            seq, found = range(base_count), set()
            for lit in node.values:
                value = self.value(fld, lit)
                if value is not None:
                    found.update(range(bisect.bisect_left(seq, value, key=key),
                                       bisect.bisect_right(seq, value, key=key)))
        plan.base_ids = sorted(found if plan.base_ids is None else found & set(plan.base_ids))
        return True


def compile_query(query: Query, include_deleted: bool, base_count: int) -> Plan:
    obj = S.sobject(query.sobject)
    if obj is None:
        raise SoqlError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported. If you "
                        "are attempting to use a custom object, be sure to append the '__c' after "
                        "the entity name. Please reference your WSDL or the describe call for the "
                        "appropriate names.")
    comp = _Compiler(obj)
    fields = tuple(comp.select_field(n) for n in query.fields)
    duplicate = next((n for i, n in enumerate(fields) if n in fields[:i]), None)
    if duplicate is not None:
        raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {duplicate}")
    order = tuple((comp.field(o.field), o.desc, o.nulls_first) for o in query.order)
    predicate: Pred = comp.cond(query.where) if query.where is not None else (lambda r: True)
    plan = Plan(obj, fields, predicate, order, query.limit, include_deleted, query.is_count)
    if query.where is not None:
        where = query.where
        conjuncts = list(where.items) if isinstance(where, BoolOp) and where.op == "and" else [where]
        comp.narrow(plan, conjuncts, base_count)
    return plan
