"""Canonical CRM records (connector output) → validated values billing understands.

Rules kept here:
- Pure functions, no I/O: each ``map_<object>`` returns a frozen value or raises ``Invalid``
  naming the field, the value and the problem; the engine sends that record to quarantine and
  goes on with the rest of the page. ``Invalid`` is billing's ``ValidationError`` (one error
  shape at the sync boundary: ``field``, ``value``, ``problem``), so a record the mapping
  refuses and one billing refuses are quarantined alike.
- Money and quantities are ``Decimal`` (the connector already parsed them exactly); a value that
  is not a ``Decimal`` reached us raw because it did not parse: it is refused here.
- Dates must be ``date`` (the connector converts ISO dates; anything else is malformed).
- ``content_hash`` is over the canonical fields without ``modstamp`` and ``_``-keys, so a
  touch in the CRM that changes nothing billing reads costs nothing downstream. Quotes and
  quote lines, whose mapped value is stored as JSON (``rec_to_json``) until hand-off, are
  hashed over that stored text instead (``text_hash``): one JSON encoding per record, not
  two, and a CRM field billing does not map (the order number billing itself pushed, say)
  does not count as a change.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.money import check_currency
from connectors.base import OBJECTS as CRM_OBJECTS

OBJECTS = CRM_OBJECTS                      # defined by connectors, so config can check names
KINDS = {"recurring": "recurring", "one-time": "one_time", "one_time": "one_time",
         "onetime": "one_time", "usage": "usage"}
PERIODS = {"monthly": "month", "month": "month", "annual": "year", "yearly": "year",
           "year": "year"}


class Invalid(ValidationError):
    """A CRM record billing cannot take as it is: ``field``, ``value`` and ``problem`` go to
    quarantine (the ``reason`` column)."""

    code = "invalid_record"


@dataclass(frozen=True)
class AccountRec:
    crm_id: str
    name: str
    currency: str
    number: str | None
    country: str | None
    region: str | None
    credit_limit: Decimal | None
    credit_hold: bool


@dataclass(frozen=True)
class ProductRec:
    crm_id: str
    sku: str
    name: str
    kind: str
    billing_period: str | None
    needs_provisioning: bool
    active: bool


@dataclass(frozen=True)
class PriceRec:
    crm_id: str
    product_crm_id: str
    currency: str
    unit_price: Decimal
    active: bool


@dataclass(frozen=True)
class QuoteRec:
    crm_id: str
    account_crm_id: str
    status: str
    revision: int
    number: str | None
    name: str | None
    start_date: date | None


@dataclass(frozen=True)
class QuoteLineRec:
    crm_id: str
    quote_crm_id: str
    product_crm_id: str
    quantity: Decimal
    unit_price: Decimal | None
    start_date: date | None


def _jsonable(value: Any) -> Any:
    """JSON for the types connectors hand over (also ``json``'s ``default`` hook, which is only
    called for what JSON has no type for, so native values cost nothing)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):                 # datetime too
        return value.isoformat()
    return str(value)


# Built once: ``json.dumps`` with options builds an encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_jsonable)
_REC = json.JSONEncoder(sort_keys=True, default=_jsonable)


def canonical_json(record: Mapping[str, Any]) -> str:
    return _CANONICAL.encode({k: v for k, v in record.items()
                              if k != "modstamp" and k[:1] != "_"})


def content_hash(record: Mapping[str, Any]) -> str:
    return text_hash(canonical_json(record))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _id(rec: Mapping[str, Any], field: str = "crm_id") -> str:
    value = rec.get(field)
    if value is None or not str(value).strip():
        raise Invalid(field, value, "is required")
    return str(value).strip()


def _text(rec: Mapping[str, Any], field: str, required: bool = False) -> str | None:
    value = rec.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Invalid(field, value, "is required")
        return None
    return str(value).strip()


def _decimal(rec: Mapping[str, Any], field: str, *, required: bool = False,
             positive: bool = False) -> Decimal | None:
    value = rec.get(field)
    if value is None:
        if required:
            raise Invalid(field, value, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise Invalid(field, value, "is not a number")
    number = Decimal(value)
    if not number.is_finite():
        raise Invalid(field, value, "is not a finite number")
    if number < 0 or (positive and number == 0):
        raise Invalid(field, value, "must be greater than zero" if positive
                      else "must not be negative")
    return number


def _bool(rec: Mapping[str, Any], field: str, default: bool) -> bool:
    value = rec.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid(field, value, "is not true or false")
    return value


def _date(rec: Mapping[str, Any], field: str) -> date | None:
    value = rec.get(field)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise Invalid(field, value, "is not a date (YYYY-MM-DD)")
    return value


def _currency(rec: Mapping[str, Any], field: str = "currency") -> str:
    try:
        return check_currency(rec.get(field), field)
    except LedgerError:
        raise Invalid(field, rec.get(field), "is not a known ISO 4217 currency") from None


def map_account(rec: Mapping[str, Any]) -> AccountRec:
    country = _text(rec, "country")
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise Invalid("country", country, "is not an ISO 3166 alpha-2 code")
    return AccountRec(
        crm_id=_id(rec), name=_text(rec, "name", required=True) or "",
        currency=_currency(rec), number=_text(rec, "number"),
        country=country.upper() if country else None, region=_text(rec, "region"),
        credit_limit=_decimal(rec, "credit_limit"),
        credit_hold=_bool(rec, "credit_hold", False))


def map_product(rec: Mapping[str, Any]) -> ProductRec:
    raw_kind = _text(rec, "billing_type") or "Recurring"
    kind = KINDS.get(raw_kind.lower())
    if kind is None:
        raise Invalid("billing_type", raw_kind, f"must be one of {sorted(set(KINDS.values()))}")
    period = None
    if kind == "recurring":
        raw_period = _text(rec, "billing_frequency") or "Monthly"
        period = PERIODS.get(raw_period.lower())
        if period is None:
            raise Invalid("billing_frequency", raw_period, "must be Monthly or Annual")
    crm_id = _id(rec)
    return ProductRec(crm_id=crm_id, sku=_text(rec, "sku") or crm_id,
                      name=_text(rec, "name", required=True) or "", kind=kind,
                      billing_period=period,
                      needs_provisioning=_bool(rec, "needs_provisioning", False),
                      active=_bool(rec, "active", True))


def map_price(rec: Mapping[str, Any]) -> PriceRec:
    return PriceRec(crm_id=_id(rec), product_crm_id=_id(rec, "product_crm_id"),
                    currency=_currency(rec),
                    unit_price=_decimal(rec, "unit_price", required=True) or Decimal(0),
                    active=_bool(rec, "active", True))


def map_quote(rec: Mapping[str, Any]) -> QuoteRec:
    revision = rec.get("revision")
    if revision is None:
        revision = 1
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise Invalid("revision", revision, "is not a whole number")
    return QuoteRec(crm_id=_id(rec), account_crm_id=_id(rec, "account_crm_id"),
                    status=_text(rec, "status") or "", revision=revision,
                    number=_text(rec, "number"), name=_text(rec, "name"),
                    start_date=_date(rec, "start_date"))


def map_quote_line(rec: Mapping[str, Any]) -> QuoteLineRec:
    return QuoteLineRec(crm_id=_id(rec), quote_crm_id=_id(rec, "quote_crm_id"),
                        product_crm_id=_id(rec, "product_crm_id"),
                        quantity=_decimal(rec, "quantity", required=True, positive=True)
                        or Decimal(1),
                        unit_price=_decimal(rec, "unit_price"),
                        start_date=_date(rec, "start_date"))


def record_json(record: Mapping[str, Any]) -> str:
    """The raw canonical record as JSON (kept in quarantine for a retry by hand)."""
    return json.dumps({k: _jsonable(v) if isinstance(v, (Decimal, date)) else v
                       for k, v in record.items()}, sort_keys=True, default=str)


def rec_to_json(rec: Any) -> str:
    return _REC.encode({k: getattr(rec, k) for k in rec.__dataclass_fields__})


def quote_from_json(text: str) -> QuoteRec:
    d = json.loads(text)
    return QuoteRec(crm_id=d["crm_id"], account_crm_id=d["account_crm_id"], status=d["status"],
                    revision=int(d["revision"]), number=d.get("number"), name=d.get("name"),
                    start_date=date.fromisoformat(d["start_date"]) if d.get("start_date")
                    else None)


def line_from_json(text: str) -> QuoteLineRec:
    d = json.loads(text)
    return QuoteLineRec(crm_id=d["crm_id"], quote_crm_id=d["quote_crm_id"],
                        product_crm_id=d["product_crm_id"], quantity=Decimal(d["quantity"]),
                        unit_price=Decimal(d["unit_price"]) if d.get("unit_price") is not None
                        else None,
                        start_date=date.fromisoformat(d["start_date"]) if d.get("start_date")
                        else None)


def revive(record: Mapping[str, Any]) -> dict[str, Any]:
    """A quarantined record (JSON) back to connector types, for a retry by hand."""
    out: dict[str, Any] = dict(record)
    for key in ("credit_limit", "unit_price", "quantity"):
        value = out.get(key)
        if isinstance(value, str):
            try:
                out[key] = Decimal(value)
            except ArithmeticError:
                pass
    for key in ("start_date",):
        value = out.get(key)
        if isinstance(value, str) and len(value) == 10:
            try:
                out[key] = date.fromisoformat(value)
            except ValueError:
                pass
    if isinstance(out.get("modstamp"), str):
        try:
            out["modstamp"] = datetime.fromisoformat(out["modstamp"])
        except ValueError:
            pass
    return out
