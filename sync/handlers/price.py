"""CRM price-book entries → billing's effective-dated prices.

Rules kept here:
- A price needs its product to be known to this connection (pulled before it, not deleted);
  otherwise the price is quarantined ("unknown product") and applied again from the
  quarantine's stored record when that product lands (``ProductHandler.waited_on_by``), or
  when the price changes.
- Only an active entry (``active``: Salesforce's ``IsActive``, a Dataverse product's state)
  of the price book billing prices from (``standard``: Salesforce's standard price book,
  ``Pricebook2.IsStandard``; a map without the field takes every entry) sets a price. Any
  other is kept as seen and sets nothing: billing keeps the price it has (a retired entry,
  or a partner or regional price book's, must not replace the list price); made active, it
  sets its price as a changed price does.
- The first price billing gets for a product and currency applies from ``FIRST_PRICE_DATE``:
  the CRM holds one current price, its history is unknown, so it prices everything before.
  That is decided by billing's prices, not by the CRM record: a product and currency billing
  already prices takes another entry's price from its date (below), never from 2000. A
  record whose price (without a start date) is the one billing has writes no price row (a
  record read again because the map reads a new field is no price change).
- A changed price applies from the CRM's price start date when the field map has one
  (``effective_from``: e.g. a custom date field on Salesforce's PricebookEntry, which has no
  standard one) and the record carries it; otherwise from today (the sync day). Either way
  the history of earlier invoices stays priced as it was.
- A CRM date earlier than the newest price billing already has for that product and currency
  is raised to that price's date (the CRM's price replaces it): billing's price rows are never
  reordered, so the CRM's current price is the one in effect from then on.
- Connections that link the same catalog product (by SKU) may sync at once on different
  workers: on PostgreSQL a price page first takes a transaction lock per product it prices
  (``pg_advisory_xact_lock``, in product id order, so two pages never deadlock), so the second
  page sees the first one's price row once it commits and updates it, instead of inserting
  the same (product, currency, date) and having the record refused as a duplicate.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import RowMapping, text

from billing_core.domain.errors import NotFound
from billing_core.domain.rating import Price
from billing_core.service.pricing import price_for, set_price
from sync.bookkeeping import PageBook
from sync.handlers.base import ProductLinks, Record, RecordHandler
from sync.mapping import PriceRec, map_price

FIRST_PRICE_DATE = date(2000, 1, 1)


class PriceHandler(RecordHandler[PriceRec]):
    obj = "price"

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        super().__init__(book, records)
        self.products = ProductLinks(book, records)
        conn = book.uow.conn
        ids = sorted({i for i in self.products.ids.values() if i is not None})
        if ids and conn.dialect.name == "postgresql":
            conn.execute(text(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "coalesce(current_schema(), '') || ':price:' || p.id::text, 0)) "
                "FROM (SELECT unnest(CAST(:ids AS bigint[])) AS id ORDER BY 1) AS p"),
                {"ids": ids})

    def map(self, record: Record) -> PriceRec:
        return map_price(record, guid=self.guid)

    def validate(self, rec: PriceRec) -> None:
        self.products.require(rec.product_crm_id)

    def reconcile(self, rec: PriceRec, existing: RowMapping | None
                  ) -> tuple[int | None, str | None]:
        product_id = self.products.require(rec.product_crm_id)
        if not (rec.active and rec.standard):   # retired, or another price book's
            return (existing["ledger_id"] if existing is not None else None,
                    rec.product_crm_id)
        try:        # the newest row: in effect on the last day there is
            newest: Price | None = price_for(self.uow.conn, product_id, rec.currency, date.max)
        except NotFound:
            newest = None
        if (newest is not None and newest.id is not None and rec.effective_from is None
                and newest.unit_price == rec.unit_price and not newest.tiers):
            return newest.id, rec.product_crm_id        # the price billing has: no new row
        price_id = set_price(self.uow, product_id, rec.currency,
                             _effective(rec, newest.effective_from if newest else None,
                                        self.uow.now().date()), rec.unit_price)
        return price_id, rec.product_crm_id


def _effective(rec: PriceRec, newest: date | None, today: date) -> date:
    if newest is None:
        return FIRST_PRICE_DATE
    if rec.effective_from is None:
        return today
    return max(rec.effective_from, newest)
