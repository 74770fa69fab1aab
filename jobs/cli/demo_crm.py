"""``ledgerbridge demo``: the real cycle against the sandbox CRM, told as a story.

It starts the sandbox (Salesforce and Dataverse over HTTPS on loopback, seeded), writes a
temporary config and SQLite database pointing at it, and runs the worker's real job bodies
(sync cycle, bill run, provisioning dispatch, push) a few times while a CRM user changes
things through the sandbox's admin actions. Everything lives in a temporary directory that is
removed at the end, and the sandbox is stopped: nothing keeps running.
"""
from __future__ import annotations

import logging
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import click

from billing_core.adapters.db import make_engine
from billing_core.domain.money import from_minor
from billing_core.service import ledger_uow
from billing_core.service.accounts import resolve_account
from billing_core.service.holds import current_reasons
from billing_core.service.payments import record_payment
from billing_core.service.provisioning import list_requests
from billing_core.service.receivables import open_balance_minor
from billing_core.service.tax import set_tax_rate
from config.settings import ConfigError, load_settings
from connectors.sandbox.server import Sandbox
from jobs.cli.configs import (
    check_writable,
    restart_command,
    sandbox_config,
    secrets_path,
    write_sandbox_config,
)
from jobs.cli.documents import write_latest_invoice
from jobs.migrate import upgrade
from jobs.worker import Worker

#: The sandbox CRM's countries (both sides) and a standard rate each: the bill run refuses the
#: invoice of an account whose country has no rate, so the demo sets them as finance would
#: (US explicitly zero-rated, as in ``billing-demo``).
SANDBOX_TAX_RATES = (("US", "0"), ("GB", "0.20"), ("DE", "0.19"), ("FR", "0.20"),
                     ("NL", "0.21"), ("ES", "0.21"), ("IT", "0.22"), ("JP", "0.10"),
                     ("CA", "0.05"), ("AU", "0.10"), ("CH", "0.081"), ("SE", "0.25"),
                     ("IN", "0.18"), ("BH", "0.10"))


def set_sandbox_tax_rates(engine: Any) -> None:
    """Give every country the sandbox seeds its rate, from 2000-01-01."""
    with ledger_uow(engine) as uow:
        for country, rate in SANDBOX_TAX_RATES:
            set_tax_rate(uow, country, "", rate, date(2000, 1, 1))
        uow.commit()


class Story:
    """The demo's steps; each prints what happened in plain words."""

    def __init__(self, sbx: Any, workdir: Path) -> None:
        self.sbx = sbx
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "ledgerbridge.toml"
        write_sandbox_config(
            sbx, config, database_url=f"sqlite:///{(workdir / 'demo.db').absolute()}",
            restart=restart_command(port=sbx.port, seed=sbx.seed, accounts=sbx.accounts,
                                    quotes=sbx.quotes, sides=(), ca_dir=sbx.ca_dir or "DIR"),
            note="The demo changed the sandbox's data (quotes, holds): a restarted sandbox is\n"
                 "back at its seed, so this ledger holds orders for quotes it no longer shows.")
        self.settings = load_settings(config)
        self.engine = make_engine(self.settings.database_url)
        upgrade(self.engine)
        set_sandbox_tax_rates(self.engine)
        self.worker = Worker(self.engine, self.settings)

    def say(self, text: str) -> None:
        click.echo(text)

    def cycle(self) -> list[Any]:
        reports = [self.worker.sync_connection(n, self.worker.options("demo"), wait=True)
                   for n in self.worker.connections]
        self.worker.dispatch()
        self.worker.push_all()
        return [r for r in reports if r is not None]

    def sf(self, action: str, **payload: Any) -> dict[str, Any]:
        return dict(self.sbx.salesforce.admin(action, payload))

    def account(self, crm_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            acc = dict(resolve_account(conn, crm_id))
            acc["reasons"] = sorted(current_reasons(conn, acc["id"]))
        return acc

    def requests(self, account_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            out: dict[str, int] = {}
            for r in list_requests(conn, account_id=account_id):
                out[r["state"]] = out.get(r["state"], 0) + 1
            return out

    def crm_fields(self, ids: list[str], quote_ids: list[str]) -> None:
        client = self.sbx.salesforce_client()
        fields = ("Name", "Credit_Hold__c", "Billing_Hold__c", "Billing_Hold_Reasons__c",
                  "Open_Balance__c", "Available_Credit__c", "Credit_Exposure__c",
                  "Last_Invoice_Number__c", "Last_Invoice_Date__c")
        quoted = ",".join(f"'{i}'" for i in ids)
        rows = client.query(f"SELECT Id, {', '.join(fields)} FROM Account WHERE Id IN ({quoted})")
        for row in rows["records"]:
            self.say(f"  Salesforce Account {row['Id']} ({row['Name']}):")
            for f in fields[1:]:
                self.say(f"      {f:<26} {row.get(f)}")
        quoted = ",".join(f"'{i}'" for i in quote_ids)
        rows = client.query("SELECT Id, Name, Status, Order_Number__c, Provisioning_Status__c, "
                            f"Invoice_Number__c FROM Quote WHERE Id IN ({quoted})")
        for row in rows["records"]:
            self.say(f"  Salesforce Quote {row['Id']} ({row['Name']}, {row['Status']}): order "
                     f"{row['Order_Number__c']}, provisioning {row['Provisioning_Status__c']!r},"
                     f" invoice {row['Invoice_Number__c']}")
        dv = self.sbx.dataverse
        if dv is not None:
            row = dv.admin("get", {"table": "accounts", "index": 0})
            self.say(f"  Dataverse account {row.get('accountid')} ({row.get('name')}): "
                     f"new_billinghold={row.get('new_billinghold')}, "
                     f"new_openbalance={row.get('new_openbalance')}, "
                     f"new_availablecredit={row.get('new_availablecredit')}")


def run_story(sbx: Any, workdir: Path) -> dict[str, Any]:
    """The demo, returning the facts it showed (the e2e test asserts on them)."""
    story = Story(sbx, workdir)
    say = story.say
    # Subscriptions starting on the 1st are billed in full by today's run (bill cycle day 1).
    today = story.worker.clock().date().replace(day=1).isoformat()
    a_id = sbx.salesforce.admin("update", {"object": "Account", "index": 0, "fields": {
        "Credit_Limit__c": 1000, "Credit_Hold__c": False, "CurrencyIsoCode": "USD"}})["id"]
    c_id = sbx.salesforce.admin("set_hold", {"index": 1, "hold": True})["id"]
    qa = story.sf("create_quote", account_id=a_id, status="Accepted", start_date=today,
                  name="Demo: 100 workspace seats", lines=[
                      {"product_index": 0, "quantity": 100, "unit_price": 12}])["id"]
    qc = story.sf("create_quote", account_id=c_id, status="Accepted", start_date=today,
                  name="Demo: security keys", lines=[
                      {"product_index": 8, "quantity": 5, "unit_price": 45}])["id"]

    say("1. First cycle: pull from both CRMs, hand off accepted quotes, check credit, push.")
    reports = story.cycle()
    for r in reports:
        acc = r.objects.get("account")
        say(f"   {r.connection}: {acc.read if acc else 0} accounts read, "
            f"{r.total('upserted')} records reconciled, {r.handed_off} accepted quotes handed "
            f"off as orders, {r.total('quarantined')} quarantined, "
            f"{r.total('api_calls')} API calls ({r.outcome})")
    a, c = story.account(a_id), story.account(c_id)
    say(f"   {a['name']}: limit 1,000 USD, its accepted quote is 1,200 USD a month -> on hold "
        f"({', '.join(a['reasons']) or 'none'}); provisioning {story.requests(a['id'])}")
    say(f"   {c['name']}: finance set the CRM credit hold -> on hold "
        f"({', '.join(c['reasons']) or 'none'}); provisioning {story.requests(c['id'])}")

    say("2. Bill run for today: invoices are issued even while an account is on hold.")
    result = story.worker.bill_run()
    if result is None:
        raise click.ClickException("another bill run holds the demo database's lock")
    say(f"   {result.invoices_created} invoice(s) issued")

    say("3. Finance clears the CRM hold on the second account in Salesforce.")
    story.sf("set_hold", id=c_id, hold=False)
    story.cycle()
    c = story.account(c_id)
    say(f"   {c['name']}: reasons now {c['reasons'] or 'none'}; provisioning "
        f"{story.requests(c['id'])} (released and dispatched by itself)")

    say("4. A payment arrives for the first account's open balance.")
    with ledger_uow(story.engine, policy=story.settings.credit) as uow:
        due = from_minor(open_balance_minor(uow.conn, a["id"]), "USD")
        if due > 0:
            record_payment(uow, a["id"], str(due), reference="DEMO-PAYMENT-1", auto_apply=True)
        uow.commit()
    story.cycle()
    a = story.account(a_id)
    say(f"   paid {due} USD -> reasons now {a['reasons'] or 'none'}; provisioning "
        f"{story.requests(a['id'])}")

    say("5. What the CRM records show now (read back from the sandbox CRM):")
    story.crm_fields([a_id, c_id], [qa, qc])
    pdf = write_latest_invoice(story.engine, story.settings, a["id"], workdir)
    story.worker.close()
    story.engine.dispose()
    return {"a": a_id, "c": c_id, "qa": qa, "qc": qc, "a_reasons": a["reasons"],
            "c_reasons": c["reasons"], "invoices": result.invoices_created,
            "a_requests": story.requests(a["id"]), "c_requests": story.requests(c["id"]),
            "invoice_pdf": pdf}


@click.command("demo")
@click.option("--accounts", default=20, show_default=True, help="Seeded accounts per CRM.")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the database and config here.")
@click.pass_context
def demo_command(ctx: click.Context, accounts: int, keep: str | None) -> None:
    """Start the sandbox CRM and run the real sync cycle against it, telling the story."""
    verbosity = getattr(ctx.obj, "verbosity", 0)
    if not verbosity:
        logging.getLogger().setLevel(logging.ERROR)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-demo-") as tmp:
        workdir = Path(keep) if keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if keep:
            check_writable(workdir.absolute() / "ledgerbridge.toml", force=False)
            if (workdir / "demo.db").exists():    # the story needs a fresh ledger and CRM
                raise ConfigError(f"{workdir} already holds a kept demo (demo.db): give "
                                  "--keep a new directory, or remove that one")
        ca_dir = str((workdir / "sandbox-ca").absolute()) if keep else None
        with Sandbox(accounts=accounts, quotes=max(accounts // 2, 4), seed=7,
                     ca_dir=ca_dir) as sbx:
            click.echo(f"Sandbox CRM on {sbx.url} (Salesforce and Dataverse, seeded); "
                       f"database and config in {workdir}")
            pdf = run_story(sbx, workdir)["invoice_pdf"]
    click.echo(f"Done in {time.monotonic() - started:.1f} s; the sandbox is stopped.")
    if pdf is not None:
        click.echo(f"Invoice PDF: {pdf.absolute()}" if keep else
                   f"Invoice PDF: {pdf.name} (run with --keep DIR to keep it)")
    if keep:
        config = (workdir / "ledgerbridge.toml").absolute()
        click.echo(f"Kept: {config} (its first lines say how to start its sandbox again), "
                   f"{secrets_path(config).name} and demo.db beside it.")


COMMANDS = [demo_command]
__all__ = ["COMMANDS", "run_story", "sandbox_config"]   # sandbox_config: tests import it here
