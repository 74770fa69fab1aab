"""Deterministic seed rows, generated on demand from (seed, index).

Rules kept:
- `row(table, i)` is a pure function of the seed, the sizes and `i`: nothing is stored, so a
  million accounts cost no memory and every run with the same seed serves the same data.
- Money is `Decimal` rounded to the currency's precision; quote totals are the sum of their lines.
- Seeded timestamps lie before `FIXED_ANCHOR` (never the clock: a test that froze the clock
  must not change the seed of the next one); seeded version numbers lie below
  `FIRST_WRITE_VERSION`, so every write is newer than every seed row.
- "User Local" date-only columns (schema `user_local`) hold the UTC instant of the date's local
  midnight in the zone the seed's users entered them in (`zone`, the side's time zone).
- Every quote statecode (0 Draft, 1 Active, 2 Won, 3 Closed) occurs; quote i has
  `lines_per_quote` lines with indexes i*L .. i*L+L-1; quotes 2j and 2j+1 share a customer.
- Lookups that a connector filters on (key, `_customerid_value`, `_quoteid_value`, the seeded
  account and product numbers) can be inverted, so `eq` on them needs no scan (`candidates`).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .ids import PERSON, GuidCodec, draw, salt, user_id
from .schema import QUOTE_STATUS, TABLES
from .wire import local_midnight

FIXED_ANCHOR = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
FIRST_WRITE_VERSION = 10_000_000_000
_DAY = 86_400

# iso, name, symbol, precision, rate to USD (units of the currency per USD)
CURRENCIES: tuple[tuple[str, str, str, int, str], ...] = (
    ("USD", "US Dollar", "$", 2, "1.0"), ("EUR", "Euro", "€", 2, "0.92"),
    ("GBP", "Pound Sterling", "£", 2, "0.79"), ("JPY", "Yen", "¥", 0, "151.0"),
    ("CAD", "Canadian Dollar", "CA$", 2, "1.36"), ("AUD", "Australian Dollar", "A$", 2, "1.52"),
    ("CHF", "Swiss Franc", "CHF", 2, "0.88"), ("SEK", "Swedish Krona", "kr", 2, "10.6"),
    ("INR", "Indian Rupee", "₹", 2, "83.2"), ("BHD", "Bahraini Dinar", "BD", 3, "0.376"),
)
_CUR_INDEX = {iso: n for n, (iso, *_rest) in enumerate(CURRENCIES)}
# country, currency, regions, cities
COUNTRIES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("US", "USD", ("CA", "NY", "TX", "WA", "IL"), ("Seattle", "Austin", "Chicago", "New York")),
    ("GB", "GBP", ("England", "Scotland", "Wales"), ("London", "Leeds", "Edinburgh")),
    ("DE", "EUR", ("BY", "BE", "NW", "HE"), ("Munich", "Berlin", "Cologne", "Frankfurt")),
    ("FR", "EUR", ("IDF", "ARA", "PAC"), ("Paris", "Lyon", "Marseille")),
    ("NL", "EUR", ("NH", "ZH", "UT"), ("Amsterdam", "Rotterdam", "Utrecht")),
    ("JP", "JPY", ("Tokyo", "Osaka", "Aichi"), ("Tokyo", "Osaka", "Nagoya")),
    ("CA", "CAD", ("ON", "QC", "BC"), ("Toronto", "Montreal", "Vancouver")),
    ("AU", "AUD", ("NSW", "VIC", "QLD"), ("Sydney", "Melbourne", "Brisbane")),
    ("CH", "CHF", ("ZH", "GE", "BE"), ("Zurich", "Geneva", "Bern")),
    ("SE", "SEK", ("AB", "O", "M"), ("Stockholm", "Gothenburg", "Malmo")),
    ("IN", "INR", ("MH", "KA", "DL"), ("Mumbai", "Bengaluru", "Delhi")),
    ("BH", "BHD", ("Capital", "Muharraq"), ("Manama", "Muharraq")),
)
_COUNTRY_WEIGHTS = (0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)  # US-heavy mix
_FIRST = ("Northwind", "Contoso", "Fabrikam", "Adventure", "Tailspin", "Litware", "Proseware",
          "Woodgrove", "Alpine", "Blue Yonder", "Coho", "Wingtip", "Lucerne", "Margie's",
          "Trey", "Humongous", "Graphic", "Fourth", "Southridge", "Relecloud", "Baldwin",
          "Bellows", "Datum", "Kestrel", "Harbor", "Granite", "Summit", "Cedar", "Orion")
_SECOND = ("Traders", "Systems", "Logistics", "Analytics", "Health", "Foods", "Motors",
           "Software", "Energy", "Media", "Outfitters", "Consulting", "Labs", "Works",
           "Partners", "Networks", "Pharma", "Robotics", "Capital", "Design")
_SUFFIX = ("Ltd", "Inc.", "GmbH", "S.A.", "B.V.", "Corp.", "LLC", "AG", "K.K.", "Pty Ltd")
_PRODUCTS = ("Cloud Backup", "Endpoint Protection", "Managed Firewall", "Email Security",
             "Collaboration Suite", "Data Warehouse", "API Gateway", "Support Plan",
             "Onboarding Package", "Compute Credits", "Storage", "SIEM", "VPN Seats",
             "Device Management", "Telephony", "Training Day")
_EDITIONS = ("Standard", "Business", "Enterprise", "Premium")
_LIMITS = (5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000)


def _money(value: Decimal, precision: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-precision))


class Seeder:
    """Generates seed rows for every table under one seed and one set of sizes."""

    def __init__(self, seed: int, accounts: int, products: int, quotes: int,
                 lines_per_quote: int, zone: dt.tzinfo = dt.UTC) -> None:
        self.seed = seed
        self.zone = zone
        self._midnights: dict[dt.date, str] = {}
        self.sizes = {"accounts": accounts, "products": products, "quotes": quotes,
                      "quotedetails": quotes * lines_per_quote,
                      "transactioncurrencies": len(CURRENCIES),
                      "new_invoices": 0, "annotations": 0,
                      "invoices": 0, "invoicedetails": 0}     # written by billing only
        self.lines = lines_per_quote
        # Quotes come in pairs per customer (a quote and its renewal); pair j belongs to account
        # (j * mult + shift) mod accounts, a permutation, so a customer's quotes are found by
        # inverting it instead of scanning.
        self._accounts_n = max(accounts, 1)
        mult = salt(seed, "customers") % self._accounts_n | 1
        while math.gcd(mult, self._accounts_n) != 1:
            mult += 2
        self._mult, self._shift = mult, salt(seed, "shift") % self._accounts_n
        self._inv = pow(mult, -1, self._accounts_n)
        self.anchor = int(FIXED_ANCHOR.timestamp())
        self.anchor_date = dt.datetime.fromtimestamp(self.anchor, dt.UTC).date()
        self.codecs = {name: GuidCodec(seed, name) for name in TABLES}
        self.person = user_id(seed, PERSON)     # who entered the seed rows
        self._salts = {(name, k): salt(seed, f"rows/{name}/{k}") for name in TABLES
                       for k in (0, 1)}
        self._table_no = {name: n for n, name in enumerate(TABLES)}
        self._rates = [Decimal(rate) for *_x, rate in CURRENCIES]
        self._cur_ids = [self.codecs["transactioncurrencies"].guid(n)
                         for n in range(len(CURRENCIES))]

    def candidates(self, table: str, column: str, value: str) -> Sequence[int] | None:
        """Seed indexes that can hold `column eq value`, when known without a scan; else None.

        Known: the key, a quote's `_customerid_value`, a quote line's `_quoteid_value`, and
        the seeded numbers
        (`AC-0000001` is account 0, `SKU-00001` product 0)."""
        number = _NUMBERS.get((table, column))
        if number is not None:
            match = number.fullmatch(value)
            n = int(match.group(1)) - 1 if match else -1
            return range(n, n + 1) if 0 <= n < self.sizes[table] else range(0)
        guid = value.lower()
        if column == TABLES[table].key:
            index = self.codecs[table].index(guid)
            if index is None or index >= self.sizes[table]:
                return range(0)
            return range(index, index + 1)
        if table == "quotes" and column == "_customerid_value":
            account = self.codecs["accounts"].index(guid)
            if account is None or account >= self.sizes["accounts"]:
                return range(0)
            first = (account - self._shift) * self._inv % self._accounts_n
            pairs = range(first, (self.sizes["quotes"] + 1) // 2, self._accounts_n)
            return [q for j in pairs for q in (2 * j, 2 * j + 1) if q < self.sizes["quotes"]]
        if table == "quotedetails" and column == "_quoteid_value":
            q = self.codecs["quotes"].index(guid)
            if q is None or q >= self.sizes["quotes"]:
                return range(0)
            return range(q * self.lines, (q + 1) * self.lines)
        return None

    def guid(self, table: str, index: int) -> str:
        return self.codecs[table].guid(index)

    def row(self, table: str, index: int) -> dict[str, Any]:
        row: dict[str, Any] = getattr(self, "_" + table)(index)
        return row

    def _h(self, table: str, index: int, k: int = 0) -> int:
        return draw(self._salts[(table, k)], index)

    def _stamps(self, table: str, index: int, h: int, row: dict[str, Any]) -> dict[str, Any]:
        age = (h >> 20) % (400 * _DAY) + 3600
        created = self.anchor - age
        modified = created + (h >> 5) % age
        row["createdon"] = _ts(created)
        row["modifiedon"] = _ts(modified)
        row["_modifiedby_value"] = self.person
        row["versionnumber"] = 1_000_000 + index * 8 + self._table_no[table]
        return row

    def country_of(self, account: int) -> int:
        return _COUNTRY_WEIGHTS[self._h("accounts", account) % len(_COUNTRY_WEIGHTS)]

    def _accounts(self, i: int) -> dict[str, Any]:
        h = self._h("accounts", i)
        h2 = self._h("accounts", i, 1)
        country, currency, regions, cities = COUNTRIES[self.country_of(i)]
        cur = _CUR_INDEX[currency]
        precision = CURRENCIES[cur][3]
        limit = None
        if h2 % 100 >= 15:  # about 15% of accounts have no credit limit set
            base = Decimal(_LIMITS[(h2 >> 8) % len(_LIMITS)])
            limit = _money(base * self._rates[cur] if cur else base, min(precision, 2))
        return self._stamps("accounts", i, h2, {
            "accountid": self.guid("accounts", i),
            "name": f"{_FIRST[(h >> 8) % len(_FIRST)]} {_SECOND[(h >> 16) % len(_SECOND)]} "
                    f"{_SUFFIX[(h >> 24) % len(_SUFFIX)]}",
            "accountnumber": f"AC-{i + 1:07d}", "creditlimit": limit,
            "creditonhold": (h2 >> 40) % 100 < 7, "_transactioncurrencyid_value":
            self._cur_ids[cur], "address1_country": country,
            "address1_stateorprovince": regions[(h >> 32) % len(regions)],
            "address1_city": cities[(h >> 36) % len(cities)], "statecode": 0, "statuscode": 1,
            # the account's standard email column: where its documents go (billing_email)
            "emailaddress1": f"ap+ac{i + 1:07d}@example.com",
            "accountcategorycode": None,
            "new_billinghold": None, "new_billingholdreasons": None, "new_openbalance": None,
            "new_availablecredit": None, "new_creditexposure": None,
            "new_oldestoverduedays": None, "new_lastinvoicenumber": None,
            "new_lastinvoicedate": None,
        })

    def _products(self, i: int) -> dict[str, Any]:
        h = self._h("products", i)
        kind = (0, 0, 0, 1, 2)[h % 5]  # mostly recurring
        cur = (0, 0, 0, 0, 1, 2, 3)[(h >> 8) % 7]
        usd = Decimal((h >> 16) % 9_900 + 100) / 4
        price = _money(usd * self._rates[cur], CURRENCIES[cur][3])
        retired = (h >> 40) % 10 == 0
        return self._stamps("products", i, h, {
            "productid": self.guid("products", i), "productnumber": f"SKU-{i + 1:05d}",
            "name": f"{_PRODUCTS[i % len(_PRODUCTS)]} {_EDITIONS[(h >> 32) % len(_EDITIONS)]}"
                    + (f" {i // len(_PRODUCTS) + 1}" if i >= len(_PRODUCTS) else ""),
            "statecode": 1 if retired else 0, "statuscode": 2 if retired else 1,
            "new_billingtype": 100_000_000 + kind,
            "new_billingfrequency": None if kind == 1 else 100_000_000 + int((h >> 36) % 4 == 0),
            "new_needsprovisioning": kind != 1 and (h >> 44) % 3 != 0, "price": price,
            "new_pricestartdate": None,
            "_transactioncurrencyid_value": self._cur_ids[cur],
        })

    def _quote_parts(self, q: int) -> tuple[int, int, int]:
        """(account index, currency index, currency precision) of quote q."""
        account = ((q // 2) * self._mult + self._shift) % self._accounts_n
        cur = _CUR_INDEX[COUNTRIES[self.country_of(account)][1]]
        return account, cur, CURRENCIES[cur][3]

    def _line_values(self, j: int, parts: tuple[int, int, int] | None = None
                     ) -> tuple[int, Decimal, Decimal, Decimal]:
        _acct, cur, precision = parts or self._quote_parts(j // self.lines)
        h = self._h("quotedetails", j)
        product = h % max(self.sizes["products"], 1)
        quantity = Decimal((h >> 8) % 50 + 1)
        usd = Decimal(self._h("products", product) >> 16 & 0xFFFFFF) % 9_900 / 4 + 25
        unit = _money(usd * self._rates[cur], precision)
        return product, quantity, unit, _money(quantity * unit, precision)

    def _quotes(self, q: int) -> dict[str, Any]:
        h = self._h("quotes", q, 1)
        account, cur, precision = self._quote_parts(q)
        state = q % 4
        parts = (account, cur, precision)
        total = sum((self._line_values(q * self.lines + k, parts)[3]
                     for k in range(self.lines)), Decimal(0))
        start = self.anchor_date + dt.timedelta(
            days=(h >> 8) % 120 - 60)
        return self._stamps("quotes", q, h, {
            "quoteid": self.guid("quotes", q),
            "quotenumber": f"QUO-{q + 1:05d}-{h & 0xFFFFFF:06X}",
            "name": f"{_PRODUCTS[(h >> 4) % len(_PRODUCTS)]} renewal {q + 1}",
            "_customerid_value": self.guid("accounts", account), "statecode": state,
            "statuscode": QUOTE_STATUS[state], "revisionnumber": (h >> 16) % 10 // 7,
            "effectivefrom": self._local(start), "totalamount": _money(total, precision),
            "_transactioncurrencyid_value": self._cur_ids[cur],
            "new_ordernumber": None, "new_provisioningstatus": None, "new_invoicenumber": None,
        })

    def _quotedetails(self, j: int) -> dict[str, Any]:
        q = j // self.lines
        parts = self._quote_parts(q)
        cur = parts[1]
        product, quantity, unit, extended = self._line_values(j, parts)
        h = self._h("quotedetails", j, 1)
        start = self.anchor_date + dt.timedelta(
            days=(h >> 8) % 120 - 60)
        return self._stamps("quotedetails", j, h, {
            "quotedetailid": self.guid("quotedetails", j),
            "_quoteid_value": self.guid("quotes", q),
            "_productid_value": self.guid("products", product),
            "lineitemnumber": j % self.lines + 1, "quantity": quantity, "priceperunit": unit,
            "extendedamount": extended, "requestdeliveryby": self._local(start),
            "_transactioncurrencyid_value": self._cur_ids[cur],
        })

    def _local(self, day: dt.date) -> str:
        """A user-local date's wire value (seeded dates span a few months: cached per day)."""
        text = self._midnights.get(day)
        if text is None:
            text = self._midnights[day] = local_midnight(day, self.zone)
        return text

    def _transactioncurrencies(self, i: int) -> dict[str, Any]:
        iso, name, symbol, precision, rate = CURRENCIES[i]
        return self._stamps("transactioncurrencies", i, self._h("transactioncurrencies", i), {
            "transactioncurrencyid": self.guid("transactioncurrencies", i),
            "isocurrencycode": iso, "currencyname": name, "currencysymbol": symbol,
            "currencyprecision": precision, "exchangerate": Decimal(rate), "statecode": 0,
        })


_NUMBERS = {("accounts", "accountnumber"): re.compile(r"AC-(\d{7})"),
            ("products", "productnumber"): re.compile(r"SKU-(\d{5})")}
_DAYS: dict[int, str] = {}


@functools.lru_cache(maxsize=1)
def _clock() -> tuple[str, ...]:
    return tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(_DAY))


def _ts(epoch: int) -> str:
    """`2026-11-21T23:43:43Z` from epoch seconds; day and time-of-day strings are cached
    (seeding formats two stamps per row, the hot path of a million-row read)."""
    day, second = divmod(epoch, _DAY)
    text = _DAYS.get(day)
    if text is None:
        text = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * _DAY))
    return text + _clock()[second]
