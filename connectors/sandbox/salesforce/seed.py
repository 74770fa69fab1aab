"""Deterministic seeded rows, generated lazily from (seed, object, row index).

Rules this module keeps:
- A base row is a pure function of (seed, object, index): nothing is stored, so a sandbox with a
  million accounts costs no memory until rows are changed (changes live in `store`).
- Base rows' SystemModstamp / LastModifiedDate / CreatedDate never decrease with the index and
  ids increase with it, so "ORDER BY SystemModstamp, Id" over base rows is index order. Every
  third row shares a timestamp with its neighbours: ties are normal in Salesforce.
- Money is Decimal (JPY without minor units); dates are `date`, timestamps aware UTC `datetime`
  with millisecond precision; a missing value is None.
- `row(i)` answers None for an index that holds no row (quote lines: 1-4 per quote, 4 slots).
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any

from .ids import ADMIN_USER, make_id
from .schema import CPQ_STATUSES, CURRENCIES, QUOTE_STATUSES

Row = dict[str, Any]
BASE_TIME = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
LINES_PER_QUOTE = 4
PRICEBOOK_ID = make_id("01s", 0)
_M = (1 << 64) - 1
_FX = {"USD": "1", "EUR": "0.92", "GBP": "0.79", "JPY": "150", "CAD": "1.36", "AUD": "1.52",
       "CHF": "0.88"}
_COUNTRIES = (  # (code, currency, states, weight)
    ("US", "USD", ("CA", "NY", "TX", "WA", "IL", "MA", "FL", "CO"), 30),
    ("GB", "GBP", (), 12), ("DE", "EUR", (), 10), ("FR", "EUR", (), 8), ("NL", "EUR", (), 5),
    ("ES", "EUR", (), 4), ("IT", "EUR", (), 4), ("JP", "JPY", (), 8),
    ("CA", "CAD", ("ON", "QC", "BC", "AB"), 7), ("AU", "AUD", ("NSW", "VIC", "QLD", "WA"), 7),
    ("CH", "CHF", (), 5),
)
_COUNTRY_WHEEL = tuple(c for c in _COUNTRIES for _ in range(c[3]))
_SUFFIX = {"US": "Inc.", "GB": "Ltd", "DE": "GmbH", "FR": "SAS", "NL": "B.V.", "ES": "S.L.",
           "IT": "S.r.l.", "JP": "K.K.", "CA": "Corp.", "AU": "Pty Ltd", "CH": "AG"}
_FIRST = ("Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Tailspin",
          "Wide World", "Blue Yonder", "Litware", "Adventure Works", "Proseware", "Lucerne",
          "Margie's", "Alpine", "Coho", "Humongous", "Trey", "Wingtip", "Datum")
_SECOND = ("Analytics", "Logistics", "Foods", "Systems", "Energy", "Health", "Media", "Robotics",
           "Traders", "Pharma", "Textiles", "Networks", "Builders", "Airlines", "Insurance")
_LIMITS = tuple(Decimal(n) for n in ("5000", "10000", "25000", "50000", "100000", "250000"))
_LIMITS_JPY = tuple(n * 100 for n in _LIMITS)
_PRODUCTS = (  # (code, name, billing type, frequency, needs provisioning, USD price)
    ("CWS-STD-M", "Cloud Workspace Standard", "Recurring", "Monthly", True, "12.00"),
    ("CWS-PRO-M", "Cloud Workspace Professional", "Recurring", "Monthly", True, "24.50"),
    ("CWS-ENT-A", "Cloud Workspace Enterprise (annual)", "Recurring", "Annual", True, "420.00"),
    ("SEC-ADV-M", "Advanced Threat Protection", "Recurring", "Monthly", True, "5.25"),
    ("BKP-1TB-M", "Backup 1 TB", "Recurring", "Monthly", True, "39.99"),
    ("SUP-PRM-A", "Premium Support (annual)", "Recurring", "Annual", False, "1800.00"),
    ("ONB-STD-1", "Onboarding Package", "One-Time", None, False, "1500.00"),
    ("MIG-SVC-1", "Data Migration Service", "One-Time", None, False, "2750.00"),
    ("HW-KEY-1", "Hardware Security Key", "One-Time", None, True, "45.00"),
    ("API-CALL-U", "API Calls (per 1,000)", "Usage", None, False, "0.40"),
    ("STO-GB-U", "Storage Overage (per GB)", "Usage", None, False, "0.12"),
    ("SMS-U", "SMS Messages (per message)", "Usage", None, False, "0.0075"),
)


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


class _Draw:
    """Deterministic choices for one (seed, salt, index): digits of 128 mixed bits, consumed
    in mixed radix (one mix per row is enough for the few choices a row makes)."""

    def __init__(self, seed: int, salt: int, index: int) -> None:
        first = _mix((seed & _M) ^ _mix(salt * 0x10001 + index))
        self._x = first | (_mix(first) << 64)

    def next(self, radix: int = 1 << 32) -> int:
        self._x, value = divmod(self._x, radix)
        return value

    def pick(self, seq: tuple[Any, ...]) -> Any:
        return seq[self.next(len(seq))]

    def chance(self, percent: int) -> bool:
        return self.next(100) < percent


def stamp(index: int) -> dt.datetime:
    """SystemModstamp of base row `index` (never decreasing; three rows per second)."""
    return _second(index // 3)


@functools.lru_cache(maxsize=1024)
def _second(second: int) -> dt.datetime:
    return BASE_TIME + dt.timedelta(seconds=second)


@functools.lru_cache(maxsize=1024)
def _created(second: int) -> dt.datetime:
    return _second(second) - dt.timedelta(days=30)


def price(usd: str, currency: str) -> Decimal:
    value = Decimal(usd) * Decimal(_FX[currency])
    return value.quantize(Decimal(1) if currency == "JPY" else Decimal("0.0001")).normalize()


def _system(index: int) -> Row:
    at = _second(index // 3)
    return {"IsDeleted": False, "CreatedDate": _created(index // 3), "LastModifiedDate": at,
            "SystemModstamp": at}


class Seed:
    """Generates base rows for every sObject from one seed."""

    def __init__(self, seed: int, accounts: int, quotes: int) -> None:
        self.seed = seed
        self.counts = {"Account": accounts, "Product2": len(_PRODUCTS), "Pricebook2": 1,
                       "PricebookEntry": len(_PRODUCTS) * len(CURRENCIES), "Quote": quotes,
                       "QuoteLineItem": quotes * LINES_PER_QUOTE, "SBQQ__Quote__c": quotes,
                       "SBQQ__QuoteLine__c": quotes * LINES_PER_QUOTE,
                       "Contract": 0, "Opportunity": 0,
                       "Invoice__c": 0, "ContentVersion": 0, "ContentDocument": 0,
                       "ContentDocumentLink": 0}     # made by admin actions only
        # quote lines regenerate their quote: keep recent quotes (rows are never mutated)
        self._quote_row = functools.lru_cache(maxsize=4096)(self._quote)

    def row(self, obj: str, index: int) -> Row | None:
        if not 0 <= index < self.counts[obj]:
            return None
        row: Row | None = getattr(self, "_" + obj.lower())(index)
        if row is not None:
            row["LastModifiedById"] = ADMIN_USER
        return row

    def _account(self, i: int) -> Row:
        # the hot path of a full read: draws inlined as mixed-radix digits of one mixed number
        first = _mix((self.seed & _M) ^ _mix(0x10001 + i))
        x, c = divmod(first | (_mix(first) << 64), len(_COUNTRY_WHEEL))
        country, currency, states, _ = _COUNTRY_WHEEL[c]
        x, no_limit = divmod(x, 100)
        x, limit = divmod(x, len(_LIMITS))
        x, name1 = divmod(x, len(_FIRST))
        x, name2 = divmod(x, len(_SECOND))
        x, state = divmod(x, 8)
        hold = x % 100
        at, second = _second(i // 3), i // 3
        return {
            "Id": make_id("001", i), "Name": f"{_FIRST[name1]} {_SECOND[name2]} {_SUFFIX[country]}",
            "AccountNumber": f"AC-{i + 1:07d}", "CurrencyIsoCode": currency,
            "BillingCountryCode": country,
            "BillingStateCode": states[state % len(states)] if states else None,
            "Credit_Limit__c": None if no_limit < 15 else (
                _LIMITS_JPY if currency == "JPY" else _LIMITS)[limit],
            "Credit_Hold__c": hold < 6, "Billing_Hold__c": False,
            "Billing_Hold_Reasons__c": None, "Open_Balance__c": None,
            "Available_Credit__c": None, "Credit_Exposure__c": None,
            "Oldest_Overdue_Days__c": None, "Last_Invoice_Number__c": None,
            "Last_Invoice_Date__c": None, "IsDeleted": False, "CreatedDate": _created(second),
            "LastModifiedDate": at, "SystemModstamp": at,
        }

    def _product2(self, i: int) -> Row:
        code, name, kind, freq, provision, _ = _PRODUCTS[i]
        return {"Id": make_id("01t", i), "ProductCode": code, "Name": name, "IsActive": True,
                "Billing_Type__c": kind, "Billing_Frequency__c": freq,
                "Needs_Provisioning__c": provision, **_system(i)}

    def _pricebook2(self, i: int) -> Row:
        return {"Id": make_id("01s", i), "Name": "Standard Price Book", "IsStandard": True,
                "IsActive": True, **_system(i)}

    def _pricebookentry(self, i: int) -> Row:
        product, cur = divmod(i, len(CURRENCIES))
        currency = CURRENCIES[cur]
        return {"Id": make_id("01u", i), "Pricebook2Id": PRICEBOOK_ID,
                "Product2Id": make_id("01t", product), "CurrencyIsoCode": currency,
                "UnitPrice": price(_PRODUCTS[product][5], currency), "IsActive": True,
                "Price_Start_Date__c": None, **_system(i)}

    def _quote(self, q: int) -> Row:
        d = _Draw(self.seed, 2, q)
        accounts = self.counts["Account"]
        account = d.next() % accounts if accounts else 0
        currency = self._account(account)["CurrencyIsoCode"] if accounts else "USD"
        return {
            "Id": make_id("0Q0", q), "QuoteNumber": f"{q + 1:08d}", "Name": f"Quote Q-{q + 1:06d}",
            "AccountId": make_id("001", account), "CurrencyIsoCode": currency,
            "Status": QUOTE_STATUSES[q % len(QUOTE_STATUSES)], "Revision__c": 1,
            "Subscription_Start_Date__c": dt.date(2026, 1, 1) + dt.timedelta(days=d.next() % 365),
            "ShippingHandling": None, "Order_Number__c": None, "Provisioning_Status__c": None,
            "Invoice_Number__c": None, **_system(q),
        }

    def _quotelineitem(self, i: int) -> Row | None:
        if not self.exists("QuoteLineItem", i):
            return None
        q = i // LINES_PER_QUOTE
        quote = self._quote_row(q)
        d = _Draw(self.seed, 4, i)
        product = d.next() % len(_PRODUCTS)
        currency = quote["CurrencyIsoCode"]
        usage = _PRODUCTS[product][2] == "Usage"
        quantity = float(1000 * (1 + d.next() % 50)) if usage else float(1 + d.next() % 50)
        entry = product * len(CURRENCIES) + CURRENCIES.index(currency)
        return {
            "Id": make_id("0QL", i), "QuoteId": quote["Id"], "Product2Id": make_id("01t", product),
            "PricebookEntryId": make_id("01u", entry), "Quantity": quantity,
            "UnitPrice": price(_PRODUCTS[product][5], currency),
            "ServiceDate": quote["Subscription_Start_Date__c"], **_system(i),
        }

    def _sbqq__quote__c(self, q: int) -> Row:
        """The CPQ quote mirroring standard quote `q`."""
        quote = self._quote_row(q)
        status = quote["Status"] if quote["Status"] in CPQ_STATUSES else "In Review"
        return {"Id": make_id("a0Q", q), "Name": f"Q-{q + 1:05d}",
                "SBQQ__Account__c": quote["AccountId"],
                "CurrencyIsoCode": quote["CurrencyIsoCode"], "SBQQ__Status__c": status,
                "SBQQ__Primary__c": True,
                "SBQQ__StartDate__c": quote["Subscription_Start_Date__c"],
                "SBQQ__EndDate__c": None, "SBQQ__Type__c": "Quote",
                "SBQQ__MasterContract__c": None, "SBQQ__Opportunity2__c": None,
                "Cancel_Date__c": None, "Order_Number__c": None, "Provisioning_Status__c": None,
                "Invoice_Number__c": None, **_system(q)}

    def _sbqq__quoteline__c(self, i: int) -> Row | None:
        """The CPQ quote line mirroring standard quote line `i`."""
        line = self._quotelineitem(i)
        if line is None:
            return None
        return {"Id": make_id("a0L", i), "SBQQ__Quote__c": make_id("a0Q", i // LINES_PER_QUOTE),
                "SBQQ__Product__c": line["Product2Id"], "SBQQ__Quantity__c": line["Quantity"],
                "SBQQ__NetPrice__c": line["UnitPrice"], "SBQQ__StartDate__c": line["ServiceDate"],
                "SBQQ__EndDate__c": None, "Cancel_Date__c": None, **_system(i)}

    def exists(self, obj: str, index: int) -> bool:
        """Whether base row `index` exists, without generating it (quote lines: 1-4 per quote)."""
        if not 0 <= index < self.counts[obj]:
            return False
        if obj in ("QuoteLineItem", "SBQQ__QuoteLine__c"):
            q, slot = divmod(index, LINES_PER_QUOTE)
            return slot < 1 + _Draw(self.seed, 3, q).next() % LINES_PER_QUOTE
        return True

    def dense(self, obj: str) -> bool:
        """True when every base index below the count holds a row (no holes)."""
        return obj not in ("QuoteLineItem", "SBQQ__QuoteLine__c")
