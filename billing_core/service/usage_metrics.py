"""Billable metrics: define, list, load from TOML; every change on the audit trail.

Rules kept here (the metric rules themselves: :mod:`billing_core.domain.metering`)
- ``usage_metrics`` holds one row per (code, effective_from). Setting a metric adds the version
  from its date; setting the same code and date again replaces that version (finance fixing a
  mistake) and setting it identically changes nothing (so loading the same file twice is a
  no-op). Invoices already issued are never re-rated: a new version rates the usage periods
  starting on or after its date (and late events of earlier periods by the version of theirs).
- The product must exist and be a ``usage`` product; its prices (and tiers) price the metric.
- Each added or replaced version is one audit row (``usage_metric``: ``set``), in the same
  transaction.
- TOML (``[metrics.CODE]`` tables): ``aggregation``, ``product`` (sku or id),
  ``effective_from`` (a date, default 2000-01-01), optional ``property``, ``group_by``,
  ``description`` and ``filters`` (a table ``{property = "value" or ["a", "b"]}``).
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, select, update

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import products, usage_metrics
from billing_core.domain.errors import ValidationError
from billing_core.domain.metering import Metric, check_code, check_filters, check_metric
from billing_core.domain.periods import parse_date
from billing_core.domain.text import printable, unstorable
from billing_core.service import audit
from billing_core.service.pricing import get_product

DEFAULT_FROM = date(2000, 1, 1)


def _row_to_metric(r: Any) -> Metric:
    filters = json.loads(r.filters) if r.filters else {}
    return Metric(r.code, r.effective_from, r.aggregation, r.product_id, r.property,
                  {k: tuple(v) for k, v in filters.items()}, r.group_by, r.description, r.id)


def load_metrics(conn: Connection) -> dict[str, list[Metric]]:
    """Every metric's versions, by code, in date order."""
    out: dict[str, list[Metric]] = {}
    for r in conn.execute(select(usage_metrics).order_by(usage_metrics.c.code,
                                                          usage_metrics.c.effective_from)):
        out.setdefault(r.code, []).append(_row_to_metric(r))
    return out


def set_metric(uow: UnitOfWork, code: str, *, aggregation: str, product: str | int,
               effective_from: date | str | None = None, property: str | None = None,
               filters: Mapping[str, Any] | None = None, group_by: str | None = None,
               description: str | None = None) -> dict[str, Any]:
    """Add (or replace, same date) a version of metric ``code``; returns it as a dict with
    ``changed`` False when it was already so."""
    code = check_code(code)
    start = DEFAULT_FROM if effective_from in (None, "") \
        else parse_date(effective_from, "effective_from")
    prod = get_product(uow.conn, product)
    if prod["kind"] != "usage":
        raise ValidationError("product", product, f"is a {prod['kind']} product, not usage")
    clean_filters = check_filters(filters)
    if description is not None and (not isinstance(description, str)
                                    or unstorable(description)):
        raise ValidationError("description", printable(str(description)),
                              "must be text without NUL or unpaired surrogate characters")
    metric = check_metric(Metric(code, start, aggregation, int(prod["id"]), property or None,
                                 clean_filters, group_by or None,
                                 (description or "").strip()[:255] or None))
    values = {"aggregation": metric.aggregation, "property": metric.property,
              "filters": json.dumps({k: list(v) for k, v in sorted(clean_filters.items())})
              if clean_filters else None,
              "group_by": metric.group_by, "product_id": metric.product_id,
              "description": metric.description}
    conn = uow.conn
    current = conn.execute(select(usage_metrics).where(
        usage_metrics.c.code == code, usage_metrics.c.effective_from == start)).mappings().first()
    if current is not None:
        before = {k: current[k] for k in values}
        if before == values:
            return {**_as_dict(metric), "changed": False}
        conn.execute(update(usage_metrics).where(usage_metrics.c.id == current["id"])
                     .values(**values))
        metric_id = current["id"]
    else:
        before = None
        metric_id = conn.execute(insert(usage_metrics).values(
            code=code, effective_from=start, created_at=uow.now(), **values)
            .returning(usage_metrics.c.id)).scalar_one()
    audit.record(uow, "set", "usage_metric", metric_id, entity_ref=f"{code}@{start}",
                 before=before, after={**values, "effective_from": start})
    return {**_as_dict(metric), "id": metric_id, "changed": True}


def _as_dict(m: Metric) -> dict[str, Any]:
    return {"id": m.id, "code": m.code, "effective_from": m.effective_from,
            "aggregation": m.aggregation, "product_id": m.product_id, "property": m.property,
            "filters": {k: list(v) for k, v in m.filters.items()}, "group_by": m.group_by,
            "description": m.description}


def list_metrics(conn: Connection, code: str | None = None) -> list[dict[str, Any]]:
    """Every version (of ``code``, or all), by code and date, with the product's sku."""
    skus = dict(conn.execute(select(products.c.id, products.c.sku)).all())
    out = []
    for versions in load_metrics(conn).values():
        for m in versions:
            if code is None or m.code == code:
                out.append({**_as_dict(m), "product": skus.get(m.product_id)})
    return out


#: The keys of one ``[metrics.CODE]`` table (a metrics file's, or the main config's).
METRIC_KEYS = ("aggregation", "product", "effective_from", "property", "filters", "group_by",
               "description")


def check_metric_table(code: str, spec: object, where: str = "metrics") -> None:
    """The shape of one ``[metrics.CODE]`` table, before anything is written: a table, only
    :data:`METRIC_KEYS`, ``aggregation`` and ``product`` given. (What the values mean is
    checked by :func:`set_metric`.)"""
    if not isinstance(spec, Mapping):
        raise ValidationError(f"{where}.{code}", spec, "must be a table")
    unknown = sorted(set(spec) - set(METRIC_KEYS))
    if unknown:
        raise ValidationError(f"{where}.{code}.{unknown[0]}", spec[unknown[0]],
                              f"is not a metric setting ({', '.join(sorted(METRIC_KEYS))})")
    for key in ("aggregation", "product"):
        if key not in spec:
            raise ValidationError(f"{where}.{code}.{key}", None, "is required")


def load_metric_tables(uow: UnitOfWork, tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Set every metric of ``{CODE: table}`` (a metrics file's or the main config's
    ``[metrics]``) in the caller's transaction; returns each result. Loading the same tables
    again changes nothing (an identical version is not a change)."""
    out = []
    for code, spec in tables.items():
        check_metric_table(code, spec)
        out.append(set_metric(uow, code, aggregation=spec["aggregation"],
                              product=spec["product"],
                              effective_from=spec.get("effective_from"),
                              property=spec.get("property"), filters=spec.get("filters"),
                              group_by=spec.get("group_by"),
                              description=spec.get("description")))
    return out


def load_metrics_toml(uow: UnitOfWork, text: str) -> list[dict[str, Any]]:
    """Set every ``[metrics.CODE]`` table of a TOML document; returns each result."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError("file", None, f"is not TOML: {exc}") from None
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ValidationError("metrics", None, "the file has no [metrics.CODE] table")
    return load_metric_tables(uow, metrics)
