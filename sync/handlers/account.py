"""CRM accounts → billing accounts, a page at a time.

Rules kept here:
- The page's changed accounts go to billing in one bulk upsert by external key
  (``accounts.upsert_accounts``); an account billing refuses writes nothing and is quarantined
  alone, the others are kept. The bulk write runs in a savepoint: when the database refuses
  it (a value the boundary let through that a column cannot hold), the page's accounts are
  written again one by one, each in its own savepoint, and only the failing one is
  quarantined. The normal path stays one bulk write.
- The CRM hold flag read back while billing's last acknowledged push set it (opt-in policy) is
  billing's own echo, not finance's hold: it is taken as "not set by finance".
- A Dataverse account's ETag is kept (``data``), for the push's optimistic write.
- A deleted CRM account becomes ``crm_deleted`` in billing; nothing of its history goes.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, RowMapping, select
from sqlalchemy.exc import DBAPIError

from billing_core.domain.errors import LedgerError
from billing_core.service.accounts import (
    AccountIn,
    UpsertResult,
    mark_crm_deleted,
    upsert_accounts,
)
from sync.bookkeeping import PageBook
from sync.boundary import usable_id
from sync.handlers.base import RECORD_FAILURES, Handler, Record, failed
from sync.mapping import AccountRec, map_account
from sync.tables import outbox

log = logging.getLogger(__name__)


class AccountHandler(Handler[AccountRec]):
    obj = "account"

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        super().__init__(book, records)
        self.echoes = _billing_set_flags(book.uow.conn, book.connection, records)
        self.changed: list[tuple[Record, AccountRec, str, RowMapping | None]] = []

    def map(self, record: Record) -> AccountRec:
        rec = map_account(record, guid=self.guid)
        if self.echoes and rec.crm_id in self.echoes:
            rec = replace(rec, credit_hold=False)
        return rec

    def take(self, record: Record, rec: AccountRec, data: str | None, digest: str,
             existing: RowMapping | None) -> None:
        self.changed.append((record, rec, digest, existing))

    def finish(self) -> None:
        if not self.changed:
            return
        items = [self._account_in(rec) for _, rec, _, _ in self.changed]
        marks = self._marks()
        try:
            with self.uow.savepoint():
                results: list[UpsertResult | LedgerError] = list(
                    upsert_accounts(self.uow, items))
        except DBAPIError as failure:
            self._restore(marks)
            # Something of the page passed the boundary yet the database refused it: find
            # which, one account at a time, each in a savepoint of its own.
            log.warning("bulk account upsert failed, retrying one by one: %s", failure.orig)
            results = [self._one(item) for item in items]
        for (record, rec, digest, existing), result in zip(self.changed, results, strict=True):
            problem = result if isinstance(result, LedgerError) else result.error
            if problem is not None:
                self.book.refuse(record, problem)
                continue
            assert isinstance(result, UpsertResult)
            etag = record.get("_etag")
            data = json.dumps({"etag": etag}) if isinstance(etag, str) and etag else None
            self.book.keep(existing, rec.crm_id, digest, result.account_id, None, data,
                           record.get("modstamp"))

    def _one(self, item: AccountIn) -> UpsertResult | LedgerError:
        marks = self._marks()
        try:
            with self.uow.savepoint():
                return upsert_accounts(self.uow, [item])[0]
        except RECORD_FAILURES as failure:  # this account only: its savepoint is undone
            self._restore(marks)
            return failed(failure)

    def _marks(self) -> tuple[set[int], set[int]]:
        return set(self.uow.touched_accounts), set(self.uow.new_accounts)

    def _restore(self, marks: tuple[set[int], set[int]]) -> None:
        """Forget the accounts a rolled-back write marked touched or created (an id whose
        INSERT was undone must not reach credit control)."""
        for now, before in zip((self.uow.touched_accounts, self.uow.new_accounts), marks,
                               strict=True):
            now.intersection_update(before)
            now.update(before)

    def gone(self, row: RowMapping) -> None:
        if row["ledger_id"] is not None:
            mark_crm_deleted(self.uow, int(row["ledger_id"]))

    def _account_in(self, rec: AccountRec) -> AccountIn:
        return AccountIn(
            name=rec.name, currency=rec.currency, ext_id=rec.crm_id, ext_source=self.connection,
            ext_object="account", number=rec.number, country=rec.country, region=rec.region,
            credit_limit=rec.credit_limit, crm_hold=rec.credit_hold,
            billing_email=rec.billing_email, account_class=rec.account_class)


def _billing_set_flags(conn: Connection, connection: str, records: Sequence[Record]) -> set[str]:
    """Accounts whose CRM hold flag is set and was last set by billing's own push."""
    flagged = [r["crm_id"] for r in records
               if r.get("credit_hold") is True and usable_id(r.get("crm_id"))]
    out: set[str] = set()
    for start in range(0, len(flagged), 900):
        for crm_id, acked in conn.execute(select(outbox.c.crm_id, outbox.c.acked_payload).where(
                outbox.c.connection == connection, outbox.c.object == "account",
                outbox.c.crm_id.in_(flagged[start:start + 900]))):
            if acked and json.loads(acked).get("credit_hold") is True:
                out.add(crm_id)
    return out
