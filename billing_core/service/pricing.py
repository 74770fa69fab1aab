"""The catalog: products and effective-dated prices per currency.

Rules kept here
- A product's ``sku`` is unique; ``kind`` is recurring | one_time | usage; a recurring product
  has a ``billing_period`` of month | year; ``pricing_model`` is per_unit | graduated | volume.
- :func:`update_product` changes a product as the CRM describes it now: ``sku`` (if no other
  product has it), ``name``, ``active`` and ``needs_provisioning`` always; ``kind`` and
  ``billing_period`` only while nothing is billed by them (no subscription, one-time charge
  or usage event names the product): a subscription's charges are priced per the product's
  period and rated by its kind, so changing either under it would re-price what was sold.
  Such a change is refused (``RuleViolation`` naming the field and the new value) and nothing
  is written. ``needs_provisioning`` applies to orders taken from then on. ``pricing_model``
  (the shape of the product's prices) and the external key (the product's origin) stay as
  they were created.
- Committed terms (:mod:`billing_core.domain.terms`): ``term_months`` (0: no term) and
  ``auto_renew`` are the defaults new subscriptions of the product take; ``term_decrease``
  (refuse | at_term_end) and ``early_termination`` (refuse | at_term_end | allowed) decide a
  decrease or an end inside a term. Left None they are the defaults when a product is added
  (no term, no renewal, at_term_end, at_term_end) and unchanged when it is updated (the CRM
  does not send them: finance's settings survive a CRM update).
- :func:`set_product_terms` is finance's hand on the term settings alone (CLI ``products
  update``, API ``POST /billing/products/{product}:update``): only the settings given change.
- A price belongs to (product, currency, effective_from) and applies from that day until the
  next price of the same product and currency. Setting a price for a day that already has one
  replaces it (the CRM re-sends its price book; the last word wins).
- A tiered product's price carries tiers (see :mod:`billing_core.domain.rating`); ``unit_price``
  of a tiered price is the first tier's unit price, for display. A tier's flat fee is an
  amount of the price's currency (``money.parse_amount``): with more decimals than the
  currency has (0.5 JPY, 20.005 USD), negative or above ``MAX_MINOR`` it is refused naming
  ``tiers[i].flat_fee``, never rounded.
- :func:`price_for` answers "which price applies on this day" or raises ``NotFound`` naming the
  product, currency and date. :class:`PriceBook` answers the same from memory for the bill run
  (the catalog is small; one SELECT per table per run).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from billing_core.adapters.bulk import inserted_id
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import (
    one_time_charges,
    price_tiers,
    prices,
    products,
    subscriptions,
    usage_events,
)
from billing_core.domain.errors import Duplicate, NotFound, RuleViolation, ValidationError
from billing_core.domain.ids import as_id
from billing_core.domain.money import check_currency, parse_amount, to_decimal
from billing_core.domain.rating import MODELS, Price, PriceBook, Tier, check_tiers, rate
from billing_core.domain.terms import EarlyTermination, TermDecrease, check_months, policy
from billing_core.service import audit

__all__ = [
    "Price",
    "PriceBook",
    "ProductIn",
    "Tier",
    "add_product",
    "get_product",
    "get_products",
    "list_prices",
    "list_products",
    "load_price_book",
    "price_for",
    "rate",
    "set_price",
    "update_product",
]

KINDS = ("recurring", "one_time", "usage")
PERIODS = ("month", "year")


@dataclass(frozen=True)
class ProductIn:
    sku: str
    name: str
    kind: str = "recurring"
    billing_period: str | None = None      # month | year, recurring only (default month)
    pricing_model: str = "per_unit"
    needs_provisioning: bool = False
    active: bool = True
    ext_source: str | None = None
    ext_id: str | None = None
    term_months: int | None = None         # 0 = no term; None = default / unchanged
    auto_renew: bool | None = None
    term_decrease: str | None = None       # refuse | at_term_end
    early_termination: str | None = None   # refuse | at_term_end | allowed


_TERM_DEFAULTS: dict[str, object] = {
    "term_months": None, "auto_renew": False, "term_decrease": TermDecrease.AT_TERM_END.value,
    "early_termination": EarlyTermination.AT_TERM_END.value}


def _term_settings(data: ProductIn) -> dict[str, object]:
    """The term settings ``data`` gives (checked), without those it leaves None."""
    out: dict[str, object] = {}
    if data.term_months is not None:
        out["term_months"] = check_months(data.term_months, "term_months")
    if data.auto_renew is not None:
        if not isinstance(data.auto_renew, bool):
            raise ValidationError("auto_renew", data.auto_renew, "must be true or false")
        out["auto_renew"] = data.auto_renew
    if data.term_decrease is not None:
        out["term_decrease"] = policy(TermDecrease, data.term_decrease, "term_decrease")
    if data.early_termination is not None:
        out["early_termination"] = policy(EarlyTermination, data.early_termination,
                                          "early_termination")
    return out


def _checked(data: ProductIn) -> tuple[str, str, str | None]:
    """The product's sku, name and billing period, or a ``ValidationError``."""
    sku = (data.sku or "").strip()
    if not sku:
        raise ValidationError("sku", data.sku, "is required")
    if len(sku) > 255:
        raise ValidationError("sku", data.sku, "is longer than 255 characters")
    if not data.name or not data.name.strip():
        raise ValidationError("name", data.name, "is required")
    if len(data.name.strip()) > 255:
        raise ValidationError("name", data.name, "is longer than 255 characters")
    if data.kind not in KINDS:
        raise ValidationError("kind", data.kind, f"must be one of {', '.join(KINDS)}")
    period = data.billing_period
    if data.kind == "recurring":
        period = period or "month"
        if period not in PERIODS:
            raise ValidationError("billing_period", period, "must be month or year")
    elif period is not None:
        raise ValidationError("billing_period", period, "only recurring products have one")
    return sku, data.name.strip(), period


def add_product(uow: UnitOfWork, data: ProductIn) -> int:
    """Create a product; ``Duplicate`` when the sku exists."""
    sku, name, period = _checked(data)
    if data.pricing_model not in MODELS:
        raise ValidationError("pricing_model", data.pricing_model,
                              f"must be one of {', '.join(MODELS)}")
    terms = {**_TERM_DEFAULTS, **_term_settings(data)}
    if uow.conn.execute(select(products.c.id).where(products.c.sku == sku)).first():
        raise Duplicate("sku", sku)
    new_id = inserted_id(uow.conn.execute(insert(products).values(
        sku=sku, name=name, kind=data.kind, billing_period=period,
        pricing_model=data.pricing_model, needs_provisioning=bool(data.needs_provisioning),
        active=bool(data.active), ext_source=data.ext_source, ext_id=data.ext_id,
        created_at=uow.now(), **terms)))
    audit.record(uow, "created", "product", new_id, entity_ref=sku,
                 after={"sku": sku, "name": name, "kind": data.kind, "billing_period": period,
                        "pricing_model": data.pricing_model, **terms})
    return new_id


def update_product(uow: UnitOfWork, product_id: int, data: ProductIn) -> None:
    """Change a product to ``data`` (see the module's rules for what may change); writes
    nothing when it is refused or already as described."""
    conn = uow.conn
    current = get_product(conn, product_id)
    sku, name, period = _checked(data)
    wanted: dict[str, object] = {
        "sku": sku, "name": name, "kind": data.kind, "billing_period": period,
        "needs_provisioning": bool(data.needs_provisioning), "active": bool(data.active),
        **_term_settings(data)}
    changed = {k: v for k, v in wanted.items() if current[k] != v}
    if not changed:
        return
    for key in ("kind", "billing_period"):
        if key in changed and _billed_by(conn, int(current["id"])):
            raise RuleViolation(key, changed[key], f"cannot change from {current[key]!r}: "
                                f"product {current['sku']} is already billed by it "
                                "(subscriptions, one-time charges or usage)")
    if "sku" in changed and conn.execute(select(products.c.id).where(
            products.c.sku == sku, products.c.id != current["id"])).first():
        raise Duplicate("sku", sku)
    conn.execute(update(products).where(products.c.id == current["id"]).values(changed))
    audit.record(uow, "updated", "product", current["id"], entity_ref=sku,
                 before={k: current[k] for k in changed}, after=changed)


def set_product_terms(uow: UnitOfWork, ref: int | str, *, term_months: int | None = None,
                      auto_renew: bool | None = None, term_decrease: str | None = None,
                      early_termination: str | None = None) -> RowMapping:
    """Finance's term settings of a product (by id or sku): those given (not None) change,
    every one checked before anything is written; returns the product as it is now.

    ``term_months`` 0 removes the term (1 to ``MAX_TERM_MONTHS``, whole years for a product
    billed yearly); ``auto_renew`` true or false; ``term_decrease`` refuse | at_term_end;
    ``early_termination`` refuse | at_term_end | allowed. A one-time product has no term. The
    defaults apply to subscriptions ordered from then on; the two policies to changes and ends
    decided from then on. A bad value is a ``ValidationError`` naming the field and the value.
    """
    current = get_product(uow.conn, ref)
    given: dict[str, object] = {k: v for k, v in (
        ("term_months", term_months), ("auto_renew", auto_renew),
        ("term_decrease", term_decrease), ("early_termination", early_termination))
        if v is not None}
    if given and current["kind"] == "one_time":
        field, value = next(iter(given.items()))
        raise ValidationError(field, value, f"product {current['sku']} is one_time: only "
                                            "recurring and usage products have terms")
    changed = _term_settings(ProductIn(
        sku=current["sku"], name=current["name"], term_months=term_months,
        auto_renew=auto_renew, term_decrease=term_decrease,
        early_termination=early_termination))
    months = changed.get("term_months")
    if isinstance(months, int) and current["billing_period"] == "year" and months % 12:
        raise ValidationError("term_months", months, "a product billed yearly needs a whole "
                                                     "number of years (12, 24, 36 ... months)")
    changed = {k: v for k, v in changed.items() if current[k] != v}
    if changed:
        uow.conn.execute(update(products).where(products.c.id == current["id"]).values(changed))
        audit.record(uow, "terms_updated", "product", current["id"], entity_ref=current["sku"],
                     before={k: current[k] for k in changed}, after=changed)
    return get_product(uow.conn, int(current["id"]))


def _billed_by(conn: Connection, product_id: int) -> bool:
    """Whether anything is billed by this product (its kind and period are then fixed)."""
    return any(conn.execute(select(table.c.id).where(table.c.product_id == product_id)
                            .limit(1)).first() is not None
               for table in (subscriptions, one_time_charges, usage_events))


def get_product(conn: Connection, ref: int | str) -> RowMapping:
    """A product by id or sku."""
    text = str(ref).strip()
    cond = products.c.sku == text
    product_id = as_id(text)
    if product_id is not None:
        cond = (products.c.id == product_id) | cond
    row = conn.execute(select(products).where(cond).order_by(products.c.id)).mappings().first()
    if row is None:
        raise NotFound("product", ref)
    return row


def list_products(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(products).order_by(products.c.id)).mappings())


def get_products(conn: Connection, ids: Iterable[int]) -> dict[int, RowMapping]:
    """Products by id (those that exist), read with one statement."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {int(r["id"]): r for r in conn.execute(
        select(products).where(products.c.id.in_(wanted))).mappings()}


def _parse_tiers(tiers: Iterable[Sequence[object]] | None, currency: str) -> tuple[Tier, ...]:
    """Tiers as (up_to|None, unit_price[, flat_fee]) with the flat fee in major units or a Tier."""
    out = []
    for i, raw in enumerate(tiers or ()):
        if isinstance(raw, Tier):
            out.append(raw)
            continue
        up_to_raw, price_raw, *rest = raw
        up_to = None if up_to_raw in (None, "", "inf") else to_decimal(up_to_raw, f"tiers[{i}].up_to")
        unit = to_decimal(price_raw, f"tiers[{i}].unit_price")
        # an amount as a user gives it: refused, not rounded, past the currency's decimals
        fee = parse_amount(rest[0], currency, f"tiers[{i}].flat_fee", allow_zero=True) \
            if rest else 0
        out.append(Tier(up_to, unit, fee))
    return tuple(out)


def set_price(uow: UnitOfWork, product_id: int, currency: str, effective_from: date,
              unit_price: Decimal | str | int | None,
              tiers: Iterable[Sequence[object]] | None = None) -> int:
    """Set the price of a product in a currency from a day on; returns the price id."""
    conn = uow.conn
    product = get_product(conn, product_id)
    currency = check_currency(currency)
    if not isinstance(effective_from, date):
        raise ValidationError("effective_from", effective_from, "must be a date")
    tier_list = _parse_tiers(tiers, currency)
    if product["pricing_model"] == "per_unit":
        if tier_list:
            raise ValidationError("tiers", len(tier_list),
                                  f"product {product['sku']} is priced per unit, not tiered")
        unit = to_decimal(unit_price, "unit_price")
    else:
        check_tiers(tier_list)
        unit = tier_list[0].unit_price if unit_price is None else to_decimal(unit_price,
                                                                             "unit_price")
    if unit < 0:
        raise ValidationError("unit_price", unit_price, "must not be negative")
    existing = conn.execute(select(prices.c.id, prices.c.unit_price).where(
        prices.c.product_id == product["id"], prices.c.currency == currency,
        prices.c.effective_from == effective_from)).first()
    before: dict[str, object] | None = None
    if existing is not None:
        before = {"unit_price": existing.unit_price, "tiers": _tiers_of(conn, int(existing.id))}
    if existing is None:
        price_id = inserted_id(conn.execute(insert(prices).values(
            product_id=product["id"], currency=currency, effective_from=effective_from,
            unit_price=unit, created_at=uow.now())))
    else:
        price_id = int(existing.id)
        conn.execute(update(prices).where(prices.c.id == price_id).values(unit_price=unit))
        conn.execute(delete(price_tiers).where(price_tiers.c.price_id == price_id))
    if tier_list:
        conn.execute(insert(price_tiers), [
            {"price_id": price_id, "up_to": t.up_to, "unit_price": t.unit_price,
             "flat_fee_minor": t.flat_fee_minor} for t in tier_list])
    after = {"unit_price": unit, "tiers": [[t.up_to, t.unit_price, t.flat_fee_minor]
                                           for t in tier_list]}
    changes = audit.diff(before, after) if before is not None else audit.diff(None, {
        "product": product["sku"], "currency": currency, "effective_from": effective_from,
        **after})
    if changes:
        audit.record(uow, "set", "price", price_id,
                     entity_ref=f"{product['sku']} {currency} from {effective_from}",
                     changes=changes)
    return price_id


def _tiers_of(conn: Connection, price_id: int) -> list[list[object]]:
    return [[r.up_to, r.unit_price, r.flat_fee_minor] for r in conn.execute(
        select(price_tiers.c.up_to, price_tiers.c.unit_price, price_tiers.c.flat_fee_minor)
        .where(price_tiers.c.price_id == price_id).order_by(price_tiers.c.id))]


def _build(rows: Iterable[RowMapping], tier_rows: Iterable[RowMapping],
           models: dict[int, str]) -> list[Price]:
    tiers_by_price: dict[int, list[Tier]] = defaultdict(list)
    for t in tier_rows:
        tiers_by_price[t["price_id"]].append(
            Tier(t["up_to"], t["unit_price"], int(t["flat_fee_minor"])))
    out = []
    for r in rows:
        tiers = tiers_by_price.get(r["id"], [])
        # open tier last, bounded tiers ascending
        tiers.sort(key=lambda t: (t.up_to is None, t.up_to or Decimal(0)))
        out.append(Price(product_id=r["product_id"], currency=r["currency"],
                         effective_from=r["effective_from"], unit_price=r["unit_price"],
                         model=models.get(r["product_id"], "per_unit"), tiers=tuple(tiers),
                         id=r["id"]))
    return out


def list_prices(conn: Connection, product_id: int | None = None) -> list[Price]:
    query = select(prices).order_by(prices.c.product_id, prices.c.currency,
                                    prices.c.effective_from)
    tq = select(price_tiers)
    if product_id is not None:
        query = query.where(prices.c.product_id == product_id)
        tq = tq.where(price_tiers.c.price_id.in_(
            select(prices.c.id).where(prices.c.product_id == product_id)))
    models = {r[0]: r[1] for r in conn.execute(select(products.c.id, products.c.pricing_model))}
    return _build(conn.execute(query).mappings(), conn.execute(tq).mappings(), models)


def price_for(conn: Connection, product_id: int, currency: str, on_date: date) -> Price:
    """The price in effect on ``on_date``; ``NotFound`` names product, currency and date."""
    row = conn.execute(select(prices).where(
        prices.c.product_id == product_id, prices.c.currency == currency,
        prices.c.effective_from <= on_date).order_by(prices.c.effective_from.desc())
        .limit(1)).mappings().first()
    if row is None:
        raise NotFound("price", f"product={product_id} currency={currency} date={on_date}")
    model = conn.execute(select(products.c.pricing_model)
                         .where(products.c.id == product_id)).scalar() or "per_unit"
    tiers = conn.execute(select(price_tiers).where(price_tiers.c.price_id == row["id"])).mappings()
    return _build([row], tiers, {product_id: model})[0]


def load_price_book(conn: Connection) -> PriceBook:
    return PriceBook(list_prices(conn))
