"""What a drift sweep costs against the sandbox CRM. Prints figures.

    .venv/bin/python bench/drift_sweep.py --accounts 10000 --crm salesforce
    .venv/bin/python bench/drift_sweep.py --accounts 10000 --crm dynamics

A full sync with the push on (it writes every account's billing figures back, so every account
gets a new stamp from us), a second sync (nothing changed), then sweeps: 1 right after (the
stamps our push moved are read once and kept), 2 with nothing changed, 3 after one account
committed an hour late (Salesforce ``commit_late``; Dataverse: a change no sync read) and
one deleted. For each sweep: outcome, CRM calls, records read back, what it found per kind, and
the wall time (the sandbox runs in this process: times are indicative, calls are exact).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONN = {"salesforce": "sf", "dynamics": "d365"}
SIDE = {"salesforce": "salesforce", "dynamics": "dataverse"}


def _worker(sbx: Any, tmp: Path, conn: str) -> Any:
    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.cli.configs import sandbox_config
    from jobs.migrate import upgrade
    from jobs.worker import Worker

    text, env = sandbox_config(sbx, f"sqlite:///{tmp / 'bench.db'}", connections=(conn,))
    os.environ.update(env)
    (tmp / "c.toml").write_text(text, encoding="utf-8")
    settings = load_settings(tmp / "c.toml")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return Worker(engine, settings, connector_factory=lambda s: build_connector(
        s, sleep=lambda _s: None))


def _drift(sbx: Any, crm: str) -> None:
    if crm == "salesforce":
        sbx.salesforce.admin("commit_late", {"object": "Account", "index": 7,
                                             "seconds_before": 3600,
                                             "fields": {"Name": "Committed Late"}})
        sbx.salesforce.admin("delete", {"object": "Account", "index": 8})
    else:
        sbx.dataverse.admin("update", {"table": "accounts", "index": 7,
                                       "values": {"name": "Changed Unseen"}})
        sbx.dataverse.admin("delete_account", {"index": 8})


def run(crm: str, accounts: int) -> None:
    from connectors.sandbox.server import Sandbox
    from jobs.sweep import sweep
    from sync.drift import last_sweep

    conn = CONN[crm]
    with Sandbox(accounts=accounts, sides=(SIDE[crm],)) as sbx, \
            tempfile.TemporaryDirectory() as tmp:
        worker = _worker(sbx, Path(tmp), conn)
        for full in (True, False):
            worker.sync_connection(conn, worker.options("bench", full=full), wait=True)
        print(f"{crm}: {accounts} accounts, {worker.engine.dialect.name}")
        print("sweep  outcome  CRM calls  read back  missing  changed  deleted  wall")
        for n in (1, 2, 3):
            if n == 3:
                _drift(sbx, crm)
            sbx.counters.reset()
            t0 = time.perf_counter()
            [report] = sweep(worker, conn, wait=True)
            wall = time.perf_counter() - t0
            with worker.engine.connect() as c:
                found = last_sweep(c, conn) or {"total": {}}
            total = found["total"]
            print(f"{n:>5}  {report.outcome:<7} {sbx.counters.total(SIDE[crm]):>9}  "
                  f"{report.total('read'):>9}  {total.get('missing', 0):>7}  "
                  f"{total.get('changed', 0):>7}  {total.get('deleted', 0):>7}  {wall:.1f} s")
        worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--crm", choices=sorted(CONN), default="salesforce")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    run(args.crm, args.accounts)


if __name__ == "__main__":
    main()
