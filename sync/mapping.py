"""Canonical CRM records (connector output) → validated values billing understands.

Rules kept here:
- Pure functions, no I/O: each ``map_<object>`` returns a frozen value or raises ``Invalid``
  naming the field, the value and the problem; the engine sends that record to quarantine and
  goes on with the rest of the page. ``Invalid`` is billing's ``ValidationError`` (one error
  shape at the sync boundary: ``field``, ``value``, ``problem``), so a record the mapping
  refuses and one billing refuses are quarantined alike.
- Money and quantities are ``Decimal`` (the connector already parsed them exactly); a value that
  is not a ``Decimal`` reached us raw because it did not parse: it is refused here.
- Every value passes the boundary's checks (``sync.boundary``: types, control characters,
  lengths and ranges that fit the columns, strict dates, aware time stamps, GUIDs on
  Dataverse, told by ``guid=True``).
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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from billing_core.domain.contacts import normalize_emails
from billing_core.domain.dunning import normalize_class
from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.money import check_currency
from billing_core.domain.records import quick_init
from connectors.base import OBJECTS as CRM_OBJECTS
from sync import boundary
from sync.boundary import Invalid as Invalid  # the boundary's error, named here too

OBJECTS = CRM_OBJECTS                      # defined by connectors, so config can check names
KINDS = {"recurring": "recurring", "one-time": "one_time", "one_time": "one_time",
         "onetime": "one_time", "usage": "usage"}
PERIODS = {"monthly": "month", "month": "month", "annual": "year", "yearly": "year",
           "year": "year"}


@quick_init
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
    billing_email: str | None = None    # addresses joined by ", "; None: not mapped or blank
    account_class: str | None = None    # a class name, lower-case; None: not mapped or blank


@quick_init
@dataclass(frozen=True)
class ProductRec:
    crm_id: str
    sku: str
    name: str
    kind: str
    billing_period: str | None
    needs_provisioning: bool
    active: bool


@quick_init
@dataclass(frozen=True)
class PriceRec:
    crm_id: str
    product_crm_id: str
    currency: str
    unit_price: Decimal
    active: bool
    effective_from: date | None = None      # the CRM's price start date, when the map has one
    #: The entry is of the price book billing prices from (Salesforce: the standard one,
    #: ``Pricebook2.IsStandard``); True when the map has no such field (Dataverse's list price).
    standard: bool = True


#: What a quote does to a deal (the mapped ``type`` field, see :func:`map_quote`).
QUOTE_KINDS = ("new", "amendment", "renewal")


@quick_init
@dataclass(frozen=True)
class QuoteRec:
    crm_id: str
    account_crm_id: str
    status: str
    revision: int
    number: str | None
    name: str | None
    start_date: date | None
    #: ``new`` (a deal of its own, or the next revision of its own record/number),
    #: ``amendment`` or ``renewal`` of the deal of ``origin_quote``.
    kind: str = "new"
    #: The CRM quote whose deal this one amends or renews (the quote its CPQ contract was
    #: made from, or a mapped lookup); None when the CRM names none.
    origin_quote: str | None = None
    #: What named the origin in the CRM (a CPQ contract id), for the reasons shown.
    origin_ref: str | None = None
    #: The day the quote's items stop (exclusive): a cancellation date (mapped ``end_date``).
    end_date: date | None = None
    #: The quote's own currency when mapped (Salesforce ``CurrencyIsoCode``, Dataverse
    #: ``transactioncurrencyid``): a quote in another currency than its account is refused.
    currency: str | None = None
    #: A discount on the whole quote (Dataverse ``discountpercentage`` / ``discountamount``):
    #: a percentage lowers every line's price; an amount is refused (it has no one line).
    discount_percent: Decimal | None = None
    discount_amount: Decimal | None = None
    #: A charge on the whole quote (Salesforce ``ShippingHandling``, Dataverse
    #: ``freightamount``): billed by no line, so a quote carrying one is refused.
    freight_amount: Decimal | None = None
    #: Whether the quote is its opportunity's primary one (mapped ``primary``: CPQ
    #: ``SBQQ__Primary__c``); True when not mapped. Only a primary quote is ordered.
    primary: bool = True


@quick_init
@dataclass(frozen=True)
class QuoteLineRec:
    crm_id: str
    quote_crm_id: str
    product_crm_id: str
    quantity: Decimal
    unit_price: Decimal | None
    start_date: date | None
    #: The day this line's item stops (exclusive): a cancellation date (mapped ``end_date``).
    end_date: date | None = None


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


def _currency(rec: Mapping[str, Any], field: str = "currency") -> str:
    value = rec.get(field)
    if not isinstance(value, str) or boundary.text(rec, field) is None:
        raise Invalid(field, value, "is not a known ISO 4217 currency")
    try:
        return check_currency(value, field)
    except LedgerError:
        raise Invalid(field, value, "is not a known ISO 4217 currency") from None


def map_account(rec: Mapping[str, Any], *, guid: bool = False) -> AccountRec:
    boundary.stamp(rec)
    country = boundary.text(rec, "country")
    if country is not None and (len(country) != 2 or not country.isalpha()
                                or not country.isascii()):
        raise Invalid("country", country, "is not an ISO 3166 alpha-2 code")
    return AccountRec(
        crm_id=boundary.crm_id(rec, guid=guid),
        name=boundary.text(rec, "name", required=True) or "",
        currency=_currency(rec), number=boundary.text(rec, "number"),
        country=country.upper() if country else None, region=boundary.text(rec, "region"),
        credit_limit=boundary.decimal(rec, "credit_limit"),
        credit_hold=boundary.boolean(rec, "credit_hold", False),
        billing_email=_billing_email(rec), account_class=_account_class(rec))


def _account_class(rec: Mapping[str, Any]) -> str | None:
    """The optional mapped ``account_class`` (after the field's ``choices``: a Dataverse
    option set such as ``accountcategorycode``, a Salesforce picklist): a class name. A class
    the config does not know is kept (the account gets the default dunning schedule, and the
    dunning commands name it); a value that is no class name is refused."""
    raw = rec.get("account_class")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raise Invalid("account_class", raw, "is an option value without a class: map it "
                      "with the field's choices")
    try:
        return normalize_class(boundary.text(rec, "account_class"))
    except ValidationError as exc:
        raise Invalid("account_class", raw, exc.problem) from None


def _billing_email(rec: Mapping[str, Any]) -> str | None:
    """The optional mapped ``billing_email`` (Salesforce e.g. ``Billing_Email__c``, Dataverse
    ``emailaddress1``, via the field map): one or more addresses split by ``;`` or ``,``."""
    raw = boundary.text(rec, "billing_email")
    try:
        return normalize_emails(raw)
    except ValidationError as exc:
        raise Invalid("billing_email", raw, exc.problem) from None


def map_product(rec: Mapping[str, Any], *, guid: bool = False) -> ProductRec:
    boundary.stamp(rec)
    crm_id = boundary.crm_id(rec, guid=guid)
    raw_kind = boundary.text(rec, "billing_type") or "Recurring"
    kind = KINDS.get(raw_kind.lower())
    if kind is None:
        raise Invalid("billing_type", raw_kind, f"must be one of {sorted(set(KINDS.values()))}")
    period = None
    if kind == "recurring":
        raw_period = boundary.text(rec, "billing_frequency") or "Monthly"
        period = PERIODS.get(raw_period.lower())
        if period is None:
            raise Invalid("billing_frequency", raw_period, "must be Monthly or Annual")
    return ProductRec(crm_id=crm_id, sku=boundary.text(rec, "sku") or crm_id,
                      name=boundary.text(rec, "name", required=True) or "", kind=kind,
                      billing_period=period,
                      needs_provisioning=boundary.boolean(rec, "needs_provisioning", False),
                      active=boundary.boolean(rec, "active", True))


def map_price(rec: Mapping[str, Any], *, guid: bool = False) -> PriceRec:
    boundary.stamp(rec)
    return PriceRec(crm_id=boundary.crm_id(rec, guid=guid),
                    product_crm_id=boundary.crm_id(rec, "product_crm_id", guid=guid),
                    currency=_currency(rec),
                    unit_price=boundary.decimal(rec, "unit_price", required=True,
                                                limit=boundary.MAX_PRICE) or Decimal(0),
                    active=boundary.boolean(rec, "active", True),
                    effective_from=boundary.day(rec, "effective_from"),
                    standard=boundary.boolean(rec, "standard", True))


def _optional_id(rec: Mapping[str, Any], field: str, guid: bool) -> str | None:
    return None if rec.get(field) in (None, "") else boundary.crm_id(rec, field, guid=guid)


def quote_kind(rec: Mapping[str, Any]) -> str:
    """The mapped ``type`` as one of :data:`QUOTE_KINDS` (the field map's ``choices`` turn the
    CRM's values into them: CPQ ``Quote``/``Amendment``/``Renewal``, a Dataverse option set);
    no ``type`` field, or an empty one, is ``new``. A quote stored by the sync (its
    ``QuoteRec`` as JSON, what a hand-off refusal quarantines and ``quarantine retry``
    applies again) carries ``kind`` instead, and keeps it."""
    raw = boundary.text(rec, "type" if "type" in rec or "kind" not in rec else "kind")
    if not raw:
        return "new"
    kind = raw.strip().lower()
    if kind == "quote":             # CPQ's own name for a new-business quote
        kind = "new"
    if kind not in QUOTE_KINDS:
        raise Invalid("type", raw, f"must be one of {', '.join(QUOTE_KINDS)} (map the CRM's "
                      "values with the field's choices)")
    return kind


def map_quote(rec: Mapping[str, Any], *, guid: bool = False) -> QuoteRec:
    """A quote. Its deal (docs/BILLING.md, "Deal lifecycle"): ``type`` says new, amendment or
    renewal; the origin is ``origin_quote`` (the quote of the amended contract, or a direct
    lookup), and for a renewal ``renewed_quote`` first when mapped (CPQ: the quote of the
    opportunity's renewed contract); ``origin_contract`` / ``renewed_contract`` only name
    what the CRM pointed at, for the reasons shown. A ``new`` quote keeps no origin."""
    boundary.stamp(rec)
    kind = quote_kind(rec)
    origin = origin_ref = None
    if kind != "new":
        renewed = _optional_id(rec, "renewed_quote", guid) if kind == "renewal" else None
        origin = renewed or _optional_id(rec, "origin_quote", guid)
        ref_field = "renewed_contract" if kind == "renewal" and (
            renewed or rec.get("renewed_contract")) else "origin_contract"
        origin_ref = (_optional_id(rec, ref_field, guid) or _optional_id(
            rec, "origin_contract", guid) or _optional_id(rec, "origin_ref", guid))
    return QuoteRec(crm_id=boundary.crm_id(rec, guid=guid),
                    account_crm_id=boundary.crm_id(rec, "account_crm_id", guid=guid),
                    status=boundary.text(rec, "status") or "",
                    revision=boundary.whole(rec, "revision", 1, boundary.MAX_REVISION),
                    number=boundary.text(rec, "number", limit_key="quote_number"),
                    name=boundary.text(rec, "name", limit_key="quote_name"),
                    start_date=boundary.day(rec, "start_date"),
                    kind=kind, origin_quote=origin, origin_ref=origin_ref,
                    end_date=boundary.day(rec, "end_date"),
                    currency=_currency(rec) if rec.get("currency") is not None else None,
                    discount_percent=_discount(rec, "discount_percent", Decimal(100)),
                    discount_amount=_discount(rec, "discount_amount", boundary.MAX_LINE),
                    freight_amount=boundary.decimal(rec, "freight_amount",
                                                    limit=boundary.MAX_LINE),
                    primary=boundary.boolean(rec, "primary", True))


def _discount(rec: Mapping[str, Any], field: str, limit: Decimal) -> Decimal | None:
    """A discount: None when absent or zero, else a positive decimal up to ``limit``."""
    value = boundary.decimal(rec, field, limit=limit)
    if value is None or value == 0:
        return None
    if value < 0:
        raise Invalid(field, value, "is a discount: it must not be negative")
    return value


#: A line's price per unit after its discounts, kept to the ledger's decimal places.
_PRICE_QUANTUM = Decimal(1).scaleb(-boundary.SCALE)


def _net_unit_price(rec: Mapping[str, Any], unit_price: Decimal | None,
                    quantity: Decimal) -> Decimal | None:
    """The line's price per unit after its own discounts (docs/FIELDS.md, "Discounts"):
    ``discount_percent`` (Salesforce ``Discount``), then ``discount_per_unit`` (Dataverse
    ``volumediscountamount``) and ``discount_amount`` for the whole line (Dataverse
    ``manualdiscountamount``, spread over its units). A result with more decimal places than
    the ledger keeps is rounded half up there (the line's total then differs from the CRM's
    by less than its quantity x 10^-10)."""
    percent = _discount(rec, "discount_percent", Decimal(100))
    per_unit = _discount(rec, "discount_per_unit", boundary.MAX_PRICE)
    amount = _discount(rec, "discount_amount", boundary.MAX_LINE)
    given = [(f, v) for f, v in (("discount_percent", percent), ("discount_per_unit", per_unit),
                                 ("discount_amount", amount)) if v is not None]
    if not given:
        return unit_price
    field, value = given[-1]
    if unit_price is None:
        raise Invalid(field, value, "is a discount on a line without a unit price")
    net = unit_price if percent is None else less_percent(unit_price, percent)
    if per_unit is not None:
        net -= per_unit
    if amount is not None:
        if quantity == 0:
            raise Invalid(field, value, "is a discount on a line of quantity 0")
        net -= amount / quantity
    if net < 0:
        raise Invalid(field, value, f"is more than the line's price ({unit_price} a unit, "
                                    f"quantity {quantity})")
    return kept(net)


def less_percent(price: Decimal, percent: Decimal) -> Decimal:
    """``price`` less ``percent`` %, to the ledger's decimal places (:func:`kept`)."""
    return kept(price * (100 - percent) / 100)


def kept(price: Decimal) -> Decimal:
    """A price as the ledger keeps it: exact up to ``SCALE`` decimal places, rounded half up
    there beyond (a 10.00 discount over 3 units is 3.3333333333 a unit)."""
    if price.as_tuple().exponent < -boundary.SCALE:  # type: ignore[operator]
        return price.quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_UP)
    return price


def map_quote_line(rec: Mapping[str, Any], *, guid: bool = False) -> QuoteLineRec:
    """A quote line. Its quote reference is read first: a line refused for anything names its
    quote in its quarantine entry, and one whose reference cannot be read is refused naming
    ``quote_crm_id`` (the hand-off holds the quotes that reference may name)."""
    quote = boundary.crm_id(rec, "quote_crm_id", guid=guid)
    boundary.stamp(rec)
    # 0 is a quantity: an amendment's way to remove an item (CPQ zeroes a line to cancel it)
    quantity = boundary.decimal(rec, "quantity", required=True,
                                limit=boundary.MAX_QUANTITY)
    assert quantity is not None
    unit_price = _net_unit_price(
        rec, boundary.decimal(rec, "unit_price", limit=boundary.MAX_PRICE), quantity)
    if unit_price is not None and quantity * unit_price > boundary.MAX_LINE:
        raise Invalid("quantity", quantity, f"times the unit price {unit_price} is larger "
                      f"than {boundary.MAX_LINE:,}")
    return QuoteLineRec(crm_id=boundary.crm_id(rec, guid=guid),
                        quote_crm_id=quote,
                        product_crm_id=boundary.crm_id(rec, "product_crm_id", guid=guid),
                        quantity=quantity, unit_price=unit_price,
                        start_date=boundary.day(rec, "start_date"),
                        end_date=boundary.day(rec, "end_date"))


def record_json(record: Mapping[str, Any]) -> str:
    """The raw canonical record as JSON (kept in quarantine for a retry by hand, and read by
    the database: the hand-off asks it for a refused line's quote). Always valid JSON: ASCII
    only, so a NUL or a lone surrogate is stored escaped (``\\u0000``); a NaN or an infinity
    (JSON has none: the database refuses the bare token) as the text the CRM sent
    (``"NaN"``); and it never raises: a value JSON cannot hold is stored as its ``repr``."""
    values = {str(k): _jsonable(v) if isinstance(v, (Decimal, date)) else v
              for k, v in record.items()}
    try:
        try:
            return json.dumps(values, sort_keys=True, default=repr, ensure_ascii=True,
                              allow_nan=False)
        except ValueError:          # a float NaN or infinity somewhere in it
            return json.dumps(_finite(values), sort_keys=True, default=repr, ensure_ascii=True,
                              allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps({str(k): repr(v) for k, v in record.items()}, sort_keys=True)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite(value: Any) -> Any:
    """``value`` with every float NaN or infinity in it replaced by its JSON spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(repr(value), repr(value))
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


#: Fields stored only when set: a quote or line without them is stored (and hashed) as
#: before they existed, so records synced before are not all "changed" at once.
_WHEN_SET = {"kind": "new", "origin_quote": None, "origin_ref": None, "end_date": None,
             "currency": None, "discount_percent": None, "discount_amount": None,
             "freight_amount": None,
             "primary": True}


def rec_to_json(rec: Any) -> str:
    """The stored text of a mapped record, hashed as stored: it must never change for the
    same value. Written field by field (:func:`_fast_json`): the exact text of the generic
    encoder (``_REC``: sorted keys, ``", "`` and ``": "``, ASCII-escaped strings, ``Decimal``
    and dates as strings, ``_WHEN_SET`` fields left out at their default) at about half its
    cost; a value of a type the fast path does not know takes the generic encoder."""
    fast = _fast_json(rec)
    return fast if fast is not None else _generic_json(rec)


def _generic_json(rec: Any) -> str:
    values = {k: getattr(rec, k) for k in rec.__dataclass_fields__}
    for key, default in _WHEN_SET.items():
        if key in values and values[key] == default:
            del values[key]
    return _REC.encode(values)


_quote = json.encoder.encode_basestring_ascii     # what the C encoder uses with ensure_ascii
_NOT_SET = object()
#: Per record class: its fields in sorted order, each with its JSON key and the default at
#: which it is left out (``_WHEN_SET``; ``_NOT_SET``: always written).
_FIELDS: dict[type, tuple[tuple[str, str, Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    found = _FIELDS.get(cls)
    if found is None:
        names = sorted(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        found = _FIELDS[cls] = tuple((name, _quote(name) + ": ", _WHEN_SET.get(name, _NOT_SET))
                                     for name in names)
    return found


def _fast_json(rec: Any) -> str | None:
    """``_generic_json(rec)`` for flat values of exact types str, None, bool, int, ``Decimal``
    and ``date``; None when another type is met (the caller then uses the generic encoder)."""
    parts = []
    for name, key, default in _fields(type(rec)):
        value = getattr(rec, name)
        if default is not _NOT_SET and value == default:
            continue
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif value is None:
            text = "null"
        elif kind is Decimal:
            text = _quote(str(value))
        elif kind is date:
            text = _quote(value.isoformat())
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is int:
            text = int.__repr__(value)
        else:
            return None
        parts.append(key + text)
    return "{" + ", ".join(parts) + "}"


def quote_from_json(text: str) -> QuoteRec:
    d = json.loads(text)
    return QuoteRec(crm_id=d["crm_id"], account_crm_id=d["account_crm_id"], status=d["status"],
                    revision=int(d["revision"]), number=d.get("number"), name=d.get("name"),
                    start_date=_day(d, "start_date"), kind=d.get("kind", "new"),
                    origin_quote=d.get("origin_quote"), origin_ref=d.get("origin_ref"),
                    end_date=_day(d, "end_date"), currency=d.get("currency"),
                    discount_percent=_dec(d, "discount_percent"),
                    discount_amount=_dec(d, "discount_amount"),
                    freight_amount=_dec(d, "freight_amount"),
                    primary=d.get("primary", True) is not False)


def _dec(d: Mapping[str, Any], key: str) -> Decimal | None:
    return Decimal(d[key]) if d.get(key) is not None else None


def _day(d: Mapping[str, Any], key: str) -> date | None:
    return date.fromisoformat(d[key]) if d.get(key) else None


def line_from_json(text: str) -> QuoteLineRec:
    d = json.loads(text)
    return QuoteLineRec(crm_id=d["crm_id"], quote_crm_id=d["quote_crm_id"],
                        product_crm_id=d["product_crm_id"], quantity=Decimal(d["quantity"]),
                        unit_price=Decimal(d["unit_price"]) if d.get("unit_price") is not None
                        else None,
                        start_date=_day(d, "start_date"), end_date=_day(d, "end_date"))


def revive(record: Mapping[str, Any]) -> dict[str, Any]:
    """A quarantined record (JSON) back to connector types, for a retry by hand."""
    out: dict[str, Any] = dict(record)
    for key in ("credit_limit", "unit_price", "quantity", "discount_percent", "discount_amount",
                "discount_per_unit", "freight_amount"):
        value = out.get(key)
        if isinstance(value, str):
            try:
                out[key] = Decimal(value)
            except ArithmeticError:
                pass
    for key in ("start_date", "end_date"):
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
