"""Vendor reconciliation over HTTP (``billing_core.service.vendor_reconciliation``, the same
functions as ``ledgerbridge reconcile``; docs/RECONCILIATION.md).

- ``POST /reconciliation/vendor?period=YYYY-MM`` with the CSV file as the body
  (``Content-Type: text/csv``; up to :data:`MAX_FILE_BODY`, 32 MiB, some 30,000 lines of
  Partner Center's 47 columns: larger files go through the CLI): imports it as the period's
  current import (the same file again stores nothing) and answers the report.
  ``billing:write``; one unit of work, replayed under the same ``Idempotency-Key``. A body
  that is not CSV, a missing column or a bad period is a 422 naming it, nothing written;
  refused rows are in the report's ``errors``.
- ``GET /reconciliation/vendor?period=YYYY-MM``: the report last computed for the period
  (``billing:read``); 404 when the period has none.
- ``GET /reconciliation/vendor-mappings[?kind=]`` (``billing:read``), ``POST
  /reconciliation/vendor-mappings`` (set one) and ``POST
  /reconciliation/vendor-mappings:remove`` (``billing:write``).
- :func:`metrics`: the figures of each period's current import, for ``/metrics``.
"""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Body, Query, Request
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from billing_core.service import vendor_reconciliation as vr
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.errors import ApiError
from jobs.api.models import NO_NUL, LedgerRef, Model

routes = router("reconciliation")

#: The body limit of ``POST /reconciliation/vendor`` (the API's is 1 MiB): the file is read
#: whole into memory, parsed, and its lines written in one transaction.
MAX_FILE_BODY = 32 * 1024 * 1024

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
# required, but checked by the endpoint after the body, so that a body of the wrong kind is
# named first (422 ``body``, as everywhere in the API); a missing or bad period is 422 ``period``
Period = Annotated[str | None, Query(max_length=16, examples=["2026-03"],
                                     description="Required: the service month the file is "
                                                 "for, YYYY-MM.")]
CSV_TYPES = ("text/csv", "text/plain", "application/octet-stream")
QueryPeriod = Annotated[str, Query(pattern=PERIOD_PATTERN, examples=["2026-03"],
                                   description="The service month, YYYY-MM.")]
Kind = Annotated[str | None, Query(pattern=r"^(customer|subscription|product)$")]


class StatusFigures(BaseModel):
    count: int
    amounts: dict[str, dict[str, int]] = Field(description=(
        "Per currency: billed_minor and cost_minor (minor units)."))


class ReconciliationReport(BaseModel):
    """Money in minor units with its currency; quantities as exact decimal text."""
    model_config = ConfigDict(extra="allow")
    vendor: str
    period: str
    import_id: int
    file_sha256: str
    rows_read: int
    rows_refused: int
    errors: list[dict[str, Any]]
    summary: dict[str, StatusFigures]
    exceptions: int = Field(description="mismatched + unmatched + ours_only: for finance.")
    groups: list[dict[str, Any]]
    unmatched: list[dict[str, Any]]
    unchanged: bool | None = Field(None, description=(
        "The file was the period's current import already: nothing stored again."))


class MappingIn(Model):
    kind: str = Field(pattern=r"^(customer|subscription|product)$")
    vendor_key: str = Field(min_length=1, max_length=128, pattern=NO_NUL, examples=[
        "196e2273-9651-43a3-ba7e-7cbcd918fc40"], description=(
        "CustomerId, SubscriptionId, or ProductId[:SkuId]."))
    target: LedgerRef = Field(description=(
        "Account id or CRM id; subscription id; product id or sku."))


class MappingKey(Model):
    kind: str = Field(pattern=r"^(customer|subscription|product)$")
    vendor_key: str = Field(min_length=1, max_length=128, pattern=NO_NUL)


def _tolerance(request: Request) -> vr.Tolerance:
    settings = request.app.state.api.settings.reconciliation
    return vr.Tolerance(settings.tolerance_minor, Decimal(str(settings.tolerance_percent)))


@routes.post("/reconciliation/vendor")
def reconcile_vendor(request: Request, uow: Uow, _: Writer,
                     body: Annotated[bytes, Body(media_type="text/csv")],
                     period: Period = None) -> ReconciliationReport:
    """Import the vendor's reconciliation CSV (Partner Center billed or unbilled line items)
    for ``period`` and answer the report. Changes nothing in the ledger's documents."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in CSV_TYPES:
        raise ApiError(422, "invalid_input", "body", kind or None,
                       f"must be the CSV file itself, Content-Type one of {', '.join(CSV_TYPES)}")
    report = vr.reconcile_vendor_file(uow, body, period=period or "", file_name="api-upload.csv",
                                      tolerance=_tolerance(request))
    return ReconciliationReport.model_validate(report)


@routes.get("/reconciliation/vendor")
def show_report(period: QueryPeriod, uow: Uow, _: Reader) -> ReconciliationReport:
    """The report last computed for ``period`` (404: the period has no import)."""
    return ReconciliationReport.model_validate(vr.stored_report(uow.conn, period))


@routes.get("/reconciliation/vendor-mappings")
def list_mappings(uow: Uow, _: Reader, kind: Kind = None) -> list[dict[str, Any]]:
    return vr.list_mappings(uow.conn, kind)


@routes.post("/reconciliation/vendor-mappings")
def set_mapping(body: MappingIn, uow: Uow, _: Writer) -> dict[str, Any]:
    """Map a vendor id to a ledger account, subscription or product (replacing the key's
    earlier mapping)."""
    return vr.set_mapping(uow, body.kind, body.vendor_key, body.target)


@routes.post("/reconciliation/vendor-mappings:remove")
def remove_mapping(body: MappingKey, uow: Uow, _: Writer) -> dict[str, Any]:
    return vr.remove_mapping(uow, body.kind, body.vendor_key)


def metrics(conn: Connection) -> Iterator[Metric]:
    """Per (vendor, period) of the newest 24 periods' current imports: items by status
    (matched / mismatched / ours_only: accounts x products; unmatched: vendor lines), their
    billed and cost amounts in minor units per currency, and the rows refused."""
    items = GaugeMetricFamily("ledgerbridge_vendor_reconciliation_items",
                              "Last vendor reconciliation of a period: items by status",
                              labels=["vendor", "period", "status"])
    billed = GaugeMetricFamily("ledgerbridge_vendor_reconciliation_billed_minor",
                               "Last vendor reconciliation of a period: billed by us, minor "
                               "units", labels=["vendor", "period", "status", "currency"])
    cost = GaugeMetricFamily("ledgerbridge_vendor_reconciliation_cost_minor",
                             "Last vendor reconciliation of a period: charged by the vendor, "
                             "minor units", labels=["vendor", "period", "status", "currency"])
    refused = GaugeMetricFamily("ledgerbridge_vendor_reconciliation_rows_refused",
                                "Last vendor reconciliation of a period: rows refused",
                                labels=["vendor", "period"])
    for found in vr.current_summaries(conn):
        vendor, period = found["vendor"], found["period"]
        refused.add_metric([vendor, period], found["rows_refused"])
        for status in vr.STATUSES:
            entry = found["summary"][status]
            items.add_metric([vendor, period, status], entry["count"])
            for currency, amounts in sorted(entry["amounts"].items()):
                billed.add_metric([vendor, period, status, currency], amounts["billed_minor"])
                cost.add_metric([vendor, period, status, currency], amounts["cost_minor"])
    yield from (items, billed, cost, refused)
