"""Admin actions: what a CRM user (or a test) does to the org besides the API calls under test.

Rules this module keeps:
- Actions go through the same validation as API writes and stamp rows from the sandbox clock,
  except the two traps of CRM_WIRE.md, which stamp on purpose: `stamp_together` gives several
  rows ONE SystemModstamp; `commit_late` stamps a row earlier than rows already served.
- A row is named by `id`, or by `index` (its seeded position) for convenience; deleted rows
  cannot be changed (nor deleted twice).
- Bad input raises AdminError (the server answers it as 400 with the message).
- Actions: info, set_hold, set_credit_limit, set_quote_status, update, delete / delete_account,
  create / create_account, create_quote (``cpq: true``: an SBQQ__Quote__c with its lines, and
  with ``contract: true`` its Contract), amend_quote, contract_quote, amend_contract,
  renew_contract, stamp_together, commit_late, set_api_usage, set_token_ttl, expire_tokens,
  issue_token, purge_deleted, reset.
- CPQ as Salesforce CPQ does it: contracting a quote makes a Contract naming it
  (``SBQQ__Quote__c``, ``SBQQ__Opportunity__c``); amending a contract makes a NEW quote of type
  Amendment whose ``SBQQ__MasterContract__c`` is the contract, its lines the contract's current
  content (the newest accepted quote on it) at the amendment's start; renewing makes an
  Opportunity whose ``SBQQ__RenewedContract__c`` is the contract and a quote of type Renewal on
  it (``SBQQ__Opportunity2__c``). A removed item is a line of quantity 0, as in CPQ.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from . import schema as S
from .ids import make_id
from .soql import parse_datetime
from .store import now_ms
from .wire import render_value
from .writes import WriteError, values_for

if TYPE_CHECKING:
    from .side import SalesforceSide


class AdminError(ValueError):
    pass


def _obj(payload: dict[str, Any], default: str = "Account") -> S.SObject:
    obj = S.sobject(str(payload.get("object", default)))
    if obj is None:
        raise AdminError(f"unknown object {payload.get('object')!r}")
    return obj


def _index(side: SalesforceSide, obj: S.SObject, payload: dict[str, Any], key: str = "id") -> int:
    ref = payload.get(key, payload.get("index"))
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = make_id(obj.prefix, ref)
    index = side.store.locate(obj, ref) if isinstance(ref, str) else None
    if index is None:
        raise AdminError(f"no {obj.name} row {ref!r}")
    if (side.store.get(obj, index) or {}).get("IsDeleted"):
        raise AdminError(f"{obj.name} {ref} is deleted")
    return index


def _values(side: SalesforceSide, obj: S.SObject, fields: Any) -> dict[str, Any]:
    if not isinstance(fields, dict):
        raise AdminError("fields must be an object of field: value")
    try:
        return values_for(side.store, obj, fields, creating=False)
    except WriteError as exc:
        raise AdminError(f"{exc.error['statusCode']}: {exc.error['message']}") from None


def _moment(payload: dict[str, Any], side: SalesforceSide) -> dt.datetime | None:
    if "at" in payload:
        return parse_datetime(str(payload["at"]))
    if "seconds_before" in payload:
        return now_ms(side.store.clock) - dt.timedelta(seconds=float(payload["seconds_before"]))
    return None


def _update(side: SalesforceSide, obj: S.SObject, payload: dict[str, Any],
            fields: dict[str, Any]) -> dict[str, Any]:
    row = side.store.update(obj, _index(side, obj, payload), _values(side, obj, fields),
                            at=_moment(payload, side))
    return {"id": row["Id"], "SystemModstamp": row["SystemModstamp"].isoformat()}


def run(side: SalesforceSide, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    store = side.store
    if action == "set_hold":
        return _update(side, S.ACCOUNT, payload, {"Credit_Hold__c": bool(payload.get("hold", True))})
    if action == "set_credit_limit":
        return _update(side, S.ACCOUNT, payload, {"Credit_Limit__c": payload.get("credit_limit")})
    if action == "set_quote_status":
        obj = _obj(payload, default="Quote")
        status_field = "SBQQ__Status__c" if obj is S.CPQ_QUOTE else "Status"
        return _update(side, obj, payload, {status_field: payload.get("status", "Accepted")})
    if action == "update":
        return _update(side, _obj(payload), payload, payload.get("fields", {}))
    if action in ("delete", "delete_account"):
        obj = _obj(payload)
        row = store.delete(obj, _index(side, obj, payload), at=_moment(payload, side))
        return {"id": row["Id"], "deletedDate": row["SystemModstamp"].isoformat()}
    if action in ("create", "create_account"):
        obj = _obj(payload)
        fields = payload.get("fields", {k: v for k, v in payload.items() if k != "object"})
        try:
            values = values_for(store, obj, fields, creating=True)
        except WriteError as exc:
            raise AdminError(f"{exc.error['statusCode']}: {exc.error['message']}") from None
        return {"id": store.create(obj, values, at=_moment(payload, side))["Id"]}
    if action == "create_quote":
        return _create_cpq_quote(side, payload) if payload.get("cpq") else _create_quote(
            side, payload)
    if action == "contract_quote":
        return {"id": _contract(side, payload)}
    if action in ("amend_contract", "renew_contract"):
        return _continue_contract(side, payload, action == "renew_contract")
    if action == "amend_quote":
        return _amend_quote(side, payload)
    if action == "stamp_together":
        obj = _obj(payload)
        at = _moment(payload, side) or now_ms(store.clock)
        fields = _values(side, obj, payload.get("fields", {}))
        with store.lock:
            indices = [_index(side, obj, {"id": ref}) for ref in payload.get("ids", [])]
            ids = [store.update(obj, i, fields, at=at)["Id"] for i in indices]
        return {"ids": ids, "SystemModstamp": at.isoformat()}
    if action == "commit_late":
        if "at" not in payload and "seconds_before" not in payload:
            payload = {**payload, "seconds_before": 60}
        return _update(side, _obj(payload), payload, payload.get("fields", {}))
    if action == "set_api_usage":
        side.usage.set(used=payload.get("used"), limit=payload.get("limit"))
        return {"used": side.usage.used, "limit": side.usage.limit}
    if action == "info":
        creds = side.credentials
        return {"instance_url": side.ctx.base_url,
                "token_url": f"{side.ctx.base_url}/services/oauth2/token",
                "client_id": creds.client_id, "client_secret": creds.client_secret,
                "username": creds.username, "password": creds.password,
                "security_token": creds.security_token, "api_version": "v59.0",
                "api_usage": {"used": side.usage.used, "limit": side.usage.limit},
                "token_ttl": side.token_ttl or side.ctx.token_ttl,
                "rows": dict(store.seed.counts)}
    if action == "set_token_ttl":
        side.token_ttl = float(payload["seconds"])
        return {"token_ttl": side.token_ttl}
    if action == "expire_tokens":
        side.tokens.revoke()
        return {"expired": True}
    if action == "issue_token":
        return {"access_token": side.tokens.issue(), "instance_url": side.ctx.base_url}
    if action == "purge_deleted":
        side.purge_mark = parse_datetime(str(payload["before"]))
        return {"earliestDateAvailable": side.purge_mark.isoformat()}
    if action == "reset":
        side.reset()
        return {"reset": True}
    raise AdminError(f"unknown salesforce admin action {action!r}")


def _create_quote(side: SalesforceSide, payload: dict[str, Any]) -> dict[str, Any]:
    store = side.store
    account = store.get(S.ACCOUNT, _index(side, S.ACCOUNT, payload, key="account_id")) or {}
    head = {"Name": payload.get("name", "Sandbox quote"), "AccountId": account.get("Id"),
            "CurrencyIsoCode": account.get("CurrencyIsoCode", "USD"),
            "Status": payload.get("status", "Draft"), "Revision__c": payload.get("revision", 1),
            "Subscription_Start_Date__c": payload.get("start_date", "2026-12-01")}
    with store.lock:
        values = _values(side, S.QUOTE, head)
        number = f"{store.next_index(S.QUOTE) + 1:08d}"  # as seeded quotes are numbered
        quote = store.create(S.QUOTE, {**values, "QuoteNumber": number})
        line_ids = []
        for line in payload.get("lines", []):
            line_ids.append(_add_line(side, quote["Id"], line,
                                      head["Subscription_Start_Date__c"]))
    return {"id": quote["Id"], "line_ids": line_ids}


def _add_line(side: SalesforceSide, quote_id: str, line: dict[str, Any], start: Any) -> str:
    """A QuoteLineItem on the quote from an admin payload's line (``product_id`` or
    ``product_index``, ``quantity``, ``unit_price``), serviced from ``start``; its Id."""
    product = line.get("product_id", line.get("product_index", 0))
    if isinstance(product, int):
        product = make_id("01t", product)
    fields = _values(side, S.QUOTE_LINE_ITEM, {
        "Product2Id": product, "Quantity": line.get("quantity", 1),
        "UnitPrice": line.get("unit_price", 10), "ServiceDate": start})
    return str(side.store.create(S.QUOTE_LINE_ITEM, {**fields, "QuoteId": quote_id})["Id"])


def _amend_quote(side: SalesforceSide, payload: dict[str, Any]) -> dict[str, Any]:
    """A new revision of a quote, as the org's users make one on the mapped revision field:
    ``Revision__c`` + 1 on the same Quote, its new start date (``start_date``), its line
    changes (``quantities``: {line id: quantity}; ``add``: lines as ``create_quote`` takes
    them; ``remove``: line ids) and its status (``status``, default Accepted)."""
    store = side.store
    with store.lock:
        index = _index(side, S.QUOTE, payload)
        quote = store.get(S.QUOTE, index) or {}
        start = payload.get("start_date") or quote.get("Subscription_Start_Date__c")
        start = start.isoformat() if isinstance(start, dt.date) else start
        for line_id, quantity in dict(payload.get("quantities", {})).items():
            _update(side, S.QUOTE_LINE_ITEM, {"id": line_id}, {"Quantity": quantity})
        for line_id in payload.get("remove", []):
            store.delete(S.QUOTE_LINE_ITEM, _index(side, S.QUOTE_LINE_ITEM, {"id": line_id}))
        added = []
        for line in payload.get("add", []):
            added.append(_add_line(side, quote["Id"], line, start))
        _update(side, S.QUOTE, {"id": quote["Id"]}, {
            "Revision__c": int(quote.get("Revision__c") or 1) + 1,
            "Subscription_Start_Date__c": start, "Status": payload.get("status", "Accepted")})
    return {"id": quote["Id"], "revision": int(quote.get("Revision__c") or 1) + 1,
            "line_ids": added}


def _cpq_line(side: SalesforceSide, quote_id: str, line: dict[str, Any], start: Any) -> str:
    """An SBQQ__QuoteLine__c on the CPQ quote (``product_id``/``product_index``, ``quantity``,
    ``unit_price``, optional ``end_date`` into Cancel_Date__c); its Id."""
    product = line.get("product_id", line.get("product_index", 0))
    if isinstance(product, int):
        product = make_id("01t", product)
    fields = _values(side, S.CPQ_QUOTE_LINE, {
        "SBQQ__Product__c": product, "SBQQ__Quantity__c": line.get("quantity", 1),
        "SBQQ__NetPrice__c": line.get("unit_price", 10), "SBQQ__StartDate__c": start,
        "Cancel_Date__c": line.get("end_date")})
    return str(side.store.create(S.CPQ_QUOTE_LINE, {**fields, "SBQQ__Quote__c": quote_id})["Id"])


def _new_cpq_quote(side: SalesforceSide, account_id: str, payload: dict[str, Any],
                   extra: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    store = side.store
    account = store.get_by_id(S.ACCOUNT, account_id) or {}
    start = payload.get("start_date", "2026-12-01")
    start = start.isoformat() if isinstance(start, dt.date) else start
    head = {"SBQQ__Account__c": account.get("Id"),
            "CurrencyIsoCode": account.get("CurrencyIsoCode", "USD"),
            "SBQQ__Status__c": payload.get("status", "Draft"), "SBQQ__Primary__c": True,
            "SBQQ__StartDate__c": start, "SBQQ__Type__c": "Quote",
            "Cancel_Date__c": payload.get("end_date"), **extra}
    values = _values(side, S.CPQ_QUOTE, head)
    name = f"Q-{store.next_index(S.CPQ_QUOTE) + 1:05d}"     # as seeded CPQ quotes are named
    quote = store.create(S.CPQ_QUOTE, {**values, "Name": name})
    line_ids = [_cpq_line(side, quote["Id"], line, start) for line in lines]
    return {"id": quote["Id"], "name": name, "line_ids": line_ids}


def _create_cpq_quote(side: SalesforceSide, payload: dict[str, Any]) -> dict[str, Any]:
    with side.store.lock:
        account = side.store.get(S.ACCOUNT, _index(side, S.ACCOUNT, payload, key="account_id"))
        out = _new_cpq_quote(side, str((account or {}).get("Id")), payload, {},
                             list(payload.get("lines", [])))
        if payload.get("contract"):
            out["contract_id"] = _contract(side, {"id": out["id"],
                                                  "term_months": payload.get("term_months")})
    return out


def _contract(side: SalesforceSide, payload: dict[str, Any]) -> str:
    """Contract the CPQ quote ``id`` (what checking Contracted on its opportunity does): an
    activated Contract from the quote's start, for ``term_months`` (default 12), naming it."""
    store = side.store
    with store.lock:
        quote = store.get(S.CPQ_QUOTE, _index(side, S.CPQ_QUOTE, payload)) or {}
        start = quote.get("SBQQ__StartDate__c")
        values = _values(side, S.CONTRACT, {
            "AccountId": quote.get("SBQQ__Account__c"), "Status": "Activated",
            "StartDate": start.isoformat() if isinstance(start, dt.date) else start,
            "ContractTerm": payload.get("term_months") or 12,
            "SBQQ__Quote__c": quote.get("Id"),
            "SBQQ__Opportunity__c": quote.get("SBQQ__Opportunity2__c")})
        number = f"{store.next_index(S.CONTRACT) + 1:08d}"
        return str(store.create(S.CONTRACT, {**values, "ContractNumber": number})["Id"])


def _current_quote(side: SalesforceSide, contract: dict[str, Any]) -> dict[str, Any]:
    """The contract's current content: its newest accepted amendment quote, else the quote it
    was made from."""
    amendments = [q for q in side.store.changed_rows(S.CPQ_QUOTE)
                  if q.get("SBQQ__MasterContract__c") == contract["Id"]
                  and q.get("SBQQ__Type__c") == "Amendment" and not q.get("IsDeleted")
                  and q.get("SBQQ__Status__c") == "Accepted"]
    if amendments:
        return max(amendments, key=lambda q: (q["CreatedDate"], q["Id"]))
    return side.store.get_by_id(S.CPQ_QUOTE, contract["SBQQ__Quote__c"]) or {}


def _continue_contract(side: SalesforceSide, payload: dict[str, Any],
                       renew: bool) -> dict[str, Any]:
    """A new CPQ quote continuing the contract ``contract_id``: an amendment (master contract)
    or a renewal (an Opportunity renewing the contract). Its lines are the contract's current
    lines, from ``start_date``, changed by ``quantities`` and ``prices`` (keyed by product id
    or index; quantity 0 removes the item) and extended by ``add``; status ``status``
    (default Accepted)."""
    store = side.store
    with store.lock:
        contract = store.get(S.CONTRACT, _index(side, S.CONTRACT, payload, key="contract_id"))
        assert contract is not None
        current = _current_quote(side, contract)
        quantities = {_product_key(k): v for k, v in dict(payload.get("quantities", {})).items()}
        prices = {_product_key(k): v for k, v in dict(payload.get("prices", {})).items()}
        lines = []
        for line in store.changed_rows(S.CPQ_QUOTE_LINE):
            if line.get("SBQQ__Quote__c") != current.get("Id") or line.get("IsDeleted"):
                continue
            product = line["SBQQ__Product__c"]
            lines.append({"product_id": product,
                          "quantity": quantities.get(product, _number(line["SBQQ__Quantity__c"])),
                          "unit_price": prices.get(product, _number(line["SBQQ__NetPrice__c"]))})
        lines += list(payload.get("add", []))
        extra: dict[str, Any] = {"SBQQ__Type__c": "Renewal" if renew else "Amendment"}
        if renew:
            opportunity = _values(side, S.OPPORTUNITY, {
                "Name": f"Renewal of contract {contract.get('ContractNumber')}",
                "AccountId": contract.get("AccountId"), "StageName": "Prospecting",
                "CloseDate": payload.get("start_date"), "SBQQ__Renewal__c": True,
                "SBQQ__RenewedContract__c": contract["Id"]})
            extra["SBQQ__Opportunity2__c"] = store.create(S.OPPORTUNITY, opportunity)["Id"]
            store.update(S.CONTRACT, _index(side, S.CONTRACT, {"id": contract["Id"]}),
                         {"SBQQ__RenewalQuoted__c": True})
        else:
            extra["SBQQ__MasterContract__c"] = contract["Id"]
        payload = {"status": "Accepted", **payload}
        return _new_cpq_quote(side, str(contract.get("AccountId")), payload, extra, lines)


def _product_key(key: Any) -> str:
    """A product named by id or by seeded index (as a number or its text)."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return make_id("01t", int(key))
    return str(key)


def _number(value: Any) -> Any:
    """A stored number as the JSON number a write takes (as the API would get it)."""
    return render_value(value)
