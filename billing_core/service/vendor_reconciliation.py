"""Vendor reconciliation, the CSP case: what the vendor (Microsoft Partner Center) charged us
for a month against what we billed our customers for it. Nothing here changes an invoice, a
subscription or an account: the report lists the differences, finance decides.

Input: the vendor's reconciliation file for one service month, as CSV: Partner Center's new
commerce invoice reconciliation (billed) or unbilled reconciliation line items. Headers are
matched case-insensitively (a UTF-8 BOM and surrounding spaces ignored); extra columns are
ignored. Required: ``CustomerId``, ``ProductId``, ``SkuId``, ``Subtotal``, ``Currency`` and
``BillableQuantity`` (Partner Center: "use BillableQuantity for reconciliation"; a file
without it may give ``Quantity`` instead). Used when present: ``CustomerName``,
``CustomerDomainName``, ``SubscriptionId``, ``SkuName``, ``ProductName``, ``ChargeType``,
``UnitPrice``, ``EffectiveUnitPrice``, ``ChargeStartDate``, ``ChargeEndDate``,
``InvoiceNumber``. A row with a bad value is refused with its line number (the header is line
1), the field and the value; the others are imported.

Tables (``billing_core/adapters/tables.py``, migration 0021)
- ``vendor_mappings`` (vendor, kind, vendor_key) unique -> ``account_id`` (kind ``customer``,
  key = CustomerId), ``subscription_id`` (kind ``subscription``, key = SubscriptionId) or
  ``product_id`` (kind ``product``, key = ``ProductId:SkuId`` or ``ProductId``). Finance's,
  set and removed by CLI / API; never written by sync.
- ``vendor_imports``: one row per file imported for a (vendor, period); the period's live one
  is ``status = 'current'`` (a partial unique index: at most one), those it replaced
  ``superseded`` (kept, with their lines, as the history). ``report`` is the JSON of the last
  report computed for it, ``summary`` its summary alone (``/metrics`` reads it at every
  scrape: a report can be megabytes), ``errors`` the refused rows.
- ``vendor_lines``: the accepted rows of an import: the vendor's ids, names, charge type and
  dates, ``quantity`` (signed by the rules below), unit prices (exact decimals) and
  ``subtotal_minor`` (pretax cost in the currency's minor units, ROUND_HALF_UP once per line
  when the file has more decimals than the currency).

Matching (each vendor line -> an account and a product; the first rule that finds one wins)
- account: 1. a ``subscription`` mapping of its SubscriptionId (that subscription's account);
  2. a ``customer`` mapping of its CustomerId; 3. the CRM's fields: an account whose CRM id
  (``accounts.ext_id``) or CRM account number (``accounts.number``, mapped from the CRM by the
  field map) equals the CustomerId, or whose number equals the CustomerDomainName
  (case-insensitive; two accounts found is ``ambiguous_account``).
- product: 1. the mapped subscription's product; 2. a ``product`` mapping of
  ``ProductId:SkuId``, then of ``ProductId``; 3. a product whose sku is ``ProductId:SkuId`` or
  ``ProductId`` (Partner Center's catalog ids, e.g. ``CFQ7TTC0LH18:0001``).
- A line in another currency than its account's is not compared (``currency``).

Report for a period (a service month ``YYYY-MM`` = [first day, first day of next month))
- Our side: the lines of posted invoices (posted, partially paid, paid; never draft or void)
  with a product that is a vendor product (one a mapping points to, or one a line of this file
  resolved to, compared or not), whose service period starts in the month (the line's
  ``period_start``, else its invoice's). Credit draws, tax and credit memos are not part of
  it: amounts are pretax invoice lines, like ``Subtotal``.
- Quantities are signed by their amount: a line with a negative amount (a decrease, a refund)
  counts its units negatively, on both sides.
- Per (account, product): our quantity and billed amount, the vendor's quantity and cost,
  margin = billed - cost (and its percent of billed), the quantity difference (ours -
  vendor's) and what it is worth at the vendor's unit cost (``difference_minor`` =
  ``round(quantity difference x cost / vendor quantity)``; at our unit price when the
  vendor's quantity is 0). Status ``matched``, or ``mismatched`` with its reasons:
  ``quantity`` (|difference_minor| over the tolerance) and ``negative_margin`` (a loss over
  the tolerance); ``ours_only``: we billed it, the vendor charged nothing for it.
- ``unmatched``: each vendor line not compared, with its reason: ``no_account``,
  ``ambiguous_account``, ``no_product``, ``ambiguous_product``, ``currency``, ``not_billed``
  (account and product found, but we billed nothing for them in the month).
- Tolerance (config ``[reconciliation]``): ``max(tolerance_minor, round(|cost| x
  tolerance_percent / 100))`` per (account, product), in the account currency's minor units.
- ``exceptions`` = mismatched + unmatched + ours_only: what finance has to look at.

Invariants
- Re-importing a file adds nothing: a file whose SHA-256 is the period's current import's is
  not stored again; only the report is computed again (mappings or invoices may have changed).
  A different file for the same (vendor, period) replaces the current import (replace per
  period): one current import per (vendor, period), so a period is never counted twice.
- Money is integers of minor units, quantities and prices exact decimals; never float.
- The ledger's documents are read, never written.

Transactions: ``reconcile_vendor_file`` does everything in the caller's unit of work (the
supersede, the new import and its lines, the report, the audit row): the caller commits once,
so an import lands whole or not at all. A malformed file (header) raises before any write.
Reads (``stored_report``, ``list_mappings``, ``current_summaries``) need no write.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.bulk import BulkInsert
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    accounts,
    invoice_lines,
    invoices,
    products,
    subscriptions,
    vendor_imports,
    vendor_lines,
    vendor_mappings,
)
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.money import MAX_MINOR, check_currency, round_minor, to_minor
from billing_core.domain.text import printable, unstorable
from billing_core.service import audit

VENDOR = "microsoft"
KINDS = ("customer", "subscription", "product")
POSTED = ("posted", "partially_paid", "paid")
STATUSES = ("matched", "mismatched", "unmatched", "ours_only")
#: Refused rows kept with an import (the count is always exact).
MAX_ERRORS_KEPT = 1000
_CHUNK = 5000

#: The Partner Center columns read, by their lower-case name.
REQUIRED = ("CustomerId", "ProductId", "SkuId", "Subtotal", "Currency")
QUANTITY = ("BillableQuantity", "Quantity")        # the first present is used
OPTIONAL = ("CustomerName", "CustomerDomainName", "SubscriptionId", "SkuName", "ProductName",
            "ChargeType", "UnitPrice", "EffectiveUnitPrice", "ChargeStartDate",
            "ChargeEndDate", "InvoiceNumber")
_LIMITS = {"CustomerId": 64, "SubscriptionId": 64, "ProductId": 64, "SkuId": 64,
           "CustomerName": 255, "CustomerDomainName": 255, "SkuName": 255, "ProductName": 255,
           "ChargeType": 64, "InvoiceNumber": 64}
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AP]M)?)?$",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Tolerance:
    """Differences up to ``max(minor, round(|cost| x percent / 100))`` are not listed."""
    minor: int = 0
    percent: Decimal = Decimal(0)

    def for_cost(self, cost_minor: int) -> int:
        return max(self.minor, round_minor(abs(Decimal(cost_minor)) * self.percent / 100))


@dataclass
class ParsedFile:
    lines: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0


# --- periods and parsing -----------------------------------------------------------------------

def parse_period(value: object) -> tuple[date, date]:
    """``YYYY-MM`` -> [first day, first day of the next month)."""
    match = _PERIOD.match(str(value).strip()) if value is not None else None
    if match is None:
        raise ValidationError("period", value, "must be a month, YYYY-MM (e.g. 2026-03)")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= year < 9999:
        raise ValidationError("period", value, "is out of range (years 0001 to 9998)")
    start = date(year, month, 1)
    return start, date(year + month // 12, month % 12 + 1, 1)


def _date(text: str) -> date:
    """Partner Center writes ``M/D/YYYY`` (with a time in some files); ISO dates too."""
    match = _US_DATE.match(text)
    if match:
        return date(int(match.group(3)), int(match.group(1)), int(match.group(2)))
    if len(text) > 10 and text[10] in "T ":        # an ISO date and time: its date
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    return date.fromisoformat(text)


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise InvalidOperation
    return value


class _RowError(Exception):
    def __init__(self, field_name: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.value = value
        self.message = message


def _header(fieldnames: Sequence[str] | None, file_name: str) -> dict[str, int]:
    """The column index of each column we read, by its documented name."""
    if not fieldnames:
        raise ValidationError("columns", "", f"{file_name} is empty: a reconciliation file "
                              f"starts with its header line")
    seen: dict[str, int] = {}
    for i, raw in enumerate(fieldnames):
        key = (raw or "").strip().lstrip("\ufeff").strip().lower()
        if key in seen and key:
            raise ValidationError("columns", raw, "appears twice in the header")
        seen[key] = i
    wanted = {name: seen[name.lower()] for name in (*REQUIRED, *QUANTITY, *OPTIONAL)
              if name.lower() in seen}
    missing = [name for name in REQUIRED if name not in wanted]
    if not any(q in wanted for q in QUANTITY):
        missing.append("BillableQuantity")
    if missing:
        shown = ",".join(f.strip() for f in fieldnames)[:200]
        raise ValidationError("columns", shown, f"missing {', '.join(missing)} (Partner Center "
                              f"reconciliation columns, any case)")
    return wanted


def read_vendor_csv(data: bytes, file_name: str = "file") -> ParsedFile:
    """The accepted rows and the refused ones (row, field, value, message). Raises a
    ``ValidationError`` (nothing accepted) for a file that is not UTF-8 or lacks a column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError("file", file_name, f"is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        head = next(reader, None)
        cols = _header(head, file_name)
        out = ParsedFile()
        for row in reader:
            line_no = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            out.rows_read += 1
            try:
                out.lines.append(_row(row, cols, line_no))
            except _RowError as exc:
                out.errors.append({"row": line_no, "field": exc.field, "value": exc.value,
                                   "message": exc.message})
    except csv.Error as exc:
        raise ValidationError("file", file_name, f"is not valid CSV: {exc}") from None
    return out


def _row(row: list[str], cols: Mapping[str, int], line_no: int) -> dict[str, Any]:
    def get(name: str) -> str:
        i = cols.get(name)
        value = row[i].strip() if i is not None and i < len(row) else ""
        if unstorable(value):
            raise _RowError(name, printable(value), "contains a NUL character")
        if value and name in _LIMITS and len(value) > _LIMITS[name]:
            raise _RowError(name, value, f"is longer than {_LIMITS[name]} characters")
        return value

    def need(name: str) -> str:
        value = get(name)
        if not value:
            raise _RowError(name, value, "is required")
        return value

    def number(name: str, value: str) -> Decimal:
        try:
            return _decimal(value.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?",
                                                                   value) else value)
        except InvalidOperation:
            raise _RowError(name, value, "is not a number") from None

    customer, product, sku = need("CustomerId"), need("ProductId"), need("SkuId")
    currency_text = need("Currency")
    try:
        currency = check_currency(currency_text)
    except ValidationError:
        raise _RowError("Currency", currency_text, "is not a known ISO 4217 currency code") \
            from None
    qty_name = next(q for q in QUANTITY if q in cols)
    quantity = number(qty_name, need(qty_name))
    subtotal_text = need("Subtotal")
    subtotal = number("Subtotal", subtotal_text)
    subtotal_minor = to_minor(subtotal, currency)
    if abs(subtotal_minor) > MAX_MINOR:
        raise _RowError("Subtotal", subtotal_text, "is too large")
    prices: dict[str, Decimal | None] = {}
    for name in ("UnitPrice", "EffectiveUnitPrice"):
        value = get(name)
        prices[name] = number(name, value) if value else None
    dates: dict[str, date | None] = {}
    for name in ("ChargeStartDate", "ChargeEndDate"):
        value = get(name)
        try:
            dates[name] = _date(value) if value else None
        except ValueError:
            raise _RowError(name, value, "is not a date (M/D/YYYY or YYYY-MM-DD)") from None
    return {"row_no": line_no, "vendor_customer_id": customer,
            "customer_name": get("CustomerName") or None,
            "customer_domain": get("CustomerDomainName") or None,
            "vendor_subscription_id": get("SubscriptionId") or None,
            "vendor_product_id": product, "vendor_sku_id": sku,
            "sku_name": get("SkuName") or None, "product_name": get("ProductName") or None,
            "charge_type": get("ChargeType") or None,
            "charge_start": dates["ChargeStartDate"], "charge_end": dates["ChargeEndDate"],
            "quantity": _signed(quantity, subtotal_minor),
            "unit_price": prices["UnitPrice"], "effective_unit_price": prices["EffectiveUnitPrice"],
            "currency": currency, "subtotal_minor": subtotal_minor,
            "invoice_number": get("InvoiceNumber") or None}


def _signed(quantity: Decimal, amount_minor: int) -> Decimal:
    """Units count with the sign of their amount (a credit's units count negatively)."""
    return -abs(quantity) if amount_minor < 0 else abs(quantity)


# --- mappings ------------------------------------------------------------------------------------

def _kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValidationError("kind", kind, f"must be one of {', '.join(KINDS)}")
    return str(kind)


def _key(vendor_key: object) -> str:
    text = str(vendor_key or "").strip()
    if not text or len(text) > 128:
        raise ValidationError("vendor_key", vendor_key, "is required (at most 128 characters)")
    return text


def _target(conn: Connection, kind: str, target: object) -> dict[str, int]:
    """The ledger row a mapping points to: an account (id or CRM id), a subscription (id),
    a product (id or sku)."""
    from billing_core.service.accounts import resolve_account
    from billing_core.service.pricing import get_product

    if kind == "customer":
        return {"account_id": int(resolve_account(conn, str(target))["id"])}
    if kind == "product":
        return {"product_id": int(get_product(conn, str(target))["id"])}
    found = as_id(target)
    row = conn.execute(select(subscriptions.c.id).where(
        subscriptions.c.id == found)).first() if found is not None else None
    if row is None:
        raise NotFound("subscription", target)
    return {"subscription_id": int(row.id)}


def set_mapping(uow: UnitOfWork, kind: str, vendor_key: str, target: object, *,
                vendor: str = VENDOR) -> dict[str, Any]:
    """Map a vendor id to a ledger row (replacing the key's earlier mapping)."""
    kind, key = _kind(kind), _key(vendor_key)
    values = {"account_id": None, "subscription_id": None, "product_id": None,
              **_target(uow.conn, kind, target)}
    where = (vendor_mappings.c.vendor == vendor, vendor_mappings.c.kind == kind,
             vendor_mappings.c.vendor_key == key)
    before = uow.conn.execute(select(vendor_mappings).where(*where)).mappings().first()
    if before is None:
        try:
            with uow.savepoint():
                mapping_id = uow.conn.execute(insert(vendor_mappings).values(
                    vendor=vendor, kind=kind, vendor_key=key, created_at=uow.now(),
                    updated_at=uow.now(), **values).returning(vendor_mappings.c.id)).scalar_one()
        except IntegrityError:
            raise InvalidState("vendor_key", key, "was mapped at the same time by another "
                               "request: try again") from None
    else:
        mapping_id = before["id"]
        uow.conn.execute(update(vendor_mappings).where(vendor_mappings.c.id == mapping_id)
                         .values(updated_at=uow.now(), **values))
    audit.record(uow, "mapped", "vendor_mapping", mapping_id, entity_ref=f"{kind}:{key}",
                 account_id=values["account_id"],
                 before={k: before[k] for k in values} if before is not None else None,
                 after=values)
    return _mapping_out(uow.conn, int(mapping_id))


def remove_mapping(uow: UnitOfWork, kind: str, vendor_key: str, *,
                   vendor: str = VENDOR) -> dict[str, Any]:
    kind, key = _kind(kind), _key(vendor_key)
    row = uow.conn.execute(select(vendor_mappings).where(
        vendor_mappings.c.vendor == vendor, vendor_mappings.c.kind == kind,
        vendor_mappings.c.vendor_key == key)).mappings().first()
    if row is None:
        raise NotFound("vendor_key", key)
    out = _mapping_out(uow.conn, int(row["id"]))
    uow.conn.execute(vendor_mappings.delete().where(vendor_mappings.c.id == row["id"]))
    audit.record(uow, "unmapped", "vendor_mapping", row["id"], entity_ref=f"{kind}:{key}",
                 account_id=row["account_id"],
                 changes={k: [row[k], None] for k in ("account_id", "subscription_id",
                                                      "product_id") if row[k] is not None})
    return {**out, "removed": True}


def _mapping_query() -> Any:
    return select(vendor_mappings, accounts.c.name.label("account_name"),
                  products.c.sku.label("sku")).select_from(
        vendor_mappings.outerjoin(accounts, accounts.c.id == vendor_mappings.c.account_id)
        .outerjoin(products, products.c.id == vendor_mappings.c.product_id))


def _mapping_out(conn: Connection, mapping_id: int) -> dict[str, Any]:
    row = conn.execute(_mapping_query().where(vendor_mappings.c.id == mapping_id)
                       ).mappings().one()
    return _mapping_dict(row)


def _mapping_dict(row: RowMapping) -> dict[str, Any]:
    return {"id": row["id"], "vendor": row["vendor"], "kind": row["kind"],
            "vendor_key": row["vendor_key"], "account_id": row["account_id"],
            "account_name": row["account_name"], "subscription_id": row["subscription_id"],
            "product_id": row["product_id"], "sku": row["sku"],
            "updated_at": row["updated_at"]}


def list_mappings(conn: Connection, kind: str | None = None, *,
                  vendor: str = VENDOR) -> list[dict[str, Any]]:
    query = _mapping_query().where(vendor_mappings.c.vendor == vendor)
    if kind is not None:
        query = query.where(vendor_mappings.c.kind == _kind(kind))
    rows = conn.execute(query.order_by(vendor_mappings.c.kind, vendor_mappings.c.vendor_key))
    return [_mapping_dict(r) for r in rows.mappings()]


# --- matching ------------------------------------------------------------------------------------

class _Matcher:
    """Resolves vendor ids to (account, product) by the documented precedence, each key once."""

    def __init__(self, conn: Connection, vendor: str) -> None:
        self.conn = conn
        self.maps: dict[tuple[str, str], RowMapping] = {
            (r["kind"], r["vendor_key"].lower()): r for r in conn.execute(
                select(vendor_mappings).where(vendor_mappings.c.vendor == vendor)).mappings()}
        self._subs: dict[int, Any] = {}
        self._accounts: dict[tuple[str, str | None], tuple[int | None, str | None]] = {}
        self._products: dict[tuple[str, str], tuple[int | None, str | None]] = {}
        # the CRM's fields, lower-cased, read once (one statement each, not one per key)
        self._crm_ids: dict[str, set[int]] | None = None
        self._numbers: dict[str, set[int]] = {}
        self._skus: dict[str, set[int]] | None = None

    def _crm_index(self) -> dict[str, set[int]]:
        """Accounts by lower-cased CRM id and CRM account number (and ``_numbers``: by
        number only, for the domain name)."""
        if self._crm_ids is None:
            index: dict[str, set[int]] = {}
            for r in self.conn.execute(select(accounts.c.id, accounts.c.ext_id,
                                              accounts.c.number)):
                for value in (r.ext_id, r.number):
                    if value:
                        index.setdefault(value.lower(), set()).add(int(r.id))
                if r.number:
                    self._numbers.setdefault(r.number.lower(), set()).add(int(r.id))
            self._crm_ids = index
        return self._crm_ids

    def _sku_index(self) -> dict[str, set[int]]:
        if self._skus is None:
            index: dict[str, set[int]] = {}
            for r in self.conn.execute(select(products.c.id, products.c.sku)):
                index.setdefault(r.sku.lower(), set()).add(int(r.id))
            self._skus = index
        return self._skus

    def mapped_products(self) -> set[int]:
        ids = {int(m["product_id"]) for m in self.maps.values() if m["product_id"] is not None}
        sub_ids = sorted({int(m["subscription_id"]) for m in self.maps.values()
                          if m["subscription_id"] is not None} - set(self._subs))
        for i in range(0, len(sub_ids), 1000):   # the mapped subscriptions, 1,000 a statement
            for row in self.conn.execute(select(
                    subscriptions.c.id, subscriptions.c.account_id, subscriptions.c.product_id)
                    .where(subscriptions.c.id.in_(sub_ids[i:i + 1000]))):
                self._subs[int(row.id)] = row
        return ids | {int(s.product_id) for s in self._subs.values()}

    def _sub(self, sub_id: int) -> Any:
        if sub_id not in self._subs:
            self._subs[sub_id] = self.conn.execute(select(
                subscriptions.c.account_id, subscriptions.c.product_id).where(
                subscriptions.c.id == sub_id)).one()
        return self._subs[sub_id]

    def match(self, line: RowMapping) -> tuple[int | None, int | None, str | None]:
        """(account id, product id, the reason when one is missing)."""
        sub_key = (line["vendor_subscription_id"] or "").lower()
        sub_map = self.maps.get(("subscription", sub_key)) if sub_key else None
        if sub_map is not None:
            sub = self._sub(int(sub_map["subscription_id"]))
            return int(sub.account_id), int(sub.product_id), None
        account, why = self._account(line["vendor_customer_id"], line["customer_domain"])
        product, why_p = self._product(line["vendor_product_id"], line["vendor_sku_id"])
        return account, product, why or why_p

    def _account(self, customer: str, domain: str | None) -> tuple[int | None, str | None]:
        cache_key = (customer.lower(), (domain or "").lower() or None)
        if cache_key in self._accounts:
            return self._accounts[cache_key]
        mapped = self.maps.get(("customer", customer.lower()))
        if mapped is not None:
            found: tuple[int | None, str | None] = (int(mapped["account_id"]), None)
        else:
            index = self._crm_index()
            # the CRM id or number is the CustomerId, or the number is the domain name
            ids = sorted(index.get(customer.lower(), set())
                         | (self._numbers.get(domain.lower(), set()) if domain else set()))
            found = (ids[0], None) if len(ids) == 1 else \
                (None, "ambiguous_account" if ids else "no_account")
        self._accounts[cache_key] = found
        return found

    def _product(self, product: str, sku: str) -> tuple[int | None, str | None]:
        cache_key = (product.lower(), sku.lower())
        if cache_key in self._products:
            return self._products[cache_key]
        keys = [f"{product}:{sku}".lower(), product.lower()]
        found: tuple[int | None, str | None] | None = None
        for key in keys:
            mapped = self.maps.get(("product", key))
            if mapped is not None:
                found = (int(mapped["product_id"]), None)
                break
        if found is None:
            for key in keys:
                ids = sorted(self._sku_index().get(key, set()))
                if len(ids) == 1:
                    found = (ids[0], None)
                    break
                if ids:
                    found = (None, "ambiguous_product")
                    break
        found = found or (None, "no_product")
        self._products[cache_key] = found
        return found


# --- import and report ----------------------------------------------------------------------------

def _current(conn: Connection, vendor: str, period: str) -> RowMapping | None:
    return conn.execute(select(vendor_imports).where(
        vendor_imports.c.vendor == vendor, vendor_imports.c.period == period,
        vendor_imports.c.status == "current")).mappings().first()


def reconcile_vendor_file(uow: UnitOfWork, data: bytes, *, period: str, file_name: str,
                          tolerance: Tolerance = Tolerance(), vendor: str = VENDOR
                          ) -> dict[str, Any]:
    """Import ``data`` (the vendor's CSV) as the period's current import, unless it is that
    import already (same SHA-256: nothing stored again), and compute the report. The caller
    commits. Returns the report (``unchanged``: the file was the current import already)."""
    start, end = parse_period(period)
    period = f"{start:%Y-%m}"
    digest = hashlib.sha256(data).hexdigest()
    current = _current(uow.conn, vendor, period)
    if current is not None and current["file_sha256"] == digest:
        import_id, unchanged = int(current["id"]), True
    else:
        # read_vendor_csv raises before anything is written; its rows are freed once stored
        import_id = _store(uow, vendor, period, file_name[-255:], digest,
                           read_vendor_csv(data, file_name), current)
        unchanged = False
    report = build_report(uow.conn, import_id, start, end, tolerance)
    report["unchanged"] = unchanged
    uow.conn.execute(update(vendor_imports).where(vendor_imports.c.id == import_id).values(
        report=json.dumps(report, default=str), summary=json.dumps(report["summary"]),
        reconciled_at=uow.now()))
    summary = report["summary"]
    audit.record(uow, "reconciled", "vendor_import", import_id, entity_ref=f"{vendor}:{period}",
                 changes={"file_sha256": [None, digest], "unchanged": [None, unchanged],
                          **{s: [None, summary[s]["count"]] for s in STATUSES}})
    return report


def _store(uow: UnitOfWork, vendor: str, period: str, file_name: str, digest: str,
           parsed: ParsedFile, current: RowMapping | None) -> int:
    if current is not None:
        uow.conn.execute(update(vendor_imports).where(vendor_imports.c.id == current["id"])
                         .values(status="superseded", superseded_at=uow.now()))
    try:
        with uow.savepoint():
            import_id = int(uow.conn.execute(insert(vendor_imports).values(
                vendor=vendor, period=period, file_name=file_name, file_sha256=digest,
                status="current", rows_read=parsed.rows_read, rows_refused=len(parsed.errors),
                errors=json.dumps(parsed.errors[:MAX_ERRORS_KEPT], default=str),
                imported_at=uow.now()).returning(vendor_imports.c.id)).scalar_one())
    except IntegrityError:
        raise InvalidState("period", period, "is being imported by another request at the "
                           "same time: try again") from None
    for i in range(0, len(parsed.lines), _CHUNK):     # executemany (SQLite) or COPY (PostgreSQL)
        _LINES_INSERT.run(uow.conn, [(import_id, *(line[c] for c in _LINE_COLUMNS[1:]))
                                     for line in parsed.lines[i:i + _CHUNK]])
    return import_id


_LINE_COLUMNS = ("import_id", "row_no", "vendor_customer_id", "customer_name", "customer_domain",
                 "vendor_subscription_id", "vendor_product_id", "vendor_sku_id", "sku_name",
                 "product_name", "charge_type", "charge_start", "charge_end", "quantity",
                 "unit_price", "effective_unit_price", "currency", "subtotal_minor",
                 "invoice_number")
_LINES_INSERT = BulkInsert(vendor_lines, _LINE_COLUMNS)


@dataclass
class _Group:
    account_id: int
    product_id: int
    currency: str
    our_quantity: Decimal = Decimal(0)
    billed_minor: int = 0
    our_lines: int = 0
    invoices: set[str] = field(default_factory=set)
    vendor_quantity: Decimal = Decimal(0)
    cost_minor: int = 0
    vendor_lines: int = 0
    vendor_rows: list[int] = field(default_factory=list)


def _our_lines(conn: Connection, start: date, end: date,
               product_ids: Iterable[int]) -> Iterator[Any]:
    wanted = sorted(set(product_ids))
    if not wanted:
        return iter(())
    service_start = func.coalesce(invoice_lines.c.period_start, invoices.c.period_start)
    return iter(conn.execute(select(
        invoices.c.account_id, invoices.c.currency, invoices.c.number,
        invoice_lines.c.product_id, invoice_lines.c.quantity, invoice_lines.c.amount_minor)
        .select_from(invoice_lines.join(invoices, invoices.c.id == invoice_lines.c.invoice_id))
        .where(invoices.c.status.in_(POSTED), invoice_lines.c.product_id.in_(wanted),
               service_start >= start, service_start < end)
        .order_by(invoices.c.id, invoice_lines.c.line_no)).all())


def build_report(conn: Connection, import_id: int, start: date, end: date,
                 tolerance: Tolerance) -> dict[str, Any]:
    """The report of one import against the ledger's posted invoices of [start, end)."""
    imp = conn.execute(select(vendor_imports).where(vendor_imports.c.id == import_id)
                       ).mappings().one()
    matcher = _Matcher(conn, imp["vendor"])
    currencies = {int(r.id): r.currency for r in conn.execute(
        select(accounts.c.id, accounts.c.currency))}
    c = vendor_lines.c
    lines = conn.execute(select(   # what matching and the report use, not the whole row
        c.row_no, c.vendor_customer_id, c.customer_name, c.customer_domain,
        c.vendor_subscription_id, c.vendor_product_id, c.vendor_sku_id, c.sku_name,
        c.charge_type, c.quantity, c.currency, c.subtotal_minor)
        .where(c.import_id == import_id).order_by(c.row_no)).mappings().all()
    matched: list[tuple[RowMapping, int, int]] = []
    unmatched: list[dict[str, Any]] = []
    vendor_products = matcher.mapped_products()
    for line in lines:
        account, product, why = matcher.match(line)
        if product is not None:
            vendor_products.add(product)
        if account is not None and product is not None and currencies[account] != line["currency"]:
            why = "currency"
        if why is not None or account is None or product is None:
            unmatched.append(_unmatched(line, account, product, why or "no_account"))
        else:
            matched.append((line, account, product))
    groups: dict[tuple[int, int], _Group] = {}
    for row in _our_lines(conn, start, end, vendor_products):
        g = groups.setdefault((int(row.account_id), int(row.product_id)),
                              _Group(int(row.account_id), int(row.product_id), row.currency))
        g.our_quantity += _signed(row.quantity or Decimal(0), int(row.amount_minor))
        g.billed_minor += int(row.amount_minor)
        g.our_lines += 1
        if row.number:
            g.invoices.add(row.number)
    for line, account, product in matched:
        found = groups.get((account, product))
        if found is None:
            unmatched.append(_unmatched(line, account, product, "not_billed"))
            continue
        g = found
        g.vendor_quantity += line["quantity"]
        g.cost_minor += int(line["subtotal_minor"])
        g.vendor_lines += 1
        g.vendor_rows.append(int(line["row_no"]))
    unmatched.sort(key=lambda u: u["row"])
    names = {int(r.id): (r.name, r.ext_id) for r in conn.execute(
        select(accounts.c.id, accounts.c.name, accounts.c.ext_id).where(
            accounts.c.id.in_(sorted({a for a, _ in groups} | {0}))))}
    skus = {int(r.id): (r.sku, r.name) for r in conn.execute(
        select(products.c.id, products.c.sku, products.c.name).where(
            products.c.id.in_(sorted({p for _, p in groups} | {0}))))}
    out_groups = [_group_out(g, tolerance, names, skus)
                  for _, g in sorted(groups.items(), key=lambda kv: kv[0])]
    summary = _summary(out_groups, unmatched)
    errors = json.loads(imp["errors"])
    return {"vendor": imp["vendor"], "period": imp["period"], "import_id": import_id,
            "file_name": imp["file_name"], "file_sha256": imp["file_sha256"],
            "imported_at": imp["imported_at"], "service_period": [start, end],
            "tolerance": {"minor": tolerance.minor, "percent": str(tolerance.percent)},
            "rows_read": imp["rows_read"], "rows_refused": imp["rows_refused"],
            "errors": errors, "summary": summary,
            "exceptions": sum(summary[s]["count"] for s in ("mismatched", "unmatched",
                                                              "ours_only")),
            "groups": out_groups, "unmatched": unmatched}


def _unmatched(line: RowMapping, account: int | None, product: int | None,
               reason: str) -> dict[str, Any]:
    return {"row": line["row_no"], "reason": reason, "account_id": account,
            "product_id": product, "vendor_customer_id": line["vendor_customer_id"],
            "customer_name": line["customer_name"],
            "vendor_subscription_id": line["vendor_subscription_id"],
            "vendor_product_id": line["vendor_product_id"],
            "vendor_sku_id": line["vendor_sku_id"], "sku_name": line["sku_name"],
            "charge_type": line["charge_type"], "quantity": str(line["quantity"]),
            "cost_minor": int(line["subtotal_minor"]), "currency": line["currency"]}


def _percent(part: int, whole: int) -> str | None:
    if whole == 0:
        return None
    return str((Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.01")))


def _group_out(g: _Group, tolerance: Tolerance, names: Mapping[int, tuple[str, str]],
               skus: Mapping[int, tuple[str, str]]) -> dict[str, Any]:
    margin = g.billed_minor - g.cost_minor
    qdiff = g.our_quantity - g.vendor_quantity
    if g.vendor_quantity != 0:
        worth = round_minor(qdiff * Decimal(g.cost_minor) / g.vendor_quantity)
    elif g.our_quantity != 0:
        worth = round_minor(qdiff * Decimal(g.billed_minor) / g.our_quantity)
    else:
        worth = 0
    allowed = tolerance.for_cost(g.cost_minor)
    reasons: list[str] = []
    if g.vendor_lines == 0:
        status = "ours_only"
    else:
        if qdiff != 0 and abs(worth) > allowed:
            reasons.append("quantity")
        if margin < 0 and -margin > allowed:
            reasons.append("negative_margin")
        status = "mismatched" if reasons else "matched"
    name, ext_id = names.get(g.account_id, ("", ""))
    sku, product_name = skus.get(g.product_id, ("", ""))
    return {"status": status, "reasons": reasons, "account_id": g.account_id,
            "account_name": name, "account_ext_id": ext_id, "product_id": g.product_id,
            "sku": sku, "product_name": product_name, "currency": g.currency,
            "our_quantity": _num(g.our_quantity), "vendor_quantity": _num(g.vendor_quantity),
            "quantity_difference": _num(qdiff), "billed_minor": g.billed_minor,
            "cost_minor": g.cost_minor, "margin_minor": margin,
            "margin_percent": _percent(margin, g.billed_minor), "difference_minor": worth,
            "tolerance_minor": allowed, "our_lines": g.our_lines, "vendor_lines": g.vendor_lines,
            "vendor_rows": g.vendor_rows, "invoices": sorted(g.invoices)}


def _num(value: Decimal) -> str:
    """An exact decimal as text without exponent or trailing zeros (``10``, ``2.5``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _summary(groups: Sequence[Mapping[str, Any]],
             unmatched: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per status: how many, and per currency the billed and cost amounts (minor units)."""
    out: dict[str, Any] = {s: {"count": 0, "amounts": {}} for s in STATUSES}

    def add(status: str, currency: str, billed: int, cost: int) -> None:
        entry = out[status]
        entry["count"] += 1
        amounts = entry["amounts"].setdefault(currency, {"billed_minor": 0, "cost_minor": 0})
        amounts["billed_minor"] += billed
        amounts["cost_minor"] += cost

    for g in groups:
        add(g["status"], g["currency"], g["billed_minor"], g["cost_minor"])
    for u in unmatched:
        add("unmatched", u["currency"], 0, u["cost_minor"])
    return out


# --- reads ---------------------------------------------------------------------------------------

def stored_report(conn: Connection, period: str, *, vendor: str = VENDOR) -> dict[str, Any]:
    """The report last computed for the period's current import (as JSON data)."""
    start, _ = parse_period(period)
    current = _current(conn, vendor, f"{start:%Y-%m}")
    if current is None or current["report"] is None:
        raise NotFound("period", period)
    report: dict[str, Any] = json.loads(current["report"])
    report.pop("unchanged", None)       # of the import that computed it, not of this read
    report["reconciled_at"] = current["reconciled_at"]
    return report


def current_summaries(conn: Connection, *, limit: int = 24,
                      vendor: str | None = None) -> list[dict[str, Any]]:
    """The summary of each period's current import, newest periods first (``/metrics``)."""
    query = select(vendor_imports.c.vendor, vendor_imports.c.period, vendor_imports.c.summary,
                   vendor_imports.c.rows_refused).where(
        vendor_imports.c.status == "current", vendor_imports.c.summary.is_not(None))
    if vendor is not None:
        query = query.where(vendor_imports.c.vendor == vendor)
    rows = conn.execute(query.order_by(vendor_imports.c.period.desc()).limit(limit)).all()
    return [{"vendor": r.vendor, "period": r.period, "rows_refused": r.rows_refused,
             "summary": json.loads(r.summary)} for r in rows]


# --- report as CSV ---------------------------------------------------------------------------------

CSV_COLUMNS = ("status", "reasons", "account_id", "account", "sku", "product", "currency",
               "our_quantity", "vendor_quantity", "quantity_difference", "billed", "cost",
               "margin", "margin_percent", "difference", "vendor_row", "vendor_customer_id",
               "vendor_subscription_id", "vendor_product_id", "vendor_sku_id")


def report_csv(report: Mapping[str, Any]) -> str:
    """One row per (account, product) then one per unmatched vendor line; amounts in major
    units (exact decimals), for a spreadsheet."""
    from billing_core.domain.money import from_minor

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def money(minor: int | None, currency: str) -> str:
        return "" if minor is None else format(from_minor(minor, currency), "f")

    for g in report["groups"]:
        cur = g["currency"]
        writer.writerow([g["status"], " ".join(g["reasons"]), g["account_id"],
                         g["account_name"], g["sku"], g["product_name"], cur, g["our_quantity"],
                         g["vendor_quantity"], g["quantity_difference"],
                         money(g["billed_minor"], cur), money(g["cost_minor"], cur),
                         money(g["margin_minor"], cur), g["margin_percent"] or "",
                         money(g["difference_minor"], cur), "", "", "", "", ""])
    for u in report["unmatched"]:
        cur = u["currency"]
        writer.writerow(["unmatched", u["reason"], u["account_id"] or "", u["customer_name"] or "",
                         "", u["sku_name"] or "", cur, "", u["quantity"], "", "",
                         money(u["cost_minor"], cur), "", "", "", u["row"],
                         u["vendor_customer_id"], u["vendor_subscription_id"] or "",
                         u["vendor_product_id"], u["vendor_sku_id"]])
    return buf.getvalue()
