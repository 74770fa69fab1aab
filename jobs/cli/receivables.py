"""``credit-memos``, ``debit-memos``, ``credits``, ``payments``, ``void-invoice``, ``ar``.

Thin: parse, call one service function in one unit of work (``ledger_uow``, so credit control
re-evaluates holds at commit), commit, print a table or ``--json``. Accounts are given by ledger
id or CRM id; documents by number or id; applications as ``TARGET=AMOUNT`` (``INV-000001=10.00``,
``debit_memo:7=5``). Several ids to ``activate``/``cancel`` answer per item: exit 1 when some
were done and others refused, 2 when none was done.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import click

from billing_core.domain.errors import ValidationError
from billing_core.domain.money import from_minor
from billing_core.service import credits as credit_svc
from billing_core.service import memos as memo_svc
from billing_core.service import payments as pay_svc
from billing_core.service import receivables as ar_svc
from billing_core.service.accounts import resolve_account
from billing_core.service.documents import to_view, void_invoice
from jobs.cli import exits
from jobs.cli.common import AppContext, emit, json_option, pass_app

DOC_COLUMNS = ["id", "number", "account_id", "status", "currency", "amount", "applied",
               "balance", "reason"]


def _money(row: dict[str, Any]) -> dict[str, Any]:
    """For people: ``*_minor`` fields shown as amounts of the row's currency."""
    out = {}
    for key, value in row.items():
        if key.endswith("_minor") and row.get("currency"):
            out[key.removesuffix("_minor")] = (from_minor(value, row["currency"])
                                               if isinstance(value, int) else value)
        elif key != "applications":
            out[key] = value
    if "total" in out and "amount" not in out:
        out["amount"] = out["total"]
    return out


def _show(data: Any, as_json: bool, columns: Sequence[str] | None = None,
          title: str | None = None) -> None:
    if as_json:
        emit(data, as_json=True)
    elif isinstance(data, dict):
        emit(_money(data), as_json=False, title=title)
    else:
        emit([_money(r) for r in data], columns, as_json=False, title=title)




def _pairs(values: Sequence[str], option: str) -> list[dict[str, str]]:
    items = []
    for value in values:
        target, sep, amount = value.rpartition("=")
        if not sep or not target or not amount:
            raise ValidationError(option, value, "must be TARGET=AMOUNT, e.g. INV-000001=10.00")
        items.append({"target": target, "amount": amount})
    return items


def _per_item(app: AppContext, refs: Sequence[str], one: Callable[[Any, str], Any],
              batch: Callable[[Any, list[str]], list[dict[str, Any]]], as_json: bool) -> None:
    if len(refs) == 1:
        _show(app.write(lambda uow: one(uow, refs[0])), as_json)
        return
    results = app.write(lambda uow: batch(uow, list(refs)))
    if as_json:
        emit(results, as_json=True)
    else:
        emit([{"item": refs[r["index"]], "ok": r["ok"],
               "status": r["result"]["status"] if r["ok"] else r["error"]["message"]}
              for r in results], ["item", "ok", "status"], as_json=False)
    if not all(r["ok"] for r in results):
        for r in results:
            if not r["ok"]:
                click.echo(f"error: {refs[r['index']]}: {r['error']['message']}", err=True)
        # some done: attention (1); none done, nothing written: bad input (2)
        sys.exit(exits.ATTENTION if any(r["ok"] for r in results) else exits.BAD_INPUT)


def _account_id(app: AppContext, ref: str | None) -> int | None:
    return None if ref is None else int(app.read(lambda u: resolve_account(u.conn, ref))["id"])


# --- credit memos -----------------------------------------------------------------------------

@click.group("credit-memos")
def credit_memos() -> None:
    """Credit memos: create, activate, apply, unapply, cancel, list, show."""


@credit_memos.command("create")
@click.argument("account")
@click.argument("amount")
@click.option("--reason", required=True)
@click.option("--currency")
@click.option("--activate", is_flag=True, help="Activate (number) it at once.")
@json_option
@pass_app
def cm_create(app: AppContext, account: str, amount: str, reason: str, currency: str | None,
              activate: bool, as_json: bool) -> None:
    """Create a draft credit memo of AMOUNT for ACCOUNT."""
    def go(uow: Any) -> dict[str, Any]:
        acc = resolve_account(uow.conn, account)["id"]
        memo = memo_svc.create_credit_memo(uow, acc, amount, reason, currency=currency,
                                           activate=activate)
        return memo_svc.credit_memo_view(uow.conn, memo)
    _show(app.write(go), as_json)


@credit_memos.command("activate")
@click.argument("memos", nargs=-1, required=True)
@json_option
@pass_app
def cm_activate(app: AppContext, memos: tuple[str, ...], as_json: bool) -> None:
    """Activate draft credit memos (numbers them)."""
    _per_item(app, memos, memo_svc.activate_credit_memo, memo_svc.activate_credit_memos, as_json)


@credit_memos.command("apply")
@click.argument("memo")
@click.option("--to", "targets", multiple=True, required=True, metavar="TARGET=AMOUNT")
@json_option
@pass_app
def cm_apply(app: AppContext, memo: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Apply MEMO to invoices / debit memos (all or nothing)."""
    items = _pairs(targets, "--to")
    _show(app.write(lambda uow: memo_svc.apply_credit_memo(uow, memo, items)), as_json)


@credit_memos.command("unapply")
@click.argument("memo")
@click.option("--target", help="Only the applications to this document.")
@click.option("--amount", help="Only this much (newest applications first); default: all.")
@json_option
@pass_app
def cm_unapply(app: AppContext, memo: str, target: str | None, amount: str | None,
               as_json: bool) -> None:
    """Reverse MEMO's applications, or --amount of them."""
    _show(app.write(lambda uow: memo_svc.unapply_credit_memo(uow, memo, target=target,
                                                             amount=amount)), as_json)


@credit_memos.command("cancel")
@click.argument("memos", nargs=-1, required=True)
@json_option
@pass_app
def cm_cancel(app: AppContext, memos: tuple[str, ...], as_json: bool) -> None:
    """Cancel credit memos with nothing applied."""
    _per_item(app, memos, memo_svc.cancel_credit_memo, memo_svc.cancel_credit_memos, as_json)


@credit_memos.command("list")
@click.option("--account")
@click.option("--status")
@json_option
@pass_app
def cm_list(app: AppContext, account: str | None, status: str | None, as_json: bool) -> None:
    acc = _account_id(app, account)
    _show(app.read(lambda u: memo_svc.list_credit_memos(u.conn, acc, status)), as_json, DOC_COLUMNS)


@credit_memos.command("show")
@click.argument("memo")
@json_option
@pass_app
def cm_show(app: AppContext, memo: str, as_json: bool) -> None:
    view = app.read(lambda u: memo_svc.credit_memo_view(u.conn, memo))
    _show(view, as_json)
    if not as_json and view["applications"]:
        _show([dict(a, currency=view["currency"]) for a in view["applications"]], False,
              ["id", "target_type", "target_id", "amount", "applied_at"], title="applications")


# --- debit memos ------------------------------------------------------------------------------

@click.group("debit-memos")
def debit_memos() -> None:
    """Debit memos: create, activate, cancel, list, show."""


@debit_memos.command("create")
@click.argument("account")
@click.argument("amount")
@click.option("--reason", required=True)
@click.option("--currency")
@click.option("--date", "issue_date", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Issue date, today (UTC) or earlier (default: the day it is activated).")
@json_option
@pass_app
def dm_create(app: AppContext, account: str, amount: str, reason: str, currency: str | None,
              issue_date: Any, as_json: bool) -> None:
    """Create a draft debit memo of AMOUNT for ACCOUNT."""
    def go(uow: Any) -> dict[str, Any]:
        acc = resolve_account(uow.conn, account)["id"]
        memo = memo_svc.create_debit_memo(uow, acc, amount, reason, currency=currency,
                                          issue_date=issue_date.date() if issue_date else None)
        return memo_svc.debit_memo_view(uow.conn, memo)
    _show(app.write(go), as_json)


@debit_memos.command("activate")
@click.argument("memos", nargs=-1, required=True)
@json_option
@pass_app
def dm_activate(app: AppContext, memos: tuple[str, ...], as_json: bool) -> None:
    """Activate draft debit memos (numbered; due after the account's payment terms)."""
    _per_item(app, memos, memo_svc.activate_debit_memo, memo_svc.activate_debit_memos, as_json)


@debit_memos.command("cancel")
@click.argument("memos", nargs=-1, required=True)
@json_option
@pass_app
def dm_cancel(app: AppContext, memos: tuple[str, ...], as_json: bool) -> None:
    """Cancel unpaid debit memos."""
    _per_item(app, memos, memo_svc.cancel_debit_memo, memo_svc.cancel_debit_memos, as_json)


@debit_memos.command("list")
@click.option("--account")
@click.option("--status")
@json_option
@pass_app
def dm_list(app: AppContext, account: str | None, status: str | None, as_json: bool) -> None:
    acc = _account_id(app, account)
    _show(app.read(lambda u: memo_svc.list_debit_memos(u.conn, acc, status)), as_json,
          [*DOC_COLUMNS, "due_date"])


@debit_memos.command("show")
@click.argument("memo")
@json_option
@pass_app
def dm_show(app: AppContext, memo: str, as_json: bool) -> None:
    _show(app.read(lambda u: memo_svc.debit_memo_view(u.conn, memo)), as_json)


# --- invoices: void ---------------------------------------------------------------------------

@click.command("void-invoice")
@click.argument("invoice")
@json_option
@pass_app
def invoices_void(app: AppContext, invoice: str, as_json: bool) -> None:
    """Void INVOICE (number or id); only while nothing is applied to it."""
    _show(app.write(lambda uow: to_view(void_invoice(uow, invoice), "invoice")), as_json)


# --- accounts receivable ----------------------------------------------------------------------

@click.group("ar")
def ar() -> None:
    """Accounts receivable: aging and balances."""


def _as_of(value: str | None, option: str = "--as-of") -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(option, value, "must be a date (YYYY-MM-DD)") from None


@ar.command("aging")
@click.option("--as-of", "as_of", help="Date (YYYY-MM-DD); default today.")
@click.option("--account")
@json_option
@pass_app
def ar_aging(app: AppContext, as_of: str | None, account: str | None, as_json: bool) -> None:
    """Open receivables by days past due, per account and currency, with totals per currency."""
    on = _as_of(as_of)
    acc = _account_id(app, account)
    rows = app.read(lambda u: ar_svc.aging(u.conn, on, acc))
    _show(rows, as_json, ["account_id", "account_name", "currency", *ar_svc.BUCKETS, "total"],
          title=f"aging as of {on}")


@ar.command("balance")
@click.argument("account")
@click.option("--as-of", "as_of")
@json_option
@pass_app
def ar_balance(app: AppContext, account: str, as_of: str | None, as_json: bool) -> None:
    """Open balance, exposure, available credit and overdue of ACCOUNT."""
    on = _as_of(as_of)
    unbilled = app.settings.credit.include_unbilled_orders
    _show(app.read(lambda u: ar_svc.account_summary(
        u.conn, resolve_account(u.conn, account)["id"], on, include_unbilled=unbilled)), as_json)


# --- credit pools -----------------------------------------------------------------------------

@click.group("credits")
def credits() -> None:
    """Credit pools: grant, list, convert to and from credit memos."""


@credits.command("grant")
@click.argument("account")
@click.argument("amount")
@click.option("--kind", type=click.Choice(["purchased", "granted"]), default="purchased")
@click.option("--expires-on", "expires_on", help="Date (YYYY-MM-DD); default never.")
@click.option("--source", default="admin", show_default=True)
@click.option("--reason", required=True)
@json_option
@pass_app
def credits_grant(app: AppContext, account: str, amount: str, kind: str, expires_on: str | None,
                  source: str, reason: str, as_json: bool) -> None:
    """Add AMOUNT of credit to ACCOUNT's pool."""

    expiry = None if expires_on is None else _as_of(expires_on, "--expires-on")

    def go(uow: Any) -> dict[str, Any]:
        acc = resolve_account(uow.conn, account)["id"]
        grant = credit_svc.grant_credits(uow, acc, amount, kind=kind, expires_on=expiry,
                                         source=source, reason=reason)
        return credit_svc.get_grant(uow.conn, grant)
    _show(app.write(go), as_json)


@credits.command("list")
@click.argument("account")
@json_option
@pass_app
def credits_list(app: AppContext, account: str, as_json: bool) -> None:
    """ACCOUNT's grants, earliest expiry first."""

    _show(app.read(lambda u: credit_svc.list_grants(u.conn, resolve_account(u.conn, account)["id"])),
          as_json, ["id", "kind", "currency", "amount", "remaining", "expires_on", "expired",
                    "source", "reason"])


@credits.command("convert")
@click.argument("grant", required=False)
@click.option("--from-memo", "from_memo", help="Move this credit memo's unapplied balance back "
                                                "into the pool instead.")
@click.option("--amount", help="Part of the balance (default: all of it).")
@json_option
@pass_app
def credits_convert(app: AppContext, grant: str | None, from_memo: str | None,
                    amount: str | None, as_json: bool) -> None:
    """Turn GRANT's remaining credit into an active credit memo, or --from-memo back."""

    if (grant is None) == (from_memo is None):
        raise ValidationError("grant", grant, "give a GRANT id or --from-memo MEMO (one of them)")
    if from_memo is not None:
        _show(app.write(lambda uow: credit_svc.convert_memo_to_credits(uow, from_memo, amount)),
              as_json)
    else:
        _show(app.write(lambda uow: credit_svc.convert_grant_to_memo(uow, grant, amount)),
              as_json)


# --- payments ---------------------------------------------------------------------------------

@click.group("payments")
def payments() -> None:
    """Payments: record, apply, unapply, list."""


@payments.command("record")
@click.argument("account")
@click.argument("amount")
@click.option("--reference", required=True, help="Unique per account (payment systems retry).")
@click.option("--received-on", "received_on", help="Date (YYYY-MM-DD); default today.")
@click.option("--currency")
@click.option("--method")
@click.option("--apply-oldest", "apply_oldest", is_flag=True,
              help="Apply it at once, oldest due document first.")
@json_option
@pass_app
def pay_record(app: AppContext, account: str, amount: str, reference: str,
               received_on: str | None, currency: str | None, method: str | None,
               apply_oldest: bool, as_json: bool) -> None:
    """Record a payment of AMOUNT from ACCOUNT."""

    def go(uow: Any) -> dict[str, Any]:
        acc = resolve_account(uow.conn, account)["id"]
        pid = pay_svc.record_payment(uow, acc, amount, reference=reference,
                                     received_on=received_on, currency=currency, method=method,
                                     auto_apply=apply_oldest)
        return pay_svc.payment_view(uow.conn, pid)
    _show(app.write(go), as_json)


@payments.command("apply")
@click.argument("payment")
@click.option("--to", "targets", multiple=True, metavar="TARGET=AMOUNT",
              help="Default: oldest due documents first.")
@json_option
@pass_app
def pay_apply(app: AppContext, payment: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Apply PAYMENT (id or reference); what is left stays as the account's credit."""

    items = _pairs(targets, "--to") or None
    _show(app.write(lambda uow: pay_svc.apply_payment(uow, payment, items)), as_json)


@payments.command("unapply")
@click.argument("payment")
@click.option("--target", help="Only the applications to this document.")
@json_option
@pass_app
def pay_unapply(app: AppContext, payment: str, target: str | None, as_json: bool) -> None:
    """Reverse PAYMENT's applications; the money becomes the account's credit again."""

    _show(app.write(lambda uow: pay_svc.unapply_payment(uow, payment, target=target)), as_json)


@payments.command("list")
@click.option("--account")
@json_option
@pass_app
def pay_list(app: AppContext, account: str | None, as_json: bool) -> None:

    acc = _account_id(app, account)
    _show(app.read(lambda u: pay_svc.list_payments(u.conn, acc)), as_json,
          ["id", "account_id", "reference", "received_on", "method", "currency", "amount",
           "applied", "balance"])


COMMANDS: list[click.Command] = [credit_memos, debit_memos, credits, payments, invoices_void, ar]
