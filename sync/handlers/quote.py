"""CRM quotes: kept by the sync (billing has no quotes) until the hand-off makes orders.

Rules kept here:
- A quote is stored as its mapped value (``sync_records.data``, hashed as stored) with its
  account as parent; nothing is written to billing, so no savepoint. Its account is checked
  at hand-off time, where the quote waits for it.
- A changed quote is handed on to the hand-off; a deleted one too (a handed-off quote that
  disappears is reported, never undone in billing).
"""
from __future__ import annotations

from sqlalchemy import RowMapping

from sync.handlers.base import Record, RecordHandler
from sync.mapping import QuoteRec, map_quote


class QuoteHandler(RecordHandler[QuoteRec]):
    obj = "quote"
    stored = True
    writes_billing = False

    def map(self, record: Record) -> QuoteRec:
        return map_quote(record, guid=self.guid)

    def reconcile(self, rec: QuoteRec, existing: RowMapping | None
                  ) -> tuple[int | None, str | None]:
        return None, rec.account_crm_id

    def hand_on(self, rec: QuoteRec) -> None:
        self.book.result.quotes_touched.add(rec.crm_id)

    def gone(self, row: RowMapping) -> None:
        self.book.result.deleted_quotes.add(row["crm_id"])
