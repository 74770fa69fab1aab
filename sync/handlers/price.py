"""CRM price-book entries → billing's effective-dated prices.

Rules kept here:
- A price needs its product to be known to this connection (pulled before it, not deleted);
  otherwise the price is quarantined ("unknown product") and retried when it changes.
- The first price seen applies from ``FIRST_PRICE_DATE``; a changed price applies from today
  (the history of earlier invoices stays priced as it was).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import RowMapping

from billing_core.service.pricing import set_price
from sync.bookkeeping import PageBook
from sync.handlers.base import ProductLinks, Record, RecordHandler
from sync.mapping import PriceRec, map_price

FIRST_PRICE_DATE = date(2000, 1, 1)


class PriceHandler(RecordHandler[PriceRec]):
    obj = "price"

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        super().__init__(book, records)
        self.products = ProductLinks(book, records)

    def map(self, record: Record) -> PriceRec:
        return map_price(record, guid=self.guid)

    def validate(self, rec: PriceRec) -> None:
        self.products.require(rec.product_crm_id)

    def reconcile(self, rec: PriceRec, existing: RowMapping | None
                  ) -> tuple[int | None, str | None]:
        effective = FIRST_PRICE_DATE if existing is None else self.uow.now().date()
        price_id = set_price(self.uow, self.products.require(rec.product_crm_id), rec.currency,
                             effective, rec.unit_price)
        return price_id, rec.product_crm_id
