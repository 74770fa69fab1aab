"""``ledgerbridge bill-run | invoices | usage | products | prices | tax-rates | accounts``.

Thin over :mod:`billing_core.service`: parse, call, print (tables for people, ``--json`` for
scripts). Writes go through ``ledger_uow`` so credit control's commit hook sees every change.
"""
from __future__ import annotations

import io
import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from billing_core.domain.errors import ValidationError
from billing_core.domain.ids import MAX_ID
from billing_core.domain.money import from_minor
from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app

DATE = click.DateTime(formats=["%Y-%m-%d"])


def _day(value: datetime | None) -> date:
    return value.date() if value else datetime.now(UTC).date()


def _money(minor: int | None, currency: str) -> str:
    return "" if minor is None else f"{from_minor(minor, currency)} {currency}"


def _write(app: AppContext) -> Any:
    return app.uow()


# --- bill run -------------------------------------------------------------------------------

@click.command("bill-run")
@click.option("--date", "run_date", type=DATE, help="Bill date (default: today, UTC).")
@click.option("--dry-run", is_flag=True, help="Show what would be billed; write nothing.")
@click.option("--chunk-size", type=click.IntRange(1, MAX_ID), help="Accounts per transaction.")
@json_option
@pass_app
def bill_run(app: AppContext, run_date: datetime | None, dry_run: bool, chunk_size: int | None,
             as_json: bool) -> None:
    """Issue one consolidated invoice per account due on DATE (idempotent). Waits for a bill
    run in progress (the daemon's or another bill-run's) to end first; a dry run does not."""
    if dry_run:
        _bill_run(app, run_date, dry_run, chunk_size, as_json)
        return
    from sync.locks import job_lock

    # The daemon's lock: runs take turns instead of racing (billing itself bills nothing
    # twice either way), and, like ``sync``, a manual run waits for a scheduled one.
    with job_lock(app.engine, "bill-run") as got:
        if got:
            _bill_run(app, run_date, dry_run, chunk_size, as_json)
            return
    click.echo("another bill run is in progress: waiting for it to end", err=True)
    with job_lock(app.engine, "bill-run", wait=True) as got:
        if not got:
            message = "another bill run is still in progress; try again later"
            if as_json:     # the same status in the JSON: nothing done, one error
                emit({"run_date": _day(run_date), "dry_run": False, "run_id": None,
                      "accounts_seen": 0, "invoices_created": 0, "already_billed": 0,
                      "lines": 0, "retried_chunks": 0, "invoices": [],
                      "errors": [{"account_id": None, "message": message}]}, as_json=True)
            click.echo(f"error: {message}", err=True)
            sys.exit(exits.ATTENTION)
        _bill_run(app, run_date, dry_run, chunk_size, as_json)


def _bill_run(app: AppContext, run_date: datetime | None, dry_run: bool, chunk_size: int | None,
              as_json: bool) -> None:
    from billing_core.service.bill_run import run_bill_run

    day = _day(run_date)
    settings = app.settings.billing
    engine = app.engine
    if not dry_run:
        from jobs.config_metrics import apply_config_metrics

        apply_config_metrics(engine, app.settings, actor=app.actor)   # [metrics.CODE]
    kwargs: dict[str, Any] = {"dry_run": dry_run, "series": settings.invoice_series,
                              "tax_inclusive": settings.tax_inclusive,
                              "chunk_size": chunk_size or settings.bill_run_chunk_size,
                              "uow_factory": lambda: _write(app)}
    if not as_json and sys.stderr.isatty():
        from billing_core.service.accounts import count_accounts
        from jobs.cli.render import progress_bar

        with app.uow(read_only=True) as uow:
            total = count_accounts(uow.conn)
        with progress_bar() as bar:
            task = bar.add_task("billing accounts", total=total)
            result = run_bill_run(engine, day, progress=lambda n: bar.advance(task, n), **kwargs)
    else:
        result = run_bill_run(engine, day, **kwargs)
    if as_json:
        emit({"run_date": result.run_date, "dry_run": result.dry_run, "run_id": result.run_id,
              "accounts_seen": result.accounts_seen, "invoices_created": result.invoices_created,
              "already_billed": result.already_billed, "lines": result.lines_written,
              "retried_chunks": result.retried_chunks, "errors": result.errors,
              "invoices": result.invoices}, as_json=True)
    else:
        _print_bill_run(result, day, dry_run)
    if result.errors:
        # done, but accounts were left unbilled (jobs.cli.exits: attention)
        sys.exit(exits.ATTENTION)


def _print_bill_run(result: Any, day: date, dry_run: bool) -> None:
    verb = "would create" if dry_run else "created"
    click.echo(f"bill run {day}{' (dry run: nothing written)' if dry_run else ''}: "
               f"{result.accounts_seen} accounts, {verb} {result.invoices_created} invoices, "
               f"{result.already_billed} already billed, {len(result.errors)} errors")
    if result.invoices:
        emit([{"account": p.account_id, "number": p.number or "(draft)",
               "period": f"{p.period_start}..{p.period_end}", "lines": p.lines,
               "total": _money(p.total_minor, p.currency)} for p in result.invoices],
             as_json=False)
    if dry_run:
        for p in result.invoices:
            cur = p.currency
            emit([{"kind": ln.kind, "description": ln.description,
                   "amount": _money(ln.amount_minor, cur), "tax": _money(ln.tax_minor, cur)}
                  for ln in p.line_items], as_json=False,
                 title=f"account {p.account_id}, {p.period_start}..{p.period_end}")
            for rate, base, tax in p.taxes:
                click.echo(f"  tax {_rate(rate)} on {_money(base, cur)}: {_money(tax, cur)}")
            click.echo(f"  subtotal {_money(p.subtotal_minor, cur)}  tax "
                       f"{_money(p.tax_minor, cur)}  total {_money(p.total_minor, cur)}")
    for err in result.errors:
        click.echo(f"account {err['account_id']} not billed: {err['message']}", err=True)


def _rate(rate: Any) -> str:
    """A tax rate as a percentage: 0.0825 -> 8.25 %."""
    return f"{(rate * 100).normalize():f} %"


# --- invoices -------------------------------------------------------------------------------

@click.group()
def invoices() -> None:
    """Invoices: list and show."""


@invoices.command("list")
@click.option("--account", help="Ledger id or CRM id of the account.")
@click.option("--status", type=click.Choice(["draft", "posted", "partially_paid", "paid", "void"]))
@click.option("--limit", type=click.IntRange(1, MAX_ID), default=200, show_default=True)
@json_option
@pass_app
def invoices_list(app: AppContext, account: str | None, status: str | None, limit: int,
                  as_json: bool) -> None:
    """List invoices, oldest first."""
    from billing_core.service.accounts import resolve_account
    from billing_core.service.invoices import list_invoices

    with app.uow(read_only=True) as uow:
        acc = resolve_account(uow.conn, account)["id"] if account else None
        rows = list_invoices(uow.conn, account_id=acc, status=status, limit=limit)
    if as_json:
        emit(rows, as_json=True)
        return
    emit([{"id": r["id"], "number": r["number"] or "(draft)", "account": r["account_name"],
           "period": f"{r['period_start']}..{r['period_end']}", "status": r["status"],
           "due": r["due_date"], "total": _money(r["total_minor"], r["currency"]),
           "open": _money(r["total_minor"] - r["applied_minor"], r["currency"])} for r in rows],
         as_json=False, title="Invoices")


@invoices.command("show")
@click.argument("ref")
@json_option
@pass_app
def invoices_show(app: AppContext, ref: str, as_json: bool) -> None:
    """Show one invoice (number or id): lines, tax, totals, credit draws."""
    from billing_core.service.invoices import invoice_view

    with app.uow(read_only=True) as uow:
        inv = invoice_view(uow.conn, ref)
    if as_json:
        emit(inv, as_json=True)
        return
    cur = inv["currency"]
    click.echo(f"{inv['number'] or '(draft)'}  {inv['account_name']}  {inv['status']}  "
               f"period {inv['period_start']}..{inv['period_end']}  issued {inv['issue_date']}  "
               f"due {inv['due_date']}")
    emit([{"#": ln["line_no"], "kind": ln["kind"], "description": ln["description"],
           "amount": _money(ln["amount_minor"], cur), "tax": _money(ln["tax_minor"], cur)}
          for ln in inv["lines"]], as_json=False)
    for t in inv["taxes"]:
        click.echo(f"  tax {_rate(t['rate'])} on {_money(t['base_minor'], cur)}: "
                   f"{_money(t['tax_minor'], cur)}")
    for d in inv["draws"]:
        click.echo(f"  credit grant {d['grant_id']}: {_money(d['amount_minor'], cur)} drawn")
    for a in inv["applications"]:
        click.echo(f"  {a['source_type']} {a['source_id']}: {_money(a['amount_minor'], cur)} "
                   f"applied {a['applied_at']:%Y-%m-%d}")
    click.echo(f"subtotal {_money(inv['subtotal_minor'], cur)}  tax {_money(inv['tax_minor'], cur)}"
               f"  total {_money(inv['total_minor'], cur)}  open "
               f"{_money(inv['total_minor'] - inv['applied_minor'], cur)}")


# --- usage ----------------------------------------------------------------------------------

@click.group()
def usage() -> None:
    """Usage events."""


def text_stream(name: str, data: bytes) -> io.StringIO:
    """A file's bytes as UTF-8 text (a byte order mark, as Excel's "CSV UTF-8" starts with,
    dropped); a file in another encoding is bad input naming the file, not a traceback."""
    try:
        return io.StringIO(data.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        raise ValidationError("file", name, f"is not UTF-8 text (byte {exc.start}: "
                                            f"{exc.reason}); save it as UTF-8") from None


@usage.command("import")
@click.argument("file", type=click.File("rb"))
@json_option
@pass_app
def usage_import(app: AppContext, file: Any, as_json: bool) -> None:
    """Import a CSV (event_id,account,product,quantity,occurred_at); duplicates are skipped."""
    from billing_core.service.usage import import_usage, read_usage_csv

    rows = read_usage_csv(text_stream(file.name, file.read()))
    with _write(app) as uow:
        result = import_usage(uow, rows)
        uow.commit()
    if as_json:
        emit({"imported": result.imported, "duplicates": result.duplicates,
              "errors": result.errors}, as_json=True)
    else:
        click.echo(f"imported {result.imported}, duplicates {result.duplicates}, "
                   f"errors {len(result.errors)}")
        for err in result.errors:
            click.echo(f"row {err['row']}: {err['field']}={err['value']!r}: {err['message']}",
                       err=True)
    if result.errors:
        sys.exit(exits.ATTENTION)      # the good rows landed; the refused ones need a look


# --- catalog --------------------------------------------------------------------------------

@click.group()
def products() -> None:
    """Products (the catalog)."""


@products.command("add")
@click.option("--sku", required=True)
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["recurring", "one_time", "usage"]), default="recurring",
              show_default=True)
@click.option("--period", type=click.Choice(["month", "year"]), help="Recurring only.")
@click.option("--model", type=click.Choice(["per_unit", "graduated", "volume"]),
              default="per_unit", show_default=True)
@pass_app
def products_add(app: AppContext, sku: str, name: str, kind: str, period: str | None,
                 model: str) -> None:
    """Add a product."""
    from billing_core.service.pricing import ProductIn, add_product

    with _write(app) as uow:
        pid = add_product(uow, ProductIn(sku=sku, name=name, kind=kind, billing_period=period,
                                         pricing_model=model))
        uow.commit()
    click.echo(f"product {pid} ({sku}) added")


@products.command("list")
@json_option
@pass_app
def products_list(app: AppContext, as_json: bool) -> None:
    """List products."""
    from billing_core.service.pricing import list_products

    with app.uow(read_only=True) as uow:
        rows = [dict(r) for r in list_products(uow.conn)]
    emit(rows, ["id", "sku", "name", "kind", "billing_period", "pricing_model", "active"],
         as_json=as_json, title="Products")


@click.group()
def prices() -> None:
    """Prices per product and currency, effective-dated."""


def _tier(text: str) -> tuple[str | None, str, str]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValidationError("tier", text, "must be UP_TO:PRICE[:FLAT_FEE] (UP_TO 'inf' = open)")
    up_to = None if parts[0] in ("", "inf") else parts[0]
    return up_to, parts[1], parts[2] if len(parts) == 3 else "0"


@prices.command("set")
@click.argument("product")
@click.option("--currency", required=True)
@click.option("--from", "since", type=DATE, required=True, help="Effective from (YYYY-MM-DD).")
@click.option("--price", "unit_price", help="Unit price (per unit and period).")
@click.option("--tier", "tiers", multiple=True, help="UP_TO:PRICE[:FLAT_FEE], repeatable.")
@pass_app
def prices_set(app: AppContext, product: str, currency: str, since: datetime,
               unit_price: str | None, tiers: tuple[str, ...]) -> None:
    """Set PRODUCT's (sku or id) price in a currency from a day on."""
    from billing_core.service.pricing import get_product, set_price

    with _write(app) as uow:
        pid = get_product(uow.conn, product)["id"]
        if unit_price is None and not tiers:
            raise ValidationError("price", None, "give --price or --tier")
        set_price(uow, pid, currency, since.date(), unit_price,
                  tiers=[_tier(t) for t in tiers] or None)
        uow.commit()
    click.echo(f"price of {product} in {currency.upper()} from {since.date()} set")


@prices.command("list")
@click.option("--product")
@json_option
@pass_app
def prices_list(app: AppContext, product: str | None, as_json: bool) -> None:
    """List prices."""
    from billing_core.service.pricing import get_product, list_prices

    with app.uow(read_only=True) as uow:
        pid = get_product(uow.conn, product)["id"] if product else None
        rows = [{"product": p.product_id, "currency": p.currency, "from": p.effective_from,
                 "model": p.model, "unit_price": p.unit_price,
                 "tiers": "; ".join(f"{t.up_to or 'inf'}@{t.unit_price}" for t in p.tiers)}
                for p in list_prices(uow.conn, pid)]
    emit(rows, ["product", "currency", "from", "model", "unit_price", "tiers"], as_json=as_json,
         title="Prices")


@click.group("tax-rates")
def tax_rates() -> None:
    """Tax rates by country and region."""


@tax_rates.command("set")
@click.argument("country")
@click.option("--region", default="", help="Region code; empty = the whole country.")
@click.option("--rate", required=True, help="Fraction: 0.2 = 20 %.")
@click.option("--from", "since", type=DATE, required=True)
@click.option("--name")
@pass_app
def tax_rates_set(app: AppContext, country: str, region: str, rate: str, since: datetime,
                  name: str | None) -> None:
    """Set the tax rate of COUNTRY (and region) from a day on."""
    from billing_core.service.tax import set_tax_rate

    with _write(app) as uow:
        set_tax_rate(uow, country, region, rate, since.date(), name)
        uow.commit()
    click.echo(f"tax rate {country.upper()}{'/' + region if region else ''} = {rate} "
               f"from {since.date()}")


@tax_rates.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@json_option
@pass_app
def tax_rates_import(app: AppContext, file: Any, as_json: bool) -> None:
    """Import a rate table CSV (country,region,rate,from[,name]); each row as `tax-rates set`.

    A refused row is reported with its line, field and value, and the others land (exit 1)."""
    from billing_core.service.tax import import_tax_rates, read_rates_csv

    rows = read_rates_csv(file)
    with _write(app) as uow:
        result = import_tax_rates(uow, rows)
        uow.commit()
    if as_json:
        emit({"imported": result.imported, "errors": result.errors}, as_json=True)
    else:
        click.echo(f"imported {result.imported} tax rates, errors {len(result.errors)}")
        for err in result.errors:
            click.echo(f"row {err['row']}: {err['field']}={err['value']!r}: {err['message']}",
                       err=True)
    if result.errors:
        sys.exit(exits.ATTENTION)      # the good rows landed; the refused ones need a look


@tax_rates.command("list")
@json_option
@pass_app
def tax_rates_list(app: AppContext, as_json: bool) -> None:
    """List tax rates."""
    from billing_core.service.tax import list_tax_rates

    with app.uow(read_only=True) as uow:
        rows = [dict(r) for r in list_tax_rates(uow.conn)]
    emit(rows, ["country", "region", "rate", "name", "effective_from"], as_json=as_json,
         title="Tax rates")


# --- accounts -------------------------------------------------------------------------------

@click.group()
def accounts() -> None:
    """Accounts (for admins and the demo; the CRM sync keeps them in real use)."""


@accounts.command("add")
@click.option("--name", required=True)
@click.option("--currency", required=True)
@click.option("--ext-id", required=True, help="External (CRM) id.")
@click.option("--country")
@click.option("--region")
@click.option("--bcd", "bill_cycle_day", type=int, default=1, show_default=True)
@click.option("--terms", "payment_terms_days", type=int, default=30, show_default=True)
@click.option("--credit-limit")
@click.option("--tax-exempt", is_flag=True, default=None,
              help="Bill it without tax whatever its country (an account with no country "
                   "needs this or a country to be billed).")
@pass_app
def accounts_add(app: AppContext, /, **values: Any) -> None:
    """Add an account."""
    from billing_core.service.accounts import AccountIn, create_account

    with _write(app) as uow:
        acc = create_account(uow, AccountIn(**values))
        uow.commit()
    click.echo(f"account {acc} added")


@accounts.command("list")
@json_option
@pass_app
def accounts_list(app: AppContext, as_json: bool) -> None:
    """List accounts."""
    from billing_core.service.accounts import list_accounts

    with app.uow(read_only=True) as uow:
        rows = [dict(r) for r in list_accounts(uow.conn, limit=10_000)]
    emit(rows, ["id", "ext_id", "name", "currency", "country", "region", "bill_cycle_day",
                "status"], as_json=as_json, title="Accounts")


@accounts.command("show")
@click.argument("ref")
@json_option
@pass_app
def accounts_show(app: AppContext, ref: str, as_json: bool) -> None:
    """Show an account (ledger id or CRM id)."""
    from billing_core.service.accounts import resolve_account

    with app.uow(read_only=True) as uow:
        row = dict(resolve_account(uow.conn, ref))
    emit(row, as_json=as_json, title=f"Account {row['id']}")


@accounts.command("update")
@click.argument("ref")
@click.option("--region", help="Region (state) code; '' clears it. The CRM's next change to "
                               "the account sets its own again.")
@click.option("--terms", "payment_terms_days", type=click.IntRange(min=0),
              help="Payment terms in days, for invoices issued from now on.")
@click.option("--tax-exempt/--taxable", "tax_exempt", default=None,
              help="Bill without tax whatever the country's rate (or tax it again).")
@click.option("--bcd", "bill_cycle_day", type=click.IntRange(1, 31),
              help="Bill cycle day; the days up to the new day are billed prorated.")
@click.option("--credit-limit-override", "limit_override",
              help="Credit limit used instead of the CRM's; '' removes it.")
@click.option("--billing-email", help="Where documents are emailed: addresses separated by "
                                      "; or , ('' clears them).")
@click.option("--class", "account_class", help="The account's class, one of [dunning.classes] "
                                               "(its dunning schedule); '' clears it.")
@json_option
@pass_app
def accounts_update(app: AppContext, ref: str, region: str | None,
                    payment_terms_days: int | None, tax_exempt: bool | None,
                    bill_cycle_day: int | None, limit_override: str | None,
                    billing_email: str | None, account_class: str | None,
                    as_json: bool) -> None:
    """Update finance's terms of an account (ledger id or CRM id)."""
    from billing_core.service.accounts import resolve_account, update_terms

    if region is None and payment_terms_days is None and tax_exempt is None \
            and bill_cycle_day is None and limit_override is None and billing_email is None \
            and account_class is None:
        raise click.UsageError("give --region, --terms, --bcd, --credit-limit-override, "
                               "--billing-email, --class or --tax-exempt/--taxable")
    kwargs: dict[str, Any] = {"payment_terms_days": payment_terms_days, "tax_exempt": tax_exempt,
                              "bill_cycle_day": bill_cycle_day}
    if region is not None:
        kwargs["region"] = region
    if limit_override is not None:
        kwargs["credit_limit_override"] = limit_override
    if billing_email is not None:
        kwargs["billing_email"] = billing_email
    if account_class is not None:
        kwargs["account_class"] = account_class
        kwargs["known_classes"] = set(app.settings.dunning.classes or {})
    with _write(app) as uow:
        acc = int(resolve_account(uow.conn, ref)["id"])
        changes = update_terms(uow, acc, **kwargs)
        uow.commit()
    if as_json:
        emit({"account_id": acc, "changed": changes}, as_json=True)
    elif changes:
        click.echo(f"account {acc}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))
    else:
        click.echo(f"account {acc}: nothing changed")


COMMANDS: list[click.Command] = [bill_run, invoices, usage, products, prices, tax_rates, accounts]
