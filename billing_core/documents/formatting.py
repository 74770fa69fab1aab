"""Amounts, dates, rates and quantities as a document shows them, in the document's locale.

Rules kept here
- Amounts come in minor units of their currency (``*_minor``) and are shown in major units by
  Babel's ``format_currency`` for the locale (``1234.5 EUR`` in ``de_DE``: ``1.234,50 €``),
  never through a float.
- The locale is the setting's (``[documents] locale``, default ``en``), or, with ``country``,
  the account's country's first official language there (``DE`` → ``de_DE``, no country →
  ``en``). An unknown locale is a ``ValidationError`` naming ``documents.locale``.
- In a PDF, an amount whose currency sign its font cannot draw shows the ISO code instead
  (``1 234,50 PLN`` in Helvetica, which has no ``ł``); the HTML keeps the sign.
- Dates in Babel's medium format for the locale; rates as percentages (``0.0825`` → ``8.25%``);
  quantities without trailing zeros.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.languages import get_official_languages
from babel.numbers import format_currency, format_decimal, format_percent

from billing_core.domain.errors import ValidationError
from billing_core.domain.money import from_minor

#: The locale setting that means "the account's country's".
BY_COUNTRY = "country"


@lru_cache(maxsize=256)
def resolve_locale(setting: str, country: str | None) -> Locale:
    """The Babel locale of a document for the ``[documents] locale`` setting."""
    name = setting
    if setting == BY_COUNTRY:
        languages = get_official_languages(country.upper()) if country else ()
        name = f"{languages[0]}_{country.upper()}" if languages and country else "en"
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        if setting == BY_COUNTRY:
            return Locale.parse("en")
        raise ValidationError("documents.locale", setting, "is not a known locale "
                              "(e.g. en, en_GB, de_DE, fr_CH; or 'country')") from None


@dataclass(frozen=True)
class Formats:
    """The formatting functions a template calls, bound to one currency and locale.
    ``drawable`` (the PDF's font): an amount whose currency sign the font cannot draw (``zł``
    in Helvetica, ``₹``) shows the currency's ISO code instead (``322,18 PLN``)."""
    locale: Locale
    currency: str
    drawable: Callable[[str], bool] | None = None

    def _currency(self, value: Decimal, currency: str, **options: Any) -> str:
        text = _text(format_currency(value, currency, locale=self.locale, **options))
        if self.drawable is None or self.drawable(text):
            return text
        pattern = self.locale.currency_formats["standard"].pattern.replace("¤", "¤¤")
        return _text(format_currency(value, currency, format=pattern, locale=self.locale,
                                     currency_digits=True, **options))

    def money(self, minor: int | None, currency: str | None = None) -> str:
        if minor is None:
            return ""
        cur = currency or self.currency
        return self._currency(from_minor(int(minor), cur), cur)

    def unit_price(self, value: Decimal | None, currency: str | None = None) -> str:
        """A unit price at its full precision (at least the currency's decimals)."""
        if value is None:
            return ""
        return self._currency(value, currency or self.currency, decimal_quantization=False)

    def period(self, start: date | None, end: date | None) -> str:
        """A ledger period ``[start, end)`` as people read it: first day – last day."""
        if start is None or end is None:
            return ""
        last = end - timedelta(days=1)
        if last <= start:
            return self.date(start)
        return f"{self.date(start)} – {self.date(last)}"

    def date(self, value: date | None) -> str:
        return "" if value is None else _text(format_date(value, "medium", locale=self.locale))

    def percent(self, rate: Decimal | None) -> str:
        if rate is None:
            return ""
        return _text(format_percent(rate, "#,##0.###%", locale=self.locale))

    def quantity(self, value: Decimal | None) -> str:
        if value is None:
            return ""
        return _text(format_decimal(value, "#,##0.######", locale=self.locale))

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {"money": self.money, "unit_price": self.unit_price, "date": self.date,
                "period": self.period, "percent": self.percent, "quantity": self.quantity}


def _text(value: str) -> str:
    # narrow and thin no-break spaces (French, Swiss groupings) and the minus sign are outside
    # the PDF's base fonts: a plain no-break space and a hyphen look the same
    return (value.replace("\u202f", "\u00a0").replace("\u2009", "\u00a0")
            .replace("\u2212", "-"))
