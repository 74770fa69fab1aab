"""``ledgerbridge reconcile``: the vendor's reconciliation file against what we billed
(``billing_core.service.vendor_reconciliation``; docs/RECONCILIATION.md).

- ``reconcile vendor FILE --period YYYY-MM [--format table|csv|json] [--output PATH]``: import
  the file as the period's current import (the same file again stores nothing) and report.
  Exit 0: nothing to look at; 1: rows refused or differences listed for finance; 2: bad
  input (the period, a missing column), nothing written.
- ``reconcile show --period YYYY-MM``: the report last computed for the period.
- ``reconcile map KIND VENDOR_KEY TARGET``, ``reconcile unmap KIND VENDOR_KEY``,
  ``reconcile mappings [--kind K]``: finance's mappings of the vendor's ids.
"""
from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

import click

from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app, to_jsonable

FORMATS = ("table", "csv", "json")
KINDS = ("customer", "subscription", "product")
_PERIOD = click.option("--period", required=True, metavar="YYYY-MM",
                       help="The service month the file is for, e.g. 2026-03.")
_FORMAT = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                       show_default=True, help="table for people; csv (major units) or json "
                       "(minor units) for finance's tools.")
_OUTPUT = click.option("--output", type=click.Path(dir_okay=False, writable=True),
                       help="Write the report to this file (csv unless --format json); "
                            "stdout gets the summary.")


@click.group()
def reconcile() -> None:
    """Vendor reconciliation: the vendor's charges against what we billed (CSP)."""


def _tolerance(app: AppContext) -> Any:
    from billing_core.service.vendor_reconciliation import Tolerance

    settings = app.settings.reconciliation
    return Tolerance(settings.tolerance_minor, Decimal(str(settings.tolerance_percent)))


@reconcile.command("vendor")
@click.argument("file", type=click.File("rb"))
@_PERIOD
@_FORMAT
@_OUTPUT
@pass_app
def reconcile_vendor(app: AppContext, file: Any, period: str, fmt: str,
                     output: str | None) -> None:
    """Import Partner Center's (un)billed reconciliation CSV for PERIOD and report per
    account and SKU. Re-importing the same file stores nothing; another file replaces the
    period's import. Changes nothing in the ledger."""
    from billing_core.service.vendor_reconciliation import reconcile_vendor_file

    data = file.read()
    with app.uow() as uow:
        report = reconcile_vendor_file(uow, data, period=period, file_name=str(file.name),
                                       tolerance=_tolerance(app))
        uow.commit()
    _print(report, fmt, output)
    if report["rows_refused"] or report["exceptions"]:
        sys.exit(exits.ATTENTION)


@reconcile.command("show")
@_PERIOD
@_FORMAT
@_OUTPUT
@pass_app
def reconcile_show(app: AppContext, period: str, fmt: str, output: str | None) -> None:
    """The report last computed for PERIOD (what `reconcile vendor` printed)."""
    from billing_core.service.vendor_reconciliation import stored_report

    with app.uow(read_only=True) as uow:
        report = stored_report(uow.conn, period)
    _print(report, fmt, output)


def _print(report: dict[str, Any], fmt: str, output: str | None) -> None:
    from billing_core.service.vendor_reconciliation import report_csv

    if output:
        text = json.dumps(to_jsonable(report), indent=2) + "\n" if fmt == "json" \
            else report_csv(report)
        with open(output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        _summary_line(report)
        click.echo(f"report written to {output}")
    elif fmt == "json":
        emit(report, as_json=True)
    elif fmt == "csv":
        click.echo(report_csv(report), nl=False)
    else:
        _table(report)
    for err in report["errors"]:
        click.echo(f"row {err['row']}: {err['field']}={err['value']!r}: {err['message']}",
                   err=True)


def _summary_line(report: dict[str, Any]) -> None:
    s = report["summary"]
    state = " (file already imported: report computed again)" if report.get("unchanged") else ""
    click.echo(f"{report['vendor']} {report['period']}{state}: {report['rows_read']} rows, "
               f"{report['rows_refused']} refused; matched {s['matched']['count']}, "
               f"mismatched {s['mismatched']['count']}, unmatched vendor lines "
               f"{s['unmatched']['count']}, ours only {s['ours_only']['count']}")


def _money(minor: int | None, currency: str) -> str:
    from billing_core.domain.money import from_minor

    return "" if minor is None else f"{from_minor(minor, currency)} {currency}"


def _table(report: dict[str, Any]) -> None:
    _summary_line(report)
    emit([{"status": g["status"] + (f" ({', '.join(g['reasons'])})" if g["reasons"] else ""),
           "account": g["account_name"], "sku": g["sku"], "ours": g["our_quantity"],
           "vendor": g["vendor_quantity"], "billed": _money(g["billed_minor"], g["currency"]),
           "cost": _money(g["cost_minor"], g["currency"]),
           "margin": _money(g["margin_minor"], g["currency"]),
           "margin %": g["margin_percent"] or ""} for g in report["groups"]],
         as_json=False, title="Per account and SKU")
    if report["unmatched"]:
        emit([{"row": u["row"], "reason": u["reason"], "customer": u["vendor_customer_id"],
               "name": u["customer_name"] or "", "subscription": u["vendor_subscription_id"] or "",
               "product": f"{u['vendor_product_id']}:{u['vendor_sku_id']}",
               "quantity": u["quantity"], "cost": _money(u["cost_minor"], u["currency"])}
              for u in report["unmatched"]], as_json=False, title="Vendor lines not matched")


# --- mappings -----------------------------------------------------------------------------------

@reconcile.command("map")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("vendor_key")
@click.argument("target")
@json_option
@pass_app
def reconcile_map(app: AppContext, kind: str, vendor_key: str, target: str,
                  as_json: bool) -> None:
    """Map the vendor's CustomerId (customer -> account id or CRM id), SubscriptionId
    (subscription -> subscription id) or ProductId[:SkuId] (product -> product id or sku)."""
    from billing_core.service.vendor_reconciliation import set_mapping

    with app.uow() as uow:
        row = set_mapping(uow, kind, vendor_key, target)
        uow.commit()
    emit(row, as_json=as_json)


@reconcile.command("unmap")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("vendor_key")
@json_option
@pass_app
def reconcile_unmap(app: AppContext, kind: str, vendor_key: str, as_json: bool) -> None:
    """Remove a mapping."""
    from billing_core.service.vendor_reconciliation import remove_mapping

    with app.uow() as uow:
        row = remove_mapping(uow, kind, vendor_key)
        uow.commit()
    emit(row, as_json=as_json)


@reconcile.command("mappings")
@click.option("--kind", type=click.Choice(KINDS))
@json_option
@pass_app
def reconcile_mappings(app: AppContext, kind: str | None, as_json: bool) -> None:
    """List the mappings."""
    from billing_core.service.vendor_reconciliation import list_mappings

    with app.uow(read_only=True) as uow:
        rows = list_mappings(uow.conn, kind)
    if as_json:
        emit(rows, as_json=True)
        return
    emit([{"kind": r["kind"], "vendor key": r["vendor_key"],
           "account": f"{r['account_id']} {r['account_name']}" if r["account_id"] else "",
           "subscription": r["subscription_id"] or "",
           "product": f"{r['product_id']} {r['sku']}" if r["product_id"] else ""} for r in rows],
         as_json=False, title="Vendor mappings")


COMMANDS: list[click.Command] = [reconcile]
