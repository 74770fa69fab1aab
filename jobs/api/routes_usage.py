"""Metered usage over HTTP: event ingestion for usage and payment systems, and metrics.

A thin layer over :func:`billing_core.service.usage_ingest.ingest_events` and
:mod:`billing_core.service.usage_metrics`, the functions ``usage ingest`` and ``usage
metrics`` call.

- ``POST /usage/events`` (``billing:write``): ``{"events": [...]}``, 1 to 10,000 events. The
  body is read with JSON numbers as exact decimals (a ``"value": 0.1`` is the decimal 0.1,
  never a float; an integer of any length, for the value check to refuse; one that nests too
  deeply to read is 422 like one that is not JSON). The answer is 200 with one result per
  event, in order (accepted, duplicate, or rejected with field, value and reason) and the
  counts; the accepted ones are stored in the request's one transaction. A body that is not
  such an object is 422, nothing stored. ``Idempotency-Key`` is honoured; without one, a
  replayed batch answers ``duplicate`` for every event it stored before.
- ``GET /usage/metrics`` (``billing:read``): every version of every metric.
- ``POST /usage/metrics`` (``billing:write``): add or replace a version (same code and date).
"""
from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from billing_core.domain.errors import ValidationError
from billing_core.domain.metering import read_json
from billing_core.service.usage_ingest import MAX_BATCH, ingest_events
from billing_core.service.usage_metrics import list_metrics, set_metric
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.errors import ApiError
from jobs.api.models import NO_NUL, LedgerRef, Model, NoNul

routes = router("usage")
# 10,000 events of a few hundred bytes each: the one route allowed a body over the API's 1 MiB
MAX_EVENTS_BODY = 16 * 1024 * 1024


async def _events(request: Request, _: Writer) -> list[Any]:
    """The body's ``events``, numbers read as decimals; read only once the caller's token is
    known to hold ``billing:write`` (a caller without one learns nothing of the body's rules)."""
    raw = await request.body()
    try:
        body = read_json(raw, "body")
    except ValidationError as exc:
        raise ApiError(422, "invalid_input", "body", None, exc.problem) from None
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
        raise ApiError(422, "invalid_input", "body.events",
                       len(events) if isinstance(events, list) else None,
                       f"must be a list of 1 to {MAX_BATCH} events")
    return events


class EventResult(BaseModel):
    index: int
    event_id: Any = Field(None, examples=["evt-000123"])
    status: str = Field(examples=["accepted"], description="accepted | duplicate | rejected")
    code: str | None = Field(None, examples=["invalid_input"])
    field: str | None = Field(None, examples=["timestamp"])
    value: Any = None
    message: str | None = Field(None, examples=[
        "timestamp='2026-03-01T10:00:00': has no time zone (give Z or +hh:mm)"])


class IngestOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


_EVENTS_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["events"], "properties": {"events": {
        "type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {
            "type": "object", "required": ["event_id", "account", "metric", "timestamp",
                                           "value"],
            "properties": {
                "event_id": {"type": "string", "maxLength": 128},
                "account": {"type": "string", "description": "ledger id or CRM id"},
                "metric": {"type": "string", "description": "a metric code"},
                "timestamp": {"type": "string", "format": "date-time",
                              "description": "with a zone (Z or +hh:mm)"},
                "value": {"type": ["string", "number"],
                          "description": "exact decimal, at most 6 decimals"},
                "properties": {"type": "object"},
                "replaces": {"type": "string", "description": "the event id corrected"}}}}}},
    "example": {"events": [{"event_id": "evt-1", "account": "0015g00000AbCdE",
                            "metric": "api_calls", "timestamp": "2026-03-01T10:00:00Z",
                            "value": "1", "properties": {"region": "eu"}}]}}}}}


@routes.post("/usage/events", openapi_extra=_EVENTS_BODY)
def post_usage_events(events: Annotated[list[Any], Depends(_events)], uow: Uow,
                      _: Writer) -> IngestOut:
    """Ingest a batch of metered usage events, idempotent per event id; one result each."""
    result = ingest_events(uow, events, source="api")
    return IngestOut(accepted=result.accepted, duplicates=result.duplicates,
                     rejected=result.rejected,
                     results=[EventResult(**r) for r in result.results])


class MetricOut(BaseModel):
    id: int | None
    code: str
    effective_from: date
    aggregation: str
    product_id: int
    product: str | None = None
    property: str | None = None
    filters: dict[str, list[str]] = Field(default_factory=dict)
    group_by: str | None = None
    description: str | None = None


class MetricList(BaseModel):
    items: list[MetricOut]


class SetMetric(Model):
    code: str = Field(min_length=1, max_length=64, pattern=NO_NUL, examples=["api_calls"])
    aggregation: str = Field(max_length=16, pattern=NO_NUL, examples=["sum"],
                             description="count | sum | max | unique_count | latest")
    product: LedgerRef = Field(examples=["API"], description=(
        "the usage product (sku or id) whose price rates it"))
    effective_from: date | None = Field(None, description="default 2000-01-01")
    property: str | None = Field(None, max_length=64, pattern=NO_NUL,
                                 description="unique_count's property")
    filters: dict[NoNul, list[NoNul]] | None = Field(None, examples=[{"env": ["prod"]}])
    group_by: str | None = Field(None, max_length=64, pattern=NO_NUL, examples=["region"])
    description: str | None = Field(None, max_length=255, pattern=NO_NUL)
    model_config = ConfigDict(extra="forbid")


@routes.get("/usage/metrics")
def get_usage_metrics(uow: Uow, _: Reader) -> MetricList:
    """Every version of every billable metric, by code and date."""
    return MetricList(items=[MetricOut(**m) for m in list_metrics(uow.conn)])


@routes.post("/usage/metrics")
def post_usage_metric(body: SetMetric, uow: Uow, _: Writer) -> MetricOut:
    """Add a version of a metric from its date (the same code and date: replaced)."""
    out = set_metric(uow, body.code, aggregation=body.aggregation, product=body.product,
                     effective_from=body.effective_from, property=body.property,
                     filters=body.filters, group_by=body.group_by,
                     description=body.description)
    return MetricOut(**{k: v for k, v in out.items() if k in MetricOut.model_fields})
