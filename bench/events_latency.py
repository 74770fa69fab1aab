"""CRM events latency: a credit hold cleared in the CRM until the held provisioning request is
dispatched, and 1,000 accounts changed at once until the ledger has them all (issue 17).

    .venv/bin/python bench/events_latency.py                     # 100 trials per CRM, SQLite
    .venv/bin/python bench/events_latency.py --trials 20 --crm salesforce
    .venv/bin/python bench/events_latency.py --database-url postgresql://postgres@127.0.0.1:5432/test

Setting: the sandbox CRM (in this process, ``--accounts`` accounts) sends its change events
(``--notify``: Dataverse webhooks, Salesforce outbound messages) to a daemon started as a child
process, ``ledgerbridge --config FILE run``, with the config ``sandbox --write-config`` writes
(its ``[connections.*.events]`` included) plus ``[sync] interval_minutes = 15`` and the log
provisioner; the events job at its default interval. Before the daemon starts, ``--trials``
accounts per CRM are put on the CRM's credit hold (``Credit_Hold__c`` / ``creditonhold``) with
an accepted quote of a product that needs provisioning; the daemon's start-up sync makes their
orders, each provisioning request ``awaiting_hold_release``. Then, per trial, one account's
hold is cleared in the CRM (admin action) and the ledger is polled (every 5 ms) until its
request is ``dispatched``; the hold is set again and the bench waits until the ledger has it
and nothing is left to process, before the next trial. Prints p50 / p95 / max per CRM.

Then, per CRM, 1,000 accounts' credit limits are changed at once (Salesforce: one admin call,
``stamp_together``; Dataverse: 1,000 admin updates in a loop, one webhook each) and the ledger
is polled until every one of them shows the new limit: prints the seconds and the CRM reads
(the sandbox's GET calls meanwhile, the OAuth token endpoints aside), with the reads made by
the echo of billing's own pushes afterwards (each push is an event too, read back once).
Targets: p95 <= 2 s; <= 30 s and <= ceil(1000/200) = 5 reads. On PostgreSQL the benchmark works
in its own schema and drops it.
"""
from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, func, select, text  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.adapters.tables import (  # noqa: E402
    accounts,
    hold_reasons,
    orders,
    provisioning_requests,
)
from connectors.sandbox.notify import NotifyConfig  # noqa: E402
from connectors.sandbox.server import Sandbox  # noqa: E402
from jobs.cli.configs import write_sandbox_config  # noqa: E402
from sync.tables import event_inbox, sync_runs  # noqa: E402

LEDGERBRIDGE = str(Path(sys.executable).parent / "ledgerbridge")
HW_KEY = 8                  # the Salesforce sandbox's "Hardware Security Key": needs provisioning
BULK = 1000
CONNECTION = {"salesforce": "sf", "dataverse": "d365"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SalesforceCRM:
    connection = "sf"

    def __init__(self, sbx: Sandbox) -> None:
        assert sbx.salesforce is not None
        self.side = sbx.salesforce

    def held_order(self, index: int) -> tuple[str, str]:
        """Account ``index`` on credit hold with an accepted quote: (account id, source ref)."""
        account = self.side.admin("update", {"object": "Account", "index": index, "fields": {
            "Credit_Limit__c": 10_000_000, "Credit_Hold__c": True,
            "CurrencyIsoCode": "USD"}})["id"]
        quote = self.side.admin("create_quote", {
            "account_id": account, "status": "Accepted",
            "lines": [{"product_index": HW_KEY, "quantity": 1, "unit_price": 45}]})["id"]
        return account, f"sf:{quote}:rev1"

    def hold(self, account: str, on: bool) -> None:
        self.side.admin("set_hold", {"id": account, "hold": on})

    def account_ids(self, n: int) -> list[str]:
        return [self.side.account_id(i) for i in range(n)]

    def set_limits(self, ids: list[str], value: int) -> None:
        self.side.admin("stamp_together", {"object": "Account", "ids": ids,
                                           "fields": {"Credit_Limit__c": value}})


class DataverseCRM:
    connection = "d365"

    def __init__(self, sbx: Sandbox) -> None:
        assert sbx.dataverse is not None
        self.side = sbx.dataverse
        usd = next(g for g in (self.side.admin("guid", {"table": "transactioncurrencies",
                                                        "index": i})["id"] for i in range(8))
                   if self.side.admin("get", {"table": "transactioncurrencies", "id": g})[
                       "isocurrencycode"] == "USD")
        self.usd = f"/transactioncurrencies({usd})"
        product = self.side.admin("create", {"table": "products", "row": {
            "productnumber": "SKU-HWKEY-BENCH", "name": "Hardware Security Key",
            "statecode": 0, "statuscode": 1, "new_billingtype": 100_000_001,
            "new_needsprovisioning": True, "price": 45,
            "transactioncurrencyid@odata.bind": self.usd}})
        self.product = f"/products({product['productid']})"

    def held_order(self, index: int) -> tuple[str, str]:
        account = self.side.admin("update", {"table": "accounts", "index": index, "values": {
            "creditlimit": 10_000_000, "creditonhold": True,
            "transactioncurrencyid@odata.bind": self.usd}})["accountid"]
        quote = self.side.admin("create", {"table": "quotes", "row": {
            "name": "Bench quote", "statecode": 0, "statuscode": 1, "revisionnumber": 0,
            "customerid_account@odata.bind": f"/accounts({account})",
            "transactioncurrencyid@odata.bind": self.usd}})["quoteid"]
        self.side.admin("create", {"table": "quotedetails", "row": {
            "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": self.product,
            "lineitemnumber": 1, "quantity": 1, "priceperunit": 45, "extendedamount": 45,
            "transactioncurrencyid@odata.bind": self.usd}})
        self.side.admin("win_quote", {"id": quote})
        return account, f"d365:{quote}:rev0"

    def hold(self, account: str, on: bool) -> None:
        self.side.admin("set_creditonhold", {"id": account, "value": on})

    def account_ids(self, n: int) -> list[str]:
        return [self.side.admin("guid", {"table": "accounts", "index": i})["id"]
                for i in range(n)]

    def set_limits(self, ids: list[str], value: int) -> None:
        for account in ids:
            self.side.admin("set_creditlimit", {"id": account, "value": value})


def wait(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


def request_state(engine: Engine, ref: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(provisioning_requests.c.state).join(
            orders, orders.c.id == provisioning_requests.c.order_id).where(
            orders.c.source_ref == ref)).scalar()


def dispatched(engine: Engine, ref: str) -> bool:
    return request_state(engine, ref) == "dispatched"


def quiet(engine: Engine, sbx: Sandbox) -> bool:
    """Nothing waits to be sent by the sandbox or processed by the daemon."""
    assert sbx.notifier is not None
    if sbx.notifier.counters()["pending"]:
        return False
    with engine.connect() as conn:
        return not conn.execute(select(func.count()).select_from(event_inbox).where(
            event_inbox.c.state.in_(("new", "processing")))).scalar()


def settle(engine: Engine, sbx: Sandbox, timeout: float = 120) -> None:
    """Quiet for half a second in a row (a push's echo comes after the round that pushed)."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 10:
        if time.monotonic() > deadline:
            raise SystemExit("the daemon did not settle")
        calm = calm + 1 if quiet(engine, sbx) else 0
        time.sleep(0.05)


def reads(sbx: Sandbox, crm: str, before: dict[tuple[str, str, str], int]) -> int:
    """GET calls to ``crm`` since ``before`` (the token endpoints are POSTs, not counted)."""
    now = sbx.counters.snapshot()
    return sum(n - before.get(k, 0) for k, n in now.items()
               if k[0] == crm and k[2] == "GET")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--accounts", type=int, default=BULK)
    ap.add_argument("--bulk", type=int, default=BULK)
    ap.add_argument("--crm", action="append", choices=sorted(CONNECTION))
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args(argv)
    crms = args.crm or ["salesforce", "dataverse"]
    port = free_port()
    code = 0
    with tempfile.TemporaryDirectory(prefix="lbbench-events-") as tmp:
        schema, admin = None, None
        url = args.database_url or f"sqlite:///{tmp}/ledger.db"
        if url.startswith("postgresql"):
            schema = f"lbbench_{uuid.uuid4().hex[:8]}"
            admin = make_engine(url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{url}?options=-csearch_path%3D{schema}"
        notify = NotifyConfig(url=f"http://127.0.0.1:{port}", dataverse_key="bench-key",
                              hmac_secret="bench-hmac")
        daemon: subprocess.Popen[bytes] | None = None
        engine = make_engine(url)
        log = Path(tmp) / "daemon.log"
        try:
            with Sandbox(seed=0, accounts=args.accounts, notify=notify) as sbx:
                users: dict[str, Any] = {"salesforce": SalesforceCRM(sbx),
                                         "dataverse": DataverseCRM(sbx)}
                spare = 25      # an account billing also holds (credit limit) is skipped
                held = {crm: [users[crm].held_order(i)
                              for i in range(1, args.trials + spare + 1)] for crm in crms}
                assert sbx.notifier is not None
                sbx.notifier.reset()           # the set-up's events: the start-up sync reads all
                config = Path(tmp) / "lb.toml"
                write_sandbox_config(sbx, config, database_url=url, restart=["(bench)"])
                with config.open("a", encoding="utf-8") as out:
                    out.write('\n[sync]\ninterval_minutes = 15\n\n[provisioner]\nkind = "log"\n')
                env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
                subprocess.run([LEDGERBRIDGE, "--config", str(config), "db", "upgrade"],
                               env=env, check=True, capture_output=True)
                with log.open("wb") as sink:
                    daemon = subprocess.Popen([LEDGERBRIDGE, "--config", str(config), "run",
                                               "--api-port", str(port)], env=env,
                                              stdout=sink, stderr=subprocess.STDOUT)
                t0 = time.monotonic()
                refs = [ref for crm in crms for _, ref in held[crm]]
                wait(lambda: all(request_state(engine, r) == "awaiting_hold_release"
                                 for r in refs), 600, "the start-up sync's held orders", 0.5)
                settle(engine, sbx)
                print(f"start-up sync: {len(refs)} held orders in "
                      f"{time.monotonic() - t0:.1f} s; sandbox {args.accounts} accounts; "
                      f"database {'postgresql' if schema else 'sqlite'}")
                for crm in crms:
                    only_crm = [(a, r) for a, r in held[crm]
                                if set(_reasons(engine, CONNECTION[crm], a)) == {"crm"}]
                    others = [(a, _reasons(engine, CONNECTION[crm], a)) for a, _ in held[crm]
                              if (a, _) not in only_crm]
                    if others:
                        print(f"  {crm}: {len(others)} account(s) skipped, billing holds them "
                              f"too: {others[:2]}")
                    if len(only_crm) < args.trials:
                        raise SystemExit(f"{crm}: only {len(only_crm)} accounts held by the "
                                         "CRM alone")
                    held[crm] = only_crm[:args.trials]
                for crm in crms:
                    user, times = users[crm], []
                    for account, ref in held[crm]:
                        start = time.monotonic()
                        user.hold(account, False)
                        try:
                            wait(partial(dispatched, engine, ref), 120, f"{ref} dispatched",
                                 0.005)
                        except SystemExit:
                            _explain(engine, sbx, account, ref)
                            raise
                        times.append(time.monotonic() - start)
                        user.hold(account, True)           # re-hold, and let it be applied
                        ext = account.lower() if crm == "dataverse" else account
                        wait(partial(_crm_hold, engine, user.connection, ext), 120,
                             "the hold set again")
                        settle(engine, sbx)
                    p95 = pct(times, 95)
                    code |= p95 > 2
                    print(f"{crm}: hold cleared -> request dispatched, {len(times)} trials: "
                          f"p50 {statistics.median(times):.2f} s, p95 {p95:.2f} s, "
                          f"max {max(times):.2f} s (target p95 <= 2 s)")
                for crm in crms:
                    code |= bulk(engine, sbx, crm, users[crm], args.bulk)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(timeout=60)
            engine.dispose()
            if schema is not None and admin is not None:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                admin.dispose()
            if daemon is not None and (daemon.returncode not in (0, -15)
                                       or sys.exc_info()[0] is not None):
                print(log.read_text()[-6000:], file=sys.stderr)
    print(f"load {os.getloadavg()[0]:.1f} (2 cores)")
    return code


def _explain(engine: Engine, sbx: Sandbox, account: str, ref: str) -> None:
    """What a trial that timed out left behind: the sender's counters, the account's events."""
    assert sbx.notifier is not None
    print(f"timed out: {ref} is {request_state(engine, ref)}; notify "
          f"{sbx.notifier.counters()['total']}", file=sys.stderr)
    with engine.connect() as conn:
        for row in conn.execute(select(event_inbox).where(
                func.lower(event_inbox.c.crm_id) == account.lower())):
            print(f"  event {dict(row._mapping)}", file=sys.stderr)
        found = conn.execute(select(accounts).where(
            func.lower(accounts.c.ext_id) == account.lower())).first()
        print(f"  account {found}", file=sys.stderr)


def _reasons(engine: Engine, connection: str, account: str) -> dict[str, str]:
    """The ledger's hold reasons of a CRM account, with their details."""
    with engine.connect() as conn:
        return {r.reason: r.details for r in conn.execute(
            select(hold_reasons.c.reason, hold_reasons.c.details).join(
                accounts, accounts.c.id == hold_reasons.c.account_id).where(
                accounts.c.ext_source == connection,
                func.lower(accounts.c.ext_id) == account.lower()))}


def _crm_hold(engine: Engine, connection: str, ext_id: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(accounts.c.crm_hold).where(
            accounts.c.ext_source == connection, accounts.c.ext_id == ext_id)).scalar())


def _limits(engine: Engine, connection: str) -> dict[str, int | None]:
    with engine.connect() as conn:
        return {r.ext_id: r.credit_limit_minor for r in conn.execute(
            select(accounts.c.ext_id, accounts.c.credit_limit_minor).where(
                accounts.c.ext_source == connection))}


def bulk(engine: Engine, sbx: Sandbox, crm: str, user: Any, n: int) -> int:
    ids = user.account_ids(n)
    keys = [i.lower() if crm == "dataverse" else i for i in ids]
    before_limits = _limits(engine, user.connection)
    known = [k for k in keys if k in before_limits]
    value = 987_654
    before = sbx.counters.snapshot()
    start = time.monotonic()
    user.set_limits(ids, value)
    changed_in = time.monotonic() - start

    def applied() -> bool:
        now = _limits(engine, user.connection)
        return all(now[k] != before_limits[k] for k in known)

    seconds = wait(applied, 300, f"{crm}: {len(known)} accounts applied", 0.05) + changed_in
    got = reads(sbx, crm, before)
    settle(engine, sbx)
    after = reads(sbx, crm, before)
    limit = math.ceil(n / 200)
    print(f"{crm}: changing {n:,} accounts at once ({len(known)} in the ledger; the change "
          f"took {changed_in:.2f} s in the CRM) -> all applied within {seconds:.1f} s with "
          f"{got} CRM reads (target <= 30 s, <= {limit} reads); {after - got} more reads "
          f"after, for the echo of billing's pushes")
    with engine.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(sync_runs).where(
            sync_runs.c.connection == user.connection, sync_runs.c.trigger == "events")).scalar()
        skipped = conn.execute(select(func.count()).select_from(event_inbox).where(
            event_inbox.c.connection == user.connection,
            event_inbox.c.state == "skipped")).scalar()
    print(f"  ({runs} event runs of {user.connection} in all; {skipped} events skipped in all, "
          f"the echo of billing's own writes)")
    return int(seconds > 30 or got > limit)


if __name__ == "__main__":
    sys.exit(main())
