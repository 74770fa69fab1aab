"""A SOQL subset: tokenizer and recursive-descent parser producing a small syntax tree.

Rules this module keeps:
- Grammar: SELECT (field, ... | COUNT()) FROM Object [WHERE cond] [ORDER BY field [ASC|DESC]
  [NULLS FIRST|LAST], ...] [LIMIT n]. Conditions: =, !=, <>, <, <=, >, >=, [NOT] IN (...), LIKE,
  NOT, AND / OR (mixing them needs parentheses, as in Salesforce), parentheses. Values: 'strings'
  with the backslash escapes format_soql writes, numbers, TRUE/FALSE, NULL, dates (2026-11-21)
  and date-times (2026-11-21T23:43:43Z, +00:00, .000+0000, any fraction).
- Names may be relationship paths (`A__r.B__c`); the query engine takes them in a SELECT list
  only.
- Anything else (date literals such as TODAY, GROUP BY, OFFSET, bind
  variables, ...) raises SoqlError("MALFORMED_QUERY"): the sandbox refuses rather than guesses.
- Names are not checked here (that is the query engine's job, against the schema).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})(?![\d:T])
    |(?P<number>-?\d+(?:\.\d+)?)(?![\w.])
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)""",
    re.VERBOSE,
)
LIKE_PERCENT, LIKE_UNDERSCORE = "\ue000", "\ue001"  # escaped % and _ (literal in LIKE)
_PLAIN = str.maketrans({LIKE_PERCENT: "%", LIKE_UNDERSCORE: "_"})
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b",
            "f": "\f", "%": LIKE_PERCENT, "_": LIKE_UNDERSCORE}
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "in", "like", "null", "true",
             "false", "order", "by", "asc", "desc", "nulls", "first", "last", "limit", "count"}
_UNSUPPORTED = {"offset", "group", "having", "with", "for", "using", "includes", "excludes",
                "typeof", "update", "scope", "fields"}


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    value: Any
    pos: int


@dataclass(frozen=True)
class Literal:
    kind: str  # string | number | boolean | null | date | datetime
    value: Any


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Literal


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class Like:
    field: str
    pattern: str


@dataclass(frozen=True)
class Not:
    item: Cond


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Cond, ...]


Cond = Compare | In | Like | Not | BoolOp


@dataclass(frozen=True)
class OrderItem:
    field: str
    desc: bool
    nulls_first: bool


@dataclass(frozen=True)
class Query:
    fields: tuple[str, ...]  # empty for COUNT()
    sobject: str
    where: Cond | None
    order: tuple[OrderItem, ...]
    limit: int | None

    @property
    def is_count(self) -> bool:
        return not self.fields


def _unescape(body: str, pos: int) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise SoqlError("MALFORMED_QUERY", f"Invalid string literal at position {pos}: "
                                f"unknown escape '\\{nxt}'")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_datetime(text: str) -> dt.datetime:
    """A SOQL/ISO date-time with offset (Z, +00:00, +0000, any fraction) as aware UTC."""
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    head, _, frac_tz = text.partition(".")
    if frac_tz:
        frac = re.match(r"\d+", frac_tz).group(0)  # type: ignore[union-attr]
        text = head + "." + (frac + "000000")[:6] + frac_tz[len(frac):]
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text[pos:pos + 20]}' "
                            f"at position {pos}")
        kind, raw = match.lastgroup or "", match.group(0)
        if kind != "ws":
            value: Any = raw
            try:
                if kind == "datetime":
                    value = parse_datetime(raw)
                elif kind == "date":
                    value = dt.date.fromisoformat(raw)
            except ValueError:
                raise SoqlError("MALFORMED_QUERY", f"invalid date: '{raw}'") from None
            if kind == "number":
                value = Decimal(raw)
            elif kind == "string":
                value = _unescape(raw[1:-1], pos)
            elif kind == "ident" and raw.lower() in _KEYWORDS:
                kind, value = "kw", raw.lower()
            elif kind == "ident" and raw.lower() in _UNSUPPORTED:
                raise SoqlError("MALFORMED_QUERY",
                                f"'{raw}' is not supported by the sandbox's SOQL subset")
            tokens.append(Token(kind, raw, value, pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def fail(self, expected: str) -> SoqlError:
        tok = self.peek()
        found = f"unexpected token: '{tok.text}'" if tok else "unexpected end of query"
        return SoqlError("MALFORMED_QUERY", f"{found} (expected {expected})")

    def accept(self, kind: str, value: Any = None) -> Token | None:
        tok = self.peek()
        if tok and tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def expect(self, kind: str, value: Any = None, what: str = "") -> Token:
        tok = self.accept(kind, value)
        if tok is None:
            raise self.fail(what or str(value or kind))
        return tok

    def query(self) -> Query:
        self.expect("kw", "select")
        fields: list[str] = []
        if self.accept("kw", "count"):
            self.expect("punct", "(")
            self.expect("punct", ")")
        else:
            fields.append(self.expect("ident", what="a field name").text)
            while self.accept("punct", ","):
                fields.append(self.expect("ident", what="a field name").text)
        self.expect("kw", "from")
        sobject = self.expect("ident", what="an object name").text
        where = self.condition() if self.accept("kw", "where") else None
        order: list[OrderItem] = []
        if self.accept("kw", "order"):
            self.expect("kw", "by")
            order.append(self.order_item())
            while self.accept("punct", ","):
                order.append(self.order_item())
        limit = None
        if self.accept("kw", "limit"):
            tok = self.expect("number", what="a row count")
            if tok.value != tok.value.to_integral_value() or tok.value < 0:
                raise SoqlError("MALFORMED_QUERY", f"invalid LIMIT: {tok.text}")
            limit = int(tok.value)
        if self.peek() is not None:
            raise self.fail("end of query")
        return Query(tuple(fields), sobject, where, tuple(order), limit)

    def order_item(self) -> OrderItem:
        name = self.expect("ident", what="a field name").text
        desc = False
        if self.accept("kw", "desc"):
            desc = True
        else:
            self.accept("kw", "asc")
        nulls_first = not desc
        if self.accept("kw", "nulls"):
            nulls_first = bool(self.accept("kw", "first"))
            if not nulls_first:
                self.expect("kw", "last", what="FIRST or LAST")
        return OrderItem(name, desc, nulls_first)

    def condition(self) -> Cond:
        items = [self.unary()]
        ops: set[str] = set()
        while (tok := self.peek()) and tok.kind == "kw" and tok.value in ("and", "or"):
            self.i += 1
            ops.add(tok.value)
            items.append(self.unary())
        if len(ops) > 1:
            raise SoqlError("MALFORMED_QUERY",
                            "unexpected token: mixing AND and OR needs parentheses")
        return items[0] if not ops else BoolOp(ops.pop(), tuple(items))

    def unary(self) -> Cond:
        if self.accept("kw", "not"):
            return Not(self.unary())
        if self.accept("punct", "("):
            cond = self.condition()
            self.expect("punct", ")")
            return cond
        name = self.expect("ident", what="a field name").text
        if self.accept("kw", "like"):
            return Like(name, self.expect("string", what="a string pattern").value)
        negate = bool(self.accept("kw", "not"))
        if negate or self.accept("kw", "in"):
            if negate:
                self.expect("kw", "in")
            self.expect("punct", "(")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.expect("punct", ")")
            return In(name, tuple(values), negate)
        op = self.expect("op", what="a comparison operator").text
        return Compare(name, "!=" if op == "<>" else op, self.literal())

    def literal(self) -> Literal:
        tok = self.peek()
        if tok is None:
            raise self.fail("a value")
        self.i += 1
        if tok.kind == "string":
            return Literal("string", tok.value.translate(_PLAIN))
        if tok.kind in ("number", "date", "datetime"):
            return Literal(tok.kind, tok.value)
        if tok.kind == "kw" and tok.value in ("true", "false"):
            return Literal("boolean", tok.value == "true")
        if tok.kind == "kw" and tok.value == "null":
            return Literal("null", None)
        self.i -= 1
        raise self.fail("a value")


def parse(text: str) -> Query:
    """Parse one SOQL statement or raise SoqlError."""
    return _Parser(text).query()
