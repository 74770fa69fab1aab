"""The exit-code contract (``jobs.cli.exits``, docs/OPERATIONS.md#exit-codes), command by
command: one table, ``CONTRACT``, with an entry for every registered command and subcommand
(``test_every_command_has_an_entry`` fails when a new one is registered without one).

- 0: a clean run. 1: done, with something needing attention, where the command can end so.
- 2: bad input: an unknown id, a malformed amount or date, a missing option, a missing database
  file: exactly one line on stderr, ``error: ...``, naming the field and the value, and nothing
  written (the ledger's rows are the same before and after).
- 3: the database unreachable (PostgreSQL on a closed port): every command that opens the
  ledger, from its first clean case; ``doctor`` reports it as a failed check instead (1).
- ``--json``: every case of a command that takes it is run again with it, with the same code;
  on 0 and 1 its stdout is JSON.
- On PostgreSQL too: the bad-input cases without a set-up of their own, in turn on one seeded
  ledger, write nothing.

Each case runs in-process (click's runner) on a copy of one seeded SQLite ledger
(``jobs.cli.demo.seed_demo_ledger`` on 2026-04-10 and that day's bill run: accounts 1-3, Acme
USD/US-CA, Globex EUR/DE, Initech JPY/JP; invoices INV-000001..3; subscription 1). Cases marked
``sandbox`` get a config with the sandbox CRM's Salesforce side (5 accounts), reset first.

Regressions found by this table (each fixed with it): ``quarantine retry 99``,
``quarantine drop 99`` and ``outbox retry 99`` exited 0 for ids that do not exist; a batch
``credit-memos activate 1 99`` that activated memo 1 exited 2 ("nothing written") instead of 1;
``run --once`` exited 0 when its sync runs stopped or quarantined records; ``credits grant
--expires-on 2026-02-30`` named ``--as-of``; a database URL with an unknown driver
(``nope://x``) ended in a traceback, and a SQLite file in a directory that does not exist was
"unreachable" (3) instead of bad configuration (2); usage errors printed click's three lines;
``bill-run --json`` that waited for another bill run in vain printed no JSON.

A new command: add ``"group name": Entry((C(0, ...), C(2, ..., says=...), ...))`` with a
clean case first (it is also the unreachable-database case), the bad inputs it can get, a
case ending 1 if it can end with something needing attention (else ``why_no_attention``),
``database=False`` if it never opens the ledger.
"""
from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, insert, text

from billing_core.adapters.db import make_engine
from billing_core.adapters.tables import email_outbox, provisioning_requests
from billing_core.service import ledger_uow
from billing_core.service.bill_run import run_bill_run
from billing_core.service.holds import place_manual_hold
from connectors.sandbox.server import Sandbox
from jobs.cli import exits, main
from jobs.cli.demo import seed_demo_ledger
from jobs.cli.demo_crm import sandbox_config
from jobs.migrate import upgrade
from sync.tables import outbox

SEED_DAY = date(2026, 4, 10)
HERE = Path(__file__)


@dataclass
class Env:
    """What a case's set-up may touch: its directory, the ledger, the sandbox (if any)."""
    tmp: Path
    engine: Engine
    sbx: Sandbox | None
    config: Path
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    stack: ExitStack = field(default_factory=ExitStack)

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args], env=self.env)


Prep = Callable[[Env], None]


@dataclass(frozen=True)
class Case:
    code: int
    args: tuple[str, ...]
    says: str = ""                    # for 2: in the one stderr line (the field and the value)
    prep: tuple[Prep, ...] = ()
    sandbox: bool = False
    config: str = ""                  # TOML appended to the case's config


@dataclass(frozen=True)
class Elsewhere:
    """A case another test runs (a long-running server or process): named, and checked to
    exist, so the table stays the index of the whole contract."""
    code: int
    test: str                         # "tests/...py::test_name"


@dataclass(frozen=True)
class Entry:
    cases: tuple[Case | Elsewhere, ...]
    database: bool = True             # opens the ledger: gets the unreachable-database case
    unreachable: int = exits.UNREACHABLE
    why_no_attention: str = ""        # why the command has no case ending 1


def C(code: int, *args: str, says: str = "", prep: tuple[Prep, ...] | Prep = (),
      sandbox: bool = False, config: str = "") -> Case:
    return Case(code, tuple(args), says, prep if isinstance(prep, tuple) else (prep,), sandbox,
                config)


# --- set-ups --------------------------------------------------------------------------------

def _write(env: Env, fn: Callable[[Any], Any]) -> None:
    with ledger_uow(env.engine) as uow:
        fn(uow)
        uow.commit()


def manual_hold(env: Env) -> None:
    _write(env, lambda u: place_manual_hold(u, 3, "contract test", admin="test"))


def _request(state: str, key: str) -> Prep:
    def prep(env: Env) -> None:
        now = datetime.now(UTC)
        with env.engine.begin() as conn:
            conn.execute(insert(provisioning_requests).values(
                account_id=1, order_id=1, subscription_id=1, product_id=1, quantity=Decimal(10),
                state=state, idempotency_key=key, attempts=1, created_at=now, updated_at=now,
                last_error="HTTP 500" if state == "failed" else None))
    return prep


failed_request, dispatched_request = _request("failed", "k-failed"), _request("dispatched",
                                                                          "k-dispatched")


def pending_request(env: Env) -> None:
    """A request of account 1, paid up first (INV-000001, 2,329.21 USD: the overdue hold
    lifts), so dispatch claims it."""
    _ok(env, "payments", "record", "1", "2329.21", "--reference", "PAID-UP", "--apply-oldest")
    _request("pending", "k-pending")(env)


def dead_letter(env: Env) -> None:
    now = datetime.now(UTC)
    with env.engine.begin() as conn:
        conn.execute(insert(outbox).values(
            connection="sf", object="account", crm_id="001000000000001AAA", ledger_id=1,
            payload="{}", hash="h", state="dead", attempts=8, last_error="refused",
            updated_at=now, dead_at=now))


def billing_emails(env: Env) -> None:
    for account in ("1", "2", "3"):
        _ok(env, "accounts", "update", account, "--billing-email", f"ap{account}@example.com")


def failed_email(env: Env) -> None:
    """Invoice 1's email, failed for want of an address; account 1 has one now."""
    now = datetime.now(UTC)
    with env.engine.begin() as conn:
        conn.execute(insert(email_outbox).values(
            doc_type="invoice", doc_id=1, account_id=1, recipient=None, kind="invoice",
            idempotency_key="k-email", state="failed", attempts=0, message_id="<k@example.com>",
            last_error="account 1 (Acme) has no billing_email", created_at=now, updated_at=now))
    _ok(env, "accounts", "update", "1", "--billing-email", "ap@example.com")


def draft_memos(env: Env) -> None:
    assert env.cli("credit-memos", "create", "1", "10", "--reason", "r").exit_code == 0
    assert env.cli("debit-memos", "create", "1", "5", "--reason", "r").exit_code == 0


def active_memo(env: Env) -> None:
    assert env.cli("credit-memos", "create", "1", "10", "--reason", "r",
                   "--activate").exit_code == 0


def payment(env: Env) -> None:
    assert env.cli("payments", "record", "1", "5", "--reference", "PAY-1").exit_code == 0


def no_german_tax(env: Env) -> None:
    with env.engine.begin() as conn:
        conn.execute(text("DELETE FROM tax_rates WHERE country = 'DE'"))


def csv(name: str, body: str) -> Prep:
    def prep(env: Env) -> None:
        (env.tmp / name).write_text("event_id,account,product,quantity,occurred_at\n" + body)
    return prep


METERED = ('{"event_id": "m1", "account": "1", "metric": "calls", '
           '"timestamp": "2026-04-12T10:00:00Z", "value": "5"}')


def metered(name: str, *lines: str) -> Prep:
    """A JSON Lines file of metered events, with the metric ``calls`` (sum, product API)."""
    def prep(env: Env) -> None:
        from billing_core.service.usage_metrics import set_metric

        _write(env, lambda uow: set_metric(uow, "calls", aggregation="sum", product="API"))
        (env.tmp / name).write_text("".join(line + "\n" for line in lines))
    return prep


RECON_HEADER = "CustomerId,ProductId,SkuId,BillableQuantity,Subtotal,Currency\n"


def recon_csv(name: str, body: str) -> Prep:
    """A Partner Center reconciliation file (the columns reconcile vendor needs)."""
    def prep(env: Env) -> None:
        (env.tmp / name).write_text(RECON_HEADER + body)
    return prep


def reconciled(env: Env) -> None:
    recon_csv("recon.csv", "ffff,CFQ7TTC0LH18,0001,1,10.00,USD\n")(env)
    assert env.cli("reconcile", "vendor", str(env.tmp / "recon.csv"), "--period",
                   "2026-04").exit_code == exits.ATTENTION


def mapped(env: Env) -> None:
    _ok(env, "reconcile", "map", "customer", "aaaa-tenant", "1")


def synced(env: Env) -> None:
    result = env.cli("sync")
    assert result.exit_code == 0, result.output


def broken(env: Env) -> None:
    """Account 0 of the sandbox with a negative credit limit (the sync quarantines it)."""
    assert env.sbx is not None
    env.sbx.salesforce.admin("update", {"object": "Account", "index": 0,
                                        "fields": {"Credit_Limit__c": -100}})


def quarantined(env: Env) -> None:
    """Synced with account 0 broken: one open quarantine row (id 1), the run partial."""
    broken(env)
    assert env.cli("sync").exit_code == exits.ATTENTION


def budget_spent(env: Env) -> None:
    assert env.sbx is not None
    env.sbx.salesforce.admin("set_api_usage", {"used": 15000, "limit": 15000})


def foreign_file(env: Env) -> None:
    (env.tmp / "foreign.toml").write_text("x = 1\n")


def a_file(env: Env) -> None:
    (env.tmp / "a-file").write_text("")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def bill_run_in_progress(env: Env) -> None:
    """Another bill run holds the lock and keeps it: the waiting one gives up (after 0.3 s
    here instead of 600 s)."""
    import functools

    import sync.locks

    original = sync.locks.job_lock
    assert env.stack.enter_context(original(env.engine, "bill-run"))
    env.monkeypatch.setattr(sync.locks, "job_lock", functools.partial(original, timeout=0.3))


def crm_event(env: Env) -> None:
    """A stored CRM event of connection sf (account 0 of the sandbox), waiting to be read."""
    from sync import inbox

    inbox.store(env.engine, "sf", "salesforce_json",
                [inbox.InboxEvent("e-1", "account", "001000000000001AAA", "Update")],
                datetime.now(UTC))


def daemon_running(env: Env) -> None:
    """Another daemon on this SQLite ledger: its lock held while the case runs."""
    from sync.locks import job_lock

    assert env.stack.enter_context(job_lock(env.engine, "daemon"))


CLOSED_CRM = ('[connections.sf]\ncrm = "salesforce"\nurl = "https://127.0.0.1:{port}"\n'
              'max_attempts = 1\n[connections.sf.credentials]\nclient_id = "id"\n'
              'client_secret = "env:LB_CONTRACT_HOOK"\n')
#: Ids no table can hold (2^63, 2^64): not found or refused, never a driver's OverflowError
#: (SQLite) or NumericValueOutOfRange (PostgreSQL) traceback.
ID_2_63, ID_2_64 = str(2**63), str(2**64)
LONG_REASON = "r" * 300             # the memo column holds 255: refused, not cut short
MISSING_DB = ("--database-url", "sqlite:///{tmp}/missing.db")
MISSING_DB_SAYS = "missing.db does not exist"
WEBHOOK = ('[provisioner]\nkind = "webhook"\nurl = "http://127.0.0.1:{port}/p"\n'
           'secret_env = "LB_CONTRACT_HOOK"\nmax_attempts = 1\ntimeout_seconds = 1.0\n')
DUNNING = '[dunning]\nenabled = true\noffsets = "-3, 7, 14"\n'
CLASSES = '[dunning.classes.enterprise]\noffsets = [10, 30]\n'
EMAIL = ('[email]\nenabled = true\nsince = "2026-01-01"\nfrom_address = "billing@example.com"\n'
         'host = "127.0.0.1"\nport = {port}\ntimeout_seconds = 1.0\n')      # SMTP: closed port


def missing_db(*args: str) -> Case:
    """The documented bad configuration of a command with no input of its own: a database
    file that does not exist (named; not created)."""
    return C(2, *MISSING_DB, *args, says=MISSING_DB_SAYS)


# --- the table ------------------------------------------------------------------------------

CONTRACT: dict[str, Entry] = {
    # billing: accounts, catalog, invoices, usage, bill run
    "accounts add": Entry((
        C(0, "accounts", "add", "--name", "N", "--currency", "USD", "--ext-id", "E-1"),
        C(2, "accounts", "add", "--name", "N", "--currency", "USD", "--ext-id", "E-1",
          "--credit-limit", "abc", says="credit_limit='abc'"),
        C(2, "accounts", "add", "--name", "N", "--currency", "XXX", "--ext-id", "E-1",
          says="currency='XXX'"),
        C(2, "accounts", "add", "--name", "N", "--currency", "USD", says="'--ext-id'"),
    ), why_no_attention="one account, added or refused"),
    "accounts list": Entry((C(0, "accounts", "list"), missing_db("accounts", "list")),
                           why_no_attention="a read"),
    "accounts show": Entry((C(0, "accounts", "show", "1"),
                            C(2, "accounts", "show", "99", says="account='99'"),
                            C(2, "accounts", "show", ID_2_64, says=f"account='{ID_2_64}'")),
                           why_no_attention="a read"),
    "accounts update": Entry((
        C(0, "accounts", "update", "1", "--terms", "10"),
        C(2, "accounts", "update", "99", "--terms", "10", says="account='99'"),
        C(2, "accounts", "update", "1", "--credit-limit-override", "1.001",
          says="credit_limit_override='1.001'"),
        C(2, "accounts", "update", "1", "--bcd", "32", says="'--bcd': 32"),
        C(0, "accounts", "update", "1", "--class", "enterprise", config=CLASSES),
        C(2, "accounts", "update", "1", "--class", "gold", config=CLASSES,
          says="account_class='gold'"),
    ), why_no_attention="one account, updated or refused"),
    "products add": Entry((
        C(0, "products", "add", "--sku", "NEW", "--name", "New"),
        C(2, "products", "add", "--sku", "SEAT", "--name", "Dup", says="sku='SEAT'"),
        C(2, "products", "add", "--sku", "NEW", says="'--name'"),
    ), why_no_attention="one product, added or refused"),
    "products show": Entry((C(0, "products", "show", "SEAT"),
                            C(2, "products", "show", "NOPE", says="product='NOPE'"),
                            C(2, "products", "show", ID_2_63, says=f"product='{ID_2_63}'")),
                           why_no_attention="a read"),
    "products update": Entry((
        C(0, "products", "update", "SEAT", "--term-months", "12", "--auto-renew"),
        C(2, "products", "update", "NOPE", "--term-months", "12", says="product='NOPE'"),
        C(2, "products", "update", "SEAT", "--term-decrease", "never",
          says="term_decrease='never'"),
        C(2, "products", "update", "SEAT", says="--term-months"),
    ), why_no_attention="one product, updated or refused"),
    "products list": Entry((C(0, "products", "list"), missing_db("products", "list")),
                           why_no_attention="a read"),
    "prices set": Entry((
        C(0, "prices", "set", "SEAT", "--currency", "USD", "--from", "2026-05-01", "--price",
          "30"),
        C(2, "prices", "set", "NOPE", "--currency", "USD", "--from", "2026-05-01", "--price",
          "1", says="product='NOPE'"),
        C(2, "prices", "set", "SEAT", "--currency", "USD", "--from", "2026-05-01", "--price",
          "abc", says="unit_price='abc'"),
        C(2, "prices", "set", "SEAT", "--currency", "USD", "--from", "2026-05-32", "--price",
          "1", says="'--from': '2026-05-32'"),
    ), why_no_attention="one price, set or refused"),
    "prices list": Entry((C(0, "prices", "list", "--product", "SEAT"),
                          C(2, "prices", "list", "--product", "NOPE", says="product='NOPE'")),
                         why_no_attention="a read"),
    "tax-rates set": Entry((
        C(0, "tax-rates", "set", "FR", "--rate", "0.2", "--from", "2026-01-01"),
        C(2, "tax-rates", "set", "FR", "--rate", "abc", "--from", "2026-01-01",
          says="rate='abc'"),
        C(2, "tax-rates", "set", "FR", "--rate", "2", "--from", "2026-01-01", says="rate='2'"),
    ), why_no_attention="one rate, set or refused"),
    "tax-rates import": Entry((
        C(0, "tax-rates", "import", "{tmp}/rates.csv",
          prep=lambda env: (env.tmp / "rates.csv").write_text(
              "country,region,rate,from\nFR,,0.2,2026-01-01\n")),
        C(1, "tax-rates", "import", "{tmp}/mixed.csv",
          prep=lambda env: (env.tmp / "mixed.csv").write_text(
              "country,region,rate,from\nFR,,0.2,2026-01-01\nFR,,abc,2026-02-01\n")),
        C(2, "tax-rates", "import", "{tmp}/none.csv", says="'{tmp}/none.csv'"),
        C(2, "tax-rates", "import", "{tmp}/bad.csv", says="columns='country,rate'",
          prep=lambda env: (env.tmp / "bad.csv").write_text("country,rate\nFR,0.2\n")),
    )),
    "tax-rates list": Entry((C(0, "tax-rates", "list"), missing_db("tax-rates", "list")),
                            why_no_attention="a read"),
    "invoices list": Entry((C(0, "invoices", "list", "--account", "1"),
                            C(2, "invoices", "list", "--account", "99", says="account='99'")),
                           why_no_attention="a read"),
    "invoices show": Entry((C(0, "invoices", "show", "INV-000001"),
                            C(2, "invoices", "show", "INV-999", says="invoice='INV-999'"),
                            C(2, "invoices", "show", ID_2_63, says=f"invoice='{ID_2_63}'"),
                            C(2, "invoices", "show", ID_2_64, says=f"invoice='{ID_2_64}'")),
                           why_no_attention="a read"),
    "invoices render": Entry((
        C(0, "invoices", "render", "INV-000001", "--format", "html", "-o", "{tmp}/inv.html"),
        C(2, "invoices", "render", "INV-999", "-o", "{tmp}/inv.pdf", says="'INV-999'"),
        C(2, "invoices", "render", ID_2_63, "-o", "{tmp}/inv.pdf", says=f"'{ID_2_63}'"),
        C(2, "invoices", "render", "INV-000001", "--format", "doc", says="'--format': 'doc'"),
    ), why_no_attention="one document, written or refused"),
    "statements render": Entry((
        C(0, "statements", "render", "1", "--from", "2026-04-01", "--to", "2026-05-31",
          "--format", "html", "-o", "{tmp}/st.html"),
        C(2, "statements", "render", "99", "--from", "2026-04-01", "--to", "2026-05-31",
          "-o", "{tmp}/st.pdf", says="account='99'"),
        C(2, "statements", "render", "1", "--from", "2026-04-31", "--to", "2026-05-31",
          says="'--from': '2026-04-31'"),
    ), why_no_attention="one document, written or refused"),
    "usage import": Entry((
        C(0, "usage", "import", "{tmp}/good.csv",
          prep=csv("good.csv", "u1,1,API,5,2026-04-12T10:00:00Z\n")),
        C(1, "usage", "import", "{tmp}/mixed.csv",
          prep=csv("mixed.csv", "u1,1,API,5,2026-04-12T10:00:00Z\n"
                                "u2,1,NOPE,5,2026-04-12T10:00:00Z\n")),
        C(2, "usage", "import", "{tmp}/none.csv", says="'{tmp}/none.csv'"),
        C(2, "usage", "import", "{tmp}/bad.csv", says="columns='hello,world'",
          prep=lambda env: (env.tmp / "bad.csv").write_text("hello,world\n1,2\n")),
    )),
    "usage ingest": Entry((
        C(0, "usage", "ingest", "{tmp}/good.jsonl", prep=metered("good.jsonl", METERED)),
        C(1, "usage", "ingest", "{tmp}/mixed.jsonl",
          prep=metered("mixed.jsonl", METERED, METERED.replace('"1"', '"99"').replace("m1", "m2"))),
        C(2, "usage", "ingest", "{tmp}/none.jsonl", says="'{tmp}/none.jsonl'"),
        C(2, "usage", "ingest", "{tmp}/bad.csv", says="columns='hello,world'",
          prep=lambda env: (env.tmp / "bad.csv").write_text("hello,world\n1,2\n")),
    )),
    "usage metrics list": Entry((C(0, "usage", "metrics", "list"),
                                 missing_db("usage", "metrics", "list")),
                                why_no_attention="a read"),
    "usage metrics set": Entry((
        C(0, "usage", "metrics", "set", "calls", "--aggregation", "sum", "--product", "API",
          "--group-by", "region", "--filter", "env=prod"),
        C(2, "usage", "metrics", "set", "calls", "--aggregation", "sum", "--product", "SEAT",
          says="product='SEAT'"),
        C(2, "usage", "metrics", "set", "calls", "--aggregation", "unique_count", "--product",
          "API", says="property=None"),
    ), why_no_attention="one metric version, written or refused"),
    "usage metrics load": Entry((
        C(0, "usage", "metrics", "load", "{tmp}/m.toml", prep=lambda env: (
            env.tmp / "m.toml").write_text('[metrics.calls]\naggregation = "count"\n'
                                           'product = "API"\n')),
        C(2, "usage", "metrics", "load", "{tmp}/bad.toml", says="aggregation='median'",
          prep=lambda env: (env.tmp / "bad.toml").write_text(
              '[metrics.calls]\naggregation = "median"\nproduct = "API"\n')),
    ), why_no_attention="the file's metrics, all set or none"),
    "bill-run": Entry((
        C(0, "bill-run", "--date", "2026-05-10"),
        C(0, "bill-run", "--date", "2026-05-10", "--dry-run"),
        C(1, "bill-run", "--date", "2026-05-10", prep=no_german_tax),
        C(1, "bill-run", "--date", "2026-05-10", prep=bill_run_in_progress),
        C(2, "bill-run", "--date", "2026-13-10", says="'--date': '2026-13-10'"),
        C(2, "bill-run", "--chunk-size", "0", says="'--chunk-size': 0"),
        C(2, "bill-run", "--date", "9999-12-31", "--dry-run", says="date='9999-12-31'"),
        C(2, "bill-run", "--date", "9999-12-31", says="date='9999-12-31'"),
    )),
    # orders and subscriptions
    "orders list": Entry((C(0, "orders", "list", "--account", "1"),
                          C(2, "orders", "list", "--account", "NOPE", says="account='NOPE'")),
                         why_no_attention="a read"),
    "orders show": Entry((C(0, "orders", "show", "1"),
                          C(2, "orders", "show", "99", says="order='99'"),
                          C(2, "orders", "show", "abc", says="order_id='abc'"),
                          C(2, "orders", "show", ID_2_64, says=f"order_id='{ID_2_64}'")),
                         why_no_attention="a read"),
    "orders cancel": Entry((
        C(0, "orders", "cancel", "1", "--at", "2026-05-01"),
        C(2, "orders", "cancel", "99", says="order=99"),
        C(2, "orders", "cancel", "1", "--at", "2026-02-30", says="'--at': '2026-02-30'"),
    ), why_no_attention="one order, cancelled or refused"),
    "subscriptions list": Entry((
        C(0, "subscriptions", "list", "--account", "1"),
        C(2, "subscriptions", "list", "--order", "x", says="order='x'"),
    ), why_no_attention="a read"),
    "subscriptions show": Entry((
        C(0, "subscriptions", "show", "1"),
        C(2, "subscriptions", "show", "99", says="subscription='99'"),
    ), why_no_attention="a read"),
    "subscriptions change-quantity": Entry((
        C(0, "subscriptions", "change-quantity", "1", "--quantity", "12", "--from",
          "2026-04-20"),
        C(2, "subscriptions", "change-quantity", "1", "--quantity", "abc", "--from",
          "2026-04-20", says="quantity='abc'"),
        C(2, "subscriptions", "change-quantity", "99", "--quantity", "5", "--from",
          "2026-04-20", says="99"),
        C(2, "subscriptions", "change-quantity", "1", "--from", "2026-04-20",
          says="'--quantity'"),
    ), why_no_attention="one change, recorded or refused"),
    "subscriptions cancel": Entry((
        C(0, "subscriptions", "cancel", "1", "--at", "2026-06-01"),
        C(2, "subscriptions", "cancel", "99", says="subscription=99"),
    ), why_no_attention="one subscription, cancelled or refused"),
    "subscriptions end-date": Entry((
        C(0, "subscriptions", "end-date", "1", "2026-06-01"),
        C(2, "subscriptions", "end-date", "1", "2026-06-31", says="'2026-06-31'"),
        C(2, "subscriptions", "end-date", "99", "2026-06-01", says="subscription=99"),
    ), why_no_attention="one subscription, ended or refused"),
    # receivables
    "credit-memos create": Entry((
        C(0, "credit-memos", "create", "1", "10", "--reason", "r"),
        C(2, "credit-memos", "create", "1", "10.001", "--reason", "r", says="amount='10.001'"),
        C(2, "credit-memos", "create", "NOPE", "10", "--reason", "r", says="account='NOPE'"),
        C(2, "credit-memos", "create", "1", "10", says="'--reason'"),
        C(2, "credit-memos", "create", "1", "10", "--reason", LONG_REASON,
          says="reason='rrrr"),
        C(2, "credit-memos", "create", ID_2_64, "10", "--reason", "r",
          says=f"account='{ID_2_64}'"),
    ), why_no_attention="one memo, created or refused"),
    "credit-memos activate": Entry((
        C(0, "credit-memos", "activate", "1", prep=draft_memos),
        C(1, "credit-memos", "activate", "1", "99", prep=draft_memos),
        C(2, "credit-memos", "activate", "99", says="credit_memo='99'"),
    )),
    "credit-memos apply": Entry((
        C(0, "credit-memos", "apply", "1", "--to", "INV-000001=5", prep=active_memo),
        C(2, "credit-memos", "apply", "99", "--to", "INV-000001=5", says="credit_memo='99'"),
        C(2, "credit-memos", "apply", "1", "--to", "INV-000001", says="--to='INV-000001'",
          prep=draft_memos),
    ), why_no_attention="all or nothing"),
    "credit-memos unapply": Entry((
        C(0, "credit-memos", "unapply", "1",
          prep=(active_memo, lambda env: _ok(env, "credit-memos", "apply", "1", "--to",
                                             "INV-000001=5"))),
        C(2, "credit-memos", "unapply", "99", says="credit_memo='99'"),
    ), why_no_attention="all or nothing"),
    "credit-memos cancel": Entry((
        C(0, "credit-memos", "cancel", "1", prep=draft_memos),
        C(1, "credit-memos", "cancel", "1", "99", prep=draft_memos),
        C(2, "credit-memos", "cancel", "99", says="credit_memo='99'"),
        C(2, "credit-memos", "cancel", ID_2_63, says=f"credit_memo='{ID_2_63}'"),
    )),
    "credit-memos render": Entry((
        C(0, "credit-memos", "render", "1", "--format", "html", "-o", "{tmp}/cm.html",
          prep=active_memo),
        C(2, "credit-memos", "render", "99", "-o", "{tmp}/cm.pdf", says="'99'"),
    ), why_no_attention="one document, written or refused"),
    "credit-memos list": Entry((C(0, "credit-memos", "list"),
                                C(2, "credit-memos", "list", "--account", "99",
                                  says="account='99'")), why_no_attention="a read"),
    "credit-memos show": Entry((C(0, "credit-memos", "show", "1", prep=draft_memos),
                                C(2, "credit-memos", "show", "99", says="credit_memo='99'")),
                               why_no_attention="a read"),
    "debit-memos create": Entry((
        C(0, "debit-memos", "create", "1", "5", "--reason", "r"),
        C(2, "debit-memos", "create", "1", "5", "--reason", "r", "--date", "2026-13-01",
          says="'--date': '2026-13-01'"),
        C(2, "debit-memos", "create", "1", "abc", "--reason", "r", says="amount='abc'"),
        C(2, "debit-memos", "create", "1", "5", "--reason", LONG_REASON, says="reason='rrrr"),
    ), why_no_attention="one memo, created or refused"),
    "debit-memos activate": Entry((
        C(0, "debit-memos", "activate", "1", prep=draft_memos),
        C(1, "debit-memos", "activate", "1", "99", prep=draft_memos),
        C(2, "debit-memos", "activate", "99", says="debit_memo='99'"),
    )),
    "debit-memos cancel": Entry((
        C(0, "debit-memos", "cancel", "1", prep=draft_memos),
        C(1, "debit-memos", "cancel", "1", "99", prep=draft_memos),
        C(2, "debit-memos", "cancel", "99", says="debit_memo='99'"),
        C(2, "debit-memos", "cancel", ID_2_64, says=f"debit_memo='{ID_2_64}'"),
    )),
    "debit-memos render": Entry((
        C(0, "debit-memos", "render", "1", "--format", "html", "-o", "{tmp}/dm.html",
          prep=(draft_memos, lambda env: _ok(env, "debit-memos", "activate", "1"))),
        C(2, "debit-memos", "render", "99", "-o", "{tmp}/dm.pdf", says="'99'"),
    ), why_no_attention="one document, written or refused"),
    "debit-memos list": Entry((C(0, "debit-memos", "list"),
                               C(2, "debit-memos", "list", "--account", "99",
                                 says="account='99'")), why_no_attention="a read"),
    "debit-memos show": Entry((C(0, "debit-memos", "show", "1", prep=draft_memos),
                               C(2, "debit-memos", "show", "99", says="debit_memo='99'")),
                              why_no_attention="a read"),
    "credits grant": Entry((
        C(0, "credits", "grant", "1", "5", "--reason", "r", "--expires-on", "2026-12-31"),
        C(2, "credits", "grant", "1", "abc", "--reason", "r", says="amount='abc'"),
        C(2, "credits", "grant", "1", "5", "--reason", "r", "--expires-on", "2026-02-30",
          says="--expires-on='2026-02-30'"),
    ), why_no_attention="one grant, added or refused"),
    "credits list": Entry((C(0, "credits", "list", "2"),
                           C(2, "credits", "list", "99", says="account='99'")),
                          why_no_attention="a read"),
    "credits convert": Entry((
        C(0, "credits", "convert", "2", "--amount", "1",
          prep=lambda env: _ok(env, "credits", "grant", "1", "5", "--reason", "r")),
        C(2, "credits", "convert", "99", says="grant='99'"),
        C(2, "credits", "convert", ID_2_64, says=f"grant='{ID_2_64}'"),
        C(2, "credits", "convert", says="grant=None"),
    ), why_no_attention="all or nothing"),
    "payments record": Entry((
        C(0, "payments", "record", "1", "5", "--reference", "R-1"),
        C(2, "payments", "record", "1", "5", "--reference", "R-1", "--received-on",
          "2026-13-01", says="received_on='2026-13-01'"),
        C(2, "payments", "record", "1", "5", "--reference", "R-1", "--currency", "XYZ",
          says="XYZ"),
        C(2, "payments", "record", ID_2_64, "5", "--reference", "R-1",
          says=f"account='{ID_2_64}'"),
    ), why_no_attention="one payment, recorded or refused"),
    "payments apply": Entry((
        C(0, "payments", "apply", "PAY-1", prep=payment),
        C(2, "payments", "apply", "NOPE", says="payment='NOPE'"),
        C(2, "payments", "apply", ID_2_63, says=f"payment='{ID_2_63}'"),
    ), why_no_attention="all or nothing"),
    "payments unapply": Entry((
        C(0, "payments", "unapply", "PAY-1",
          prep=(payment, lambda env: _ok(env, "payments", "apply", "PAY-1"))),
        C(2, "payments", "unapply", "NOPE", says="payment='NOPE'"),
    ), why_no_attention="all or nothing"),
    "payments list": Entry((C(0, "payments", "list"),
                            C(2, "payments", "list", "--account", "99", says="account='99'")),
                           why_no_attention="a read"),
    "void-invoice": Entry((C(0, "void-invoice", "INV-000001"),
                           C(2, "void-invoice", "INV-999", says="invoice='INV-999'"),
                           C(2, "void-invoice", ID_2_64, says=f"invoice='{ID_2_64}'")),
                          why_no_attention="one invoice, voided or refused"),
    "ar aging": Entry((C(0, "ar", "aging", "--as-of", "2026-06-01"),
                       C(2, "ar", "aging", "--as-of", "2026-13-01",
                         says="--as-of='2026-13-01'")), why_no_attention="a read"),
    "ar balance": Entry((C(0, "ar", "balance", "1"),
                         C(2, "ar", "balance", "99", says="account='99'")),
                        why_no_attention="a read"),
    # credit control
    "holds list": Entry((C(0, "holds", "list"),
                         C(2, "holds", "list", "--reason", "nope", says="'--reason': 'nope'")),
                        why_no_attention="a read"),
    "holds show": Entry((C(0, "holds", "show", "1"),
                         C(2, "holds", "show", "99", says="account='99'")),
                        why_no_attention="a read"),
    "holds place": Entry((C(0, "holds", "place", "1", "--note", "n"),
                          C(2, "holds", "place", "99", "--note", "n", says="account='99'"),
                          C(2, "holds", "place", "1", says="'--note'")),
                         why_no_attention="one hold, placed or refused"),
    "holds release": Entry((
        C(0, "holds", "release", "3", prep=manual_hold),
        C(2, "holds", "release", "1", says="account=1: has no manual hold"),
        C(2, "holds", "release", "99", says="account='99'"),
    ), why_no_attention="one hold, released or refused; reasons that remain are billing's"),
    "holds evaluate": Entry((C(0, "holds", "evaluate", "--all"), missing_db("holds", "evaluate")),
                            why_no_attention="holds placed or lifted are its work, not a "
                                             "problem"),
    "provisioning list": Entry((
        C(0, "provisioning", "list", "--account", "1"),
        C(2, "provisioning", "list", "--account", "99", says="account='99'"),
    ), why_no_attention="a read"),
    "provisioning retry": Entry((
        C(0, "provisioning", "retry", "1", prep=failed_request),
        C(2, "provisioning", "retry", "99", says="provisioning_request=99"),
        C(2, "provisioning", "retry", "x", says="'x'"),
        C(2, "provisioning", "retry", ID_2_63, says=f"'REQUEST_ID': {ID_2_63}"),
    ), why_no_attention="one request, retried or refused"),
    "provisioning mark-provisioned": Entry((
        C(0, "provisioning", "mark-provisioned", "1", prep=dispatched_request),
        C(2, "provisioning", "mark-provisioned", "99", says="provisioning_request=99"),
    ), why_no_attention="one request, marked or refused"),
    "provisioning dispatch": Entry((
        C(0, "provisioning", "dispatch", prep=pending_request),
        C(1, "provisioning", "dispatch", prep=pending_request, config=WEBHOOK),
        C(2, "provisioning", "dispatch", "--limit", "0", says="'--limit': 0"),
    )),
    # API tokens
    "tokens create": Entry((
        C(0, "tokens", "create", "--name", "ops", "--scope", "admin"),
        C(2, "tokens", "create", "--name", "ops", "--scope", "root", says="'--scope': 'root'"),
    ), why_no_attention="one token, created or refused"),
    "tokens list": Entry((C(0, "tokens", "list"), missing_db("tokens", "list")),
                         why_no_attention="a read"),
    "tokens revoke": Entry((
        C(0, "tokens", "revoke", "ops", prep=lambda env: _ok(env, "tokens", "create", "--name",
                                                            "ops", "--scope", "admin")),
        C(2, "tokens", "revoke", "99", says="token='99'"),
    ), why_no_attention="one token, revoked or refused"),
    # the audit trail
    "audit list": Entry((
        C(0, "audit", "list"),
        C(0, "audit", "list", "--account", "1", "--since", "2026-01-01", "--entity", "invoice",
          "--actor", "cli:*", "--limit", "5"),
        C(2, "audit", "list", "--since", "2026-13-01", says="since='2026-13-01'"),
        C(2, "audit", "list", "--account", "99", says="account='99'"),
        C(2, "audit", "list", "--limit", "0", says="limit=0"),
        C(2, "audit", "list", "--after-id", ID_2_64, says=f"'--after-id': {ID_2_64}"),
        missing_db("audit", "list"),
    ), why_no_attention="a read"),
    # vendor reconciliation (docs/RECONCILIATION.md)
    "reconcile vendor": Entry((
        C(0, "reconcile", "vendor", "{tmp}/empty.csv", "--period", "2026-01",
          prep=recon_csv("empty.csv", "")),
        C(1, "reconcile", "vendor", "{tmp}/recon.csv", "--period", "2026-04",
          prep=recon_csv("recon.csv", "ffff,CFQ7TTC0LH18,0001,1,10.00,USD\n")),
        C(1, "reconcile", "vendor", "{tmp}/bad.csv", "--period", "2026-04", "--format", "csv",
          prep=recon_csv("bad.csv", "ffff,CFQ7TTC0LH18,0001,one,10.00,USD\n")),
        C(2, "reconcile", "vendor", "{tmp}/none.csv", "--period", "2026-04",
          says="'{tmp}/none.csv'"),
        C(2, "reconcile", "vendor", "{tmp}/cols.csv", "--period", "2026-04",
          says="columns='CustomerId,Total'",
          prep=lambda env: (env.tmp / "cols.csv").write_text("CustomerId,Total\nx,1\n")),
        C(2, "reconcile", "vendor", "{tmp}/empty.csv", "--period", "2026-13",
          prep=recon_csv("empty.csv", ""), says="period='2026-13'"),
        C(2, "reconcile", "vendor", "{tmp}/empty.csv", "--period", "2026-01", "--format", "xml",
          prep=recon_csv("empty.csv", ""), says="'xml' is not one of"),
    )),
    "reconcile show": Entry((
        C(0, "reconcile", "show", "--period", "2026-04", "--format", "json", prep=reconciled),
        C(2, "reconcile", "show", "--period", "2026-02", says="period='2026-02'"),
        C(2, "reconcile", "show", "--period", "march", says="period='march'"),
        missing_db("reconcile", "show", "--period", "2026-04"),
    ), why_no_attention="a read: `reconcile vendor` reports the differences"),
    "reconcile map": Entry((
        C(0, "reconcile", "map", "customer", "aaaa-tenant", "1"),
        C(0, "reconcile", "map", "product", "CFQ7TTC0LH18", "SEAT"),
        C(2, "reconcile", "map", "customer", "aaaa-tenant", "99", says="account='99'"),
        C(2, "reconcile", "map", "subscription", "s-1", "99", says="subscription='99'"),
        C(2, "reconcile", "map", "nope", "k", "1", says="'nope' is not one of"),
    ), why_no_attention="one mapping, set or refused"),
    "reconcile unmap": Entry((
        C(0, "reconcile", "unmap", "customer", "aaaa-tenant", prep=mapped),
        C(2, "reconcile", "unmap", "customer", "nope", says="vendor_key='nope'"),
    ), why_no_attention="one mapping, removed or refused"),
    "reconcile mappings": Entry((
        C(0, "reconcile", "mappings", prep=mapped),
        C(0, "reconcile", "mappings", "--kind", "product"),
        missing_db("reconcile", "mappings"),
    ), why_no_attention="a read"),
    # the sync and its admin's view
    "sync": Entry((
        C(0, "sync", sandbox=True),
        C(1, "sync", sandbox=True, prep=budget_spent),
        C(1, "sync", sandbox=True, prep=(synced, broken)),
        C(2, "sync", "-c", "nope", sandbox=True, says="'nope' is not configured"),
        C(3, "sync", config=CLOSED_CRM),          # the CRM does not answer
        C(2, "sync", "--account", "", sandbox=True, says="'': must not be empty"),
        C(2, "sync", "-o", "invoice", sandbox=True, says="'invoice' is not one of"),
    )),
    "sweep": Entry((
        C(0, "sweep", sandbox=True, prep=synced),
        C(1, "sweep", sandbox=True, prep=(synced, broken)),   # the change read: quarantined
        C(1, "sweep", sandbox=True, prep=(synced, budget_spent)),
        C(2, "sweep", "-c", "nope", sandbox=True, says="'nope' is not configured"),
        C(3, "sweep", config=CLOSED_CRM),         # the CRM does not answer
    )),
    "status": Entry((
        C(0, "status", sandbox=True, prep=synced),
        C(1, "status", sandbox=True, prep=quarantined),
        missing_db("status"),
    )),
    "doctor": Entry((
        C(0, "doctor", sandbox=True),
        C(1, "doctor", config=CLOSED_CRM),        # the CRM does not answer: a failed check
        C(2, "--config", "{tmp}/foreign.toml", "doctor", prep=foreign_file, says="x"),
    ), unreachable=exits.ATTENTION),
    "quarantine list": Entry((C(0, "quarantine", "list", "--all"),
                              missing_db("quarantine", "list")), why_no_attention="a read"),
    "quarantine retry": Entry((
        C(0, "quarantine", "retry"),
        C(1, "quarantine", "retry", sandbox=True, prep=quarantined),
        C(1, "quarantine", "retry", "1", sandbox=True, prep=quarantined),
        C(2, "quarantine", "retry", "99", says="99"),
        C(2, "quarantine", "retry", "x", says="'x'"),
    )),
    "quarantine drop": Entry((
        C(0, "quarantine", "drop", "1", sandbox=True, prep=quarantined),
        C(2, "quarantine", "drop", "99", says="99"),
        C(2, "quarantine", "drop", says="IDS"),
        C(2, "quarantine", "drop", "1", ID_2_64, says=f"'IDS...': {ID_2_64}"),
    ), why_no_attention="records given up on are what was asked"),
    "outbox list": Entry((C(0, "outbox", "list", prep=dead_letter),
                          C(2, "outbox", "list", "--state", "gone",
                            says="'--state': 'gone'")), why_no_attention="a read"),
    "outbox retry": Entry((
        C(0, "outbox", "retry", "1", prep=dead_letter),
        C(0, "outbox", "retry"),
        C(2, "outbox", "retry", "99", says="99"),
        C(2, "outbox", "retry", ID_2_64, says=f"{ID_2_64} is not in the range"),
    ), why_no_attention="rows are only queued again; the push reports on them"),
    # documents emailed (docs/DOCUMENTS.md, Email); the sends that end 0 need an SMTP server:
    "email send": Entry((
        C(0, "email", "send", "--dry-run"),
        Elsewhere(0, "tests/integration/email/test_email_cli.py::test_dry_run_then_send_then_list"),
        C(1, "email", "send", config=EMAIL),                        # no billing emails: failed
        C(3, "email", "send", config=EMAIL, prep=billing_emails),   # SMTP does not answer
        C(2, "email", "send", says="email.enabled = false"),
        C(2, "email", "send", "--limit", "0", says="'--limit': 0"),
    )),
    "email list": Entry((C(0, "email", "list"),
                         C(2, "email", "list", "--state", "gone", says="'--state': 'gone'")),
                        why_no_attention="a read"),
    "email retry": Entry((
        C(0, "email", "retry", "1", prep=failed_email),
        C(2, "email", "retry", "99", says="99"),
        C(2, "email", "retry", ID_2_64, says=f"'EMAIL_ID': {ID_2_64}"),
    ), why_no_attention="a row is only queued again; email send reports on it"),
    "email cancel": Entry((
        C(0, "email", "cancel", "1", prep=failed_email),
        C(2, "email", "cancel", "99", says="99"),
    ), why_no_attention="one row is taken out or refused"),
    "dunning run": Entry((
        C(0, "dunning", "run", "--dry-run", "--date", "2026-06-01"),
        C(0, "dunning", "run", "--date", "2026-06-01", config=EMAIL + DUNNING,
          prep=billing_emails),
        C(1, "dunning", "run", "--date", "2026-06-01", config=EMAIL + DUNNING),  # no addresses
        C(2, "dunning", "run", says="dunning.enabled = false"),
        C(2, "dunning", "run", "--dry-run", "--date", "2026-02-30", says="2026-02-30"),
    )),
    "dunning list": Entry((C(0, "dunning", "list", "--date", "2026-06-01"),
                           C(2, "dunning", "list", "--date", "x", says="'x'")),
                          why_no_attention="a read"),
    "events process": Entry((
        C(0, "events", "process"),                                   # nothing waits
        C(0, "events", "process", sandbox=True, prep=crm_event),
        C(1, "events", "process", sandbox=True, prep=(crm_event, budget_spent)),
        C(3, "events", "process", config=CLOSED_CRM, prep=crm_event),  # the CRM does not answer
        C(2, "events", "process", "--limit", "0", says="'--limit': 0"),
    )),
    "events list": Entry((C(0, "events", "list"),
                          C(2, "events", "list", "--state", "x", says="'x'")),
                         why_no_attention="a read"),
    "events retry": Entry((C(0, "events", "retry"),
                           C(2, "events", "retry", "--connection", says="--connection")),
                          why_no_attention="failed events back to new, nothing else"),
    "run": Entry((
        C(0, "run", "--once", "--no-api", sandbox=True),
        C(1, "run", "--once", "--no-api", sandbox=True, prep=budget_spent),
        C(2, "run", "--api-port", "70000", says="'--api-port': 70000"),
        C(2, "run", "--once", "--no-api", prep=daemon_running,
          says="another `ledgerbridge run` is already using this SQLite database"),
    )),
    # the schema
    "db upgrade": Entry((
        C(0, "--database-url", "sqlite:///{tmp}/new.db", "db", "upgrade"),
        C(2, "--database-url", "nope://x", "db", "upgrade", says="'nope://x'"),
        C(2, "--database-url", "sqlite:///{tmp}/no/such/dir/new.db", "db", "upgrade",
          says="{tmp}/no/such/dir"),
        C(2, "--database-url", "mysql://u:pw@localhost/db", "db", "upgrade",
          says="'mysql://u:***@localhost/db': mysql is not supported"),
        C(2, "--database-url", "postgresql://u:pw@127.0.0.1:99999/db", "db", "upgrade",
          says="'postgresql://u:***@127.0.0.1:99999/db': port 99999"),
        C(2, "--database-url", "postgresql+psycopg2://u:pw@127.0.0.1/db", "db", "upgrade",
          says="'postgresql+psycopg2://u:***@127.0.0.1/db': its driver 'psycopg2' is not"),
    ), why_no_attention="upgraded or refused"),
    "db status": Entry((C(0, "db", "status"), missing_db("db", "status")),
                       why_no_attention="a read"),
    # set-up and demos: no ledger of the config's
    "init": Entry((
        C(0, "init", "--crm", "salesforce", "--url", "https://acme.my.salesforce.com",
          "--client-id", "ID", "--secret-env", "SF_SECRET", "-o", "{tmp}/lb.toml"),
        C(2, "init", "--crm", "salesforce", "--url", "http://acme", "--client-id", "ID",
          "--secret-env", "SF_SECRET", "-o", "{tmp}/lb.toml", says="'http://acme'"),
        C(2, "init", "--crm", "dynamics", "--url", "https://org.crm.dynamics.com",
          "--client-id", "ID", "--secret-env", "S", "-o", "{tmp}/lb.toml", says="--tenant-id"),
        C(2, "init", "--crm", "salesforce", "--url", "https://acme.my.salesforce.com",
          "--client-id", "ID", "--secret-env", "SF_SECRET", says="'-o'"),
    ), database=False, why_no_attention="a file, written or refused"),
    "sandbox": Entry((
        Elsewhere(0, "tests/integration/test_cli_setup.py::"
                     "test_write_config_gives_a_config_sync_and_status_use_as_it_is"),
        C(2, "sandbox", "--port", "70000", says="'--port': 70000"),
        C(2, "sandbox", "--write-config", "{tmp}/foreign.toml", prep=foreign_file,
          says="{tmp}/foreign.toml exists"),
    ), database=False, why_no_attention="a server until stopped"),
    "demo": Entry((
        Elsewhere(0, "tests/integration/test_cli_setup.py::"
                     "test_demo_keep_writes_a_config_that_says_how_to_restart_its_sandbox"),
        Elsewhere(0, "tests/e2e/test_readme_commands.py::test_the_readme_commands_verbatim"),
        C(2, "demo", "--keep", "{tmp}/a-file", prep=a_file, says="{tmp}/a-file"),
        C(2, "demo", "--accounts", "many", says="'--accounts': 'many'"),
    ), database=False, why_no_attention="a scripted story on its own sandbox and ledger"),
    "billing-demo": Entry((
        C(0, "billing-demo", "--date", "2026-04-10"),
        C(2, "billing-demo", "--date", "2026-04-31", says="'--date': '2026-04-31'"),
    ), why_no_attention="a scripted story on its own ledger"),
}


def _ok(env: Env, *args: str) -> None:
    result = env.cli(*args)
    assert result.exit_code == 0, result.output


# --- the completeness check -----------------------------------------------------------------

def registered(group: click.Group = main, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from registered(command, f"{path} ")
        else:
            yield path, command


def test_every_command_has_an_entry() -> None:
    """A command registered without an entry here fails: add its cases (0, 2, and 1 where it
    can end with something needing attention, or why not)."""
    commands = dict(registered())
    assert sorted(set(commands) - set(CONTRACT)) == [], "commands without an entry"
    assert sorted(set(CONTRACT) - set(commands)) == [], "entries without a command"
    for name, entry in CONTRACT.items():
        codes = {c.code for c in entry.cases}
        assert exits.OK in codes and exits.BAD_INPUT in codes, name
        assert exits.ATTENTION in codes or entry.why_no_attention, name


def test_the_cases_run_elsewhere_exist() -> None:
    root = HERE.parents[2]
    for entry in CONTRACT.values():
        for case in entry.cases:
            if isinstance(case, Elsewhere):
                path, _, name = case.test.partition("::")
                assert (root / path).exists(), case.test
                assert f"def {name}" in (root / path).read_text(), case.test


# --- running the cases ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "ledger.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with ledger_uow(engine) as uow:
        seed_demo_ledger(uow, SEED_DAY)
        uow.commit()
    assert run_bill_run(engine, SEED_DAY, uow_factory=lambda: ledger_uow(engine)).errors == []
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(accounts=5, quotes=2, sides=("salesforce",)) as sbx:
        yield sbx


def _ids(entry_cases: list[tuple[str, Case | Elsewhere]]) -> list[str]:
    return [f"{name}: {c.code} {' '.join(c.args) if isinstance(c, Case) else c.test}"
            for name, c in entry_cases]


CASES = [(name, case) for name, entry in CONTRACT.items() for case in entry.cases
         if isinstance(case, Case)]


def _dump(path: Path) -> list[str]:
    """The ledger's rows (what "nothing written" compares)."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def _env(tmp: Path, template: Path, request: pytest.FixtureRequest, case: Case) -> Env:
    ledger = tmp / "ledger.db"
    shutil.copy(template, ledger)
    url = f"sqlite:///{ledger}"
    sbx: Sandbox | None = None
    env: dict[str, str] = {"LB_CONTRACT_HOOK": "s", "COLUMNS": "200"}
    extra = case.config.replace("{port}", str(_closed_port()))
    if case.sandbox:
        sbx = request.getfixturevalue("sandbox")
        sbx.reset()
        text_, secrets = sandbox_config(sbx, url, connections=("sf",))
        env.update(secrets)
        body = text_ + "\n" + extra
    else:
        body = f'[database]\nurl = "{url}"\n' + extra
    config = tmp / "c.toml"
    config.write_text(body)
    return Env(tmp, make_engine(url), sbx, config, env, request.getfixturevalue("monkeypatch"))


def _json_flag(name: str) -> bool:
    command = dict(registered())[name]
    return any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)


@pytest.mark.parametrize(("name", "case"), CASES, ids=_ids(CASES))
def test_exit_code(name: str, case: Case, tmp_path: Path, ledger_template: Path,
                   request: pytest.FixtureRequest) -> None:
    """The case as it is, then again with ``--json`` where the command takes it, each from
    the same start (a fresh ledger, the sandbox reset, the set-up done again)."""
    for json_run in ([False, True] if _json_flag(name) else [False]):
        tmp = tmp_path / ("json" if json_run else "plain")
        tmp.mkdir()
        env = _env(tmp, ledger_template, request, case)
        try:
            for prep in case.prep:
                prep(env)
            args = [a.replace("{tmp}", str(tmp)) for a in case.args]
            args += ["--json"] if json_run else []
            before = _dump(tmp / "ledger.db")
            result = env.cli(*args)
            assert result.exit_code == case.code, (args, result.output)
            if case.code == exits.BAD_INPUT:
                lines = result.stderr.splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
                assert case.says.replace("{tmp}", str(tmp)) in lines[0], lines[0]
                assert _dump(tmp / "ledger.db") == before, "bad input wrote something"
                assert not any((tmp / f).exists() for f in (
                    "lb.toml", "missing.db", "no", "inv.pdf", "st.pdf", "cm.pdf", "dm.pdf"))
            elif json_run:
                json.loads(result.stdout)
        finally:
            env.stack.close()
            env.engine.dispose()


UNREACHABLE = [(name, next(c for c in entry.cases if isinstance(c, Case) and c.code == 0))
               for name, entry in CONTRACT.items() if entry.database]


@pytest.mark.parametrize(("name", "case"), UNREACHABLE, ids=[n for n, _ in UNREACHABLE])
def test_an_unreachable_database(name: str, case: Case, tmp_path: Path, ledger_template: Path,
                                 request: pytest.FixtureRequest) -> None:
    """PostgreSQL on a closed port: exit 3 and one line naming the database (password
    hidden), after the connection's own bounded attempt; ``doctor`` reports it (1)."""
    env = _env(tmp_path, ledger_template, request, case)
    try:
        for prep in case.prep:
            prep(env)
    finally:
        env.engine.dispose()
        env.stack.close()
    url = f"postgresql://lb:s3cret@127.0.0.1:{_closed_port()}/x?connect_timeout=2"
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    if "--database-url" in args:
        at = args.index("--database-url")
        del args[at:at + 2]
    result = env.cli("--database-url", url, *args)
    expected = CONTRACT[name].unreachable
    assert result.exit_code == expected, result.output
    if expected == exits.UNREACHABLE:
        assert result.stderr.splitlines()[-1].startswith(
            "error: database: cannot reach postgresql://lb:***@127.0.0.1:"), result.stderr
        assert "s3cret" not in result.output


@pytest.mark.postgres
def test_bad_input_writes_nothing_on_postgresql(pg_engine: Engine, pg_schema_url: str,
                                                tmp_path: Path) -> None:
    """The bad-input cases without a set-up of their own, in turn on one seeded PostgreSQL
    ledger: each exits 2 with one line, and the ledger's rows stay as they were (a refused
    write is rolled back there too)."""
    with ledger_uow(pg_engine) as uow:
        seed_demo_ledger(uow, SEED_DAY)
        uow.commit()
    assert run_bill_run(pg_engine, SEED_DAY, uow_factory=lambda: ledger_uow(pg_engine)).errors \
        == []
    url = pg_engine.url.update_query_dict({"options": f"-csearch_path={pg_schema_url}"}) \
        .render_as_string(hide_password=False)

    def rows() -> dict[str, list[Any]]:
        with pg_engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))]
            return {t: sorted(map(repr, conn.execute(text(f'SELECT * FROM "{t}"')).all()))
                    for t in tables}

    before = rows()
    ran = 0
    for name, case in CASES:
        if case.code != exits.BAD_INPUT or case.prep or case.sandbox or \
                not CONTRACT[name].database or "--database-url" in case.args:
            continue
        args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
        result = CliRunner().invoke(main, ["--database-url", url, *args])
        assert result.exit_code == exits.BAD_INPUT, (args, result.output)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert case.says.replace("{tmp}", str(tmp_path)) in result.stderr, result.stderr
        ran += 1
    assert ran > 50
    assert rows() == before
