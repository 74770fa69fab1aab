"""``ledgerbridge audit list``: the audit trail (who changed what in the ledger, when).

Thin: parse the filters, read ``billing_core.service.audit.list_entries`` in a read-only unit of
work, print a table or ``--json``. A read: exit 0, or 2 for bad input (an unknown account, a
malformed date, a limit out of range), nothing written.
"""
from __future__ import annotations

import json
from typing import Any

import click

from billing_core.domain.ids import MAX_ID
from billing_core.service.accounts import resolve_account
from billing_core.service.audit import list_entries
from jobs.cli.common import AppContext, emit, json_option, pass_app


@click.group("audit")
def audit() -> None:
    """The audit trail: every change to the ledger, with its actor and before/after."""


@audit.command("list")
@click.option("--account", help="Only this account (ledger id or CRM id).")
@click.option("--since", help="From this date or time on (YYYY-MM-DD[THH:MM], UTC).")
@click.option("--entity", "entity_type",
              help="Only this entity type (invoice, payment, credit_memo, debit_memo, hold, "
                   "subscription, order, account, product, tax_rate, api_token).")
@click.option("--actor", help="Only this actor (e.g. cli:alice), or a prefix ending in ':' or "
                              "'*' (api:, sync:*).")
@click.option("--after-id", type=click.IntRange(0, MAX_ID), default=0, show_default=True,
              help="Rows after this id (the page cursor: the last id shown).")
@click.option("--limit", type=int, default=100, show_default=True,
              help="At most this many rows (1 to 10000).")
@json_option
@pass_app
def audit_list(app: AppContext, account: str | None, since: str | None,
               entity_type: str | None, actor: str | None, after_id: int, limit: int,
               as_json: bool) -> None:
    """Audit rows, oldest first, filtered."""
    def go(uow: Any) -> list[dict[str, Any]]:
        account_id = int(resolve_account(uow.conn, account)["id"]) if account else None
        return list_entries(uow.conn, account_id=account_id, since=since,
                            entity_type=entity_type, actor=actor, after_id=after_id,
                            limit=limit)

    rows = app.read(go)
    if as_json:
        emit(rows, as_json=True)
        return
    shown = [{**r, "entity": f"{r['entity_type']} {r['entity_ref'] or r['entity_id'] or ''}"
              .strip(), "changes": json.dumps(r["changes"], sort_keys=True, default=str)}
             for r in rows]
    emit(shown, ["id", "at", "actor", "action", "entity", "account_id", "changes"],
         as_json=False, title="Audit trail")


COMMANDS = [audit]
