"""CRM quote lines: kept by the sync with their quote until the hand-off.

Rules kept here:
- A line is stored as its mapped value (``sync_records.data``, hashed as stored) with its quote
  as parent; nothing is written to billing, so no savepoint.
- A line whose product is not known to this connection is quarantined ("unknown product"),
  and applied again from the quarantine's stored record when that product lands
  (``ProductHandler.waited_on_by``); its quote waits for it meanwhile.
- A changed or deleted line hands its quote on to the hand-off, and so does a line deleted
  while in quarantine (its quote was waiting for it).
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping

from sync.bookkeeping import PageBook
from sync.boundary import ids_within, usable_id
from sync.handlers.base import ProductLinks, Record, RecordHandler
from sync.mapping import QuoteLineRec, map_quote_line


class QuoteLineHandler(RecordHandler[QuoteLineRec]):
    obj = "quote_line"
    stored = True
    writes_billing = False

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        super().__init__(book, records)
        self.products = ProductLinks(book, records)

    def map(self, record: Record) -> QuoteLineRec:
        return map_quote_line(record, guid=self.guid)

    def validate(self, rec: QuoteLineRec) -> None:
        self.products.require(rec.product_crm_id)

    def reconcile(self, rec: QuoteLineRec, existing: RowMapping | None
                  ) -> tuple[int | None, str | None]:
        return None, rec.quote_crm_id

    def hand_on(self, rec: QuoteLineRec) -> None:
        self.book.result.quotes_touched.add(rec.quote_crm_id)

    def gone(self, row: RowMapping) -> None:
        if row["parent_crm_id"]:
            self.book.result.quotes_touched.add(row["parent_crm_id"])

    def let_go(self, record: Record) -> None:
        # a quote waiting for this refused line goes on with its other lines
        quote = record.get("quote_crm_id")
        if usable_id(quote):
            self.book.result.quotes_touched.add(str(quote))
        else:       # a reference that could not be read held every quote it may name
            self.book.result.quotes_touched.update(ids_within(quote))
