"""``ledgerbridge usage ingest | metrics``: metered usage events and billable metrics.

Adds to billing's ``usage`` group (``usage import`` stays the CSV of pre-aggregated product
quantities). Thin over :mod:`billing_core.service.usage_ingest` and
:mod:`billing_core.service.usage_metrics`, the functions the API calls.

- ``usage ingest FILE [--format jsonl|csv]``: batches of ``--batch-size`` events (default
  1,000, at most 10,000), one transaction and one audit row each; per-event outcomes as the
  API gives them. Exit 0 when every event was accepted or a duplicate, 1 when some were
  rejected (the others landed; a JSON line that does not parse, or nests too deeply, is a
  rejected event naming its line), 2 for a file that cannot be read as the format or is
  not UTF-8 text (a byte order mark is allowed).
- ``usage metrics list [--code CODE]``; ``usage metrics set CODE --aggregation A --product
  SKU [--from DATE] [--property P] [--filter PROP=VALUE ...] [--group-by P]``; ``usage
  metrics load FILE.toml`` (``[metrics.CODE]`` tables).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from billing_core.domain.errors import ValidationError
from jobs.cli import exits
from jobs.cli.billing import text_stream, usage
from jobs.cli.common import AppContext, emit, json_option, pass_app


@usage.command("ingest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Default: by the file's extension (.csv, else JSON Lines).")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Events per transaction.")
@json_option
@pass_app
def usage_ingest(app: AppContext, file: Path, fmt: str | None, batch_size: int,
                 as_json: bool) -> None:
    """Ingest metered usage events (JSON Lines or CSV); idempotent per event id."""
    from billing_core.service.usage_ingest import ingest_events, read_events_file

    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    events = read_events_file(text_stream(str(file), file.read_bytes()), fmt)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    problems: list[dict[str, Any]] = []
    for start in range(0, len(events), batch_size):
        with app.uow() as uow:
            result = ingest_events(uow, events[start:start + batch_size],
                                   source=f"cli:{file.name}")
            uow.commit()
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        totals["rejected"] += result.rejected
        problems.extend({**r, "index": r["index"] + start} for r in result.results
                        if r["status"] == "rejected")
    if as_json:
        emit({**totals, "events": len(events), "rejected_events": problems}, as_json=True)
    else:
        click.echo(f"{len(events)} events: accepted {totals['accepted']}, duplicates "
                   f"{totals['duplicates']}, rejected {totals['rejected']}")
        for p in problems:
            where = f"line {p['index'] + 2}" if fmt == "csv" else f"event {p['index'] + 1}"
            click.echo(f"{where} ({p.get('event_id')}): {p['field']}={p['value']!r}: "
                       f"{p['message']}", err=True)
    if totals["rejected"]:
        sys.exit(exits.ATTENTION)      # the good events landed; the refused ones need a look


@usage.group("metrics")
def metrics() -> None:
    """Billable metrics: how metered events are aggregated and priced."""


@metrics.command("list")
@click.option("--code", help="Only this metric's versions.")
@json_option
@pass_app
def metrics_list(app: AppContext, code: str | None, as_json: bool) -> None:
    """Every version of every metric, by code and date."""
    from billing_core.service.usage_metrics import list_metrics

    with app.uow(read_only=True) as uow:
        rows = list_metrics(uow.conn, code)
    if as_json:
        emit(rows, as_json=True)
        return
    emit([{"code": r["code"], "from": r["effective_from"], "aggregation": r["aggregation"]
           + (f"({r['property']})" if r["property"] else ""), "product": r["product"],
           "filters": " ".join(f"{k}={'|'.join(v)}" for k, v in r["filters"].items()),
           "group by": r["group_by"] or ""} for r in rows], as_json=False, title="Metrics")


def _filters(items: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError("--filter", item, "must be PROPERTY=VALUE")
        out.setdefault(key.strip(), []).append(value)
    return out


@metrics.command("set")
@click.argument("code")
@click.option("--aggregation", required=True,
              type=click.Choice(["count", "sum", "max", "unique_count", "latest"]))
@click.option("--product", required=True, help="The usage product (sku or id) pricing it.")
@click.option("--from", "effective_from", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Effective from this day (default 2000-01-01).")
@click.option("--property", "prop", help="unique_count: the property whose values count.")
@click.option("--filter", "filters", multiple=True, help="PROPERTY=VALUE (repeatable).")
@click.option("--group-by", help="One invoice line per value of this property.")
@click.option("--description")
@json_option
@pass_app
def metrics_set(app: AppContext, code: str, aggregation: str, product: str,
                effective_from: datetime | None, prop: str | None, filters: tuple[str, ...],
                group_by: str | None, description: str | None, as_json: bool) -> None:
    """Add a version of a metric from its date (the same code and date: replaced)."""
    from billing_core.service.usage_metrics import set_metric

    with app.uow() as uow:
        out = set_metric(uow, code, aggregation=aggregation, product=product,
                         effective_from=effective_from.date() if effective_from else None,
                         property=prop, filters=_filters(filters) or None, group_by=group_by,
                         description=description)
        uow.commit()
    if as_json:
        emit(out, as_json=True)
    else:
        click.echo(f"metric {out['code']} from {out['effective_from']}: "
                   f"{'set' if out['changed'] else 'unchanged'}")


@metrics.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                required=False)
@json_option
@pass_app
def metrics_load(app: AppContext, file: Path | None, as_json: bool) -> None:
    """Set every [metrics.CODE] table of a TOML file, or of the config file without FILE (all
    or nothing)."""
    from billing_core.service.usage_metrics import load_metric_tables, load_metrics_toml

    with app.uow() as uow:
        if file is not None:
            results = load_metrics_toml(uow, file.read_text(encoding="utf-8"))
        else:
            if not app.settings.metrics:
                raise click.UsageError("no FILE given and the config file has no "
                                       "[metrics.CODE] table")
            results = load_metric_tables(uow, app.settings.metrics)
        uow.commit()
    if as_json:
        emit(results, as_json=True)
        return
    for r in results:
        click.echo(f"metric {r['code']} from {r['effective_from']}: "
                   f"{'set' if r['changed'] else 'unchanged'}")
