"""CRM products → billing's catalog.

Rules kept here:
- A new CRM product is added to the catalog; the catalog is shared by SKU, so a second CRM
  naming an SKU billing already has links to that product instead. Within one connection an
  SKU names one CRM product: a second CRM product with an SKU this connection's product
  already has is quarantined naming the SKU (never merged into the first).
- A changed CRM product changes its billing product (``pricing.update_product``: name, active,
  needs_provisioning and SKU; kind and billing period only while nothing is billed by the
  product, otherwise billing refuses with the field and value and the record is quarantined).
  A product two CRMs share takes the last change either made.
- Connections may sync at once on different workers: on PostgreSQL a product page first takes
  a transaction lock per SKU it names (``pg_advisory_xact_lock``, in SKU order, so two pages
  never deadlock), so a second connection adding the same SKU at the same time finds the
  first one's product once it commits and links to it, instead of inserting it again and
  having the record refused as a duplicate. The SKUs locked are the ones the page's records
  map to; a record the mapping refuses (a NUL in its SKU) takes no lock and is quarantined.
- A price or quote line quarantined because its product was not known ("unknown product")
  waits on it: when the product is kept, it is applied again in the product's page, from what
  the quarantine stored (``waited_on_by``).
- The service functions are imported by name: one that is missing fails at import time,
  never by silently skipping the write.
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, text

from billing_core.domain.errors import Duplicate, LedgerError
from billing_core.service.pricing import (
    ProductIn,
    add_product,
    get_product,
    list_products,
    update_product,
)
from sync.bookkeeping import PageBook
from sync.handlers.base import RECORD_FAILURES, Record, RecordHandler
from sync.mapping import Invalid, ProductRec, map_product

_REFUSED: tuple[type[Exception], ...] = (LedgerError, *RECORD_FAILURES)


class ProductHandler(RecordHandler[ProductRec]):
    obj = "product"
    waited_on_by = (("price", "product_crm_id"), ("quote_line", "product_crm_id"))

    def __init__(self, book: PageBook, records: Sequence[Record]) -> None:
        super().__init__(book, records)
        conn = book.uow.conn
        skus = sorted({sku for r in records if (sku := self._sku(r)) is not None})
        if skus and conn.dialect.name == "postgresql":
            conn.execute(text(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "coalesce(current_schema(), '') || ':sku:' || s.sku, 0)) "
                "FROM (SELECT unnest(CAST(:skus AS text[])) AS sku ORDER BY 1) AS s"),
                {"skus": skus})

    def map(self, record: Record) -> ProductRec:
        return map_product(record, guid=self.guid)

    def _sku(self, record: Record) -> str | None:
        """The SKU the record's product will have (as mapped: stripped, or its id when it
        has none), None for a record the mapping refuses: a value PostgreSQL cannot hold as
        text (a NUL) must quarantine that record, not fail the page's lock."""
        try:
            return self.map(record).sku
        except _REFUSED:
            return None

    def reconcile(self, rec: ProductRec, existing: RowMapping | None
                  ) -> tuple[int | None, str | None]:
        data = self._product_in(rec)
        if existing is not None and existing["ledger_id"] is not None:
            product_id = int(existing["ledger_id"])
            update_product(self.uow, product_id, data)
            return product_id, None
        try:
            return add_product(self.uow, data), None
        except Duplicate:
            found = self._by_sku(rec.sku)
            if found["ext_source"] == self.connection and found["ext_id"] != rec.crm_id:
                raise Invalid("sku", rec.sku, f"is already the SKU of CRM product "
                              f"{found['ext_id']} (product {found['id']})") from None
            return int(found["id"]), None

    def _by_sku(self, sku: str) -> RowMapping:
        found = get_product(self.uow.conn, sku)
        if found["sku"] != sku:     # a numeric SKU matched another product's id first
            found = next(p for p in list_products(self.uow.conn) if p["sku"] == sku)
        return found

    def _product_in(self, rec: ProductRec) -> ProductIn:
        return ProductIn(sku=rec.sku, name=rec.name, kind=rec.kind,
                         billing_period=rec.billing_period,
                         needs_provisioning=rec.needs_provisioning, active=rec.active,
                         ext_source=self.connection, ext_id=rec.crm_id)
