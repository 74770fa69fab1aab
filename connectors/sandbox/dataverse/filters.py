"""A `$filter` subset compiled to a Python predicate over a row.

Supported: eq ne gt ge lt le, and or not, parentheses, null, true/false, 'strings' (with ''
escaping), GUIDs, integers and decimals, dates and DateTimeOffset literals, one side a column.
Rules kept:
- Everything outside that subset (functions, arithmetic, lambda, unknown columns, type clashes)
  raises `DataverseError(400, 0x80060888, ...)` as Dataverse does for a query it cannot parse;
  nothing is guessed.
- Comparisons follow OData: `eq null` / `ne null` test for null; an ordering comparison with a
  null column is false.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .schema import BOOL, DATE, DATETIME, GUID, INT, STRING, TableDef
from .wire import BAD_QUERY, DataverseError, parse_time

Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}\b)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?\b)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<paren>[()])
  | (?P<comma>,)
  | (?P<other>.)
""", re.VERBOSE)
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


def _bad(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


class _Literal:
    def __init__(self, kind: str, value: Any) -> None:
        self.kind = kind
        self.value = value


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        if kind == "ws":
            continue
        if kind == "other":
            raise _bad(f"Syntax error at position {match.start()} in '{text}'.")
        out.append((kind, match.group()))
    return out


class _Parser:
    def __init__(self, text: str, table: TableDef) -> None:
        self.text = text
        self.table = table
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _bad(f"Syntax error: unexpected end of the expression '{self.text}'.")
        self.pos += 1
        return tok

    def word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "name" and tok[1] in words

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            raise _bad(f"Syntax error at '{self.toks[self.pos][1]}' in '{self.text}'.")
        return pred

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while self.word("or"):
            self.take()
            right = self.and_expr()
            left = _either(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while self.word("and"):
            self.take()
            right = self.unary()
            left = _both(left, right)
        return left

    def unary(self) -> Predicate:
        if self.word("not"):
            self.take()
            inner = self.unary()
            return lambda row: not inner(row)
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.or_expr()
            if self.take() != ("paren", ")"):
                raise _bad(f"Syntax error: ')' expected in '{self.text}'.")
            return inner
        return self.comparison()

    def operand(self) -> str | _Literal:
        kind, text = self.take()
        if kind == "name":
            if self.peek() == ("paren", "("):
                raise _bad(f"The function '{text}' is not supported in $filter by the sandbox.")
            if text in ("true", "false"):
                return _Literal("bool", text == "true")
            if text == "null":
                return _Literal("null", None)
            if text not in self.table.columns:
                raise _bad(f"Could not find a property named '{text}' on type "
                           f"'{self.table.type_name}'.")
            return text
        if kind == "string":
            return _Literal("string", text[1:-1].replace("''", "'"))
        if kind == "guid":
            return _Literal("guid", text.lower())
        if kind == "datetime":
            try:
                return _Literal("datetime", parse_time(text))
            except ValueError:
                raise _bad(f"Unrecognized 'Edm.DateTimeOffset' literal '{text}'.") from None
        if kind == "date":
            return _Literal("date", text)
        if kind == "number":
            try:
                return _Literal("number", Decimal(text.rstrip("mMdDfFlL")))
            except InvalidOperation:
                raise _bad(f"Unrecognized numeric literal '{text}'.") from None
        raise _bad(f"Syntax error at '{text}' in '{self.text}'.")

    def comparison(self) -> Predicate:
        left = self.operand()
        tok = self.peek()
        if tok is None or tok[0] != "name" or tok[1] not in _COMPARE:
            found = tok[1] if tok else "end of expression"
            raise _bad(f"Syntax error: a comparison operator was expected at '{found}' "
                       f"in '{self.text}'.")
        op = self.take()[1]
        right = self.operand()
        if isinstance(left, _Literal) and isinstance(right, str):
            left, right, op = right, left, _FLIP[op]
        if not isinstance(left, str) or not isinstance(right, _Literal):
            raise _bad(f"The $filter expression '{self.text}' must compare a property "
                       "with a literal in the sandbox.")
        return self.compile(left, op, right)

    def compile(self, column: str, op: str, lit: _Literal) -> Predicate:
        ctype = self.table.columns[column]
        if lit.kind == "null":
            if op not in ("eq", "ne"):
                return lambda row: False
            return (lambda row: row.get(column) is None) if op == "eq" else (
                lambda row: row.get(column) is not None)
        value = self.coerce(column, ctype, lit)
        fn = _OPS[op]
        if ctype == DATETIME:
            def test_time(row: dict[str, Any]) -> bool:
                cell = row.get(column)
                return cell is not None and fn(parse_time(cell), value)
            return test_time
        if op in ("eq", "ne"):
            return lambda row: fn(row.get(column), value)
        return lambda row: row.get(column) is not None and fn(row[column], value)

    def coerce(self, column: str, ctype: str, lit: _Literal) -> Any:
        ok = {GUID: ("guid",), STRING: ("string",), BOOL: ("bool",), INT: ("number",),
              DATETIME: ("datetime", "date"), DATE: ("date",)}.get(ctype, ("number",))
        if lit.kind not in ok:
            raise _bad(f"A binary operator with incompatible types was detected. Found operand "
                       f"types '{ctype}' and '{_EDM.get(lit.kind, lit.kind)}' for property "
                       f"'{column}'.")
        if ctype == INT and lit.value != lit.value.to_integral_value():
            raise _bad(f"Unrecognized 'Edm.Int32' literal '{lit.value}' for '{column}'.")
        if ctype == DATETIME and lit.kind == "date":
            return dt.datetime.fromisoformat(lit.value).replace(tzinfo=dt.UTC)
        return lit.value


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) or b(row)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) and b(row)


_EDM = {"guid": GUID, "string": STRING, "bool": BOOL, "number": "Edm.Decimal",
        "datetime": DATETIME, "date": DATE}


def compile_filter(text: str, table: TableDef) -> Predicate:
    """Compile `$filter` text for `table`; raise DataverseError for anything unsupported."""
    if not text.strip():
        raise _bad("The $filter query option must not be empty.")
    return _Parser(text, table).parse()
