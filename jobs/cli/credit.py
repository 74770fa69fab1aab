"""``holds`` and ``provisioning``: credit control from the command line.

Thin: parse, call service functions in one unit of work opened with ``ledger_uow`` and the
configured ``[credit]`` policy (so holds are re-evaluated at commit by the same rules as the
worker), commit, print a table or ``--json``. Accounts are given by ledger id or CRM id.
Unknown accounts, a release of a reason billing does not own, a retry of a request that has not
failed: one line on stderr, exit code 2.
"""
from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from billing_core.domain.money import from_minor
from billing_core.service import ledger_uow
from billing_core.service.accounts import resolve_account
from billing_core.service.credit_control import effective_limit_minor, run_reevaluation
from billing_core.service.holds import (
    REASONS,
    current_reasons,
    describe_reasons,
    history,
    list_holds,
    place_manual_hold,
    release_manual_hold,
)
from billing_core.service.provisioning import (
    STATES,
    dispatch_pending,
    list_requests,
    mark_provisioned,
    retry_request,
)
from billing_core.service.receivables import exposure_minor
from billing_core.service.reports import account_labels
from jobs.cli import exits
from jobs.cli.common import ID, AppContext, emit, json_option, pass_app
from jobs.provisioners import build_provisioner


def _admin(name: str | None) -> str:
    return name or os.environ.get("LEDGERBRIDGE_ADMIN") or getpass.getuser()


def _amount(minor: int | None, currency: str) -> str:
    return "" if minor is None else f"{from_minor(minor, currency)} {currency}"


@click.group("holds")
def holds() -> None:
    """Credit holds: reasons, history, manual holds."""


@holds.command("list")
@click.option("--reason", type=click.Choice(REASONS), help="Only accounts with this reason.")
@json_option
@pass_app
def holds_list(app: AppContext, reason: str | None, as_json: bool) -> None:
    """Accounts on hold, with their reasons."""
    def go(conn: Any) -> list[dict[str, Any]]:
        rows = list_holds(conn, reason=reason)
        labels = account_labels(conn, [row["account_id"] for row in rows])
        for row in rows:
            label = labels[row["account_id"]]
            row.update(crm_id=label.crm_id, name=label.name)
        return rows

    rows = app.read(lambda u: go(u.conn))
    if as_json:
        emit(rows, as_json=True)
    else:
        emit([{**r, "reasons": ", ".join(r["reasons"])} for r in rows],
             ["account_id", "crm_id", "name", "reasons", "since"], as_json=False)


@holds.command("show")
@click.argument("account")
@json_option
@pass_app
def holds_show(app: AppContext, account: str, as_json: bool) -> None:
    """An account's hold reasons, exposure, limit and hold history."""
    policy = app.settings.credit

    def go(conn: Any) -> dict[str, Any]:
        acc = resolve_account(conn, account)
        today = datetime.now(UTC).date()
        reasons = current_reasons(conn, acc["id"])
        return {
            "account_id": acc["id"], "crm_id": acc["ext_id"], "name": acc["name"],
            "currency": acc["currency"], "on_hold": bool(reasons),
            "reasons": [{"reason": r.reason, "source": r.source, "placed_at": r.placed_at,
                         "details": r.details} for r in reasons.values()],
            "exposure_minor": exposure_minor(conn, acc["id"], today,
                                             include_unbilled=policy.include_unbilled_orders),
            "credit_limit_minor": acc["credit_limit_minor"],
            "credit_limit_override_minor": acc["credit_limit_override_minor"],
            "hold_above_minor": effective_limit_minor(acc, policy),
            "history": history(conn, acc["id"]),
        }

    data = app.read(lambda u: go(u.conn))
    if as_json:
        emit(data, as_json=True)
        return
    cur = data["currency"]
    emit({"account": f"{data['account_id']} ({data['crm_id']}) {data['name']}",
          "on hold": "yes" if data["on_hold"] else "no",
          "reasons": ", ".join(r["reason"] for r in data["reasons"]) or "none",
          "exposure": _amount(data["exposure_minor"], cur),
          "credit limit": _amount(data["credit_limit_minor"], cur) or "none",
          "limit override": _amount(data["credit_limit_override_minor"], cur) or "none",
          "hold above": _amount(data["hold_above_minor"], cur) or "never (no limit)"},
         as_json=False, title="Credit hold")
    if data["reasons"]:
        emit([{"reason": r["reason"], "source": r["source"], "placed_at": r["placed_at"],
               "why": _why(r["details"], cur)} for r in data["reasons"]],
             ["reason", "source", "placed_at", "why"], as_json=False, title="Reasons")
    emit([{"at": h["at"], "reason": h["reason"], "action": h["action"], "by": h["actor"],
           "figures": _why(h["details"], cur)} for h in data["history"]],
         ["at", "reason", "action", "by", "figures"], as_json=False, title="History")


def _why(details: dict[str, Any], currency: str) -> str:
    if "exposure_minor" in details:
        return (f"exposure {_amount(details['exposure_minor'], currency)} / limit "
                f"{_amount(details.get('limit_minor'), currency) or 'none'}")
    if "documents" in details:
        return ", ".join(f"{d['number'] or d['id']} due {d['due_date']}"
                         for d in details["documents"])
    if "note" in details:
        return str(details["note"])
    if "flag" in details:
        return f"CRM hold flag {'set' if details['flag'] else 'cleared'}"
    return ", ".join(f"{k}={v}" for k, v in details.items())


@holds.command("place")
@click.argument("account")
@click.option("--note", required=True, help="Why the account is held (kept in the history).")
@click.option("--admin", help="Who places it (default: $LEDGERBRIDGE_ADMIN or the OS user).")
@pass_app
def holds_place(app: AppContext, account: str, note: str, admin: str | None) -> None:
    """Place a manual hold; only `holds release` lifts it."""
    def go(uow: Any) -> int:
        account_id = int(resolve_account(uow.conn, account)["id"])
        place_manual_hold(uow, account_id, note, admin=_admin(admin))
        return account_id

    click.echo(f"account {app.write(go)}: manual hold placed")


@holds.command("release")
@click.argument("account")
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True,
              help="Only 'manual' can be released by hand; the others are refused.")
@click.option("--admin", help="Who releases it (default: $LEDGERBRIDGE_ADMIN or the OS user).")
@pass_app
def holds_release(app: AppContext, account: str, reason: str, admin: str | None) -> None:
    """Release the manual hold. Prints the reasons that still hold the account, if any."""
    def go(uow: Any) -> tuple[int, list[str]]:
        account_id = int(resolve_account(uow.conn, account)["id"])
        return account_id, release_manual_hold(uow, account_id, admin=_admin(admin),
                                               reason=reason)

    account_id, remaining = app.write(go)
    if remaining:
        click.echo(f"account {account_id}: manual hold released; still on hold for: "
                   f"{describe_reasons(remaining)}")
    else:
        click.echo(f"account {account_id}: manual hold released; no hold remains")


@holds.command("evaluate")
@click.option("--all", "everyone", is_flag=True,
              help="Every account, not only those with a document past due.")
@pass_app
def holds_evaluate(app: AppContext, everyone: bool) -> None:
    """Re-evaluate holds now (what the hourly job does for days passing)."""
    policy = app.settings.credit
    summary = run_reevaluation(app.engine, None, policy, only_past_due=not everyone,
                               uow_factory=lambda: ledger_uow(app.engine, policy=policy,
                                                                 actor=app.actor))
    click.echo(f"{summary['accounts']} account(s): {summary['placed']} reason(s) placed, "
               f"{summary['lifted']} lifted")


@click.group("provisioning")
def provisioning() -> None:
    """Provisioning requests: list, retry, mark-provisioned, dispatch."""


@provisioning.command("list")
@click.option("--state", type=click.Choice(STATES))
@click.option("--account", help="Ledger id or CRM id.")
@json_option
@pass_app
def prov_list(app: AppContext, state: str | None, account: str | None, as_json: bool) -> None:
    """Provisioning requests in creation order (``--state failed`` for what needs a look)."""
    def go(conn: Any) -> list[dict[str, Any]]:
        account_id = None if account is None else int(resolve_account(conn, account)["id"])
        return list_requests(conn, state=state, account_id=account_id)

    rows = app.read(lambda u: go(u.conn))
    emit(rows, None if as_json else ["id", "account_id", "order_id", "product_id", "quantity",
                                     "change_kind", "effective_date", "state", "attempts",
                                     "last_error", "updated_at"],
         as_json=as_json)


@provisioning.command("retry")
@click.argument("request_id", type=ID)
@pass_app
def prov_retry(app: AppContext, request_id: int) -> None:
    """Send a failed request again (same idempotency key)."""
    state = app.write(lambda uow: retry_request(uow, request_id))
    click.echo(f"request {request_id}: {state}")


@provisioning.command("mark-provisioned")
@click.argument("request_id", type=ID)
@pass_app
def prov_done(app: AppContext, request_id: int) -> None:
    """Record that a dispatched request's work is done (what a provisioning system confirms)."""
    app.write(lambda uow: mark_provisioned(uow, request_id))
    click.echo(f"request {request_id}: provisioned")


@provisioning.command("dispatch")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@pass_app
def prov_dispatch(app: AppContext, limit: int) -> None:
    """Send released requests once through the configured provisioner."""
    provisioner = build_provisioner(app.settings.provisioner, log_stream=sys.stdout)
    report = dispatch_pending(app.engine, provisioner, limit=limit, worker_id=f"cli-{os.getpid()}")
    click.echo(f"{report.claimed} claimed: {len(report.dispatched)} dispatched, "
               f"{len(report.failed)} failed")
    if report.failed:
        sys.exit(exits.ATTENTION)      # listed by `provisioning list --state failed`


COMMANDS = [holds, provisioning]
