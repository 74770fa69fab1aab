"""Money: one number type (Decimal), one rounding rule, currencies that never mix.

Rules kept here and nowhere else:
- amounts are ``Decimal`` built from ``str``/``int`` (a float is refused);
- a currency's minor units follow ISO 4217 (JPY 0, USD 2, BHD 3);
- money is rounded in this module only, by one rule, ROUND_HALF_UP: :func:`round_money` (to
  the currency's minor units, as a Decimal), :func:`to_minor` (the same, as an integer of minor
  units; the bill run's path, with one cached rounder per currency) and :func:`round_minor` (a
  value already counted in minor units, e.g. a line's tax). The one other rounding of money is
  deliberate and lives with its rule: credit control's threshold (limit x fraction) rounds down
  (``domain.credit.hold_threshold_minor``);
- the ledger stores amounts as integers of minor units (``*_minor`` columns): exact on every
  database; :func:`to_minor` / :func:`from_minor` convert at the boundary;
- an amount a user gives is at most :data:`MAX_MINOR` minor units (:func:`parse_amount`), and
  as text is written plainly: ASCII digits with an optional sign and decimal point, as the
  API's ``Amount`` pattern asks (not ``1e3``, not full-width digits, not ``1_000``), so the CLI
  and the API take the same amounts;
- ``Money`` of different currencies never add up: that is a ``CurrencyMismatch``, not a conversion.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billing_core.domain.errors import CurrencyMismatch, InvalidAmount, UnknownCurrency

# ISO 4217 minor-unit exponents of the currencies ledgerbridge accepts.
MINOR_UNITS: dict[str, int] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2,
    "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2,
    "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2, "QAR": 2, "RON": 2, "SAR": 2, "SEK": 2,
    "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0, "ZAR": 2,
}


# The largest amount the ledger takes, in minor units of any currency (10 trillion USD, 1
# trillion BHD): far above any real document, and the columns are signed 64-bit, so sums of
# thousands of such amounts still fit (2^63 is about 9.2 x 10^18).
MAX_MINOR = 10**15


def check_currency(code: object, field: str = "currency") -> str:
    """Return the upper-case ISO code, or raise ``UnknownCurrency`` naming the field."""
    if not isinstance(code, str) or code.upper() not in MINOR_UNITS:
        raise UnknownCurrency(field, code)
    return code.upper()


def exponent(currency: str) -> int:
    return MINOR_UNITS[check_currency(currency)]


def to_decimal(value: object, field: str) -> Decimal:
    """Parse a number exactly. Floats and non-finite values are refused with the field named."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount(field, value, "must be an exact decimal (string or integer), not a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmount(field, value, "is not a number") from None
    else:
        raise InvalidAmount(field, value, "is not a number")
    if not result.is_finite():
        raise InvalidAmount(field, value, "is not a finite number")
    return result


def round_money(amount: Decimal, currency: str) -> Decimal:
    """The one rounding rule: ROUND_HALF_UP to the currency's minor units."""
    quantum = Decimal(1).scaleb(-exponent(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


def round_minor(value: Decimal) -> int:
    """The same rule on a value already counted in minor units (e.g. tax = line_minor x rate)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_minor(amount: Decimal, currency: str) -> int:
    """Rounded amount as an integer count of minor units (what the ledger stores). The bill
    run calls it for every line: each currency's rounder is made once and kept."""
    rounder = _ROUNDERS.get(currency)
    if rounder is None:
        rounder = _ROUNDERS[currency] = _rounder(currency)
    return rounder(amount)


def _rounder(currency: str) -> Callable[[Decimal], int]:
    """``to_minor`` for one currency, as a function."""
    quantum = Decimal(1).scaleb(-exponent(currency))
    scale = exponent(currency)

    def to_minor_fast(amount: Decimal) -> int:
        return int(amount.quantize(quantum, rounding=ROUND_HALF_UP).scaleb(scale))

    return to_minor_fast


_ROUNDERS: dict[str, Callable[[Decimal], int]] = {}


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


#: An amount as a user writes it (``parse_amount``).
_PLAIN = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?", re.ASCII)


def parse_amount(value: object, currency: str, field: str = "amount", *,
                 allow_zero: bool = False, allow_negative: bool = False) -> int:
    """Validate a user-given amount and return minor units (at most ``MAX_MINOR``).

    An amount with more decimals than the currency has is refused, not rounded: a user who
    typed 10.005 USD meant something we cannot bill.
    """
    if isinstance(value, str) and not _PLAIN.fullmatch(value.strip()):
        raise InvalidAmount(field, value, "is not a plain decimal number (ASCII digits and "
                                          "at most one decimal point, e.g. 125.00)")
    number = to_decimal(value, field)
    if number < 0 and not allow_negative:
        raise InvalidAmount(field, value, "must not be negative")
    if number == 0 and not allow_zero:
        raise InvalidAmount(field, value, "must be greater than zero")
    limit = from_minor(MAX_MINOR, currency)
    if abs(number) > limit:
        raise InvalidAmount(field, value, f"is too large (the limit is {limit:,} {currency})")
    if round_money(number, currency) != number:
        raise InvalidAmount(field, value, f"has more decimals than {currency} allows "
                                          f"({exponent(currency)})")
    return to_minor(number, currency)


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency. Arithmetic refuses to mix currencies."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise InvalidAmount("amount", self.amount, "must be a Decimal")
        check_currency(self.currency)

    @classmethod
    def of_minor(cls, minor: int, currency: str) -> Money:
        return cls(from_minor(minor, currency), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(from_minor(0, currency), currency)

    @property
    def minor(self) -> int:
        return to_minor(self.amount, self.currency)

    def rounded(self) -> Money:
        return Money(round_money(self.amount, self.currency), self.currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch("currency", other.currency, self.currency)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __str__(self) -> str:
        return f"{round_money(self.amount, self.currency)} {self.currency}"
