"""What every CRM object's handler declares, and the one-record-at-a-time way of applying it.

Rules kept here:
- A handler is made for one page (its page-level reads, one statement each, happen when it
  is made) and is told about each changed record (:meth:`Handler.take`), then that the page's
  records are all told (:meth:`Handler.finish`), then about each deletion (:meth:`Handler.gone`
  of a known record, :meth:`Handler.let_go` of a record in quarantine).
- A record's fingerprint (``data`` to store, content hash) is over the canonical record, or,
  for an object whose mapped value waits in ``sync_records.data`` until hand-off (``stored``),
  over that stored text: one JSON encoding per record, and a CRM field billing does not map
  is not a change.
- :class:`RecordHandler` applies one changed record at a time: ``validate`` (what needs more
  than the record itself: a line's product is known), ``reconcile`` (billing is written only
  through ``billing_core.service``; in a savepoint when it writes, so a refusal undoes that
  record alone), then the record is kept and ``hand_on`` says what the cycle must look at
  because of it. Any ``LedgerError`` on the way quarantines the record alone, and so does
  any other failure below the boundary (a database error: the savepoint undid the record's
  writes only), with the error named (:func:`failed`).
- A record refused only because a record it names is not known (a line's or a price's
  product: "unknown product") is applied again from what the quarantine stored when the
  record it names is kept (``waited_on_by``): it need not change in the CRM.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from sqlalchemy import RowMapping
from sqlalchemy.exc import DBAPIError

from billing_core.domain.errors import LedgerError
from sync import mapping
from sync.bookkeeping import PageBook, known_rows
from sync.boundary import usable_id
from sync.mapping import Invalid

log = logging.getLogger(__name__)

class Rec(Protocol):
    @property
    def crm_id(self) -> str: ...


R = TypeVar("R", bound=Rec)
Record = Mapping[str, Any]


class Handler(Generic[R]):
    obj: ClassVar[str]
    #: The mapped value is kept (``sync_records.data``) until hand-off, and hashed as kept.
    stored: ClassVar[bool] = False
    #: ``(object, field)``: records of another object that name one of this object's records
    #: in that field, and are quarantined naming that field while it is not known. When this
    #: object's records are kept, those waiting on them are applied again (``sync.reconcile``).
    waited_on_by: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        self.book = book
        self.uow, self.connection = book.uow, book.connection
        #: Dataverse ids and lookups must be GUIDs. A Dataverse page is told by the ETag the
        #: Dynamics connector keeps with every record it reads (``_etag``).
        self.guid = any("_etag" in r for r in records)

    def map(self, record: Record) -> R:
        """The record as billing understands it, or ``Invalid`` (see :mod:`sync.mapping`)."""
        raise NotImplementedError

    def fingerprint(self, record: Record, rec: R) -> tuple[str | None, str]:
        """``(data to store, content hash)``."""
        if self.stored:
            text = mapping.rec_to_json(rec)
            return text, mapping.text_hash(text)
        return None, mapping.content_hash(record)

    def take(self, record: Record, rec: R, data: str | None, digest: str,
             existing: RowMapping | None) -> None:
        """A new or changed record: apply it (or gather it for :meth:`finish`)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Every record of the page was told: a handler that gathers writes them now."""

    def gone(self, row: RowMapping) -> None:
        """A known record was deleted in (or is missing from) the CRM; the bookkeeping row is
        marked deleted by the caller."""

    def let_go(self, record: Record) -> None:
        """A record in quarantine was deleted in (or is missing from) the CRM and its entry
        closed (``record``: as the entry kept it): what the cycle must look at because of it."""


class RecordHandler(Handler[R]):
    #: Whether ``reconcile`` writes to billing (and so runs in a savepoint of its own).
    writes_billing: ClassVar[bool] = True

    def validate(self, rec: R) -> None:
        """Checks beyond the record itself; ``Invalid`` refuses it."""

    def reconcile(self, rec: R, existing: RowMapping | None) -> tuple[int | None, str | None]:
        """Write the record to billing; returns ``(ledger id, parent crm id)`` to keep."""
        raise NotImplementedError

    def hand_on(self, rec: R) -> None:
        """Tell the cycle what this changed record concerns (quotes to look at)."""

    def take(self, record: Record, rec: R, data: str | None, digest: str,
             existing: RowMapping | None) -> None:
        try:
            self.validate(rec)
            if self.writes_billing:
                with self.uow.savepoint():
                    ledger_id, parent = self.reconcile(rec, existing)
            else:
                ledger_id, parent = self.reconcile(rec, existing)
        except LedgerError as problem:
            self.book.refuse(record, problem)
            return
        except RECORD_FAILURES as failure:  # below the boundary: this record only (savepoint)
            self.book.refuse(record, failed(failure))
            return
        self.book.keep(existing, rec.crm_id, digest, ledger_id, parent, data,
                       record.get("modstamp"))
        self.hand_on(rec)


#: What one record can fail with below the boundary without the page or the connection being
#: at fault: a database's refusal of a value, or a conversion the boundary missed. (A lost
#: connection fails the quarantine's own write too, and so the page, as it should.)
RECORD_FAILURES: tuple[type[Exception], ...] = (
    DBAPIError, ValueError, TypeError, ArithmeticError, LookupError, AttributeError)


def failed(failure: Exception) -> LedgerError:
    """A failure below the boundary (a database error, say) as a quarantine entry: the
    record is refused alone with the error's first line, and the failure is logged."""
    log.warning("record failed below the boundary", exc_info=failure)
    if isinstance(failure, DBAPIError):
        detail = str(failure.orig).strip().splitlines()[0] if str(failure.orig).strip() \
            else type(failure.orig).__name__
        return LedgerError("record", None, f"the database refused it: {detail}")
    return LedgerError("record", None, f"failed: {type(failure).__name__}: {failure}")


class ProductLinks:
    """The page's products by CRM id → billing id (None: deleted in the CRM), one SELECT."""

    def __init__(self, book: PageBook, records: Iterable[Record]) -> None:
        wanted = {r["product_crm_id"] for r in records if usable_id(r.get("product_crm_id"))}
        self.ids: dict[str, int | None] = {
            crm_id: None if row["deleted_at"] is not None or row["ledger_id"] is None
            else int(row["ledger_id"])
            for crm_id, row in known_rows(book.uow.conn, book.connection, "product",
                                          wanted).items()}

    def require(self, product_crm_id: str) -> int:
        product_id = self.ids.get(product_crm_id)
        if product_id is None:
            raise Invalid("product_crm_id", product_crm_id, "unknown product")
        return product_id
