"""``ledgerbridge orders | subscriptions``: finance's hand on orders and subscriptions.

Thin over :mod:`billing_core.service.order_reads` (list, show) and
:mod:`billing_core.service.gate` (quantity changes, cancellations, end dates: the same gate the
CRM hand-off uses, so credit control sees every change). Writes run in one ``ledger_uow`` with
the configured ``[credit]`` policy and commit; reads in a read-only one. Ids are ledger ids;
accounts by ledger id or CRM id. Bad input (an unknown id, a quantity that is not a number,
an end date that would move later): one line on stderr naming the field and value, exit 2.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import click

from billing_core.domain.ids import MAX_ID
from billing_core.service.accounts import resolve_account
from billing_core.service.order_reads import (
    ORDER_STATUSES,
    SUBSCRIPTION_STATES,
    list_orders,
    list_subscriptions,
    order_view,
    parse_id,
    subscription_view,
)
from jobs.cli.common import AppContext, emit, json_option, pass_app

DATE = click.DateTime(formats=["%Y-%m-%d"])
LIMIT = click.option("--limit", type=click.IntRange(1, MAX_ID), default=200, show_default=True)




def _day(value: datetime | None) -> date | None:
    return None if value is None else value.date()


def _account_id(uow: Any, account: str | None) -> int | None:
    return None if account is None else int(resolve_account(uow.conn, account)["id"])


# --- orders ---------------------------------------------------------------------------------

@click.group()
def orders() -> None:
    """Orders: list, show, cancel."""


@orders.command("list")
@click.option("--account", help="Ledger id or CRM id of the account.")
@click.option("--status", type=click.Choice(ORDER_STATUSES))
@LIMIT
@json_option
@pass_app
def orders_list(app: AppContext, account: str | None, status: str | None, limit: int,
                as_json: bool) -> None:
    """List orders, oldest first."""
    rows = app.read(lambda u: list_orders(u.conn, account_id=_account_id(u, account),
                                            status=status, limit=limit))
    if as_json:
        emit(rows, as_json=True)
        return
    emit([{"id": r["id"], "account": r["account_name"], "source": r["source_ref"],
           "date": r["order_date"], "status": r["status"],
           "amends": r["amends_order_id"] or ""} for r in rows], as_json=False, title="Orders")


@orders.command("show")
@click.argument("order_id")
@json_option
@pass_app
def orders_show(app: AppContext, order_id: str, as_json: bool) -> None:
    """Show one order with its subscriptions and one-time charges."""
    view = app.read(lambda u: order_view(u.conn, order_id, u.now().date()))
    if as_json:
        emit(view, as_json=True)
        return
    click.echo(f"order {view['id']}  {view['account_name']}  {view['source_ref']}  "
               f"{view['status']}  dated {view['order_date']}")
    emit(_sub_rows(view["subscriptions"]), as_json=False, title="Subscriptions")
    if view["one_time_charges"]:
        emit([{"id": c["id"], "product": c["sku"], "quantity": c["quantity"],
               "date": c["charge_date"], "status": c["status"],
               "invoice": c["invoice_id"] or ""} for c in view["one_time_charges"]],
             as_json=False, title="One-time charges")


@orders.command("cancel")
@click.argument("order_id")
@click.option("--at", "at", type=DATE, help="End its subscriptions from this date (default: "
              "today, UTC); days billed after it are credited on the next invoice.")
@json_option
@pass_app
def orders_cancel(app: AppContext, order_id: str, at: datetime | None, as_json: bool) -> None:
    """Cancel an order: its subscriptions end, its unsent provisioning requests are cancelled."""
    from billing_core.service.gate import cancel_order

    oid = parse_id(order_id, "order_id")
    cancelled = app.write(lambda u: cancel_order(u, oid, _day(at)))
    view = app.read(lambda u: order_view(u.conn, oid, u.now().date()))
    if as_json:
        emit({**view, "requests_cancelled": cancelled}, as_json=True)
        return
    click.echo(f"order {oid} cancelled; {cancelled} provisioning request(s) cancelled")
    emit(_sub_rows(view["subscriptions"]), as_json=False)


# --- subscriptions --------------------------------------------------------------------------

def _sub_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "order": r["order_id"] or "", "product": r["sku"],
             "quantity": r["quantity_today"], "state": r["state"], "start": r["start_date"],
             "end": r["end_date"] or "", "billed_through": r["billed_through"] or "",
             "frequency": r["frequency"]} for r in rows]


@click.group()
def subscriptions() -> None:
    """Subscriptions: list, show, change-quantity, cancel, end-date."""


@subscriptions.command("list")
@click.option("--account", help="Ledger id or CRM id of the account.")
@click.option("--order", "order_id", help="Only this order's subscriptions.")
@click.option("--state", type=click.Choice(SUBSCRIPTION_STATES))
@LIMIT
@json_option
@pass_app
def subscriptions_list(app: AppContext, account: str | None, order_id: str | None,
                       state: str | None, limit: int, as_json: bool) -> None:
    """List subscriptions, oldest first, with today's quantity and state."""
    oid = None if order_id is None else parse_id(order_id, "order")
    rows = app.read(lambda u: list_subscriptions(
        u.conn, on=u.now().date(), account_id=_account_id(u, account), order_id=oid,
        state=state, limit=limit))
    if as_json:
        emit(rows, as_json=True)
        return
    emit(_sub_rows(rows), as_json=False, title="Subscriptions")


def _show(app: AppContext, subscription_id: str | int, as_json: bool) -> None:
    view = app.read(lambda u: subscription_view(u.conn, subscription_id, u.now().date()))
    if as_json:
        emit(view, as_json=True)
        return
    emit(_sub_rows([view]), as_json=False, title=f"Subscription {view['id']}")
    emit([{"change": h["id"], "from": h["effective_date"], "old": h["old_quantity"],
           "new": h["new_quantity"], "status": h["status"], "invoice": h["invoice_id"] or ""}
          for h in view["history"]], as_json=False, title="Quantity history")


@subscriptions.command("show")
@click.argument("subscription_id")
@json_option
@pass_app
def subscriptions_show(app: AppContext, subscription_id: str, as_json: bool) -> None:
    """Show one subscription with its quantity history."""
    _show(app, subscription_id, as_json)


@subscriptions.command("change-quantity")
@click.argument("subscription_id")
@click.option("--quantity", required=True, help="The new quantity (0 ends the subscription).")
@click.option("--from", "from_", type=DATE, required=True,
              help="Effective date (YYYY-MM-DD); may be in the past or the future.")
@json_option
@pass_app
def subscriptions_change_quantity(app: AppContext, subscription_id: str, quantity: str,
                                  from_: datetime, as_json: bool) -> None:
    """Change the quantity from a date; the next invoice prorates it against the quantity in
    effect on that date."""
    from billing_core.service.gate import change_quantity

    sid = parse_id(subscription_id, "subscription_id")
    app.write(lambda u: change_quantity(u, sid, quantity, from_.date(),
                                          policy=app.settings.credit))
    _show(app, sid, as_json)


@subscriptions.command("cancel")
@click.argument("subscription_id")
@click.option("--at", "at", type=DATE, help="End date, exclusive (default: today, UTC).")
@json_option
@pass_app
def subscriptions_cancel(app: AppContext, subscription_id: str, at: datetime | None,
                         as_json: bool) -> None:
    """Cancel now or at a date; days billed in advance after it are credited on the next
    invoice."""
    _end(app, subscription_id, _day(at), as_json)


@subscriptions.command("end-date")
@click.argument("subscription_id")
@click.argument("end", type=DATE)
@json_option
@pass_app
def subscriptions_end_date(app: AppContext, subscription_id: str, end: datetime,
                           as_json: bool) -> None:
    """Set the end date (exclusive; it only moves earlier)."""
    _end(app, subscription_id, end.date(), as_json)


def _end(app: AppContext, subscription_id: str, at: date | None, as_json: bool) -> None:
    from billing_core.service.gate import end_subscription

    sid = parse_id(subscription_id, "subscription_id")
    end = app.write(lambda u: end_subscription(u, sid, at))
    if not as_json:
        click.echo(f"subscription {sid} ends {end}")
    _show(app, sid, as_json)


COMMANDS = [orders, subscriptions]
