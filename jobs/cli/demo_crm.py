"""``ledgerbridge demo``: the real cycle against the sandbox CRM, told as a story.

It starts the sandbox (Salesforce and Dataverse over HTTPS on loopback, seeded), writes a
temporary config and SQLite database pointing at it, and runs the worker's real job bodies
(sync cycle, bill run, provisioning dispatch, push) a few times while a CRM user changes
things through the sandbox's admin actions. Everything lives in a temporary directory that is
removed at the end, and the sandbox is stopped: nothing keeps running.

One step is checked as it is told: a sales rep raises the first account's seats mid-period in
the CRM (revision 2 of its quote), the cycle hands the revision off as an amendment order, and
the next invoice (the bill run on the next bill cycle day, as a dry run) must bill exactly the
prorated added seats for the rest of the period plus the next period at the new quantity,
worked out from the ledger's own data. If it does not, the story says so on the spot and the
command exits 1 (``exits.ATTENTION``): the demo never tells a claim the ledger does not hold.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from billing_core.adapters.db import make_engine
from billing_core.domain.money import from_minor, round_money, to_minor
from billing_core.domain.periods import bill_period
from billing_core.service import ledger_uow
from billing_core.service.accounts import resolve_account
from billing_core.service.bill_run import InvoicePreview, run_bill_run
from billing_core.service.holds import current_reasons
from billing_core.service.order_reads import list_orders, list_subscriptions, subscription_view
from billing_core.service.payments import record_payment
from billing_core.service.provisioning import list_requests
from billing_core.service.receivables import open_balance_minor
from billing_core.service.tax import set_tax_rate
from config.settings import ConfigError, load_settings
from connectors.sandbox.server import Sandbox
from jobs.cli import exits
from jobs.cli.configs import (
    SANDBOX_TAX_RATES,
    check_writable,
    restart_command,
    sandbox_config,
    secrets_path,
    write_sandbox_config,
)
from jobs.cli.demo_usage import metered_usage_step
from jobs.cli.documents import write_latest_invoice
from jobs.migrate import upgrade
from jobs.worker import Worker

#: The first account's deal: SEATS seats at SEAT_PRICE USD a month; revision 2 of its quote adds
#: EXTRA_SEATS from AMEND_AFTER_DAYS days into the bill period (the 20th with bill cycle day 1).
SEATS, SEAT_PRICE, EXTRA_SEATS, AMEND_AFTER_DAYS = 100, 12, 3, 19


def set_sandbox_tax_rates(engine: Any) -> None:
    """Give every country the sandbox seeds its rate (:data:`SANDBOX_TAX_RATES`), from
    2000-01-01: the bill run refuses the invoice of an account whose country has no rate, so
    the demo sets them as finance would (US explicitly zero-rated, as in ``billing-demo``)."""
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

    def amend_seats(self, acc: dict[str, Any], quote_id: str, line_id: str) -> dict[str, Any]:
        """Revision 2 of the account's quote in the CRM: EXTRA_SEATS more seats from
        AMEND_AFTER_DAYS into today's bill period; one cycle; then the amendment order and the
        next invoice (a dry run of the bill run on the next bill cycle day), checked against
        the figures worked from the ledger's data. Returns the facts; ``problems`` lists every
        claim that did not hold (each said at once)."""
        say = self.say
        start, end = bill_period(self.worker.clock().date(), int(acc["bill_cycle_day"]))
        when, new = start + timedelta(days=AMEND_AFTER_DAYS), SEATS + EXTRA_SEATS
        self.sf("amend_quote", id=quote_id, start_date=when.isoformat(),
                quantities={line_id: new})
        handed = sum(r.handed_off for r in self.cycle())
        problems: list[str] = []
        facts: dict[str, Any] = {"amended_from": when, "next_bill_date": end,
                                 "problems": problems}
        with self.engine.connect() as conn:
            deal = list_orders(conn, account_id=acc["id"])
            changes = [(sub, ch) for sub in list_subscriptions(conn, on=when,
                                                                account_id=acc["id"])
                       for ch in subscription_view(conn, sub["id"], when)["history"]
                       if ch["effective_date"] == when and ch["status"] == "active"]
        amendments = [o for o in deal if o["amends_order_id"] is not None]
        if handed != 1 or len(amendments) != 1 or len(changes) != 1:
            problems.append(f"the cycle handed off {handed} quote(s); the account has "
                            f"{len(amendments)} amendment order(s) and {len(changes)} quantity "
                            f"change(s) from {when}; expected one of each")
        else:
            order, (sub, change) = amendments[0], changes[0]
            facts["amendment_order"] = f"ORD-{order['id']}"
            say(f"   the cycle handed revision 2 off as amendment order ORD-{order['id']} "
                f"({order['status']}), amending ORD-{order['amends_order_id']}: "
                f"{sub['product_name']} {change['old_quantity']:f} -> "
                f"{change['new_quantity']:f} from {when}; provisioning "
                f"{self.requests(acc['id'])} (an increase is sent on its date)")
            facts.update(self._next_invoice(acc, sub, change, (start, end), problems))
        for problem in problems:
            say(f"   !! THE STORY DOES NOT HOLD: {problem}")
        return facts

    def _next_invoice(self, acc: dict[str, Any], sub: dict[str, Any], change: dict[str, Any],
                      period: tuple[date, date], problems: list[str]) -> dict[str, Any]:
        """The amended account's next invoice (a dry run of the bill run on the period's end)
        against the figures worked from the change, the subscription's negotiated price and
        the period; a difference is appended to ``problems``."""
        (start, end), cur, price = period, str(acc["currency"]), sub["unit_price"]
        if price is None:
            problems.append(f"subscription {sub['id']} has no negotiated price (the quote's)")
            return {}
        when = change["effective_date"]
        new, old = Decimal(change["new_quantity"]), Decimal(change["old_quantity"])
        days, in_period = (end - when).days, (end - start).days
        proration = to_minor((new - old) * price * days / in_period, cur)
        recurring = to_minor(new * price, cur)
        unit = round_money(price, cur) if price == round_money(price, cur) else price
        figure = (f"{new - old:f} seats x {unit} x {days}/{in_period} = "
                  f"{from_minor(proration, cur)} {cur}")
        billing = self.settings.billing
        result = run_bill_run(self.engine, end, dry_run=True, series=billing.invoice_series,
                              tax_inclusive=billing.tax_inclusive)
        mine: list[InvoicePreview] = [i for i in result.invoices if i.account_id == acc["id"]]
        self.say(f"   its next invoice, the bill run on {end} (a dry run, nothing written):")
        got = []
        for inv in mine:
            for ln in inv.line_items:
                got.append((ln.kind, ln.amount_minor))
                self.say(f"     - {ln.description}: {from_minor(ln.amount_minor, cur)} {cur}")
            self.say(f"     subtotal {from_minor(inv.subtotal_minor, cur)} {cur}, tax "
                     f"{from_minor(inv.tax_minor, cur)} {cur}, total "
                     f"{from_minor(inv.total_minor, cur)} {cur}")
        want = [("proration", proration), ("recurring", recurring)]
        self.say(f"   worked from the ledger's data: the added seats, {when} to "
                 f"{end - timedelta(days=1)}: {figure}")
        self.say(f"     + the next period at the new quantity: {new:f} seats x {unit} = "
                 f"{from_minor(recurring, cur)} {cur}; together "
                 f"{from_minor(proration + recurring, cur)} {cur}, nothing else, nothing twice")
        if sorted(got) != sorted(want):
            errors = [e for e in result.errors if e.get("account_id") == acc["id"]]
            problems.append(f"the next invoice's lines (kind, minor units) {got} are not the "
                            f"worked {want}" + (f"; the bill run says {errors}" if errors else ""))
        else:
            self.say("   the invoice matches the worked figures to the cent.")
        return {"figure": figure, "next_lines": got}

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
    qa_made = story.sf("create_quote", account_id=a_id, status="Accepted", start_date=today,
                       name="Demo: workspace seats", lines=[
                           {"product_index": 0, "quantity": SEATS, "unit_price": SEAT_PRICE}])
    qa = qa_made["id"]
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
    a_requests = story.requests(a["id"])       # as step 4 leaves them (step 5 adds an increase)
    say(f"   paid {due} USD -> reasons now {a['reasons'] or 'none'}; provisioning {a_requests}")

    say(f"5. Sales adds {EXTRA_SEATS} seats to {a['name']}'s deal mid-period, in Salesforce: "
        f"revision 2 of its quote ({SEATS} -> {SEATS + EXTRA_SEATS} seats); the next cycle.")
    amended = story.amend_seats(a, qa, qa_made["line_ids"][0])

    say("6. What the CRM records show now (read back from the sandbox CRM):")
    story.crm_fields([a_id, c_id], [qa, qc])
    c = story.account(c_id)
    say(f"7. A usage system sends {c['name']}'s metered API calls through the HTTP API "
        "(POST /usage/events), grouped by region on a tiered price.")
    usage = metered_usage_step(story.engine, story.settings, c,
                               bill_period(story.worker.clock().date(),
                                           int(c["bill_cycle_day"])), say)
    pdf = write_latest_invoice(story.engine, story.settings, a["id"], workdir)
    story.worker.close()
    story.engine.dispose()
    return {"a": a_id, "c": c_id, "qa": qa, "qc": qc, "a_reasons": a["reasons"],
            "c_reasons": c["reasons"], "invoices": result.invoices_created,
            "a_requests": a_requests, "c_requests": story.requests(c["id"]),
            "invoice_pdf": pdf, "amendment": amended, "usage": usage}


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
            facts = run_story(sbx, workdir)
    pdf = facts["invoice_pdf"]
    problems = facts["amendment"]["problems"] + facts["usage"]["problems"]
    click.echo(f"Done in {time.monotonic() - started:.1f} s; the sandbox is stopped.")
    if pdf is not None:
        click.echo(f"Invoice PDF: {pdf.absolute()}" if keep else
                   f"Invoice PDF: {pdf.name} (run with --keep DIR to keep it)")
    if keep:
        config = (workdir / "ledgerbridge.toml").absolute()
        click.echo(f"Kept: {config} (its first lines say how to start its sandbox again), "
                   f"{secrets_path(config).name} and demo.db beside it.")
    if problems:
        click.echo(f"attention: the story did not hold ({len(problems)}): "
                   + "; ".join(problems), err=True)
        sys.exit(exits.ATTENTION)


COMMANDS = [demo_command]
__all__ = ["COMMANDS", "run_story", "sandbox_config"]   # sandbox_config: tests import it here
