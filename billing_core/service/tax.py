"""Tax rates by country and region, effective-dated.

Rules kept here
- A rate belongs to (country, region, effective_from); region ``""`` is the whole country.
  For an account in (country, region) on a day, the region's own rate wins; otherwise the
  country-wide rate. Country and region codes match whatever their case (``us``/``ca`` is
  ``US``/``CA``): a region set as ``CA`` and an account in ``ca`` are one region, never
  taxed at the country's rate in silence; a region is stored upper case.
  A rate applies from its day until the next one of the same (country,
  region). No rate at all for an account's country is not 0: :meth:`TaxTable.find` says None
  and the bill run refuses that account's invoice (``MissingTaxRate``); a rate of 0 set for
  the country or region zero-rates it, and so does the account's ``tax_exempt``. An account
  with no country has no tax location: like a country without a rate, its invoice is refused
  (``MissingTaxRate`` naming ``country`` = None) unless it is ``tax_exempt``; a CRM that
  leaves the billing country empty is never billed 0 % in silence.
- Rates are exact decimals (``0.2`` = 20 %), between 0 and 1.
- A rate table comes as CSV too (:func:`read_rates_csv`, :func:`import_tax_rates`: columns
  ``country,region,rate,from[,name]``): each row is set as :func:`set_tax_rate` would, alone
  in a savepoint, so a bad row is reported with its line, field and value and the others
  land.
- Tax is computed once per rate on the invoice's taxable base after credits,
  ``round(base x rate)`` with the one rounding rule (:func:`billing_core.domain.money.round_minor`),
  exclusive (added on top) unless the catalog's prices include tax; the invoice keeps the base
  beside the rate (``invoice_taxes``). The rules are :mod:`billing_core.domain.invoicing`'s.
"""
from __future__ import annotations

import csv
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from billing_core.adapters.bulk import inserted_id
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import tax_rates
from billing_core.domain.errors import LedgerError, ValidationError
from billing_core.domain.money import to_decimal
from billing_core.service import audit

ZERO = Decimal(0)


def set_tax_rate(uow: UnitOfWork, country: str, region: str | None, rate: Decimal | str | int,
                 effective_from: date, name: str | None = None) -> int:
    """Set the rate of (country, region) from a day on; the same day's rate is replaced."""
    return _set_rate(uow, country, region, rate, effective_from, name, action="set")


def _set_rate(uow: UnitOfWork, country: str, region: str | None, rate: Decimal | str | int,
              effective_from: date, name: str | None, *, action: str) -> int:
    code = (country or "").strip().upper()
    if len(code) != 2 or not code.isalpha():
        raise ValidationError("country", country, "must be an ISO 3166 alpha-2 code")
    reg = _region(region)
    value = to_decimal(rate, "rate")
    if not ZERO <= value < 1:
        raise ValidationError("rate", rate, "must be a fraction from 0 to below 1 (0.2 = 20 %)")
    if not isinstance(effective_from, date):
        raise ValidationError("effective_from", effective_from, "must be a date")
    label = (name or f"Tax {code}{'-' + reg if reg else ''}").strip()[:64]
    existing = uow.conn.execute(select(tax_rates.c.id, tax_rates.c.rate, tax_rates.c.name).where(
        tax_rates.c.country == code, tax_rates.c.region == reg,
        tax_rates.c.effective_from == effective_from)).first()
    ref = f"{code}{'-' + reg if reg else ''}@{effective_from.isoformat()}"
    if existing is not None:
        uow.conn.execute(update(tax_rates).where(tax_rates.c.id == existing.id)
                         .values(rate=value, name=label))
        audit.record(uow, action, "tax_rate", existing.id, entity_ref=ref,
                     before={"rate": existing.rate, "name": existing.name},
                     after={"rate": value, "name": label})
        return int(existing.id)
    rate_id = inserted_id(uow.conn.execute(insert(tax_rates).values(
        country=code, region=reg, rate=value, name=label, effective_from=effective_from)))
    audit.record(uow, action, "tax_rate", rate_id, entity_ref=ref,
                 after={"rate": value, "name": label, "effective_from": effective_from})
    return rate_id


RATE_COLUMNS = ("country", "region", "rate", "from")


@dataclass
class RatesImport:
    imported: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def read_rates_csv(stream: IO[str]) -> list[dict[str, Any]]:
    """Rows of a rate table CSV (``country,region,rate,from[,name]``) as dicts with their line
    number (``row``); a missing column is a ``ValidationError`` naming the header."""
    reader = csv.DictReader(stream)
    missing = [c for c in RATE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValidationError("columns", ",".join(reader.fieldnames or []),
                              f"missing {', '.join(missing)} (need {','.join(RATE_COLUMNS)}"
                              "[,name])")
    return [{**row, "row": n} for n, row in enumerate(reader, start=2)]


def import_tax_rates(uow: UnitOfWork, rows: Iterable[Mapping[str, Any]]) -> RatesImport:
    """Set each row's rate (:func:`set_tax_rate`), each in a savepoint of its own: a refused
    row (its line, field, value and reason in ``errors``) writes nothing, the others land."""
    result = RatesImport()
    for n, raw in enumerate(rows, start=1):
        try:
            day = raw.get("from")
            try:
                since = date.fromisoformat(str(day).strip())
            except ValueError:
                raise ValidationError("from", day, "must be a date (YYYY-MM-DD)") from None
            with uow.savepoint():
                _set_rate(uow, str(raw.get("country") or ""), raw.get("region"),
                          str(raw.get("rate") or "").strip(), since, raw.get("name") or None,
                          action="imported")
            result.imported += 1
        except LedgerError as exc:
            result.errors.append({"row": raw.get("row", n), **exc.as_dict()})
    return result


def list_tax_rates(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(tax_rates).order_by(
        tax_rates.c.country, tax_rates.c.region, tax_rates.c.effective_from)).mappings())


class TaxTable:
    """Every rate in memory: the bill run looks rates up without queries."""

    def __init__(self, rows: Iterable[RowMapping]) -> None:
        by_key: dict[tuple[str, str], list[tuple[date, Decimal, str]]] = defaultdict(list)
        for r in rows:
            by_key[(r["country"], _region(r["region"]))].append(
                (r["effective_from"], r["rate"], r["name"]))
        self._rates = {k: sorted(v) for k, v in by_key.items()}
        self._days = {k: [d for d, _, _ in v] for k, v in self._rates.items()}

    def _lookup(self, key: tuple[str, str], on: date) -> tuple[Decimal, str] | None:
        days = self._days.get(key)
        if not days:
            return None
        i = bisect_right(days, on) - 1
        if i < 0:
            return None
        _, rate, name = self._rates[key][i]
        return rate, name

    def find(self, country: str | None, region: str | None,
             on: date) -> tuple[Decimal, str] | None:
        """(rate, name) for an account's country and region on a day: the region's rate, else
        the country's; None when its country has none, or it has no country."""
        if not country:
            return None
        country = country.upper()
        if _region(region):
            found = self._lookup((country, _region(region)), on)
            if found is not None:
                return found
        return self._lookup((country, ""), on)


def _region(region: str | None) -> str:
    """A region code as rates are keyed by it: stripped, upper case (``ca`` is ``CA``)."""
    return (region or "").strip().upper()


def load_tax_table(conn: Connection) -> TaxTable:
    return TaxTable(list_tax_rates(conn))


def tax_rate_for(conn: Connection, country: str | None, region: str | None,
                 on: date) -> tuple[Decimal, str] | None:
    return load_tax_table(conn).find(country, region, on)
