"""OData query options and server-driven paging for collection reads.

Rules kept:
- `Prefer: odata.maxpagesize=N` (1..5,000; larger values are ignored, as Dataverse ignores
  them) sets the page; the applied size is echoed in `Preference-Applied`.
- The next page is `@odata.nextLink` carrying the other query options plus an opaque
  `$skiptoken` cookie shaped like Dataverse's (`<cookie pagenumber=... pagingcookie=... />`).
- `$skip` answers Dataverse's error: it is not supported. `$top` returns at most that many rows
  in one page, without a next link. Unknown `$options` are refused, custom parameters ignored.
- Without `$orderby`, rows come in creation order and a page resumes after the last row's index,
  so a full read streams. With `$orderby`, the sorted (key, index) list is cached per query and
  store version; only the page's rows are generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from .schema import TableDef
from .wire import BAD_QUERY, DataverseError

MAX_PAGE = 5000
KNOWN = {"$select", "$filter", "$orderby", "$top", "$skiptoken", "$deltatoken", "$count"}
UNSUPPORTED = {"$expand", "$apply", "$search", "$format", "$compute", "$levels"}


@dataclass
class Query:
    select: list[str] = field(default_factory=list)
    filter: str | None = None
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    top: int | None = None
    count: bool = False
    skiptoken: str | None = None
    deltatoken: str | None = None
    page_size: int = MAX_PAGE
    size_applied: bool = False
    track: bool = False

    def link_params(self) -> list[tuple[str, str]]:
        """The options a next or delta link repeats."""
        out: list[tuple[str, str]] = []
        if self.select:
            out.append(("$select", ",".join(self.select)))
        if self.filter is not None:
            out.append(("$filter", self.filter))
        if self.orderby:
            out.append(("$orderby", ",".join(c + (" desc" if d else "") for c, d in self.orderby)))
        if self.count:
            out.append(("$count", "true"))
        return out


def _bad(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


def parse_prefer(header: str) -> tuple[int | None, bool, bool, bool]:
    """(maxpagesize, track-changes, continue-on-error, return=representation) from Prefer."""
    size: int | None = None
    track = cont = rep = False
    for part in header.split(","):
        token = part.strip().lower()
        if token.startswith("odata.maxpagesize="):
            try:
                size = int(token.split("=", 1)[1])
            except ValueError:
                size = None
        track = track or token == "odata.track-changes"
        cont = cont or token == "odata.continue-on-error"
        rep = rep or token == "return=representation"
    return size, track, cont, rep


def parse_query(args: Any, prefer: str, table: TableDef) -> Query:
    q = Query()
    for name in args:
        if name == "$skip":
            raise _bad("The query parameter $skip is not supported")  # message unconfirmed
        if name in UNSUPPORTED:
            raise _bad(f"The query parameter {name} is not supported by the sandbox.")
        if name.startswith("$") and name not in KNOWN:
            raise _bad(f"The query parameter '{name}' is not supported.")
    if args.get("$select"):
        q.select = [c.strip() for c in args["$select"].split(",") if c.strip()]
        for column in q.select:
            if column not in table.columns:
                raise _bad(f"Could not find a property named '{column}' on type "
                           f"'{table.type_name}'.")
    if "$filter" in args:
        q.filter = args["$filter"]
    if args.get("$orderby"):
        for part in args["$orderby"].split(","):
            words = part.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1] not in
                                               ("asc", "desc")):
                raise _bad(f"Syntax error in $orderby '{args['$orderby']}'.")
            if words[0] not in table.columns:
                raise _bad(f"Could not find a property named '{words[0]}' on type "
                           f"'{table.type_name}'.")
            q.orderby.append((words[0], len(words) == 2 and words[1] == "desc"))
    if "$top" in args:
        if not re.fullmatch(r"\d+", args["$top"]):
            raise _bad(f"Invalid value '{args['$top']}' for $top query option found. "
                       "The $top query option requires a non-negative integer value.")
        q.top = int(args["$top"])
    q.count = args.get("$count", "false").lower() == "true"
    q.skiptoken = args.get("$skiptoken")
    q.deltatoken = args.get("$deltatoken")
    size, q.track, _cont, _rep = parse_prefer(prefer)
    if size is not None and 0 < size <= MAX_PAGE:
        q.page_size, q.size_applied = size, True
    if q.top is not None:
        q.page_size = min(q.top, MAX_PAGE)
    return q


def make_cookie(page: int, table: TableDef, attrs: dict[str, Any], tracking: bool) -> str:
    inner = f'<cookie page="{page - 1}"><{table.key} ' + " ".join(
        f'{k}="{v}"' for k, v in attrs.items()) + " /></cookie>"
    return (f'<cookie pagenumber="{page}" pagingcookie="{quote(inner, safe="")}" '
            f'istracking="{"True" if tracking else "False"}" />')


def read_cookie(token: str) -> tuple[int, dict[str, str]]:
    """(page number, attributes) from a skiptoken this module made; else the OData error."""
    outer = re.fullmatch(r'<cookie pagenumber="(\d+)" pagingcookie="([^"]*)" '
                         r'istracking="(True|False)" />', token.strip())
    if outer is None:
        raise _bad(f"The $skiptoken '{token}' is not valid.")
    inner = unquote(outer.group(2))
    return int(outer.group(1)), dict(re.findall(r'(\w+)="([^"]*)"', inner.split(">", 1)[-1]))


def link(base: str, table: str, params: list[tuple[str, str]]) -> str:
    query = "&".join(f"{k}={quote(v, safe=',()$')}" for k, v in params)
    return f"{base}/{table}?{query}" if query else f"{base}/{table}"


def project(row: dict[str, Any], select: list[str], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.etag": f'W/"{row["versionnumber"]}"'}
    if select:
        for column in select:
            out[column] = row.get(column)
        out[key] = row[key]
    else:
        out.update(row)
    return out


def sort_key(value: Any) -> tuple[bool, Any]:
    """Nulls sort first ascending, as in Dataverse."""
    return (value is not None, value if value is not None else 0)
