"""The project's corpus of bad CRM records, Salesforce- and Dataverse-shaped.

Each kind is one record as a connector hands it to the sync after the field map (canonical
names, values converted where they convert, raw where they do not: see connectors/values.py),
built from a good record of its object by changing what makes it bad. ``field`` is the field
the quarantine must name, or None when the value is in fact fine and must be accepted (the
kind's ``note`` says why). ``test_bad_record_corpus.py`` applies each kind in a page of good
records, on both databases.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

CRMS = ("salesforce", "dynamics")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LONG = "x" * 10_000
#: Stand-ins the test replaces by the SKU of the page's first good product, or of a product
#: this connection already has in billing.
DUP_IN_PAGE, DUP_IN_BILLING = "@dup-in-page", "@dup-in-billing"


def crm_id(crm: str, obj: str, key: str) -> str:
    """A well-formed id: Salesforce's 18 characters, Dataverse's GUID."""
    if crm == "dynamics":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{obj}/{key}"))
    prefix = {"account": "001", "product": "01t", "price": "01u", "quote": "0Q0",
              "quote_line": "0QL"}[obj]
    return (prefix + uuid.uuid5(uuid.NAMESPACE_URL, f"{obj}/{key}").hex)[:18]


def good(crm: str, obj: str, key: str, conn: str, product: str = "") -> dict[str, Any]:
    """A good record of ``obj``: its ids made from ``key`` (unique within the corpus)."""
    rid = crm_id(crm, obj, key)
    rec: dict[str, Any]
    if obj == "account":
        rec = {"crm_id": rid, "name": f"Acme {key}", "number": f"N-{key}"[:40],
               "currency": "USD", "country": "US", "region": "CA",
               "credit_limit": Decimal("1000.00"), "credit_hold": False}
    elif obj == "product":
        rec = {"crm_id": rid, "sku": f"SKU-{conn}-{key}", "name": f"Plan {key}",
               "active": True, "billing_type": "Recurring", "billing_frequency": "Monthly",
               "needs_provisioning": False}
    elif obj == "price":
        if crm == "dynamics":           # a Dataverse product carries its own list price
            rid = product
        rec = {"crm_id": rid, "product_crm_id": product, "currency": "USD",
               "unit_price": Decimal("10.00"), "active": True}
    elif obj == "quote":
        rec = {"crm_id": rid, "account_crm_id": crm_id(crm, "account", key), "status": "Draft",
               "revision": 1, "number": f"Q-{key}"[:30], "name": f"Quote {key}",
               "start_date": date(2026, 12, 1)}
    else:
        rec = {"crm_id": rid, "quote_crm_id": crm_id(crm, "quote", key),
               "product_crm_id": product, "quantity": Decimal(2),
               "unit_price": Decimal("10.00"), "start_date": date(2026, 12, 1)}
    rec["modstamp"] = T0
    if crm == "dynamics":
        rec["_etag"] = 'W/"1001"'
    return rec


Change = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Kind:
    name: str
    crm: str
    obj: str
    change: Change
    field: str | None                   # the field quarantined; None: accepted
    note: str = ""


def _set(**values: Any) -> Change:
    def change(rec: dict[str, Any]) -> None:
        rec.update(values)
    return change


def _drop(name: str) -> Change:
    def change(rec: dict[str, Any]) -> None:
        rec.pop(name, None)
    return change


TEXT_FIELDS = {
    "account": ("crm_id", "name", "number", "currency", "country", "region"),
    "product": ("crm_id", "sku", "name", "billing_type", "billing_frequency"),
    "price": ("crm_id", "product_crm_id", "currency"),
    "quote": ("crm_id", "account_crm_id", "status", "number", "name"),
    "quote_line": ("crm_id", "quote_crm_id", "product_crm_id"),
}
_GUID_FIELDS = {"account": ("crm_id",), "product": ("crm_id",),
                "price": ("crm_id", "product_crm_id"), "quote": ("crm_id", "account_crm_id"),
                "quote_line": ("crm_id", "quote_crm_id", "product_crm_id")}
_OBJECTS = tuple(TEXT_FIELDS)


def _nul(name: str) -> Change:
    def change(rec: dict[str, Any]) -> None:
        rec[name] = f"{rec[name]}\x00" if name != "crm_id" else f"{rec[name][:-1]}\x00"
    return change


def _kinds() -> list[Kind]:
    out: list[Kind] = []
    for crm in CRMS:
        def add(name: str, obj: str, change: Change, expect: str | None, note: str = "",
                crm: str = crm) -> None:
            out.append(Kind(f"{crm}:{obj}:{name}", crm, obj, change, expect, note))

        for obj, names in TEXT_FIELDS.items():
            for name in names:
                add(f"NUL in {name}", obj, _nul(name), name)
            add("control character (ESC) in crm_id", obj, _set(crm_id="ab\x1bc"), "crm_id")
            add("empty id", obj, _set(crm_id=""), "crm_id")
            add("missing id", obj, _drop("crm_id"), "crm_id")
            add("id of 100 characters", obj, _set(crm_id="a" * 100), "crm_id")
            add("id with white space", obj, _set(crm_id="0Q0 X"), "crm_id")
            add("id as a list", obj, _set(crm_id=["a"]), "crm_id")
            add("modstamp without zone", obj, _set(modstamp="2026-11-01T12:00:00"), "modstamp")
            add("modstamp garbage", obj, _set(modstamp="yesterday"), "modstamp")
            if crm == "dynamics":
                for name in _GUID_FIELDS[obj]:
                    add(f"{name} not a GUID", obj, _set(**{name: "not-a-guid"}), name)
            add("record twice in the page", obj, lambda rec: None, None,
                "the CRM returned it twice: applied once, as last returned")
        for obj in ("account", "product", "quote"):
            for label, value in (("a bool", True), ("an object", {"a": 1}), ("a list", [1]),
                                 ("a number", Decimal(7))):
                add(f"name is {label}", obj, _set(name=value), "name")
        add("name of 10,000 characters", "account", _set(name=LONG), "name")
        add("name of 10,000 characters", "product", _set(name=LONG), "name")
        add("name of 10,000 characters", "quote", _set(name=LONG), "name")
        add("name of 255 characters", "account", _set(name="n" * 255), None,
            "Salesforce's Name limit fits accounts.name")
        add("blank name", "account", _set(name="   "), "name")
        add("name with a lone surrogate", "account", _set(name="Acme \ud800"), "name")
        add("name with a tab", "account", _set(name="Ac\tme"), "name")
        add("name in another script", "account", _set(name="株式会社 Café ☕"), None,
            "any printable text is fine")
        add("name with spaces around", "account", _set(name="  Acme  "), None,
            "stored stripped")
        add("region of 65 characters", "account", _set(region="r" * 65), "region")
        add("region of 64 characters", "account", _set(region="r" * 64), None, "fits")
        add("number of 65 characters", "account", _set(number="9" * 65), "number")
        add("number as a number", "account", _set(number=Decimal(12345)), "number")
        add("country of 3 letters", "account", _set(country="USA"), "country")
        add("country as a bool", "account", _set(country=False), "country")
        add("unknown currency", "account", _set(currency="XYZ"), "currency")
        add("currency as an object", "account", _set(currency={"iso": "USD"}), "currency")
        add("currency missing", "account", _drop("currency"), "currency")
        add("credit limit 1e30", "account", _set(credit_limit=Decimal("1e30")), "credit_limit")
        add("credit limit negative", "account", _set(credit_limit=Decimal(-1)), "credit_limit")
        add("credit limit text", "account", _set(credit_limit="lots"), "credit_limit")
        add("credit limit NaN", "account", _set(credit_limit=float("nan")), "credit_limit")
        add("credit limit Infinity", "account", _set(credit_limit="Infinity"), "credit_limit")
        add("credit limit a bool", "account", _set(credit_limit=True), "credit_limit")
        add("credit hold text", "account", _set(credit_hold="yes"), "credit_hold")
        add("credit hold an object", "account", _set(credit_hold={}), "credit_hold")
        add("ProductCode of 255 characters", "product", _set(sku="S" * 255), None,
            "Salesforce allows 255: products.sku is 255 wide (migration 0006)")
        add("ProductCode of 256 characters", "product", _set(sku="S" * 256), "sku")
        add("SKU as a list", "product", _set(sku=["A"]), "sku")
        add("SKU of another CRM product in the page", "product", _set(sku=DUP_IN_PAGE), "sku")
        add("SKU of this connection's product in billing", "product",
            _set(sku=DUP_IN_BILLING), "sku")
        add("unknown billing type", "product", _set(billing_type="Weekly"), "billing_type")
        add("billing type an unmapped choice", "product", _set(billing_type=100000009),
            "billing_type")
        add("unknown billing frequency", "product", _set(billing_frequency="Fortnightly"),
            "billing_frequency")
        add("active is text", "product", _set(active="maybe"), "active")
        add("needs provisioning is a list", "product", _set(needs_provisioning=[]),
            "needs_provisioning")
        add("price 1e30", "price", _set(unit_price=Decimal("1e30")), "unit_price")
        add("price negative", "price", _set(unit_price=Decimal("-5")), "unit_price")
        add("price NaN", "price", _set(unit_price=float("nan")), "unit_price")
        add("price text", "price", _set(unit_price="ten"), "unit_price")
        add("price missing", "price", _drop("unit_price"), "unit_price")
        add("price with 12 decimals", "price", _set(unit_price=Decimal("1.123456789012")),
            "unit_price")
        add("price with 10 decimals", "price", _set(unit_price=Decimal("1.1234567890")), None,
            "the ledger keeps 10 decimal places")
        add("price of zero", "price", _set(unit_price=Decimal(0)), None, "a free plan")
        add("price of an unknown product", "price",
            _set(product_crm_id=crm_id(crm, "product", "nobody")), "product_crm_id")
        add("price currency unknown", "price", _set(currency="ABC"), "currency")
        add("revision 1e12", "quote", _set(revision=10**12), "revision")
        add("revision Infinity", "quote", _set(revision="Infinity"), "revision")
        add("revision infinite float", "quote", _set(revision=float("inf")), "revision")
        add("revision NaN", "quote", _set(revision=float("nan")), "revision")
        add("revision negative", "quote", _set(revision=-1), "revision")
        add("revision 2.5", "quote", _set(revision=Decimal("2.5")), "revision")
        add("revision a bool", "quote", _set(revision=True), "revision")
        add("revision 0", "quote", _set(revision=0), None, "a first revision numbered 0")
        add("start date garbage", "quote", _set(start_date="2026-12-01garbage"), "start_date")
        add("start date a timestamp without zone", "quote",
            _set(start_date="2026-12-01T00:00:00"), "start_date")
        add("start date year 9999", "quote", _set(start_date=date(9999, 12, 31)), "start_date")
        add("start date as a number", "quote", _set(start_date=20261201), "start_date")
        add("status as an object", "quote", _set(status={"v": 2}), "status")
        add("quote number of 10,000 characters", "quote", _set(number=LONG), "number")
        add("quantity 9,999,999,999,999,999", "quote_line",
            _set(quantity=Decimal(9_999_999_999_999_999)), "quantity")
        add("quantity negative", "quote_line", _set(quantity=Decimal(-3)), "quantity")
        add("quantity zero", "quote_line", _set(quantity=Decimal(0)), None,
            "an amendment's removal of the item (CPQ zeroes a line to cancel it)")
        add("quantity NaN", "quote_line", _set(quantity=float("nan")), "quantity")
        add("quantity text", "quote_line", _set(quantity="two"), "quantity")
        add("quantity a bool", "quote_line", _set(quantity=True), "quantity")
        add("quantity fractional", "quote_line", _set(quantity=Decimal("2.5")), None,
            "seats may be fractional (hours, GB)")
        add("line price 1e30", "quote_line", _set(unit_price=Decimal("1e30")), "unit_price")
        add("line price negative", "quote_line", _set(unit_price=Decimal(-1)), "unit_price")
        add("line total beyond the ledger", "quote_line",
            _set(quantity=Decimal(10**9), unit_price=Decimal(10**6)), "quantity")
        add("line start date garbage", "quote_line", _set(start_date="2026-12-01garbage"),
            "start_date")
        add("line of an unknown product", "quote_line",
            _set(product_crm_id=crm_id(crm, "product", "nobody")), "product_crm_id")
        # round 2: wrong types and shapes in mapped fields, as a connector passes them raw
        add("credit hold the text 'true'", "account", _set(credit_hold="true"), "credit_hold")
        add("credit limit with a thousands comma", "account", _set(credit_limit="1,000.00"),
            "credit_limit")
        add("credit limit in exponent text", "account", _set(credit_limit="1e3"),
            "credit_limit")
        add("credit limit an object", "account", _set(credit_limit={"value": 1000}),
            "credit_limit")
        add("empty name", "account", _set(name=""), "name")
        add("currency in lower case", "account", _set(currency="usd"), None,
            "an ISO code in any case is the code (stored in capitals)")
        add("currency of 4 letters", "account", _set(currency="USDX"), "currency")
        add("active the text 'false'", "product", _set(active="false"), "active")
        add("needs provisioning the text 'true'", "product", _set(needs_provisioning="true"),
            "needs_provisioning")
        add("price with a decimal comma", "price", _set(unit_price="10,00"), "unit_price")
        add("price a list", "price", _set(unit_price=[10]), "unit_price")
        add("price currency in lower case", "price", _set(currency="usd"), None,
            "an ISO code in any case is the code (stored in capitals)")
        add("account id empty", "quote", _set(account_crm_id=""), "account_crm_id")
        add("account id blank", "quote", _set(account_crm_id="   "), "account_crm_id")
        add("account id an object", "quote", _set(account_crm_id={"id": "x"}), "account_crm_id")
        add("currency unknown", "quote", _set(currency="XYZ"), "currency")
        add("currency a list", "quote", _set(currency=["USD"]), "currency")
        add("start date 0000-00-00", "quote", _set(start_date="0000-00-00"), "start_date")
        add("start date 2026-02-30", "quote", _set(start_date="2026-02-30"), "start_date")
        add("revision text with a comma", "quote", _set(revision="1,000"), "revision")
        add("quantity with a thousands comma", "quote_line", _set(quantity="1,000"),
            "quantity")
        add("quantity in exponent text", "quote_line", _set(quantity="1e3"), "quantity")
        add("quantity an object", "quote_line", _set(quantity={"value": 2}), "quantity")
        add("quantity a list", "quote_line", _set(quantity=[2]), "quantity")
        add("quantity 1e10", "quote_line", _set(quantity=Decimal("1e10")), "quantity")
        add("line price a bool", "quote_line", _set(unit_price=False), "unit_price")
        add("line price text", "quote_line", _set(unit_price="12.50 EUR"), "unit_price")
        add("line start date 0000-00-00", "quote_line", _set(start_date="0000-00-00"),
            "start_date")
        add("line start date 2026-02-30", "quote_line", _set(start_date="2026-02-30"),
            "start_date")
        add("quote id empty", "quote_line", _set(quote_crm_id=""), "quote_crm_id")
        add("product id empty", "quote_line", _set(product_crm_id=""), "product_crm_id")
        add("product id null", "quote_line", _set(product_crm_id=None), "product_crm_id")
        add("quote id an object", "quote_line", _set(quote_crm_id={"Id": "x"}),
            "quote_crm_id")
    return out


KINDS = _kinds()
