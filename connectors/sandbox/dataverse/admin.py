"""Admin actions: what a CRM user or the test would change by hand, outside the Web API.

Rules kept:
- Every change goes through the store like a Web API write: a new version number, `modifiedon`
  from the sandbox clock, so change tracking and `modifiedon` polling both see it.
- Rows are named by GUID (`id`, or the table's key) or by seed index (`index`).
- Answers are plain JSON values (Money as numbers); an unknown action or row raises
  `KeyError`/`ValueError` with the action and value in the message, for the server to report.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from . import writes
from .schema import QUOTE_STATUS, TABLES, TableDef
from .wire import DataverseError, dumps, local_midnight

if TYPE_CHECKING:
    from .side import DataverseSide


def _plain(value: Any) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(dumps(value))
    return plain


class Admin:
    def __init__(self, side: DataverseSide) -> None:
        self.side = side

    def run(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, "do_" + action, None)
        if handler is None:
            known = sorted(n[3:] for n in dir(self) if n.startswith("do_"))
            raise KeyError(f"unknown dataverse admin action {action!r}; known: {known}")
        try:
            answer: dict[str, Any] = handler(payload)
            return answer
        except DataverseError as err:
            raise ValueError(f"dataverse admin {action}: {err.message}") from None

    def _table(self, payload: dict[str, Any], default: str | None = None) -> TableDef:
        name = payload.get("table", default)
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; known: {sorted(TABLES)}")
        return TABLES[name]

    def _index(self, table: TableDef, payload: dict[str, Any]) -> int:
        store = self.side.store
        if "index" in payload:
            index = int(payload["index"])
            if store.get(table.name, index) is None:
                raise ValueError(f"{table.name} has no live row at index {index}")
            return index
        guid = str(payload.get("id") or payload.get(table.key) or "")
        found = store.index_of(table.name, guid)
        if found is None:
            raise ValueError(f"{table.name} has no live row with id {guid!r}")
        return found

    def _update(self, table: TableDef, payload: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        store = self.side.store
        clean = writes.validate(table, values, store, ieee754=True)
        return _plain(store.update(table.name, self._index(table, payload), clean))

    # --- actions -----------------------------------------------------------------------------
    def do_info(self, payload: dict[str, Any]) -> dict[str, Any]:
        side = self.side
        return {"tenant": side.tenant, "client_id": side.client_id,
                "client_secret": side.client_secret,
                "authority": f"{side.base_url}/{side.tenant}",
                "scope": f"{side.base_url}/.default", "api_url": side.api_url,
                "rows": {name: side.store.count(name) for name in TABLES},
                "version": side.store.version, "time_zone": str(side.time_zone)}

    def do_guid(self, payload: dict[str, Any]) -> dict[str, Any]:
        table = self._table(payload, "accounts")
        index = int(payload.get("index", 0))
        return {"id": self.side.store.guid_of(table.name, index)}

    def do_get(self, payload: dict[str, Any]) -> dict[str, Any]:
        table = self._table(payload, "accounts")
        return _plain(self.side.store.get(table.name, self._index(table, payload)))

    def do_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._update(self._table(payload), payload, dict(payload.get("values", {})))

    def do_set_creditonhold(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._update(TABLES["accounts"], payload,
                            {"creditonhold": bool(payload.get("value", True))})

    def do_set_creditlimit(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._update(TABLES["accounts"], payload,
                            {"creditlimit": _number(payload.get("value"))})

    def do_win_quote(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._update(TABLES["quotes"], payload, {"statecode": 2,
                                                        "statuscode": QUOTE_STATUS[2]})

    def do_revise_quote(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Revise a quote as a Dynamics user does (the ``ReviseQuote`` action): the quote is
        closed with status reason Revised (statecode 3, statuscode 7) and copied to a new
        draft quote (a new ``quoteid``) with the same ``quotenumber``, ``revisionnumber`` + 1
        and copies of its lines. Answers the new quote's id and its lines' ids, in line
        order."""
        quotes, details = TABLES["quotes"], TABLES["quotedetails"]
        store = self.side.store
        index = self._index(quotes, payload)
        old = store.get(quotes.name, index) or {}
        lines = sorted((row for _, row in store.scan(details.name)
                        if row.get("_quoteid_value") == old[quotes.key]),
                       key=lambda row: row.get("lineitemnumber") or 0)
        self._update(quotes, {"index": index}, {"statecode": 3, "statuscode": 7})
        copied = {k: v for k, v in old.items() if k in quotes.columns and k not in _NOT_COPIED}
        new = store.create(quotes.name, {**copied, "revisionnumber": (
            old.get("revisionnumber") or 0) + 1, "statecode": 0, "statuscode": QUOTE_STATUS[0]})
        line_ids = [store.create(details.name, {
            **{k: v for k, v in line.items() if k in details.columns and k not in _NOT_COPIED},
            "_quoteid_value": new[quotes.key]})[details.key] for line in lines]
        return {"quoteid": new[quotes.key], "quotedetailids": line_ids}

    def do_renew_quote(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A renewal quote as an org with the renewal columns makes one (Dataverse has no
        renewal of its own; config/fieldmaps/dynamics_deals.toml): a new draft quote with
        ``quotenumber`` (default the renewed one's + ``-R``), revision 0, ``new_quotetype``
        Renewal (100000002), the lookup ``new_renewsquote`` to the quote renewed, and copies of
        its lines; the renewed quote is left as it is. Answers the new quote's id and its
        lines' ids, in line order (set the start date with ``set_local_date``, the lines with
        ``update``, then ``win_quote``)."""
        quotes, details = TABLES["quotes"], TABLES["quotedetails"]
        store = self.side.store
        old = store.get(quotes.name, self._index(quotes, payload)) or {}
        lines = sorted((row for _, row in store.scan(details.name)
                        if row.get("_quoteid_value") == old[quotes.key]),
                       key=lambda row: row.get("lineitemnumber") or 0)
        copied = {k: v for k, v in old.items() if k in quotes.columns and k not in _NOT_COPIED
                  and k != "new_canceldate"}
        new = store.create(quotes.name, {
            **copied, "quotenumber": payload.get("quotenumber") or f"{old.get('quotenumber')}-R",
            "revisionnumber": 0, "statecode": 0, "statuscode": QUOTE_STATUS[0],
            "new_quotetype": RENEWAL_TYPE, "_new_renewsquote_value": old[quotes.key]})
        line_ids = [store.create(details.name, {
            **{k: v for k, v in line.items() if k in details.columns and k not in _NOT_COPIED
               and k != "new_canceldate"},
            "_quoteid_value": new[quotes.key]})[details.key] for line in lines]
        return {"quoteid": new[quotes.key], "quotedetailids": line_ids}

    def do_set_quote_state(self, payload: dict[str, Any]) -> dict[str, Any]:
        state = int(payload["statecode"])
        return self._update(TABLES["quotes"], payload, {"statecode": state,
                                                        "statuscode": QUOTE_STATUS[state]})

    def do_delete(self, payload: dict[str, Any]) -> dict[str, Any]:
        table = self._table(payload)
        index = self._index(table, payload)
        guid = self.side.store.guid_of(table.name, index)
        self.side.store.delete(table.name, index)
        return {"deleted": guid, "table": table.name}

    def do_delete_account(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.do_delete(dict(payload, table="accounts"))

    def do_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        table = self._table(payload)
        return _plain(writes.create(self.side.store, table, dict(payload.get("row", {})),
                                   ieee754=True))

    def do_set_local_date(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A user in the org's time zone enters `date` into a "User Local" date-only `column`:
        stored (and served) as the UTC instant of that local midnight."""
        table = self._table(payload)
        column = str(payload.get("column"))
        if column not in table.user_local:
            raise ValueError(f"{table.name}.{column} is not a user-local date column; those "
                             f"are: {sorted(table.user_local)}")
        day = dt.date.fromisoformat(str(payload["date"]))
        return self._update(table, payload, {column: local_midnight(day, self.side.time_zone)})

    def do_set_time_zone(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The zone the org's users enter dates in (IANA name); the rows are seeded again."""
        self.side.set_time_zone(str(payload["time_zone"]))
        return {"time_zone": str(self.side.time_zone)}

    def do_expire_delta_tokens(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.side.reader.expire_delta_tokens(payload.get("table"))
        return {"expired": payload.get("table") or "all"}

    def do_expire_tokens(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.side.authority.expire_all()
        return {"expired": "access tokens"}

    def do_add_client(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Register an app: `client_id` with a `client_secret` and/or a `certificate` (PEM)."""
        client_id = str(payload["client_id"])
        if payload.get("client_secret"):
            self.side.authority.clients[client_id] = str(payload["client_secret"])
        if payload.get("certificate"):
            self.side.authority.certificates[client_id] = str(payload["certificate"])
        return {"client_id": client_id}

    def do_set_token_ttl(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.side.authority.ttl = float(payload["seconds"])
        return {"token_ttl": self.side.authority.ttl}

    def do_set_rate_limit(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.side.throttle.configure(payload.get("limit"), payload.get("window"))
        self.side.throttle.reset()
        return {"limit": self.side.throttle.limit, "window": self.side.throttle.window}

    def do_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.side.reset()
        return {"reset": True}


#: What a revision does not copy: the row's identity and stamps, and what billing wrote.
#: ``new_quotetype`` Renewal (the option set of config/fieldmaps/dynamics_deals.toml).
RENEWAL_TYPE = 100_000_002
_NOT_COPIED = frozenset({"quoteid", "quotedetailid", "createdon", "modifiedon", "versionnumber",
                         "new_ordernumber", "new_provisioningstatus", "new_invoicenumber"})


def _number(value: Any) -> Decimal | None:
    """Money from the admin's JSON (number or string), exact; None clears the column."""
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"creditlimit {value!r} is not a number") from None
